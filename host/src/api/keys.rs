//! `/admin/api-keys` (API keys) and `/admin/signing-keys` (JWT signing keys): admins only.

use super::admin::AdminOnly;
use super::{ApiError, ApiJson, AppState};
use crate::auth::{ApiKeyInfo, NewApiKey};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(list).post(create))
        .route("/admin/api-keys/{id}", delete(revoke))
        .route("/admin/signing-keys", get(signing_keys))
        .route("/admin/signing-keys/rotate", post(rotate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: String,
    /// Lifetime such as `90d` or `12h`; absent means no expiry.
    expires_in: Option<String>,
}

async fn create(
    AdminOnly(_, actor): AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<NewApiKey>), ApiError> {
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(ApiError::InvalidBody(
            "`name` must be 1-200 characters".into(),
        ));
    }
    let ttl = body
        .expires_in
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| ApiError::InvalidBody(format!("`expires_in`: {e}")))?;
    let key = state.auth.create_api_key(body.name, body.role, ttl).await?;
    state
        .audit
        .record(
            &actor,
            "api_key.create",
            &key.info.id,
            json!({ "name": key.info.name, "role": key.info.role }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(key)))
}

async fn list(_: AdminOnly, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys: Vec<ApiKeyInfo> = state.auth.list_api_keys().await?;
    Ok(Json(json!({ "api_keys": keys })))
}

async fn revoke(
    AdminOnly(_, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_api_key(id.clone()).await?;
    state
        .audit
        .record(&actor, "api_key.revoke", &id, json!({}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn signing_keys(_: AdminOnly, State(state): State<AppState>) -> Json<Value> {
    let ids = state.auth.signing_key_ids();
    Json(json!({ "current": ids.first(), "verifying": ids }))
}

async fn rotate(
    AdminOnly(_, actor): AdminOnly,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let ids = state.auth.rotate_signing_key().await?;
    let current = ids.first().cloned().unwrap_or_default();
    state
        .audit
        .record(&actor, "signing_key.rotate", &current, json!({}))
        .await;
    Ok(Json(json!({ "current": ids.first(), "verifying": ids })))
}
