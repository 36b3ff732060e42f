//! The admin API of storage health: garbage collection on demand (`POST /api/v1/gc`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use berth_registry::gc::GcOptions;
use serde::Deserialize;
use serde_json::json;

use crate::admin::{Admin, JsonBody, bad_request, require_registry_admin};
use crate::error::ApiResult;
use crate::{AppState, json_response};

/// The routes of this module, merged into the admin API.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/gc", post(collect_garbage))
}

/// `POST /api/v1/gc` body; every field is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GcBody {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    delete_untagged: bool,
    /// A duration (`0s`, `30m`, `1h`); default 1 h.
    #[serde(default)]
    grace: Option<String>,
}

/// `POST /api/v1/gc`: one garbage collection run now (registry admins); answers what was
/// removed and the bytes freed.
async fn collect_garbage(
    State(state): State<AppState>,
    who: Admin,
    JsonBody(body): JsonBody<GcBody>,
) -> ApiResult {
    require_registry_admin(&who)?;
    let grace = match body.grace.as_deref() {
        None => GcOptions::default().grace,
        Some(g) => humantime::parse_duration(g).map_err(|e| {
            bad_request(format!(
                "grace={g:?} is not a duration ({e}), e.g. 0s, 30m, 1h"
            ))
        })?,
    };
    let opts = GcOptions {
        grace,
        dry_run: body.dry_run,
        delete_untagged: body.delete_untagged,
    };
    let actor = berth_registry::Actor {
        account: Some(who.name.clone()).filter(|n| !n.is_empty()),
        client: None,
        user_agent: Some("berth gc".to_owned()),
    };
    let r = state.registry.collect_garbage(&opts, &actor).await?;
    let manifests: Vec<_> = r
        .manifests
        .iter()
        .map(|(repo, digest)| json!({ "repository": repo.as_str(), "digest": digest.as_str() }))
        .collect();
    let body = json!({
        "dry_run": r.dry_run,
        "grace_secs": grace.as_secs(),
        "manifests": manifests,
        "blobs": r.blobs,
        "bytes": r.bytes,
        "elapsed_ms": u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
