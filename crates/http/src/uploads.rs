//! Blob uploads: `POST /v2/<name>/blobs/uploads/` and the session URL (`GET`, `PATCH`,
//! `PUT`, `DELETE`).

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use berth_oci::{Algorithm, Digest, ErrorCode, RepoName};
use berth_registry::service::Chunk;
use berth_registry::{MountOutcome, Registry, RegistryError, UploadId, UploadStatus};

use crate::auth::{Auth, Caller, token_actions};
use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::{CONTENT_DIGEST, body_stream, hv};
use berth_registry::access::Actions;

const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

fn upload_location(name: &RepoName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>` as Distribution sends it (`0-0` for an empty upload).
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// The headers docker and containerd expect on every upload-session response.
fn session_response(name: &RepoName, status: StatusCode, s: &UploadStatus) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, hv(upload_location(name, &s.id)))
        .header(header::RANGE, hv(range_value(s.size)))
        .header(UPLOAD_UUID, hv(s.id.as_str()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default()
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(format!("/v2/{name}/blobs/{digest}")))
        .header(CONTENT_DIGEST, hv(digest.as_str()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Adds the session headers to a 416 so the client can resume from the right offset.
fn with_session_headers(e: RegistryError, name: &RepoName, id: &UploadId) -> ApiError {
    match e {
        RegistryError::RangeInvalid { size } => ApiError::from(e)
            .with_header(header::LOCATION, hv(upload_location(name, id)))
            .with_header(header::RANGE, hv(range_value(size)))
            .with_header(UPLOAD_UUID, hv(id.as_str())),
        other => other.into(),
    }
}

fn digest_param(q: &Query, key: &str) -> Result<Option<Digest>, ApiError> {
    q.get(key)
        .map(|d| d.parse::<Digest>())
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
}

fn content_length(req: &Parts) -> Option<u64> {
    req.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Parses `Content-Range` (`start-end`, also accepting `bytes start-end/*`).
fn content_range(req: &Parts) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = req.headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            "Content-Range must be <start>-<end>, inclusive byte offsets",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix("bytes")
        .map_or(s, |r| r.trim_start_matches([' ', '=']));
    let s = s.split('/').next().unwrap_or("");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    Ok(Some((a, b)))
}

/// The request body as a chunk, after checking `Content-Range` against `Content-Length`.
fn chunk_of(req: &Parts, body: Body) -> Result<Chunk, ApiError> {
    let range = content_range(req)?;
    if let (Some((a, b)), Some(len)) = (range, content_length(req))
        && (b < a || b - a + 1 != len)
    {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!("Content-Range {a}-{b} does not match Content-Length {len}"),
        ));
    }
    Ok(Chunk {
        range,
        body: body_stream(body),
    })
}

pub(crate) async fn start(
    reg: &Registry,
    auth: &Auth,
    caller: &Caller,
    name: &RepoName,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let q = Query::of(req);
    if let Some(mount) = digest_param(&q, "mount")? {
        let from = match q.get("from").map(RepoName::parse) {
            None => None,
            Some(Ok(from)) => Some(from),
            // A repository that cannot exist holds nothing to mount: like any mount that
            // cannot happen, fall back to an upload session (202).
            Some(Err(_)) => {
                let status = reg.start_upload(name, mount.algorithm()).await?;
                return Ok(session_response(name, StatusCode::ACCEPTED, &status));
            }
        };
        // A mount needs pull on the source; without it the client gets a plain upload
        // session (202), which reveals nothing about the source. An automatic mount (no
        // `from`) only draws on repositories the caller's token lets it pull.
        let from_readable = match &from {
            Some(from) => auth.allowed(caller, from).await?.contains(Actions::PULL),
            None => false,
        };
        let can_read = |r: &RepoName| match caller {
            Caller::Open => true,
            _ if from.as_ref() == Some(r) => from_readable,
            Caller::Token(claims) => token_actions(claims, r).contains(Actions::PULL),
            _ => false,
        };
        let outcome = reg
            .mount_blob(name, &mount, from.as_ref(), &can_read)
            .await?;
        return Ok(match outcome {
            MountOutcome::Mounted => blob_created(name, &mount),
            MountOutcome::Started(s) => session_response(name, StatusCode::ACCEPTED, &s),
        });
    }
    if let Some(digest) = digest_param(&q, "digest")? {
        let chunk = chunk_of(req, body)?;
        reg.push_blob(name, &digest, chunk).await?;
        return Ok(blob_created(name, &digest));
    }
    let algorithm = match q.get("digest-algorithm") {
        None => Algorithm::Sha256,
        Some(a) => Algorithm::parse(a)
            .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))?,
    };
    let status = reg.start_upload(name, algorithm).await?;
    Ok(session_response(name, StatusCode::ACCEPTED, &status))
}

pub(crate) async fn status(reg: &Registry, name: &RepoName, id: &UploadId) -> ApiResult {
    let s = reg.upload_status(name, id).await?;
    Ok(session_response(name, StatusCode::NO_CONTENT, &s))
}

pub(crate) async fn patch(
    reg: &Registry,
    name: &RepoName,
    id: &UploadId,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let chunk = chunk_of(req, body)?;
    let s = reg
        .append_chunk(name, id, chunk)
        .await
        .map_err(|e| with_session_headers(e, name, id))?;
    Ok(session_response(name, StatusCode::ACCEPTED, &s))
}

pub(crate) async fn put(
    reg: &Registry,
    name: &RepoName,
    id: &UploadId,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let q = Query::of(req);
    let digest = digest_param(&q, "digest")?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "the closing PUT needs ?digest=<digest of the whole blob>",
        )
    })?;
    let empty = content_length(req) == Some(0) && !req.headers.contains_key(header::CONTENT_RANGE);
    let last = if empty {
        None
    } else {
        Some(chunk_of(req, body)?)
    };
    reg.finish_upload(name, id, &digest, last)
        .await
        .map_err(|e| with_session_headers(e, name, id))?;
    Ok(blob_created(name, &digest))
}

pub(crate) async fn cancel(reg: &Registry, name: &RepoName, id: &UploadId) -> ApiResult {
    reg.cancel_upload(name, id).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_default())
}
