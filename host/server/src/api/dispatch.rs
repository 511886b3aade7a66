//! Dispatch of every non-host path to the plugin whose route matches.

use super::{ApiError, AppState};
use crate::auth::AuthPolicy;
use crate::auth::Principal;
use crate::plugin_logs::{Access, Level, Source};
use crate::registry::{LoadedPlugin, RouteTarget};
use crate::router::Lookup;
use crate::runtime::identity::Caller;
use crate::runtime::limits::{BodyViolation, BodyWatch, RequestLimit};
use crate::runtime::route::RouteCtx;
use crate::runtime::{HandleError, RequestContext};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use std::sync::Arc;

/// Routes a request to its plugin: 404/405 JSON when no route fits, 401/403 when the route's
/// auth policy is not met, otherwise a fresh instance of the plugin answers.
pub(super) async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    if !state.registry.is_ready() {
        return ApiError::NotReady.into_response();
    }
    // One snapshot for the whole request: a deploy meanwhile does not affect it.
    let active = state.registry.active();
    let path = request.uri().path().to_string();
    // The host's prefixes are never a plugin's, even for a catch-all route: an unknown
    // `/admin/...` path is a 404 from the host, not a request a plugin gets to see.
    if crate::registry::manifest::reserved_prefix(&path).is_some() {
        return ApiError::NotFound {
            method: request.method().clone(),
            path,
        }
        .into_response();
    }
    let (pattern, target, params) = match active.routes.lookup(request.method(), &path) {
        Lookup::Found {
            pattern,
            target,
            params,
        } => (pattern, target, params),
        Lookup::MethodNotAllowed { allow } => {
            return ApiError::MethodNotAllowed {
                method: request.method().clone(),
                allow,
            }
            .into_response();
        }
        Lookup::NotFound => {
            return ApiError::NotFound {
                method: request.method().clone(),
                path,
            }
            .into_response();
        }
    };
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let request_id: Option<Arc<str>> = request
        .headers()
        .get(crate::front_door::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(Arc::from);
    let plugin = target.plugin.clone();
    let metrics = target
        .metrics
        .get_or_init(|| state.metrics.route(&plugin.name, pattern));
    // Counted from the moment the route is found (before the auth step may wait on the store),
    // queued or not, so a purge of the plugin waits for this request.
    let running = plugin.running.enter();
    let routed = Routed {
        target,
        pattern,
        params,
        request_id: request_id.clone(),
        running,
    };
    let (response, user) = authorized(&state, routed, request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics.record(status, elapsed);
    let level = match status {
        500.. => Level::Error,
        400.. => Level::Warn,
        _ => Level::Info,
    };
    let access = Access {
        method,
        path,
        status,
        elapsed,
        route: pattern.to_string(),
        user,
    };
    // In the server log too, at debug so a busy server does not write a line per request by
    // default (`RUST_LOG=info,access=debug` shows them).
    tracing::debug!(
        target: "access",
        plugin = &*plugin.name,
        route = pattern,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        user = access.user.as_deref(),
        request_id = request_id.as_deref(),
        "{access}"
    );
    state.logs.push(
        &plugin.name,
        Source::Access,
        level,
        access,
        request_id.as_deref(),
    );
    response
}

/// A request matched to a route, counted in its plugin's requests in flight.
struct Routed<'a> {
    target: &'a RouteTarget,
    pattern: &'a str,
    params: Vec<(String, String)>,
    request_id: Option<Arc<str>>,
    running: crate::runtime::RunningGuard,
}

/// The auth step of a routed request: the route's policy, then [`run`]. Returns the response
/// and the caller's id (for the access line).
async fn authorized(
    state: &AppState,
    routed: Routed<'_>,
    request: Request,
) -> (Response, Option<String>) {
    let target = routed.target;
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.auth.authorize(&target.auth, authorization).await {
        Ok(principal) => principal,
        Err(e) => return (ApiError::from(e).into_response(), None),
    };
    let user = principal.as_ref().map(principal_id);
    let response = run(state, routed, request, principal).await;
    (response, user)
}

