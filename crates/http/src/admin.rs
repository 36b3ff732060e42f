//! The admin JSON API (`/api/v1/…`) that `berth user|robot|namespace|member …` call.
//!
//! Accounts are managed by registry admins; a namespace's settings and members also by
//! that namespace's admins. In open mode (no accounts yet, loopback) anyone may call it,
//! and the first account created ends open mode.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use berth_oci::ErrorCode;
use berth_registry::access::{Actions, RepoPattern, RobotGrant, Role, Visibility};
use berth_registry::immutability::{ImmutabilityRule, TagPattern};
use berth_registry::service::rfc3339_ms;
use berth_registry::service::unix_now;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, json_response};

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/accounts", get(list_accounts))
        .route("/api/v1/users", post(add_user))
        .route("/api/v1/robots", post(add_robot))
        .route("/api/v1/accounts/{name}", delete(remove_account))
        .route("/api/v1/accounts/{name}/revoke", post(revoke))
        .route("/api/v1/users/{name}/password", put(set_password))
        .route(
            "/api/v1/users/{name}/tokens",
            post(add_access_token).get(list_access_tokens),
        )
        .route(
            "/api/v1/users/{name}/tokens/{token}/revoke",
            post(revoke_access_token),
        )
        .route("/api/v1/htpasswd", post(import_htpasswd))
        .route("/api/v1/tag-history", get(tag_history))
        .route("/api/v1/tag-restore", post(tag_restore))
        .route(
            "/api/v1/immutability-rules",
            get(list_immutability_rules).post(add_immutability_rule),
        )
        .route(
            "/api/v1/immutability-rules/{id}",
            delete(remove_immutability_rule),
        )
        .merge(crate::events_api::routes())
        .merge(crate::storage_api::routes())
        .route("/api/v1/namespaces", get(list_namespaces))
        .route("/api/v1/namespaces/{ns}", put(set_namespace))
        .route(
            "/api/v1/namespaces/{ns}/members/{account}",
            put(set_member).delete(remove_member),
        )
}

/// Who the caller is and whether they administer the registry (an extractor).
pub(crate) struct Admin {
    pub(crate) name: String,
    pub(crate) registry_admin: bool,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        admin_caller(state, parts).await
    }
}

/// A JSON request body of at most `MAX_BODY` bytes; anything else is a clear 400.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: for<'de> Deserialize<'de>> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, ApiError> {
        json_body(req.into_body()).await.map(JsonBody)
    }
}

/// Identifies the caller of an admin request; anonymous callers are refused unless open.
async fn admin_caller(state: &AppState, parts: &Parts) -> Result<Admin, ApiError> {
    let auth = &state.auth;
    let (name, registry_admin) = match auth.caller(parts).await? {
        Caller::Open => (String::new(), true),
        Caller::Account(a) => (a.name, a.registry_admin),
        Caller::Token(c) if !c.sub.is_empty() => {
            let admin = auth
                .accounts()
                .get(&c.sub)
                .await?
                .is_some_and(|r| r.registry_admin && r.active_at(unix_now()));
            (c.sub.clone(), admin)
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the admin API needs credentials: run `berth login` or send Basic credentials",
            ));
        }
    };
    Ok(Admin {
        name,
        registry_admin,
    })
}

pub(crate) fn require_registry_admin(who: &Admin) -> Result<(), ApiError> {
    if who.registry_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Denied,
            format!("{} is not a registry admin", who.name),
        ))
    }
}

/// Registry admins, and admins of `ns`, may change a namespace.
async fn require_namespace_admin(state: &AppState, who: &Admin, ns: &str) -> Result<(), ApiError> {
    require_role(state, who, ns, Role::Admin, || {
        format!("{} is not an admin of namespace {ns}", who.name)
    })
    .await
}

/// Passes registry admins, and accounts holding at least `least` in namespace `ns` (a
/// wildcard namespace is held by registry admins only); otherwise DENIED with `denial()`.
pub(crate) async fn require_role(
    state: &AppState,
    who: &Admin,
    ns: &str,
    least: Role,
    denial: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if who.registry_admin {
        return Ok(());
    }
    let role = match (
        ns.contains('*'),
        state.auth.accounts().get(&who.name).await?,
    ) {
        (false, Some(r)) => state.auth.accounts().role_in(ns, r.id).await?,
        _ => None,
    };
    if role.is_some_and(|r| r >= least) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Denied, denial()))
    }
}

async fn json_body<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(ErrorCode::Unsupported, "request body too large")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// A 400 for an admin request with a bad argument.
pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

