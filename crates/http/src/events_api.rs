//! The admin API of the event stream: pull records (`/api/v1/tag-pulls`), the audit log
//! (`/api/v1/audit`) and webhook subscriptions (`/api/v1/webhooks`).

use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get};
use berth_oci::{ErrorCode, RepoName, Tag};
use berth_registry::RegistryError;
use berth_registry::access::{Action, Role};
use berth_registry::events::{AuditQuery, ClientPulls, EventKind};
use berth_registry::service::{rfc3339_ms, unix_ms};
use berth_registry::webhooks::{NewWebhook, Webhook, WebhookFormat, berth_payload};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{Admin, JsonBody, bad_request, require_role};
use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::{AppState, json_response};

/// Most audit events one page returns.
const MAX_AUDIT_PAGE: u32 = 1000;
/// Most delivery records one page returns.
const MAX_DELIVERIES_PAGE: u32 = 1000;

/// The routes of this module, merged into the admin API.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tag-pulls", get(tag_pulls))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/webhooks", get(list_webhooks).post(add_webhook))
        .route("/api/v1/webhooks/{id}", delete(remove_webhook))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
}

/// A `since`/`until` value: an RFC 3339 time, or a duration back from now (`2h`, `7d`).
fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(unix_ms(t));
    }
    match humantime::parse_duration(value) {
        Ok(d) => Ok(unix_ms(
            SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )),
        Err(_) => Err(bad_request(format!(
            "{name}={value:?} is neither a duration back from now (30m, 2h, 7d) nor an RFC 3339 time (2026-11-24T01:40:00Z)"
        ))),
    }
}

/// A positive page size, at most `max`.
fn parse_limit(q: &Query, default: u32, max: u32) -> Result<u32, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_request(format!(
                "limit={v:?} must be a number from 1 to {max}"
            ))),
        },
    }
}

