//! `/auth/*`: registration, login, token refresh, logout, the caller's account, password change.

use super::{ApiError, ApiJson, AppState};
use crate::auth::{Principal, Session, UserInfo};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    // The endpoints that take credentials are rate-limited per client IP.
    let limited = Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/setup", post(setup))
        .route_layer(middleware::from_fn_with_state(state.clone(), per_ip_limit));
    Router::new()
        .merge(limited)
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/password", post(change_password))
}

/// Refuses a request with 429 when its client IP is over the credential-endpoint limit.
async fn per_ip_limit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.check_ip(addr.ip()) {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Extractor for any authenticated caller (account JWT or admin token).
pub(super) struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(Caller(state.auth.authenticate(header)?))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    email: String,
    password: String,
    /// An invitation code, needed when registration is invite-only.
    invite: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    setup_token: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Registration>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = state
        .auth
        .register(&body.email, body.password, body.invite)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn setup(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetupBody>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = state
        .auth
        .setup(&body.setup_token, &body.email, body.password)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.auth.login(&body.email, body.password).await?))
}

async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.auth.refresh(body.refresh_token).await?))
}

async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<StatusCode, ApiError> {
    state.auth.logout(body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(Caller(principal): Caller) -> Result<Json<UserInfo>, ApiError> {
    match principal {
        Principal::User(user) => Ok(Json(UserInfo::from(&user))),
        Principal::AdminToken | Principal::ApiKey(_) => {
            Err(crate::auth::AccountError::NotAnAccount.into())
        }
    }
}

async fn change_password(
    State(state): State<AppState>,
    Caller(principal): Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .change_password(&principal, body.current_password, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