async fn whoami(State(state): State<AppState>, who: Admin) -> ApiResult {
    let body = json!({
        "name": who.name,
        "registry_admin": who.registry_admin,
        "open": state.auth.is_open(),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn list_accounts(State(state): State<AppState>, who: Admin) -> ApiResult {
    require_registry_admin(&who)?;
    let accounts: Vec<_> = state
        .auth
        .accounts()
        .list()
        .await?
        .into_iter()
        .map(|a| {
            json!({
                "name": a.name,
                "kind": a.kind.as_str(),
                "registry_admin": a.registry_admin,
                "created_at": a.created_at,
                "expires_at": a.expires_at,
                "revoked_at": a.revoked_at,
                "grants": a.grants.iter().map(|g| json!({
                    "repositories": g.pattern.as_str(),
                    "actions": g.actions.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "accounts": accounts }).to_string(),
    ))
}

/// `POST /api/v1/users` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    registry_admin: bool,
}

async fn add_user(
    State(state): State<AppState>,
    who: Admin,
    JsonBody(new): JsonBody<NewUser>,
) -> ApiResult {
    require_registry_admin(&who)?;
    let account = state
        .auth
        .accounts()
        .add_user(&new.name, &new.password, new.registry_admin)
        .await?;
    state.auth.close();
    let body = json!({ "name": account.name, "kind": "user" });
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

/// One grant in `POST /api/v1/robots`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    repositories: String,
    actions: Vec<String>,
}

/// `POST /api/v1/robots` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRobot {
    name: String,
    grants: Vec<GrantBody>,
    /// Unix seconds after which the robot stops authenticating.
    expires_at: Option<i64>,
}

async fn add_robot(
    State(state): State<AppState>,
    who: Admin,
    JsonBody(new): JsonBody<NewRobot>,
) -> ApiResult {
    require_registry_admin(&who)?;
    let mut grants = Vec::with_capacity(new.grants.len());
    for g in &new.grants {
        let pattern = RepoPattern::parse(&g.repositories).map_err(bad_request)?;
        let actions = Actions::parse_list(&g.actions.join(","));
        if actions.is_empty() {
            return Err(bad_request(format!(
                "grant on {} has no known action: use pull, push or delete",
                g.repositories
            )));
        }
        grants.push(RobotGrant { pattern, actions });
    }
    let (account, secret) = state
        .auth
        .accounts()
        .add_robot(&new.name, grants, new.expires_at)
        .await?;
    state.auth.close();
    let body = json!({ "name": account.name, "kind": "robot", "secret": secret });
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

async fn revoke(State(state): State<AppState>, Path(name): Path<String>, who: Admin) -> ApiResult {
    require_registry_admin(&who)?;
    state.auth.accounts().revoke(&name).await?;
    state.auth.forget_credentials();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/namespaces/{ns}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceBody {
    visibility: String,
}

async fn set_namespace(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    who: Admin,
    JsonBody(b): JsonBody<NamespaceBody>,
) -> ApiResult {
    require_namespace_admin(&state, &who, &ns).await?;
    let visibility = match b.visibility.as_str() {
        "public" => Visibility::Public,
        "private" => Visibility::Private,
        other => {
            return Err(bad_request(format!(
                "visibility {other:?}: use public or private"
            )));
        }
    };
    state.auth.accounts().set_namespace(&ns, visibility).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/namespaces/{ns}/members/{account}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    role: String,
}

async fn set_member(
    State(state): State<AppState>,
    Path((ns, account)): Path<(String, String)>,
    who: Admin,
    JsonBody(b): JsonBody<MemberBody>,
) -> ApiResult {
    require_namespace_admin(&state, &who, &ns).await?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        bad_request(format!(
            "role {:?}: use reader, writer, maintainer or admin",
            b.role
        ))
    })?;
    state
        .auth
        .accounts()
        .set_member(&ns, &account, role)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_account(
    State(state): State<AppState>,
    Path(name): Path<String>,
    who: Admin,
) -> ApiResult {
    require_registry_admin(&who)?;
    state.auth.accounts().remove(&name).await?;
    state.auth.forget_credentials();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/users/{name}/password` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

/// Registry admins may set anyone's password; users their own.
async fn set_password(
    State(state): State<AppState>,
    Path(name): Path<String>,
    who: Admin,
    JsonBody(b): JsonBody<PasswordBody>,
) -> ApiResult {
    require_self_or_admin(&who, &name)?;
    state
        .auth
        .accounts()
        .set_password(&name, &b.password)
        .await?;
    state.auth.forget_credentials();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/htpasswd`: the body is an htpasswd file (bcrypt entries).
async fn import_htpasswd(State(state): State<AppState>, who: Admin, body: Body) -> ApiResult {
    require_registry_admin(&who)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY * 16)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unsupported,
                "htpasswd file too large (1 MiB at most)",
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| bad_request("htpasswd file is not UTF-8"))?;
    let report = state.auth.accounts().import_htpasswd(text).await?;
    if !report.created.is_empty() {
        state.auth.close();
    }
    let body = json!({
        "created": report.created,
        "existing": report.existing,
        "refused": report.refused,
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn list_namespaces(State(state): State<AppState>, who: Admin) -> ApiResult {
    require_registry_admin(&who)?;
    let namespaces: Vec<_> = state
        .auth
        .accounts()
        .namespaces()
        .await?
        .into_iter()
        .map(|(ns, members)| {
            json!({
                "name": ns.name,
                "visibility": match ns.visibility {
                    Visibility::Public => "public",
                    Visibility::Private => "private",
                },
                "members": members.iter().map(|(name, role)| json!({
                    "account": name,
                    "role": role.as_str(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "namespaces": namespaces }).to_string(),
    ))
}

async fn remove_member(
    State(state): State<AppState>,
    Path((ns, account)): Path<(String, String)>,
    who: Admin,
) -> ApiResult {
    require_namespace_admin(&state, &who, &ns).await?;
    state.auth.accounts().remove_member(&ns, &account).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Registry admins may act on anyone's behalf; users on their own.
fn require_self_or_admin(who: &Admin, name: &str) -> Result<(), ApiError> {
    if who.name == name {
        Ok(())
    } else {
        require_registry_admin(who)
    }
}

/// `POST /api/v1/users/{name}/tokens` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccessTokenBody {
    name: String,
    /// Unix seconds after which the token stops working.
    expires_at: Option<i64>,
}

async fn add_access_token(
    State(state): State<AppState>,
    Path(owner): Path<String>,
    who: Admin,
    JsonBody(b): JsonBody<NewAccessTokenBody>,
) -> ApiResult {
    require_self_or_admin(&who, &owner)?;
    let secret = state
        .auth
        .accounts()
        .add_access_token(&owner, &b.name, b.expires_at)
        .await?;
    let body = json!({ "user": owner, "name": b.name, "secret": secret });
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

async fn list_access_tokens(
    State(state): State<AppState>,
    Path(owner): Path<String>,
    who: Admin,
) -> ApiResult {
    require_self_or_admin(&who, &owner)?;
    let tokens: Vec<_> = state
        .auth
        .accounts()
        .access_tokens(&owner)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "name": t.name,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "revoked_at": t.revoked_at,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "user": owner, "tokens": tokens }).to_string(),
    ))
}

async fn revoke_access_token(
    State(state): State<AppState>,
    Path((owner, token)): Path<(String, String)>,
    who: Admin,
) -> ApiResult {
    require_self_or_admin(&who, &owner)?;
    state
        .auth
        .accounts()
        .revoke_access_token(&owner, &token)
        .await?;
    state.auth.forget_credentials();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Most events `GET /api/v1/tag-history` returns (newest first).
const HISTORY_PAGE: u32 = 1000;

/// `GET /api/v1/tag-history?repository=R&tag=T[&at=RFC3339]`: a tag's moves, newest first,
/// or which digest it pointed to at a moment. Needs pull on the repository.
async fn tag_history(State(state): State<AppState>, req: Request) -> ApiResult {
    use berth_oci::{RepoName, Tag};
    let (parts, _) = req.into_parts();
    let q = crate::query::Query::of(&parts);
    let repo = RepoName::parse(q.get("repository").unwrap_or(""))
        .map_err(berth_registry::RegistryError::from)?;
    let tag =
        Tag::parse(q.get("tag").unwrap_or("")).map_err(berth_registry::RegistryError::from)?;
    let caller = state.auth.caller(&parts).await?;
    let need = crate::auth::Required::Repo(repo.clone(), berth_registry::access::Action::Pull);
    state.auth.authorize_account(&caller, &need, &parts).await?;
    if let Some(at) = q.get("at") {
        let when = humantime::parse_rfc3339_weak(at).map_err(|e| {
            bad_request(format!(
                "at={at:?} is not an RFC 3339 time ({e}), e.g. 2026-11-24T01:40:00Z"
            ))
        })?;
        let at_ms = berth_registry::service::unix_ms(when);
        let digest = state.registry.tag_at(&repo, &tag, at_ms).await?;
        let body = json!({
            "repository": repo.as_str(),
            "tag": tag.as_str(),
            "at": rfc3339_ms(at_ms),
            "digest": digest.map(|d| d.to_string()),
        });
        return Ok(json_response(StatusCode::OK, body.to_string()));
    }
    let events: Vec<_> = state
        .registry
        .tag_history(&repo, &tag, HISTORY_PAGE)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "at": rfc3339_ms(e.at_ms),
                "previous": e.previous.map(|d| d.to_string()),
                "new": e.new.map(|d| d.to_string()),
                "account": e.actor.account,
                "client": e.actor.client,
                "user_agent": e.actor.user_agent,
            })
        })
        .collect();
    let body = json!({ "repository": repo.as_str(), "tag": tag.as_str(), "events": events });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Registry admins, and maintainers (or admins) of the namespace a pattern names literally,
/// may manage the immutability rules of that pattern.
async fn require_rule_manager(
    state: &AppState,
    who: &Admin,
    pattern: &str,
) -> Result<(), ApiError> {
    let ns = pattern.split('/').next().unwrap_or("");
    require_role(state, who, ns, Role::Maintainer, || {
        format!(
            "{} may not manage immutability rules for {pattern}: maintainers of its namespace or registry admins may",
            who.name
        )
    })
    .await
}

fn rule_json(r: &ImmutabilityRule) -> serde_json::Value {
    fn names(v: &[TagPattern]) -> Vec<&str> {
        v.iter().map(TagPattern::as_str).collect()
    }
    json!({
        "id": r.id,
        "repositories": r.repositories.as_str(),
        "tags": names(&r.tags),
        "except": names(&r.except),
        "description": r.to_string(),
    })
}

async fn list_immutability_rules(State(state): State<AppState>, _who: Admin) -> ApiResult {
    let rules: Vec<_> = state
        .registry
        .immutability_rules()
        .await?
        .iter()
        .map(rule_json)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "rules": rules }).to_string(),
    ))
}

/// `POST /api/v1/immutability-rules` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    repositories: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

async fn add_immutability_rule(
    State(state): State<AppState>,
    who: Admin,
    JsonBody(b): JsonBody<RuleBody>,
) -> ApiResult {
    require_rule_manager(&state, &who, &b.repositories).await?;
    let patterns = |v: &[String]| -> Result<Vec<TagPattern>, ApiError> {
        v.iter()
            .map(|p| TagPattern::parse(p).map_err(bad_request))
            .collect()
    };
    let rule = ImmutabilityRule {
        id: 0,
        repositories: RepoPattern::parse(&b.repositories).map_err(bad_request)?,
        tags: patterns(&b.tags)?,
        except: patterns(&b.except)?,
    };
    let rule = state.registry.add_immutability_rule(rule).await?;
    Ok(json_response(
        StatusCode::CREATED,
        rule_json(&rule).to_string(),
    ))
}

async fn remove_immutability_rule(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    who: Admin,
) -> ApiResult {
    let rules = state.registry.immutability_rules().await?;
    let rule = rules.iter().find(|r| r.id == id).ok_or_else(|| {
        ApiError::from(berth_registry::RegistryError::NotFound(format!(
            "no immutability rule #{id}"
        )))
    })?;
    require_rule_manager(&state, &who, rule.repositories.as_str()).await?;
    state.registry.remove_immutability_rule(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/tag-restore` body: `to` a digest, or `previous: true`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    repository: String,
    tag: String,
    to: Option<String>,
    #[serde(default)]
    previous: bool,
}

/// Moves a tag back (needs push on the repository, as any tag move does).
async fn tag_restore(State(state): State<AppState>, req: Request) -> ApiResult {
    use berth_oci::{Digest, RepoName, Tag};
    use berth_registry::{RegistryError, RestoreTarget};
    let (parts, body) = req.into_parts();
    let b: RestoreBody = json_body(body).await?;
    let repo = RepoName::parse(&b.repository).map_err(RegistryError::from)?;
    let tag = Tag::parse(&b.tag).map_err(RegistryError::from)?;
    let target = match (b.to.as_deref(), b.previous) {
        (Some(d), false) => RestoreTarget::Digest(
            d.parse::<Digest>()
                .map_err(|e| RegistryError::DigestInvalid(e.to_string()))?,
        ),
        (None, true) => RestoreTarget::Previous,
        _ => {
            return Err(bad_request(
                "give exactly one of `to` (a digest) and `previous`",
            ));
        }
    };
    let caller = state.auth.caller(&parts).await?;
    let need = crate::auth::Required::Repo(repo.clone(), berth_registry::access::Action::Push);
    state.auth.authorize_account(&caller, &need, &parts).await?;
    let actor = state.auth.actor(&caller, &parts);
    let digest = state
        .registry
        .restore_tag(&repo, &tag, target, &actor)
        .await?;
    let body =
        json!({ "repository": repo.as_str(), "tag": tag.as_str(), "digest": digest.to_string() });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
