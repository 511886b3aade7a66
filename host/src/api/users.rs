//! `/admin/users`: account management (admins only).

use super::admin::AdminOnly;
use super::{ApiError, ApiJson, AppState};
use crate::auth::manage::UserPage;
use crate::auth::{NewInvite, UserInfo};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list).post(create))
        .route("/admin/users/{id}", get(show).delete(remove))
        .route("/admin/users/{id}/disable", post(disable))
        .route("/admin/users/{id}/enable", post(enable))
        .route("/admin/users/{id}/roles", put(set_roles))
        .route("/admin/invites", post(invite))
}

/// Invitations live a week unless the admin says otherwise.
const DEFAULT_INVITE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInviteBody {
    email: Option<String>,
    expires_in: Option<String>,
}

async fn invite(
    _: AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewInviteBody>,
) -> Result<(StatusCode, Json<NewInvite>), ApiError> {
    let ttl = match body.expires_in.as_deref() {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ApiError::InvalidBody(format!("`expires_in`: {e}")))?,
        None => DEFAULT_INVITE_TTL,
    };
    let invite = state.auth.create_invite(body.email, ttl).await?;
    Ok((StatusCode::CREATED, Json(invite)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Roles {
    roles: Vec<String>,
}

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

async fn create(
    _: AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = state
        .auth
        .create_account(&body.email, body.password, body.roles)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn show(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(state.auth.user(&id).await?))
}

async fn remove(
    AdminOnly(actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_user(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disable(
    AdminOnly(actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(state.auth.set_disabled(&actor, &id, true).await?))
}

async fn enable(
    AdminOnly(actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(state.auth.set_disabled(&actor, &id, false).await?))
}

async fn set_roles(
    AdminOnly(actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Roles>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(state.auth.set_roles(&actor, &id, body.roles).await?))
}
