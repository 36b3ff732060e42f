//! berth's inbound HTTP adapter: the OCI Distribution `/v2` API on axum.
//!
//! Thin by design: each request is parsed into an [`Endpoint`], handed to the
//! [`Registry`], and the result (or [`RegistryError`](berth_registry::RegistryError))
//! is turned into headers and a body. Protocol rules live in `berth-registry`.

pub mod admin;
pub mod auth;
mod blobs;
mod discovery;
pub mod endpoint;
pub mod error;
mod events_api;
mod manifests;
pub mod metrics;
mod query;
pub mod ratelimit;
mod storage_api;
pub mod token;
mod token_endpoint;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{ErrorCode, Reference};
use berth_registry::Registry;

use auth::{Auth, Caller, Required};
pub use endpoint::Endpoint;
use endpoint::PathError;
use error::{ApiError, ApiResult};

/// The header every `/v2` response carries, which docker checks on `GET /v2/`.
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// Header carrying a blob or manifest digest.
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// The peer address of the connection a request came on; the server inserts it into
/// every request's extensions (rate limits and logs key on the client address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The registry's rules and stores.
    pub registry: Arc<Registry>,
    /// Who may do what.
    pub auth: Arc<Auth>,
}

/// The router over a registry: `/v2`, `/token`, the probes, and `/metrics` when a
/// renderer is given.
pub fn router(state: AppState, metrics: Option<metrics::MetricsRender>) -> Router {
    state.auth.report_to(state.registry.events().clone());
    let router = Router::new()
        .route("/v2", axum::routing::any(dispatch))
        .route("/v2/", axum::routing::any(dispatch))
        .route("/v2/{*rest}", axum::routing::any(dispatch))
        .layer(axum::middleware::map_response(add_api_version))
        .route("/token", axum::routing::get(token_get).post(token_post))
        .merge(admin::routes())
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz));
    let router = match metrics {
        Some(render) => router.route(
            "/metrics",
            axum::routing::get(move |State(state): State<AppState>| {
                metrics_page(state.registry, render.clone())
            }),
        ),
        None => router,
    };
    router.with_state(state)
}

