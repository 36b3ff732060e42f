//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::body::Body as RequestBody;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use berth_oci::manifest::MAX_MANIFEST_BYTES;
use berth_oci::{ErrorCode, Reference, RepoName, Tag};
use berth_registry::Actor;
use berth_registry::{Registry, RegistryError};
use futures_util::StreamExt;

use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::{CONTENT_DIGEST, hv};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");

pub(crate) async fn get(
    reg: &Registry,
    name: &RepoName,
    reference: &Reference,
    req: &Parts,
    head: bool,
    pulled_by: Option<Actor>,
) -> ApiResult {
    let m = reg.get_manifest(name, reference).await?;
    if let Some(actor) = pulled_by {
        reg.record_pull(name, reference, &m, actor);
    }
    let etag = format!("\"{}\"", m.digest);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, hv(&m.media_type))
        .header(CONTENT_DIGEST, hv(m.digest.as_str()))
        .header(header::ETAG, hv(&etag));
    if matches!(reference, Reference::Digest(_)) {
        builder = builder.header(header::CACHE_CONTROL, "max-age=31536000, immutable");
    }
    let if_none_match = req
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return Ok(builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default());
    }
    let builder = builder
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, m.bytes.len());
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.bytes)
    };
    Ok(builder.body(body).unwrap_or_default())
}

pub(crate) async fn put(
    reg: &Registry,
    name: &RepoName,
    reference: &Reference,
    req: &Parts,
    body: RequestBody,
    actor: &Actor,
) -> ApiResult {
    let q = Query::of(req);
    let extra_tags = q
        .all("tag")
        .map(Tag::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(RegistryError::from)?;
    let tagged_by_query = !extra_tags.is_empty();
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let too_large = || RegistryError::ManifestTooLarge {
        limit: MAX_MANIFEST_BYTES,
    };
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
        return Err(too_large().into());
    }
    // Read it ourselves rather than with `to_bytes(body, limit)`: a body without
    // Content-Length that runs past the limit must be a 413, not a read failure.
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest body could not be read whole: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(too_large().into());
        }
        buf.extend_from_slice(&chunk);
    }
    let bytes = buf.freeze();
    let pushed = reg
        .put_manifest(
            name,
            reference,
            content_type.as_deref(),
            bytes,
            extra_tags,
            actor,
        )
        .await?;
    let mut builder = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(format!("/v2/{name}/manifests/{}", pushed.digest)),
        )
        .header(CONTENT_DIGEST, hv(pushed.digest.as_str()))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = &pushed.subject {
        builder = builder.header(OCI_SUBJECT, hv(subject.as_str()));
    }
    if tagged_by_query {
        let tags: Vec<&str> = pushed.tags.iter().map(Tag::as_str).collect();
        builder = builder.header(OCI_TAG, hv(tags.join(", ")));
    }
    Ok(builder.body(Body::empty()).unwrap_or_default())
}

pub(crate) async fn delete(
    reg: &Registry,
    name: &RepoName,
    reference: &Reference,
    actor: &Actor,
) -> ApiResult {
    reg.delete_manifest(name, reference, actor).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default())
}
