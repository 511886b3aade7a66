//! Dispatch of every non-host path to the plugin whose route matches.

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::router::Lookup;
use crate::runtime::RequestContext;
use crate::runtime::identity::Caller;
use crate::runtime::limits::{BodyViolation, BodyWatch, RequestLimit};
use crate::runtime::route::RouteCtx;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Routes a request to its plugin: 404/405 JSON when no route fits, 401/403 when the route's
/// auth policy is not met, otherwise a fresh instance of the plugin answers.
pub(super) async fn dispatch(State(state): State<AppState>, mut request: Request) -> Response {
    if !state.registry.is_ready() {
        return ApiError::NotReady.into_response();
    }
    // One snapshot for the whole request: a deploy meanwhile does not affect it.
    let active = state.registry.active();
    let path = request.uri().path().to_string();
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
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.auth.authorize(&target.auth, authorization) {
        Ok(principal) => principal,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let headers = request.headers_mut();
    if !target.forward_authorization {
        // Credentials stay with the host; the plugin learns the caller through `identity`.
        headers.remove(header::AUTHORIZATION);
    }
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
    // Admission: a host-wide cap answered at once, then the plugin's own, waited for briefly.
    let Ok(in_flight) = state.in_flight.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    let slot = match tokio::time::timeout(state.queue_timeout, plugin.slots.clone().acquire_owned())
        .await
    {
        Ok(Ok(slot)) => slot,
        _ => {
            return ApiError::PluginBusy {
                plugin: plugin.name.to_string(),
                max_concurrency: limits.max_concurrency,
            }
            .into_response();
        }
    };
    let context = RequestContext {
        route: RouteCtx {
            pattern: pattern.to_string(),
            params,
        },
        caller: principal.map(caller),
        config: config.variables.clone(),
        outbound: plugin.outbound.clone(),
    };
    let watch = std::sync::Arc::new(BodyWatch::default());
    let request = request.map(|body| {
        RequestLimit::new(
            body,
            limits.max_request_body,
            state.body_timeout,
            watch.clone(),
        )
    });
    let handled = state.runtime.handle(
        &plugin.code,
        plugin.name.clone(),
        context,
        request,
        limits,
        (in_flight, slot),
    );
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
    match outcome {
        Ok(response) => response.map(Body::new),
        Err(e) => {
            plugin.failures.record(&e);
            tracing::error!(plugin = &*plugin.name, error = %e, "plugin request failed");
            ApiError::from(e).into_response()
        }
    }
}

fn too_large(limit: u64) -> Response {
    ApiError::PayloadTooLarge {
        limit: crate::config::ByteSize(limit).to_string(),
    }
    .into_response()
}

/// The caller as the plugin sees it.
fn caller(principal: Principal) -> Caller {
    match principal {
        Principal::User(user) => Caller {
            id: user.id,
            email: user.email,
            roles: user.roles,
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
