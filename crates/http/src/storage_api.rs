//! The admin API of storage health: garbage collection on demand (`POST /api/v1/gc`) and
//! lifecycle policies (`/api/v1/lifecycle`), quotas (`/api/v1/quotas/{ns}`) and usage
//! (`/api/v1/usage`).

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use berth_oci::{Digest, RepoName};
use berth_registry::RegistryError;
use berth_registry::access::{Action, Role};
use berth_registry::gc::GcOptions;
use berth_registry::quota::{format_size, parse_size};
use berth_registry::retention::PlannedExpiry;
use berth_registry::service::{rfc3339_ms, unix_ms, unix_now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{Admin, JsonBody, bad_request, require_registry_admin, require_role};
use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::{AppState, json_response};

/// The routes of this module, merged into the admin API.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/gc", post(collect_garbage))
        .route(
            "/api/v1/lifecycle",
            get(get_policy).put(put_policy).delete(remove_policy),
        )
        .route("/api/v1/lifecycle/preview", post(preview))
        .route("/api/v1/lifecycle/apply", post(apply))
        .route(
            "/api/v1/quotas/{namespace}",
            get(get_quota).put(set_quota).delete(remove_quota),
        )
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/manifests", axum::routing::delete(delete_manifest))
}

/// `DELETE /api/v1/manifests?repository=R&digest=D[&cascade=true]`: deletes a manifest by
/// digest; with `cascade`, also its referrers and the index children only it kept. Needs
/// delete on the repository.
async fn delete_manifest(State(state): State<AppState>, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let q = Query::of(&parts);
    let repo = RepoName::parse(q.get("repository").unwrap_or("")).map_err(RegistryError::from)?;
    let digest: Digest = q
        .get("digest")
        .unwrap_or("")
        .parse()
        .map_err(|e| bad_request(format!("digest: {e}")))?;
    let caller = state.auth.caller(&parts).await?;
    let need = crate::auth::Required::Repo(repo.clone(), Action::Delete);
    state.auth.authorize_account(&caller, &need, &parts).await?;
    let actor = state.auth.actor(&caller, &parts);
    let removed = if q.get("cascade") == Some("true") {
        state
            .registry
            .delete_cascade(&repo, &digest, &actor)
            .await?
    } else {
        state
            .registry
            .delete_manifest(&repo, &berth_oci::Reference::Digest(digest.clone()), &actor)
            .await?;
        vec![digest]
    };
    let removed: Vec<&str> = removed.iter().map(Digest::as_str).collect();
    let body = json!({ "repository": repo.as_str(), "removed": removed });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Maintainers of `namespace` (and registry admins) may read its quota and usage.
async fn require_maintainer(
    state: &AppState,
    who: &Admin,
    namespace: &str,
) -> Result<(), ApiError> {
    require_role(state, who, namespace, Role::Maintainer, || {
        format!("{} may not see the usage of namespace {namespace}: maintainers of it or registry admins may", who.name)
    })
    .await
}

/// `PUT /api/v1/quotas/{namespace}` body: the limit as bytes or a size text (`"10GiB"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    limit: Value,
}

fn usage_json(u: &berth_registry::quota::NamespaceUsage) -> Value {
    json!({
        "namespace": u.namespace,
        "bytes": u.bytes,
        "used": format_size(u.bytes),
        "limit": u.limit,
        "limit_text": u.limit.map(format_size),
    })
}

/// `PUT /api/v1/quotas/{namespace}`: sets the limit (registry admins).
async fn set_quota(
    State(state): State<AppState>,
    who: Admin,
    Path(namespace): Path<String>,
    JsonBody(body): JsonBody<QuotaBody>,
) -> ApiResult {
    require_registry_admin(&who)?;
    let limit = match &body.limit {
        Value::Number(n) => n
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad_request("limit must be a positive number of bytes"))?,
        Value::String(text) => parse_size(text).map_err(bad_request)?,
        _ => {
            return Err(bad_request(
                "limit must be a number of bytes or a size such as \"10GiB\"",
            ));
        }
    };
    state.registry.set_quota(&namespace, limit).await?;
    let u = state.registry.namespace_usage(&namespace).await?;
    Ok(json_response(StatusCode::OK, usage_json(&u).to_string()))
}

/// `GET /api/v1/quotas/{namespace}`: the limit and what is used.
async fn get_quota(
    State(state): State<AppState>,
    who: Admin,
    Path(namespace): Path<String>,
) -> ApiResult {
    require_maintainer(&state, &who, &namespace).await?;
    let u = state.registry.namespace_usage(&namespace).await?;
    Ok(json_response(StatusCode::OK, usage_json(&u).to_string()))
}

/// `DELETE /api/v1/quotas/{namespace}` (registry admins).
async fn remove_quota(
    State(state): State<AppState>,
    who: Admin,
    Path(namespace): Path<String>,
) -> ApiResult {
    require_registry_admin(&who)?;
    state.registry.remove_quota(&namespace).await?;
    Ok(json_response(StatusCode::NO_CONTENT, ""))
}

