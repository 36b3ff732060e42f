//! Starting a real `berth serve` and talking to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, Method, Response};
use sha2::Digest as _;

/// Path of the berth binary cargo built for these tests.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A running berth server; killed (by PID) when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Its data directory.
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// HTTP client.
    pub http: Client,
    /// `Authorization` header sent by [`Server::req`] (and so by the push helpers).
    pub authorization: Option<String>,
}

impl Server {
    /// Starts berth on a fresh temp data dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let mut s = Server::start_on(&data, "127.0.0.1:0");
        s._tmp = Some(tmp);
        s
    }

    /// Starts berth on a fresh temp data dir with extra environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Server::start_args(&[], env)
    }

    /// Starts berth on `data` listening on `listen` (port 0 for a random one).
    pub fn start_on(data: &Path, listen: &str) -> Server {
        Server::start_on_with(data, listen, &[])
    }

    /// [`Server::start_on`] with extra environment variables.
    pub fn start_on_with(data: &Path, listen: &str, env: &[(&str, &str)]) -> Server {
        Server::start_on_args(data, listen, &[], env)
    }

    /// Starts berth on a fresh temp data dir with extra `berth serve` arguments.
    pub fn start_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let mut s = Server::start_on_args(&data, "127.0.0.1:0", args, env);
        s._tmp = Some(tmp);
        s
    }

    /// [`Server::start_on_with`] with extra `berth serve` arguments.
    pub fn start_on_args(data: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BERTH)
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_ADMIN_PASSWORD")
            .env_remove("BERTH_AUTH_REQUIRED")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from berth: {line:?}"))
            .to_owned();
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            data: data.to_owned(),
            _tmp: None,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client"),
            authorization: None,
        }
    }

    /// Kills the server with SIGKILL and waits for it, keeping the data directory.
    pub fn kill9(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.data.clone(), self._tmp.take())
    }

    /// Stops the server with SIGTERM (a graceful stop) and waits for it, keeping the data
    /// directory.
    pub fn terminate(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM");
        let status = self.child.wait().expect("wait for berth");
        assert!(status.success(), "berth exited with {status} after SIGTERM");
        (self.data.clone(), self._tmp.take())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// A request builder for `path`.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.authorization {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    }

    /// Sends `body` as JSON with `method` to `path`; the status and the parsed answer
    /// (`null` when it is not JSON).
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self
            .req(method, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Pushes a blob with POST + PUT; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let res = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "POST upload");
        let loc = location(&res);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let res = self
            .req(Method::PUT, &format!("{loc}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            201,
            "PUT upload: {}",
            res.text().await.unwrap_or_default()
        );
        digest
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config + one layer + an OCI manifest tagged `tag`; returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, Vec<u8>) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let c = self.push_blob(repo, config).await;
        let l = self.push_blob(repo, layer).await;
        let manifest = oci_manifest(&c, config.len(), &[(&l, layer.len())], None);
        let res = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(
            res.status(),
            201,
            "manifest PUT: {}",
            res.text().await.unwrap_or_default()
        );
        (sha256(&manifest), manifest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `sha512:<hex>` of bytes.
pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// The `Location` header of a response.
pub fn location(res: &Response) -> String {
    header(res, "location").expect("Location header")
}

/// A response header as a string.
pub fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The first error code of an OCI error body.
pub async fn error_code(res: Response) -> String {
    let v: serde_json::Value = res.json().await.expect("JSON error body");
    v["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

/// An OCI image manifest over the given config and layers, with an optional subject and extra fields.
pub fn oci_manifest(
    config: &str,
    config_len: usize,
    layers: &[(&str, usize)],
    extra: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers.iter().map(|(d, n)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n
        })).collect::<Vec<_>>(),
    });
    if let Some(serde_json::Value::Object(extra)) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec(&m).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs `berth fsck` (with `--repair` if asked) on a data dir: (exit code, stdout).
pub fn fsck(data: &Path, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(BERTH);
    cmd.args(["fsck", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn");
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run berth fsck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `name` of each account in an `/api/v1/accounts` answer, in order.
pub fn account_names(body: &serde_json::Value) -> Vec<&str> {
    body["accounts"]
        .as_array()
        .expect("an accounts array")
        .iter()
        .map(|a| a["name"].as_str().expect("an account name"))
        .collect()
}