/// `GET /api/v1/tag-pulls?repository=R&tag=T[&since=2h]`: which digests were served for
/// pulls of a tag, to which clients, how often. Needs pull on the repository.
async fn tag_pulls(State(state): State<AppState>, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let q = Query::of(&parts);
    let repo = RepoName::parse(q.get("repository").unwrap_or("")).map_err(RegistryError::from)?;
    let tag = Tag::parse(q.get("tag").unwrap_or("")).map_err(RegistryError::from)?;
    authorize_pull(&state, &parts, &repo).await?;
    let since_ms = parse_time("since", q.get("since").unwrap_or("24h"))?;
    let rows = state.registry.tag_pulls(&repo, &tag, since_ms).await?;
    let body = json!({
        "repository": repo.as_str(),
        "tag": tag.as_str(),
        "since": rfc3339_ms(since_ms),
        "digests": pulls_by_digest(&rows),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn authorize_pull(state: &AppState, parts: &Parts, repo: &RepoName) -> Result<(), ApiError> {
    let caller = state.auth.caller(parts).await?;
    let need = crate::auth::Required::Repo(repo.clone(), Action::Pull);
    state.auth.authorize_account(&caller, &need, parts).await
}

/// Groups per-client rows by digest, the digest pulled most recently first.
fn pulls_by_digest(rows: &[ClientPulls]) -> Vec<Value> {
    let mut digests: Vec<&str> = Vec::new();
    for r in rows {
        if !digests.contains(&r.digest.as_str()) {
            digests.push(&r.digest);
        }
    }
    digests
        .into_iter()
        .map(|digest| {
            let clients: Vec<&ClientPulls> = rows.iter().filter(|r| r.digest == digest).collect();
            let pulls: u64 = clients.iter().map(|c| c.count).sum();
            let first = clients.iter().map(|c| c.first_ms).min().unwrap_or(0);
            let last = clients.iter().map(|c| c.last_ms).max().unwrap_or(0);
            json!({
                "digest": digest,
                "pulls": pulls,
                "first": rfc3339_ms(first),
                "last": rfc3339_ms(last),
                "clients": clients.iter().map(|c| json!({
                    "client": c.client,
                    "pulls": c.count,
                    "account": c.account,
                    "user_agent": c.user_agent,
                    "first": rfc3339_ms(c.first_ms),
                    "last": rfc3339_ms(c.last_ms),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// `GET /api/v1/audit?since&until&namespace&repository&account&kind…&limit&before`: the
/// event stream, newest first. Registry admins see everything; maintainers of a namespace
/// see that namespace's events (they must name it, or a repository in it).
async fn audit(State(state): State<AppState>, who: Admin, req: Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    let q = Query::of(&parts);
    let mut query = AuditQuery {
        since_ms: q.get("since").map(|v| parse_time("since", v)).transpose()?,
        until_ms: q.get("until").map(|v| parse_time("until", v)).transpose()?,
        namespace: q.get("namespace").map(str::to_owned),
        repository: q.get("repository").map(str::to_owned),
        account: q.get("account").map(str::to_owned),
        kinds: q
            .all("kind")
            .flat_map(|k| k.split(','))
            .filter(|k| !k.is_empty())
            .map(EventKind::parse)
            .collect::<Result<_, _>>()
            .map_err(bad_request)?,
        before_id: match q.get("before") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| bad_request(format!("before={v:?} must be an event id")))?,
            ),
        },
        limit: parse_limit(&q, 100, MAX_AUDIT_PAGE)?,
    };
    if !who.registry_admin {
        let ns = query
            .namespace
            .clone()
            .or_else(|| query.repository.as_deref().map(|r| r.split('/').next().unwrap_or(r).to_owned()))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Denied,
                    format!("{} may read the audit log of namespaces they maintain only: add --namespace", who.name),
                )
            })?;
        require_role(&state, &who, &ns, Role::Maintainer, || {
            format!("{} may not read the audit log of namespace {ns}: maintainers of it or registry admins may", who.name)
        })
        .await?;
        query.namespace = Some(ns);
    }
    // One more than the page, to know whether there is a next page.
    let page = query.limit as usize;
    query.limit += 1;
    let mut events = state.registry.audit(&query).await?;
    let next_before = if events.len() > page {
        events.truncate(page);
        events.last().map(|e| e.id)
    } else {
        None
    };
    let events: Vec<Value> = events.iter().map(berth_payload).collect();
    let body = json!({ "events": events, "next_before": next_before });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `POST /api/v1/webhooks` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

fn webhook_json(h: &Webhook) -> Value {
    json!({
        "id": h.id,
        "url": h.url,
        "namespace": h.namespace,
        "events": h.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "format": h.format.as_str(),
        "created": rfc3339_ms(h.created_ms),
        "pending_since_event": h.cursor,
        "failures": h.failures,
        "next_attempt": (h.failures > 0).then(|| rfc3339_ms(h.next_attempt_ms)),
    })
}

/// Registry admins manage every subscription; maintainers of a namespace manage that
/// namespace's subscriptions.
async fn require_webhook_manager(
    state: &AppState,
    who: &Admin,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let ns = namespace.unwrap_or("*");
    require_role(state, who, ns, Role::Maintainer, || match namespace {
        Some(ns) => format!("{} may not manage webhooks of namespace {ns}: maintainers of it or registry admins may", who.name),
        None => format!("{} may not manage registry-wide webhooks: registry admins may", who.name),
    })
    .await
}

/// `POST /api/v1/webhooks`: subscribes a URL to events; the answer carries the signing
/// secret, shown this once.
async fn add_webhook(
    State(state): State<AppState>,
    who: Admin,
    JsonBody(body): JsonBody<WebhookBody>,
) -> ApiResult {
    if let Some(ns) = &body.namespace
        && (ns.is_empty() || ns.contains('/') || ns.contains('*'))
    {
        return Err(bad_request(format!(
            "namespace {ns:?} must be one path segment, e.g. payments"
        )));
    }
    require_webhook_manager(&state, &who, body.namespace.as_deref()).await?;
    let kinds = body
        .events
        .iter()
        .map(|k| EventKind::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_request)?;
    let format =
        WebhookFormat::parse(body.format.as_deref().unwrap_or("berth")).map_err(bad_request)?;
    let secret = match body.secret {
        Some(s) => s,
        None => berth_registry::webhooks::new_secret()?,
    };
    let hook = state
        .registry
        .add_webhook(&NewWebhook {
            url: body.url,
            namespace: body.namespace,
            kinds,
            format,
            secret,
        })
        .await?;
    let mut answer = webhook_json(&hook);
    answer["secret"] = json!(hook.secret);
    Ok(json_response(StatusCode::CREATED, answer.to_string()))
}

/// `GET /api/v1/webhooks`: the subscriptions the caller may manage (without secrets).
async fn list_webhooks(State(state): State<AppState>, who: Admin) -> ApiResult {
    let mut visible = Vec::new();
    for hook in state.registry.webhooks().await? {
        if require_webhook_manager(&state, &who, hook.namespace.as_deref())
            .await
            .is_ok()
        {
            visible.push(webhook_json(&hook));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        json!({ "webhooks": visible }).to_string(),
    ))
}

/// The subscription `id`, if the caller may manage it.
async fn managed_webhook(state: &AppState, who: &Admin, id: i64) -> Result<Webhook, ApiError> {
    let hook = state
        .registry
        .webhooks()
        .await?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| {
            ApiError::from(RegistryError::NotFound(format!("there is no webhook {id}")))
        })?;
    require_webhook_manager(state, who, hook.namespace.as_deref()).await?;
    Ok(hook)
}

/// `DELETE /api/v1/webhooks/{id}`: unsubscribes (its delivery log goes with it).
async fn remove_webhook(
    State(state): State<AppState>,
    who: Admin,
    Path(id): Path<i64>,
) -> ApiResult {
    managed_webhook(&state, &who, id).await?;
    state.registry.remove_webhook(id).await?;
    Ok(json_response(StatusCode::NO_CONTENT, ""))
}

/// `GET /api/v1/webhooks/{id}/deliveries[?limit=N]`: every attempt, newest first.
async fn deliveries(
    State(state): State<AppState>,
    who: Admin,
    Path(id): Path<i64>,
    req: Request,
) -> ApiResult {
    managed_webhook(&state, &who, id).await?;
    let (parts, _) = req.into_parts();
    let limit = parse_limit(&Query::of(&parts), 50, MAX_DELIVERIES_PAGE)?;
    let records: Vec<Value> = state
        .registry
        .webhook_deliveries(id, limit)
        .await?
        .iter()
        .map(|d| {
            json!({
                "event_id": d.event_id,
                "kind": d.kind.as_str(),
                "attempt": d.attempt,
                "at": rfc3339_ms(d.at_ms),
                "status": d.status,
                "error": d.error,
                "delivered": d.delivered,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "deliveries": records }).to_string(),
    ))
}