/// `GET /api/v1/usage[?namespace=N]`: every namespace (registry admins), or one namespace
/// with its repositories (its maintainers too).
async fn usage(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let body = match Query::of(&parts).get("namespace") {
        Some(ns) => {
            require_maintainer(&state, &who, ns).await?;
            let mut v = usage_json(&state.registry.namespace_usage(ns).await?);
            v["repositories"] = state
                .registry
                .repository_usage(ns)
                .await?
                .iter()
                .map(|r| json!({"repository": r.repository, "bytes": r.bytes, "used": format_size(r.bytes)}))
                .collect();
            v
        }
        None => {
            require_registry_admin(&who)?;
            let all: Vec<Value> = state
                .registry
                .all_usage()
                .await?
                .iter()
                .map(usage_json)
                .collect();
            json!({ "namespaces": all })
        }
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Largest lifecycle policy accepted (ECR allows 30 KiB).
const MAX_POLICY: usize = 64 * 1024;

/// The `scope` (repository or namespace) of a lifecycle request, after checking the caller
/// maintains its namespace (or administers the registry).
async fn policy_scope(state: &AppState, who: &Admin, parts: &Parts) -> Result<RepoName, ApiError> {
    let q = Query::of(parts);
    let raw = q.get("scope").unwrap_or("");
    let scope = RepoName::parse(raw).map_err(|e| {
        bad_request(format!(
            "scope={raw:?} must be a repository or namespace name: {e}"
        ))
    })?;
    let ns = berth_registry::access::namespace_of(&scope);
    require_role(state, who, ns, Role::Maintainer, || {
        format!(
            "{} may not manage lifecycle policies of {scope}: maintainers of namespace {ns} or registry admins may",
            who.name
        )
    })
    .await?;
    Ok(scope)
}

/// The moment to evaluate at: `at` (RFC 3339) or now.
fn evaluation_time(parts: &Parts) -> Result<i64, ApiError> {
    match Query::of(parts).get("at") {
        None => Ok(unix_now_ms()),
        Some(at) => humantime::parse_rfc3339_weak(at).map(unix_ms).map_err(|e| {
            bad_request(format!(
                "at={at:?} is not an RFC 3339 time ({e}), e.g. 2026-12-24T00:00:00Z"
            ))
        }),
    }
}

/// `GET /api/v1/lifecycle?scope=S`: the policy exactly as it was put.
async fn get_policy(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let scope = policy_scope(&state, &who, &parts).await?;
    let json = state.registry.lifecycle_policy(&scope).await?;
    Ok(json_response(StatusCode::OK, json))
}

/// `PUT /api/v1/lifecycle?scope=S` with an ECR lifecycle policy as the body: validated
/// (the error names the offending rule), then stored verbatim.
async fn put_policy(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let scope = policy_scope(&state, &who, &parts).await?;
    let bytes = axum::body::to_bytes(body, MAX_POLICY)
        .await
        .map_err(|_| bad_request(format!("a lifecycle policy is at most {MAX_POLICY} bytes")))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| bad_request("a lifecycle policy is UTF-8 JSON"))?;
    let policy = state.registry.put_lifecycle_policy(&scope, text).await?;
    let rules: Vec<String> = policy.rules().iter().map(ToString::to_string).collect();
    let body = json!({ "scope": scope.as_str(), "rules": rules });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `DELETE /api/v1/lifecycle?scope=S`.
async fn remove_policy(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let scope = policy_scope(&state, &who, &parts).await?;
    state.registry.remove_lifecycle_policy(&scope).await?;
    Ok(json_response(StatusCode::NO_CONTENT, ""))
}

fn planned_json(p: &PlannedExpiry) -> Value {
    json!({
        "repository": p.repository.as_str(),
        "digest": p.expiry.digest,
        "tags": p.expiry.tags,
        "rule_priority": p.expiry.rule_priority,
        "reason": p.expiry.reason,
    })
}

/// `POST /api/v1/lifecycle/preview?scope=S[&at=T]`: exactly what would expire (now, or at
/// `at`) and why.
async fn preview(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let scope = policy_scope(&state, &who, &parts).await?;
    let at = evaluation_time(&parts)?;
    let planned = state.registry.lifecycle_preview(&scope, at).await?;
    let body = json!({
        "scope": scope.as_str(),
        "at": rfc3339_ms(at),
        "expiries": planned.iter().map(planned_json).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `POST /api/v1/lifecycle/apply?scope=S[&at=T]`: evaluates and expires; answers what was
/// deleted, each image with the children and referrers only it kept.
async fn apply(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let scope = policy_scope(&state, &who, &parts).await?;
    let at = evaluation_time(&parts)?;
    let actor = state.auth.actor(&state.auth.caller(&parts).await?, &parts);
    let expired = state.registry.lifecycle_apply(&scope, at, &actor).await?;
    let expired: Vec<Value> = expired
        .iter()
        .map(|e| {
            let mut v = planned_json(&e.planned);
            v["removed"] = json!(e.removed.iter().map(Digest::as_str).collect::<Vec<_>>());
            v
        })
        .collect();
    let body = json!({ "scope": scope.as_str(), "at": rfc3339_ms(at), "expired": expired });
    Ok(json_response(StatusCode::OK, body.to_string()))
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
