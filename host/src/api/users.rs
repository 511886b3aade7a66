//! `/admin/users`: account management (admins only).

use super::admin::AdminOnly;
use super::{ApiError, ApiJson, AppState};
use crate::auth::UserInfo;
use crate::auth::manage::UserPage;
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
