//! `/admin/users`: account management (admins only).

use super::admin::AdminOnly;
use super::openapi::ErrorBody;
use super::{ApiError, ApiJson, AppState};
use crate::auth::manage::UserPage;
use crate::auth::{InviteInfo, NewInvite, UserInfo};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, remove))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(set_roles))
        .routes(routes!(invite, invites))
        .routes(routes!(revoke_invite))
}

/// The pending invitations.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(super) struct InviteList {
    /// Not yet used or expired, soonest to expire first; never their codes.
    invites: Vec<InviteInfo>,
}

/// `GET /admin/invites`: the invitations that can still be used.
#[utoipa::path(get, path = "/admin/invites", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = InviteList), (status = 403, body = ErrorBody)))]
async fn invites(
    _: AdminOnly,
    State(state): State<AppState>,
) -> Result<Json<InviteList>, ApiError> {
    Ok(Json(InviteList {
        invites: state.auth.list_invites().await?,
    }))
}

/// `DELETE /admin/invites/{id}`: the invitation can no longer be used. Audited as
/// `invite.revoke`.
#[utoipa::path(delete, path = "/admin/invites/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "The invitation's id (not its code)")),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody, description = "invite_not_found")))]
async fn revoke_invite(
    AdminOnly(_principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_invite(id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invitations live a week unless the admin says otherwise.
const DEFAULT_INVITE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewInviteBody {
    email: Option<String>,
    expires_in: Option<String>,
}

/// Creates a single-use invitation (for invite-only registration).
#[utoipa::path(post, path = "/admin/invites", tag = "users", security(("bearer" = [])),
    request_body = NewInviteBody, responses((status = 201, body = NewInvite), (status = 403, body = ErrorBody)))]
async fn invite(
    AdminOnly(_principal, actor): AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewInviteBody>,
) -> Result<(StatusCode, Json<NewInvite>), ApiError> {
    let ttl = match body.expires_in.as_deref() {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ApiError::InvalidBody(format!("`expires_in`: {e}")))?,
        None => DEFAULT_INVITE_TTL,
    };
    let invite = state.auth.create_invite(body.email, ttl, &actor).await?;
    Ok((StatusCode::CREATED, Json(invite)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Roles {
    roles: Vec<String>,
}

/// Accounts in id order, a page at a time.
#[utoipa::path(get, path = "/admin/users", tag = "users", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = UserPage), (status = 403, body = ErrorBody)))]
async fn list(
    _: AdminOnly,
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidBody(e.body_text()))?;
    let page = state
        .auth
        .list_users(query.after, query.limit.unwrap_or(50))
        .await?;
    Ok(Json(page))
}

/// Creates an account.
#[utoipa::path(post, path = "/admin/users", tag = "users", security(("bearer" = [])),
    request_body = NewUser, responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "email_taken")))]
async fn create(
    AdminOnly(_principal, actor): AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = state
        .auth
        .create_account(&body.email, body.password, body.roles, &actor)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// One account.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = String, Path, description = "The user id")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
async fn show(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(state.auth.user(&id).await?))
}

/// Deletes an account (not your own).
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = String, Path, description = "The user id")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn remove(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_user(&principal, &id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops an account from signing in or using its tokens.
#[utoipa::path(post, path = "/admin/users/{id}/disable", tag = "users", security(("bearer" = [])), params(("id" = String, Path, description = "The user id")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
async fn disable(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state
        .auth
        .set_disabled(&principal, &id, true, &actor)
        .await?;
    Ok(Json(user))
}

/// Lets a disabled account in again.
#[utoipa::path(post, path = "/admin/users/{id}/enable", tag = "users", security(("bearer" = [])), params(("id" = String, Path, description = "The user id")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
async fn enable(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state
        .auth
        .set_disabled(&principal, &id, false, &actor)
        .await?;
    Ok(Json(user))
}

/// Replaces an account's roles.
#[utoipa::path(put, path = "/admin/users/{id}/roles", tag = "users", security(("bearer" = [])), params(("id" = String, Path, description = "The user id")),
    request_body = Roles, responses((status = 200, body = UserInfo), (status = 400, body = ErrorBody)))]
async fn set_roles(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Roles>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state
        .auth
        .set_roles(&principal, &id, body.roles, &actor)
        .await?;
    Ok(Json(user))
}