/// Runs an authorised request: required config, admission, body limits, then an instance.
async fn run(
    state: &AppState,
    routed: Routed<'_>,
    mut request: Request,
    principal: Option<Principal>,
) -> Response {
    let Routed {
        target,
        pattern,
        params,
        request_id,
        running,
    } = routed;
    let headers = request.headers_mut();
    // Credentials stay with the host; the plugin learns the caller through `identity`. A
    // route may ask for the header, but an operator's or admin's credential (the admin token,
    // an operator key or account) reaches only a plugin the operator granted it.
    let privileged = principal
        .as_ref()
        .is_some_and(|p| p.has_role(crate::auth::ROLE_OPERATOR));
    // Only the value that was checked goes on: every other `Authorization` line is dropped.
    let checked = headers.get(header::AUTHORIZATION).cloned();
    headers.remove(header::AUTHORIZATION);
    if target.forward_authorization
        && (!privileged || state.registry.forwards_privileged(&target.plugin.name))
        && let Some(value) = checked
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    // Nor does the dashboard's session cookie, which the browser sends to plugin routes too.
    crate::auth::web_cookie::strip_from_request(headers);
    if !headers.contains_key(header::HOST) {
        // wasi:http needs an authority; HTTP/1.0 clients may omit Host.
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let plugin = &target.plugin;
    let config = state.registry.config(&plugin.name);
    if plugin
        .manifest
        .config
        .required()
        .any(|key| !config.keys.contains(key.as_str()))
    {
        return ApiError::ConfigMissing {
            plugin: plugin.name.to_string(),
            missing: plugin.missing_config(&config),
        }
        .into_response();
    }
    let limits = plugin.limits;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_request_body) {
        return too_large(limits.max_request_body);
    }
    // Admission: the plugin's own slots first, waited for briefly (a free slot is taken at
    // once, without arming a timer), then the host-wide cap, answered at once. In this order a
    // request queued on a slow plugin holds nothing any other plugin's requests need.
    let slot = match plugin.slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            let waited =
                tokio::time::timeout(state.queue_timeout, plugin.slots.clone().acquire_owned())
                    .await;
            let Ok(Ok(slot)) = waited else {
                return ApiError::PluginBusy {
                    plugin: plugin.name.to_string(),
                    max_concurrency: limits.max_concurrency,
                }
                .into_response();
            };
            slot
        }
    };
    let Ok(in_flight) = state.in_flight.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    let context = RequestContext {
        route: RouteCtx {
            pattern: pattern.to_string(),
            params,
        },
        caller: principal.map(caller),
        config: config.variables.clone(),
        outbound: plugin.outbound.clone(),
        request_id,
        memory_peak: plugin.memory_peak.clone(),
        running: plugin.running.clone(),
    };
    // Reuse only where the manifest asked and the operator's cap allows for this route.
    let reuse = limits
        .instance_reuse
        .allows(matches!(target.auth, AuthPolicy::Public))
        .then(|| plugin.idle.clone());
    // A request without a body (a GET, a declared length of 0) cannot break a body limit, so
    // it goes without the watch and its timer.
    let watch = (!request.body().is_end_stream()).then(|| Arc::new(BodyWatch::default()));
    let request = match &watch {
        None => request,
        Some(watch) => request.map(|body| {
            Body::new(RequestLimit::new(
                body,
                limits.max_request_body,
                state.body_timeout,
                watch.clone(),
            ))
        }),
    };
    let handled = state.runtime.handle(
        &plugin.code,
        plugin.name.clone(),
        context,
        request,
        limits,
        reuse,
        (in_flight, slot, running),
    );
    let Some(watch) = watch else {
        return respond(state, plugin, handled.await);
    };
    // A body over its size (413) or stalled (408) ends the request at once, whatever the
    // plugin is doing; dropping `handled` before the head exists stops the instance.
    let violated = |violation| match violation {
        BodyViolation::TooLarge => too_large(limits.max_request_body),
        BodyViolation::TooSlow => ApiError::BodyTimeout {
            timeout: state.body_timeout,
        }
        .into_response(),
    };
    let outcome = tokio::select! {
        biased;
        violation = watch.violated() => return violated(violation),
        outcome = handled => outcome,
    };
    // The plugin may have answered from a body the host cut short: the violation wins.
    if let Some(violation) = watch.current() {
        return violated(violation);
    }
    respond(state, plugin, outcome)
}

/// The plugin's response, or its failure recorded and answered as a JSON error.
fn respond(
    state: &AppState,
    plugin: &LoadedPlugin,
    outcome: Result<crate::runtime::PluginResponse, HandleError>,
) -> Response {
    match outcome {
        Ok(response) => {
            let mut response = response.map(Body::new);
            crate::auth::web_cookie::strip_from_response(response.headers_mut());
            response
        }
        Err(e) => {
            plugin.failures.record(&e);
            if let Some(kind) = failure_kind(&e) {
                state.metrics.failure(&plugin.name, kind);
            }
            tracing::error!(plugin = &*plugin.name, error = %e, "plugin request failed");
            ApiError::from(e).into_response()
        }
    }
}

/// The `kind` label of a failed request in `/metrics`.
fn failure_kind(error: &HandleError) -> Option<&'static str> {
    match error {
        HandleError::Trap(_) | HandleError::NoResponse => Some("trap"),
        HandleError::Timeout(_) => Some("timeout"),
        HandleError::MemoryLimit(_) => Some("memory_limit"),
        HandleError::Instantiate(_) => None,
    }
}

/// How the access line names the caller.
fn principal_id(principal: &Principal) -> String {
    match principal {
        Principal::User(user) => user.id.clone(),
        Principal::ApiKey(key) => format!("apikey:{}", key.id),
        Principal::AdminToken => "admin-token".into(),
    }
}

fn too_large(limit: u64) -> Response {
    ApiError::PayloadTooLarge {
        limit: crate::units::ByteSize(limit).to_string(),
    }
    .into_response()
}

/// The caller as the plugin sees it.
fn caller(principal: Principal) -> Caller {
    match principal {
        Principal::User(user) => Caller {
            id: user.id.clone(),
            email: user.email.clone(),
            roles: user.roles.clone(),
        },
        Principal::ApiKey(key) => Caller {
            id: format!("apikey:{}", key.id),
            email: String::new(),
            roles: vec![key.role],
        },
        Principal::AdminToken => Caller {
            id: "admin-token".into(),
            email: String::new(),
            roles: vec!["admin".into()],
        },
    }
}
