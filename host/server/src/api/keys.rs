//! `/admin/api-keys` (API keys) and `/admin/signing-keys` (JWT signing keys): admins only.

use super::admin::AdminOnly;
use super::openapi::ErrorBody;
use super::{ApiError, ApiJson, AppState};
use crate::auth::{ApiKeyInfo, NewApiKey};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(signing_keys))
        .routes(routes!(rotate))
}

/// Every API key (never the key itself).
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    /// Every key, by id.
    pub api_keys: Vec<ApiKeyInfo>,
}

/// Which key signs new tokens, and every key still verifying them.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SigningKeys {
    /// The key that signs new tokens.
    pub current: Option<String>,
    /// Every key still verifying tokens, the current one first.
    pub verifying: Vec<String>,
}

impl SigningKeys {
    fn new(ids: Vec<String>) -> Self {
        Self {
            current: ids.first().cloned(),
            verifying: ids,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: String,
    /// Lifetime such as `90d` or `12h`; absent means no expiry.
    expires_in: Option<String>,
}

/// Creates an API key; the key is in this answer only.
#[utoipa::path(post, path = "/admin/api-keys", tag = "keys", security(("bearer" = [])),
    request_body = NewKey, responses((status = 201, body = NewApiKey), (status = 400, body = ErrorBody)))]
async fn create(
    AdminOnly(_principal, actor): AdminOnly,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<NewApiKey>), ApiError> {
    let ttl = body
        .expires_in
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| ApiError::InvalidBody(format!("`expires_in`: {e}")))?;
    let key = state
        .auth
        .create_api_key(body.name, body.role, ttl, &actor)
        .await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// Every API key.
#[utoipa::path(get, path = "/admin/api-keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = ApiKeyList), (status = 403, body = ErrorBody)))]
async fn list(_: AdminOnly, State(state): State<AppState>) -> Result<Json<ApiKeyList>, ApiError> {
    let api_keys: Vec<ApiKeyInfo> = state.auth.list_api_keys().await?;
    Ok(Json(ApiKeyList { api_keys }))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody)))]
async fn revoke(
    AdminOnly(_principal, actor): AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_api_key(id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The JWT signing keys.
#[utoipa::path(get, path = "/admin/signing-keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = SigningKeys)))]
async fn signing_keys(_: AdminOnly, State(state): State<AppState>) -> Json<SigningKeys> {
    Json(SigningKeys::new(state.auth.signing_key_ids()))
}

/// Signs with a new key from now on; older tokens verify until they expire.
#[utoipa::path(post, path = "/admin/signing-keys/rotate", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = SigningKeys)))]
async fn rotate(
    AdminOnly(_principal, actor): AdminOnly,
    State(state): State<AppState>,
) -> Result<Json<SigningKeys>, ApiError> {
    // Stored, then loaded into the key ring: both, even if the client goes away.
    super::to_completion(async move {
        let ids = state.auth.rotate_signing_key(&actor).await?;
        Ok(Json(SigningKeys::new(ids)))
    })
    .await
}
