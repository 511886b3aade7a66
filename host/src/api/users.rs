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
use serde_json::json;

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
    AdminOnly(_, actor): AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewInviteBody>,
) -> Result<(StatusCode, Json<NewInvite>), ApiError> {
    let ttl = match body.expires_in.as_deref() {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ApiError::InvalidBody(format!("`expires_in`: {e}")))?,
        None => DEFAULT_INVITE_TTL,
    };
    let invite = state.auth.create_invite(body.email, ttl).await?;
    state
        .audit
        .record(
            &actor,
            "invite.create",
            &invite.id,
            json!({ "email": invite.email, "expires_at": invite.expires_at }),
        )
        .await;
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
    AdminOnly(_, actor): AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = state
        .auth
        .create_account(&body.email, body.password, body.roles)
        .await?;
    state
        .audit
        .record(
            &actor,
            "user.create",
            &user.id,
            json!({ "email": user.email, "roles": user.roles }),
        )
        .await;
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
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_user(&principal, &id).await?;
    state
        .audit
        .record(&actor, "user.delete", &id, json!({}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn disable(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state.auth.set_disabled(&principal, &id, true).await?;
    state
        .audit
        .record(&actor, "user.disable", &id, json!({ "email": user.email }))
        .await;
    Ok(Json(user))
}

async fn enable(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state.auth.set_disabled(&principal, &id, false).await?;
    state
        .audit
        .record(&actor, "user.enable", &id, json!({ "email": user.email }))
        .await;
    Ok(Json(user))
}

async fn set_roles(
    AdminOnly(principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Roles>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = state.auth.set_roles(&principal, &id, body.roles).await?;
    state
        .audit
        .record(
            &actor,
            "user.roles",
            &id,
            json!({ "email": user.email, "roles": user.roles }),
        )
        .await;
    Ok(Json(user))
}
