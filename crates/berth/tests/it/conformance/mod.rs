//! Conformance tests derived from the OCI distribution spec's requirements: one test per
//! MUST that berth implements, each failing without it.
//!
//! Every test starts its own `berth serve` ([`Server::start`]) so tests are independent and
//! run in parallel. Spec references in comments quote the section of
//! `oci-distribution-spec.md` (or Docker's `spec-api.md`) a test derives from.

mod base;
mod catalog;
mod concurrency;
mod delete;
mod errors;
mod isolation;
mod manifests;
mod mount;
mod names;
mod pull;
mod push_chunked;
mod push_monolithic;
mod referrers;
mod sha512;
mod tags;

use std::path::{Path, PathBuf};

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::harness::*;

/// The only `code` values the spec's error table allows (section "Error Codes").
pub const SPEC_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer media type.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The OCI empty descriptor media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker schema 1 (signed) media type.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// A well-formed sha256 digest no test ever pushes content for.
pub const ABSENT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Asserts `res` is an error with `status` whose JSON body follows the spec's error format
/// (`{"errors":[{"code","message","detail"}]}`) and whose first code is `code`. Returns the body.
pub async fn expect_error(res: Response, status: u16, code: &str) -> Value {
    let url = res.url().to_string();
    assert_eq!(
        res.status().as_u16(),
        status,
        "status of {url} (expected {code})"
    );
    let ct = header(&res, "content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error from {url} must be JSON, got Content-Type {ct:?}"
    );
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body of {url} is not JSON ({e}): {text}"));
    check_error_body(&body);
    assert_eq!(
        body["errors"][0]["code"], code,
        "error code of {url}: {body}"
    );
    body
}

/// Checks the shape the spec's "Error Codes" section requires of a JSON error body.
pub fn check_error_body(body: &Value) {
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("error body needs an errors array: {body}"));
    assert!(!errors.is_empty(), "errors must not be empty: {body}");
    for e in errors {
        let code = e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("errors[].code must be a string: {body}"));
        assert!(
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "code must be uppercase letters and underscores: {code}"
        );
        assert!(
            SPEC_CODES.contains(&code),
            "code {code} is not one of the spec's error codes"
        );
        if let Some(m) = e.get("message") {
            assert!(m.is_string(), "message must be a string: {body}");
        }
    }
}

/// `GET path`.
pub async fn get(s: &Server, path: &str) -> Response {
    s.req(Method::GET, path).send().await.unwrap()
}

/// `HEAD path`.
pub async fn head(s: &Server, path: &str) -> Response {
    s.req(Method::HEAD, path).send().await.unwrap()
}

/// `DELETE path`.
pub async fn delete(s: &Server, path: &str) -> Response {
    s.req(Method::DELETE, path).send().await.unwrap()
}

/// `url` with `param` (already encoded) appended to its query.
pub fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// `POST /v2/<repo>/blobs/uploads/` with `Content-Length: 0`; asserts 202 and returns the
/// upload location.
pub async fn start_upload(s: &Server, repo: &str) -> String {
    let res = s
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "POST upload in {repo}");
    location(&res)
}

/// `PATCH <loc>` with `bytes`, and `Content-Range: a-b` when `range` is given.
pub async fn patch(s: &Server, loc: &str, bytes: &[u8], range: Option<(u64, u64)>) -> Response {
    let mut req = s
        .req(Method::PATCH, loc)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec());
    if let Some((a, b)) = range {
        req = req.header("content-range", format!("{a}-{b}"));
    }
    req.send().await.unwrap()
}

/// `PATCH <loc>` with `Content-Range` covering `bytes` placed at `offset`.
pub async fn patch_at(s: &Server, loc: &str, offset: u64, bytes: &[u8]) -> Response {
    patch(
        s,
        loc,
        bytes,
        Some((offset, offset + bytes.len() as u64 - 1)),
    )
    .await
}

/// A final chunk sent in the closing PUT: its bytes and optional `Content-Range`.
pub type FinalChunk<'a> = (&'a [u8], Option<(u64, u64)>);

/// Closing `PUT <loc>?digest=<digest>` with an optional final chunk (and its range).
pub async fn close_upload(
    s: &Server,
    loc: &str,
    digest: &str,
    last: Option<FinalChunk<'_>>,
) -> Response {
    let url = with_param(loc, &format!("digest={digest}"));
    let mut req = s.req(Method::PUT, &url);
    match last {
        Some((bytes, range)) => {
            req = req
                .header("content-type", "application/octet-stream")
                .body(bytes.to_vec());
            if let Some((a, b)) = range {
                req = req.header("content-range", format!("{a}-{b}"));
            }
        }
        None => req = req.header("content-length", "0"),
    }
    req.send().await.unwrap()
}

/// A request body sent with `Transfer-Encoding: chunked` (no `Content-Length`), in pieces.
pub fn streamed(bytes: &[u8], piece: usize) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(piece.max(1)).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// Fetches `path` and asserts it is 200 with exactly `bytes`.
pub async fn assert_blob(s: &Server, path: &str, bytes: &[u8]) {
    let res = get(s, path).await;
    assert_eq!(res.status(), 200, "GET {path}");
    let body = res.bytes().await.unwrap();
    assert!(body.as_ref() == bytes, "GET {path} returned other bytes");
}

