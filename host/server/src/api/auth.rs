//! `/auth/*`: registration, login, token refresh, logout, the caller's account, password change.

use super::openapi::ErrorBody;
use super::{ApiError, ApiJson, AppState};
use crate::auth::{Principal, Session, UserInfo};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    // The endpoints that take credentials are rate-limited per client IP.
    let limited = OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(setup))
        .routes(routes!(change_password))
        .route_layer(middleware::from_fn_with_state(state.clone(), per_ip_limit));
    OpenApiRouter::new()
        .merge(limited)
        .routes(routes!(logout))
        .routes(routes!(logout_everywhere))
        .routes(routes!(me))
}

/// Refuses a request with 429 when its client IP is over the credential-endpoint limit.
async fn per_ip_limit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.check_ip(addr.ip()).await {
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
        Ok(Caller(state.auth.authenticate(header).await?))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Registration {
    email: String,
    password: String,
    /// An invitation code, needed when registration is invite-only.
    invite: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    setup_token: String,
    email: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Creates an account (when registration is open, or with an invitation).
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = Registration,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "registration_closed, invite_required"),
        (status = 409, body = ErrorBody, description = "email_taken"), (status = 429, body = ErrorBody)))]
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

/// Creates the first admin account with the one-time setup token.
#[utoipa::path(post, path = "/auth/setup", tag = "auth", request_body = SetupBody,
    responses((status = 201, body = UserInfo), (status = 401, body = ErrorBody, description = "invalid_setup_token")))]
async fn setup(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<SetupBody>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = state
        .auth
        .setup(&body.setup_token, &body.email, body.password, addr)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Signs in: an access token and a refresh token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = Session), (status = 401, body = ErrorBody, description = "invalid_credentials"),
        (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.auth.login(&body.email, body.password).await?))
}

/// Trades a refresh token (single use) for a new pair.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, body = Session), (status = 401, body = ErrorBody, description = "invalid_refresh_token")))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<Session>, ApiError> {
    // A rotation that lost a race revokes the family: that must happen even if this client
    // has gone away.
    super::to_completion(async move { Ok(Json(state.auth.refresh(body.refresh_token).await?)) })
        .await
}

/// Ends the session of a refresh token.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshBody,
    responses((status = 204, description = "signed out")))]
async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<StatusCode, ApiError> {
    state.auth.logout(body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the signed-in account: its refresh tokens and its access tokens,
/// this one included.
#[utoipa::path(post, path = "/auth/logout-everywhere", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "every session ended"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not_an_account")))]
async fn logout_everywhere(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<StatusCode, ApiError> {
    state.auth.logout_everywhere(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in account.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not_an_account")))]
async fn me(Caller(principal): Caller) -> Result<Json<UserInfo>, ApiError> {
    match principal {
        Principal::User(user) => Ok(Json(UserInfo::from(&*user))),
        Principal::AdminToken | Principal::ApiKey(_) => {
            Err(crate::auth::AccountError::NotAnAccount.into())
        }
    }
}

/// Changes the caller's password (other sessions end).
#[utoipa::path(post, path = "/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204, description = "changed"), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
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
