//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use berth_oci::{Digest, ErrorCode, RepoName};
use berth_registry::{ByteRange, Registry};

use crate::error::{ApiError, ApiResult};
use crate::{CONTENT_DIGEST, hv};

/// What a `Range` header asks of a blob of a given size.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range: send the whole blob.
    Whole,
    /// One satisfiable range.
    Part(ByteRange),
    /// The range lies outside the blob.
    Unsatisfiable,
}

/// Parses a single `bytes=` range (RFC 9110 §14); multi-range requests get the whole blob.
fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix range: the last `b` bytes.
        match b.parse::<u64>() {
            Ok(0) | Err(_) => return RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => return RangeRequest::Unsatisfiable,
            Ok(n) => ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                _ => return RangeRequest::Whole,
            }
        };
        if start >= size {
            return RangeRequest::Unsatisfiable;
        }
        ByteRange { start, end }
    };
    RangeRequest::Part(range)
}

pub(crate) async fn get(
    reg: &Registry,
    name: &RepoName,
    digest: &Digest,
    req: &Parts,
    head: bool,
) -> ApiResult {
    let info = reg.stat_blob(name, digest).await?;
    let etag = format!("\"{digest}\"");
    let builder = Response::builder()
        .header(CONTENT_DIGEST, hv(digest.as_str()))
        .header(header::ETAG, hv(&etag))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "max-age=31536000, immutable")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let if_none_match = req
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok(builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default());
    }
    let range_header = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range, builder) = match parse_range(range_header, info.size) {
        RangeRequest::Whole => (StatusCode::OK, None, builder),
        RangeRequest::Part(r) => (
            StatusCode::PARTIAL_CONTENT,
            Some(r),
            builder.header(
                header::CONTENT_RANGE,
                hv(format!("bytes {}-{}/{}", r.start, r.end, info.size)),
            ),
        ),
        RangeRequest::Unsatisfiable => {
            // The spec's table has no range code; SIZE_INVALID ("length did not match") is nearest.
            return Err(ApiError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "range {} is outside the blob's {} bytes",
                    range_header.unwrap_or(""),
                    info.size
                ),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(header::CONTENT_RANGE, hv(format!("bytes */{}", info.size))));
        }
    };
    let len = range.map_or(info.size, |r| r.len());
    let builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(reg.read_blob(&info, range).await?)
    };
    Ok(builder.body(body).unwrap_or_default())
}

pub(crate) async fn delete(reg: &Registry, name: &RepoName, digest: &Digest) -> ApiResult {
    reg.delete_blob(name, digest).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |s, n| parse_range(Some(s), n);
        assert_eq!(
            p("bytes=0-9", 100),
            RangeRequest::Part(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            p("bytes=90-", 100),
            RangeRequest::Part(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            p("bytes=90-1000", 100),
            RangeRequest::Part(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            p("bytes=-10", 100),
            RangeRequest::Part(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            p("bytes=-1000", 100),
            RangeRequest::Part(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(p("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=0-1,5-6", 100), RangeRequest::Whole);
        assert_eq!(p("bytes=9-1", 100), RangeRequest::Whole);
        assert_eq!(p("items=0-1", 100), RangeRequest::Whole);
        assert_eq!(parse_range(None, 100), RangeRequest::Whole);
    }
}