/// Every file under `<data>/blobs/<algorithm>/`.
pub fn blob_files(data: &Path, algorithm: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("blobs").join(algorithm), &mut out);
    out
}

/// Number of files under `<data>/uploads/`.
pub fn upload_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("uploads"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// The `Range` header of an upload response.
pub fn range(res: &Response) -> Option<String> {
    header(res, "range")
}

/// The target of a `Link: <…>; rel="next"` header, if any.
pub fn next_link(res: &Response) -> Option<String> {
    let v = header(res, "link")?;
    assert!(
        v.contains("rel=\"next\""),
        "Link header must have rel=\"next\": {v}"
    );
    let start = v.find('<').expect("Link starts with <") + 1;
    let end = v.find('>').expect("Link has >");
    Some(v[start..end].to_owned())
}

/// Every value of a (possibly repeated, comma-separated) header, split and trimmed.
pub fn header_list(res: &Response, name: &str) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A config and a layer pushed to a repository, ready to be put in a manifest.
pub struct Parts {
    /// Config digest.
    pub config: String,
    /// Config bytes.
    pub config_bytes: Vec<u8>,
    /// Layer digest.
    pub layer: String,
    /// Layer bytes.
    pub layer_bytes: Vec<u8>,
}

impl Parts {
    /// An OCI image manifest over these parts, with extra top-level fields.
    pub fn oci(&self, extra: Option<Value>) -> Vec<u8> {
        oci_manifest(
            &self.config,
            self.config_bytes.len(),
            &[(&self.layer, self.layer_bytes.len())],
            extra,
        )
    }

    /// A Docker schema 2 manifest over these parts.
    pub fn docker(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": self.config, "size": self.config_bytes.len()},
            "layers": [{"mediaType": DOCKER_LAYER, "digest": self.layer, "size": self.layer_bytes.len()}],
        }))
        .unwrap()
    }
}

/// Pushes a distinct config and layer (derived from `seed`) to `repo`.
pub async fn push_parts(s: &Server, repo: &str, seed: u64) -> Parts {
    let config_bytes =
        format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer_bytes = random_bytes(seed, 1000 + seed as usize % 100);
    let config = s.push_blob(repo, &config_bytes).await;
    let layer = s.push_blob(repo, &layer_bytes).await;
    Parts {
        config,
        config_bytes,
        layer,
        layer_bytes,
    }
}

/// Pushes a distinct OCI image manifest (and its blobs, derived from `seed`) to `repo` under
/// `reference`; returns its digest and bytes.
pub async fn push_manifest(
    s: &Server,
    repo: &str,
    reference: &str,
    seed: u64,
) -> (String, Vec<u8>) {
    let parts = push_parts(s, repo, seed).await;
    let m = parts.oci(None);
    let res = s.put_manifest(repo, reference, OCI_MANIFEST, &m).await;
    assert_eq!(
        res.status(),
        201,
        "manifest PUT: {}",
        res.text().await.unwrap_or_default()
    );
    (sha256(&m), m)
}

/// An index (OCI or Docker list) over `children` (media type, digest, size).
pub fn index(media_type: &str, children: &[(&str, &str, usize)], extra: Option<Value>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": children.iter().enumerate().map(|(i, (mt, d, n))| json!({
            "mediaType": mt, "digest": d, "size": n,
            "platform": {"architecture": if i % 2 == 0 { "amd64" } else { "arm64" }, "os": "linux"},
        })).collect::<Vec<_>>(),
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec(&m).unwrap()
}

/// Pushes the OCI empty blob `{}` to `repo`; returns its digest.
pub async fn push_empty_config(s: &Server, repo: &str) -> String {
    let d = s.push_blob(repo, b"{}").await;
    assert_eq!(
        d,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    d
}

/// An OCI artifact manifest (empty config, one layer blob `layer` of `len` bytes) with
/// optional `artifactType`, subject and annotations.
pub fn artifact(
    artifact_type: Option<&str>,
    layer: (&str, usize),
    subject: Option<(&str, usize)>,
    annotations: Option<Value>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2,
        },
        "layers": [{"mediaType": "application/vnd.example.data", "digest": layer.0, "size": layer.1}],
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = t.into();
    }
    if let Some((d, n)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n});
    }
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    serde_json::to_vec(&m).unwrap()
}

/// A raw HTTP/1.1 response.
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body bytes (as far as they arrived).
    pub body: Vec<u8>,
}

/// Sends `request` verbatim over a fresh TCP connection (for paths a URL library would
/// normalize, or headers it would fix up) and reads the response until the server closes.
pub async fn raw_request(s: &Server, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if len.is_some_and(|n| buf.len() >= end + 4 + n) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("raw response within 20 s");
    let end = find(&buf, b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first error code of a JSON error body, after checking the body's shape.
    pub fn error_code(&self) -> String {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "raw error body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        check_error_body(&body);
        body["errors"][0]["code"].as_str().unwrap().to_owned()
    }
}