async fn token_get(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    token_endpoint::get(&state.auth, &parts)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn token_post(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    token_endpoint::post(&state.auth, &parts, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/metrics`: refreshes the gauges that are read on demand, then renders everything.
async fn metrics_page(reg: Arc<Registry>, render: metrics::MetricsRender) -> Response {
    match reg.open_uploads().await {
        Ok(n) => ::metrics::gauge!("berth_upload_sessions_open").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "counting open uploads"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(),
    )
        .into_response()
}

/// Liveness: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: both stores answer.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.registry.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
    }
}

async fn add_api_version(mut res: Response) -> Response {
    res.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    res
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    // Kept only when the access log is on; otherwise the hot path pays one level check.
    let path =
        tracing::enabled!(target: "berth::access", tracing::Level::INFO).then(|| req.uri().clone());
    let (class, res) = match Endpoint::parse(req.uri().path()) {
        Ok(endpoint) => {
            let class = metrics::class(Some(&endpoint));
            let (parts, body) = req.into_parts();
            let res = checked(&state, endpoint, &parts, counted(class, body))
                .await
                .unwrap_or_else(IntoResponse::into_response);
            (class, res)
        }
        Err(PathError::Invalid(e)) => (metrics::class(None), ApiError::from(e).into_response()),
        Err(PathError::NotFound) => {
            let res = ApiError::new(
                ErrorCode::Unsupported,
                format!("no OCI endpoint at {}", req.uri().path()),
            )
            .with_status(StatusCode::NOT_FOUND)
            .into_response();
            (metrics::class(None), res)
        }
    };
    metrics::record(class, &method, started, &res);
    let Some(path) = path else { return res };
    tracing::info!(
        target: "berth::access",
        endpoint = class,
        method = %method,
        path = %path,
        status = res.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
    );
    res
}

/// The request body, counting its bytes into the request-bytes metric as they arrive.
fn counted(class: &'static str, body: Body) -> Body {
    use futures_util::TryStreamExt;
    Body::from_stream(body.into_data_stream().inspect_ok(move |chunk| {
        metrics::count_in(class, chunk.len());
    }))
}

/// Identifies the caller, checks what the endpoint needs, counts a pull (a manifest GET)
/// against the caller's rate limit, then routes.
async fn checked(state: &AppState, endpoint: Endpoint, req: &Parts, body: Body) -> ApiResult {
    let caller = state.auth.caller(req).await?;
    let need = endpoint.required(&req.method);
    if let Err(e) = state.auth.authorize(&caller, &need, req).await {
        if let (ErrorCode::Denied, Required::Repo(repo, _)) = (e.code, &need) {
            let actor = state.auth.actor(&caller, req);
            state.registry.deny(repo, None, None, &e.message, &actor);
        }
        return Err(e);
    }
    let budget = match &endpoint {
        Endpoint::Manifest(name, _) if req.method == Method::GET => {
            ratelimit::charge_pull(&state.auth, &caller, name, req).await?
        }
        _ => None,
    };
    let res = route(state, &caller, endpoint, req, body).await;
    let Some(budget) = budget else { return res };
    let mut res = res.unwrap_or_else(IntoResponse::into_response);
    budget.stamp(res.headers_mut());
    Ok(res)
}

async fn route(
    state: &AppState,
    caller: &Caller,
    endpoint: Endpoint,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let reg = &*state.registry;
    let method = req.method.clone();
    match (endpoint, method) {
        (Endpoint::Base, Method::GET | Method::HEAD) => Ok(json_response(StatusCode::OK, "{}")),
        (Endpoint::Catalog, Method::GET) => discovery::catalog(reg, &state.auth, caller, req).await,
        (Endpoint::Tags(name), Method::GET) => discovery::tags(reg, &name, req).await,
        (Endpoint::Referrers(name, digest), Method::GET) => {
            discovery::referrers(reg, &name, &digest, req).await
        }
        (Endpoint::Blob(name, digest), m @ (Method::GET | Method::HEAD)) => {
            blobs::get(reg, &name, &digest, req, m == Method::HEAD).await
        }
        (Endpoint::Blob(name, digest), Method::DELETE) => blobs::delete(reg, &name, &digest).await,
        (Endpoint::UploadStart(name), Method::POST) => {
            uploads::start(reg, &state.auth, caller, &name, req, body).await
        }
        (Endpoint::Upload(name, id), Method::GET) => uploads::status(reg, &name, &id).await,
        (Endpoint::Upload(name, id), Method::PATCH) => {
            uploads::patch(reg, &name, &id, req, body).await
        }
        (Endpoint::Upload(name, id), Method::PUT) => uploads::put(reg, &name, &id, req, body).await,
        (Endpoint::Upload(name, id), Method::DELETE) => uploads::cancel(reg, &name, &id).await,
        (Endpoint::Manifest(name, r), m @ (Method::GET | Method::HEAD)) => {
            let head = m == Method::HEAD;
            // A pull: every GET, and a HEAD by tag (how containerd resolves a tag).
            let pull =
                (!head || matches!(r, Reference::Tag(_))).then(|| state.auth.actor(caller, req));
            manifests::get(reg, &name, &r, req, head, pull).await
        }
        (Endpoint::Manifest(name, r), Method::PUT) => {
            let actor = state.auth.actor(caller, req);
            manifests::put(reg, &name, &r, req, body, &actor).await
        }
        (Endpoint::Manifest(name, r), Method::DELETE) => {
            let actor = state.auth.actor(caller, req);
            manifests::delete(reg, &name, &r, &actor).await
        }
        (_, m) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("method {m} is not allowed on this endpoint"),
        )),
    }
}

/// A JSON response with the given status and pre-serialized body.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A header value from a string known to be valid ASCII (digests, paths, numbers).
pub(crate) fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Turns a request body into the registry's byte stream.
pub(crate) fn body_stream(body: Body) -> berth_registry::ByteStream {
    use futures_util::TryStreamExt;
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}
