//! The HTTP surface (axum): `/admin/*` for operators, `/healthz` and `/readyz`, and every other
//! path dispatched to plugin routes.
//!
//! **Boundary:** handlers translate between HTTP and the domain modules (`registry`, `runtime`,
//! `auth`); they hold no state of their own beyond [`AppState`].

pub(crate) mod admin;
mod auth;
mod dispatch;
mod error;
mod keys;
pub mod openapi;
mod plugin_config;
mod plugin_kv;
pub(crate) mod plugin_logs;
mod users;

pub use admin::{PluginList, VersionList};
pub(crate) use admin::{deploy_plugin, remove_plugin, rollback_plugin};
pub use error::ApiError;
pub use keys::{ApiKeyList, SigningKeys};

use crate::auth::Auth;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::store::{KvLimits, Store};
use crate::units::ByteSize;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach. One `Arc`: axum clones the state for every request, and this
/// way that is one reference count rather than one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The handle over `services`.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    /// Deployed plugins.
    pub registry: Arc<Registry>,
    /// The wasm runtime.
    pub runtime: Arc<Runtime>,
    /// Credentials.
    pub auth: Arc<Auth>,
    /// Largest accepted component upload.
    pub max_component_size: ByteSize,
    /// The store (for the admin kv endpoints; plugins reach it through the runtime).
    pub store: Arc<dyn Store>,
    /// Limits kv imports are checked against, the same as plugins' writes.
    pub kv_limits: KvLimits,
    /// One permit per plugin request being served; none left means 503 `overloaded`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The number of permits `in_flight` started with.
    pub max_in_flight: usize,
    /// How long a request waits for a busy plugin.
    pub queue_timeout: std::time::Duration,
    /// Longest pause in a request body before 408.
    pub body_timeout: std::time::Duration,
    /// Who changed what.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Request counters and latencies, served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each plugin's recent log lines.
    pub logs: Arc<crate::plugin_logs::PluginLogs>,
    /// Turns true when the server starts shutting down; long-lived streams end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// When the server started (the dashboard shows its uptime).
    pub started: std::time::Instant,
    /// Whether the server speaks HTTPS, so the dashboard's session cookie is `Secure`.
    pub secure_cookies: bool,
}

/// The host's routes and their OpenAPI document, built together.
pub fn host_routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .merge(admin::routes(state))
        .merge(auth::routes(state))
        .merge(users::routes())
        .merge(keys::routes())
        .merge(plugin_config::routes())
        .merge(plugin_kv::routes(state))
        .merge(plugin_logs::routes())
        .split_for_parts()
}

/// The whole API as one axum router: the host's routes, `pages` (the dashboard's, which the
/// server wires in so `api` never names `ui`), `/admin/openapi.json`, and every other path
/// dispatched to plugins.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let (routes, document) = host_routes(&state);
    let document = Arc::new(document);
    routes
        .merge(pages)
        // Only the host's own routes: plugin dispatch watches its bodies itself.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_body_timeout,
        ))
        .route(
            "/admin/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .fallback(dispatch::dispatch)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A host route's request body must keep coming: one that stalls longer than the body timeout,
/// or that then falls behind [`MIN_HOST_BODY_RATE`](crate::runtime::limits::MIN_HOST_BODY_RATE)
/// on average, gets 408 `request_timeout` (plugin routes have their plugin's deadline), so a
/// declared body that never arrives, or drips, cannot hold a connection, or a graceful
/// shutdown, forever.
async fn host_body_timeout(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use crate::runtime::limits::{BodyViolation, BodyWatch, MIN_HOST_BODY_RATE, RequestLimit};
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let watch = Arc::new(BodyWatch::default());
    let request = request.map(|body| {
        axum::body::Body::new(
            RequestLimit::new(
                body,
                u64::MAX, // each route's extractor bounds the size
                state.body_timeout,
                watch.clone(),
            )
            .with_min_rate(MIN_HOST_BODY_RATE),
        )
    });
    let stalled = || {
        ApiError::BodyTimeout {
            timeout: state.body_timeout,
        }
        .into_response()
    };
    let response = tokio::select! {
        biased;
        BodyViolation::TooSlow | BodyViolation::TooLarge = watch.violated() => return stalled(),
        response = next.run(request) => response,
    };
    match watch.current() {
        Some(_) => stalled(),
        None => response,
    }
}

/// `Json<T>` whose rejections are API errors in Plinth's JSON shape.
pub(crate) struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::InvalidBody(rejection.body_text())),
        }
    }
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready: the store is open and reachable, and the stored plugins are loaded. Lists stored
/// plugins that could not be loaded (they stay stored, inactive, with the reason).
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "`{status, store, plugins, not_loaded, version}`"),
    (status = 503, description = "`not_ready`: still loading; `store_unavailable`: the database cannot be reached", body = openapi::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    if !state.store.is_reachable() {
        return ApiError::Storage(crate::store::StoreError::Unavailable {
            op: "check readiness",
            message: "the database cannot be reached".into(),
        })
        .into_response();
    }
    if state.registry.is_ready() {
        let plugins = state.registry.active().plugins.len();
        axum::Json(json!({
            "status": "ready",
            "store": "open",
            "plugins": plugins,
            "not_loaded": state.registry.not_loaded(),
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .into_response()
    } else {
        ApiError::NotReady.into_response()
    }
}

/// Runs a change to its end even if its client goes away: a change of several steps (the
/// store, then what the server holds in memory) must not stop between them because its request
/// was dropped. A panic is raised again; only a runtime shutting down stops it.
pub(crate) async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ApiError::Storage(crate::store::StoreError::Backend {
            op: "change",
            message: e.to_string(),
        })),
    }
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text). Public like `/healthz`, as
/// Prometheus scrapes expect; it names plugins and routes, so keep it off the public internet
/// (see docs/operating.md, HTTPS and reverse proxies).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    let active = state.registry.active();
    let mut kv_bytes = Vec::with_capacity(active.plugins.len());
    for name in active.plugins.keys() {
        if let Ok(bytes) = state.store.kv_usage(name).await {
            kv_bytes.push((name.clone(), bytes));
        }
    }
    let snapshot = crate::metrics::HostSnapshot {
        active_instances: (state.max_in_flight - state.in_flight.available_permits()) as i64,
        plugins: active.plugins.len() as i64,
        kv_bytes,
        memory_peaks: active
            .plugins
            .iter()
            .map(|(name, p)| {
                let peak = p.memory_peak.load(std::sync::atomic::Ordering::Relaxed);
                (name.clone(), peak)
            })
            .collect(),
        compiled: state.runtime.code_stats.compiled(),
        loaded: state.runtime.code_stats.loaded(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(snapshot),
    )
        .into_response()
}

/// Host routes called with a method they do not serve (axum fills in the `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> impl IntoResponse {
    let body = json!({ "error": {
        "code": "method_not_allowed",
        "message": format!("{method} is not allowed on {}", uri.path()),
    }});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body))
}
