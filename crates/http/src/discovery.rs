//! Content discovery: tag listing, the catalog, and the referrers API.

use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use berth_oci::media_type::OCI_INDEX;
use berth_oci::{Digest, ErrorCode, RepoName};
use berth_registry::{Page, Registry};
use serde_json::{Map, Value, json};

use crate::auth::{Auth, Caller};
use crate::error::{ApiError, ApiResult};
use crate::hv;
use crate::query::Query;

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// `n` and `last` from the query string.
fn paging(q: &Query) -> Result<(Option<u32>, Option<String>), ApiError> {
    let n = q
        .get("n")
        .map(|n| n.parse::<u32>())
        .transpose()
        .map_err(|_| {
            ApiError::new(ErrorCode::Unsupported, "n must be a non-negative integer")
                .with_status(StatusCode::BAD_REQUEST)
        })?;
    Ok((n, q.get("last").map(str::to_owned)))
}

/// A JSON listing page, with `Link: <…>; rel="next"` when more items follow.
fn page_response(path: &str, n: Option<u32>, page: &Page, body: Value) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if page.more
        && let Some(last) = page.items.last()
    {
        let n = n.unwrap_or(page.items.len() as u32);
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        builder = builder.header(
            header::LINK,
            hv(format!("<{path}?n={n}&last={last}>; rel=\"next\"")),
        );
    }
    builder.body(body.to_string().into()).unwrap_or_default()
}

pub(crate) async fn tags(reg: &Registry, name: &RepoName, req: &Parts) -> ApiResult {
    let (n, last) = paging(&Query::of(req))?;
    let page = reg.list_tags(name, last.as_deref(), n).await?;
    let body = json!({ "name": name.as_str(), "tags": page.items });
    Ok(page_response(
        &format!("/v2/{name}/tags/list"),
        n,
        &page,
        body,
    ))
}

/// `_catalog`, filtered to what the caller may pull. The `Link` follows the unfiltered
/// page, so paging still walks every repository exactly once.
pub(crate) async fn catalog(
    reg: &Registry,
    auth: &Auth,
    caller: &Caller,
    req: &Parts,
) -> ApiResult {
    let (n, last) = paging(&Query::of(req))?;
    let page = reg.catalog(last.as_deref(), n).await?;
    let lister = auth.lister(caller).await?;
    let mut visible = Vec::with_capacity(page.items.len());
    for name in &page.items {
        if let Ok(repo) = RepoName::parse(name)
            && auth.can_list(&lister, &repo).await?
        {
            visible.push(name.as_str());
        }
    }
    let body = json!({ "repositories": visible });
    Ok(page_response("/v2/_catalog", n, &page, body))
}

pub(crate) async fn referrers(
    reg: &Registry,
    name: &RepoName,
    digest: &Digest,
    req: &Parts,
) -> ApiResult {
    let q = Query::of(req);
    let filter = q.get("artifactType").filter(|t| !t.is_empty());
    let found = reg.referrers(name, digest, filter).await?;
    let manifests: Vec<Value> = found
        .into_iter()
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), r.media_type.into());
            d.insert("digest".into(), r.digest.as_str().into());
            d.insert("size".into(), r.size.into());
            if let Some(t) = r.artifact_type {
                d.insert("artifactType".into(), t.into());
            }
            if let Some(a) = r.annotations {
                d.insert("annotations".into(), Value::Object(a));
            }
            Value::Object(d)
        })
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        builder = builder.header(FILTERS_APPLIED, "artifactType");
    }
    Ok(builder.body(body.to_string().into()).unwrap_or_default())
}
