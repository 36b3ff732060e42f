//! The built-in token service: `GET /token` (docker's token flow, Basic credentials or
//! anonymous) and `POST /token` (OAuth2 `password` and `refresh_token` grants, which docker
//! and containerd use). A token carries only what was asked for *and* is allowed.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use berth_oci::{ErrorCode, RepoName};
use berth_registry::access::{Actions, Principal};
use serde_json::json;

use crate::auth::{Auth, Caller, decode_basic, strip_scheme};
use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::token::{AccessEntry, TokenGrant};

/// Largest `POST /token` form accepted.
const MAX_FORM: usize = 64 * 1024;
/// Most scopes one token request may ask for.
const MAX_SCOPES: usize = 64;

/// `GET /token?service=…&scope=…[&scope=…][&offline_token=true]`.
pub(crate) async fn get(auth: &Auth, parts: &Parts) -> ApiResult {
    let q = Query::of(parts);
    check_service(auth, q.get("service"))?;
    let principal = match parts.headers.get(header::AUTHORIZATION) {
        None => Principal::Anonymous,
        Some(v) => {
            let v = v.to_str().unwrap_or("");
            let encoded = strip_scheme(v, "basic")
                .map(str::trim)
                .ok_or_else(|| bad_login("the token endpoint takes Basic credentials"))?;
            let (user, password) =
                decode_basic(encoded).ok_or_else(|| bad_login("malformed Basic credentials"))?;
            login(auth, parts, &user, &password).await?
        }
    };
    let scopes: Vec<&str> = q.all("scope").flat_map(|s| s.split(' ')).collect();
    let offline = q.get("offline_token") == Some("true");
    respond(auth, &principal, &scopes, offline, false).await
}

/// `POST /token` with an OAuth2 form.
pub(crate) async fn post(auth: &Auth, parts: &Parts, body: Body) -> ApiResult {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        ApiError::new(ErrorCode::Unsupported, "token request form too large")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    })?;
    let form: Vec<(String, String)> = form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    check_service(auth, field("service"))?;
    let scopes: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .collect();
    let (principal, offline) = match field("grant_type") {
        Some("password") => {
            let user = field("username").unwrap_or("");
            let password = field("password").unwrap_or("");
            let principal = login(auth, parts, user, password).await?;
            (principal, field("access_type") == Some("offline"))
        }
        Some("refresh_token") => {
            let token = field("refresh_token").unwrap_or("");
            let sub = auth
                .keys()
                .verify_refresh(token, &auth.settings().service)
                .map_err(|e| bad_login(&format!("refresh token refused: {e}")))?;
            let now = berth_registry::service::unix_now();
            match auth.accounts().get(&sub).await? {
                Some(r) if r.active_at(now) => (Principal::Account(r.account()), false),
                _ => {
                    return Err(bad_login(
                        "the account of this refresh token is no longer active",
                    ));
                }
            }
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!(
                    "unsupported grant_type {:?}: use password or refresh_token",
                    other.unwrap_or("")
                ),
            )
            .with_status(StatusCode::BAD_REQUEST));
        }
    };
    respond(auth, &principal, &scopes, offline, true).await
}

async fn login(
    auth: &Auth,
    parts: &Parts,
    user: &str,
    password: &str,
) -> Result<Principal, ApiError> {
    let client = auth.limits().client_ip(parts);
    match auth.basic(user, password, client).await? {
        Some(account) => Ok(Principal::Account(account)),
        None => Err(bad_login("invalid username or password")),
    }
}

fn bad_login(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

fn check_service(auth: &Auth, asked: Option<&str>) -> Result<(), ApiError> {
    match asked {
        Some(s) if s != auth.settings().service => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "this token service issues tokens for {:?}, not {s:?}",
                auth.settings().service
            ),
        )
        .with_status(StatusCode::BAD_REQUEST)),
        _ => Ok(()),
    }
}

/// Grants each scope's requested actions that the principal holds, and signs the token.
async fn respond(
    auth: &Auth,
    principal: &Principal,
    scopes: &[&str],
    offline: bool,
    oauth: bool,
) -> ApiResult {
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("at most {MAX_SCOPES} scopes per token request"),
        )
        .with_status(StatusCode::BAD_REQUEST));
    }
    let caller = match principal {
        _ if auth.is_open() => Caller::Open,
        Principal::Anonymous => Caller::Anonymous,
        Principal::Account(a) => Caller::Account(a.clone()),
    };
    let mut access = Vec::new();
    for scope in scopes.iter().filter(|s| !s.is_empty()) {
        if let Some(entry) = grant(auth, &caller, principal, scope).await? {
            access.push(entry);
        }
    }
    let settings = auth.settings();
    let issued = auth
        .keys()
        .issue(&TokenGrant {
            subject: principal.name().to_owned(),
            audience: settings.service.clone(),
            access,
            lifetime: settings.token_lifetime,
        })
        .map_err(token_failure)?;
    let mut body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    });
    if offline && let Principal::Account(a) = principal {
        let refresh = auth
            .keys()
            .issue_refresh(&a.name, &settings.service, settings.refresh_lifetime)
            .map_err(token_failure)?;
        body["refresh_token"] = refresh.into();
    }
    if oauth {
        body["scope"] = scopes.join(" ").into();
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

/// One scope → the access entry to put in the token, if anything of it is granted.
async fn grant(
    auth: &Auth,
    caller: &Caller,
    principal: &Principal,
    scope: &str,
) -> Result<Option<AccessEntry>, ApiError> {
    let Some((kind, rest)) = scope.split_once(':') else {
        return Ok(None);
    };
    let Some((name, actions)) = rest.rsplit_once(':') else {
        return Ok(None);
    };
    let asked = Actions::parse_list(actions);
    let granted = match kind {
        "repository" => {
            let Ok(repo) = RepoName::parse(name) else {
                return Ok(None);
            };
            auth.allowed(caller, &repo).await?.intersect(asked)
        }
        // The catalog is filtered per caller; any authenticated caller may ask for it.
        "registry" if name == "catalog" => {
            return Ok(
                (matches!(principal, Principal::Account(_)) || auth.is_open()).then(|| {
                    AccessEntry {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                    }
                }),
            );
        }
        _ => return Ok(None),
    };
    if granted.is_empty() {
        return Ok(None);
    }
    Ok(Some(AccessEntry {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: granted.iter().map(|a| a.as_str().to_owned()).collect(),
    }))
}

fn token_failure(e: crate::token::TokenError) -> ApiError {
    tracing::error!(error = %e, "signing a token failed");
    ApiError::new(
        ErrorCode::Unknown,
        "the token service failed; retry the request",
    )
}
