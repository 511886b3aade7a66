//! The operator API under `/admin/`: deploy, list, show and delete plugins (operators and
//! admins), and the extractors that guard every `/admin/` endpoint.

use super::{ApiError, AppState};
use crate::auth::{Principal, ROLE_ADMIN, ROLE_OPERATOR};
use crate::registry::PluginInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Multipart, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

/// Room for the multipart framing and the manifest on top of the component itself.
const MULTIPART_OVERHEAD: u64 = 1 << 20;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let limit = state
        .max_component_size
        .0
        .saturating_add(MULTIPART_OVERHEAD);
    Router::new().route("/admin/plugins", get(list)).route(
        "/admin/plugins/{name}",
        get(show)
            .put(deploy)
            .delete(remove)
            .layer(DefaultBodyLimit::max(
                usize::try_from(limit).unwrap_or(usize::MAX),
            )),
    )
}

fn authorization(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Extractor admitting operators and admins (plugins); runs before the body is read.
pub(super) struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.require(ROLE_OPERATOR, authorization(parts))?;
        Ok(Operator)
    }
}

/// Extractor admitting only admins (users, API keys, signing keys).
pub(super) struct AdminOnly(pub Principal);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(AdminOnly(
            state.auth.require(ROLE_ADMIN, authorization(parts))?,
        ))
    }
}

async fn list(_: Operator, State(state): State<AppState>) -> Json<serde_json::Value> {
    let active = state.registry.active();
    let plugins: Vec<PluginInfo> = active
        .plugins
        .values()
        .map(|p| state.registry.info(p))
        .collect();
    Json(json!({ "plugins": plugins }))
}

async fn show(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginInfo>, ApiError> {
    let active = state.registry.active();
    let plugin = active
        .plugins
        .get(&name)
        .ok_or(crate::registry::DeployError::NotFound(name))?;
    Ok(Json(state.registry.info(plugin)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    /// Also delete the plugin's key-value data and config (kept by default).
    #[serde(default)]
    purge: bool,
}

async fn remove(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    state.registry.remove(&name, query.purge).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Maps a multipart read error to 413 when the body limit was hit, 400 otherwise.
fn upload_error(state: &AppState, e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: state.max_component_size.to_string(),
        }
    } else {
        ApiError::BadUpload(format!(
            "cannot read the multipart upload: {}",
            e.body_text()
        ))
    }
}

/// `PUT /admin/plugins/{name}` with multipart parts `manifest` (plinth.toml) and `component`.
async fn deploy(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::BadUpload(format!(
            "expected multipart/form-data with parts `manifest` and `component`: {}",
            e.body_text()
        ))
    })?;
    let mut manifest: Option<String> = None;
    let mut component: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| upload_error(&state, e))?
    {
        let part = field.name().unwrap_or_default().to_string();
        match part.as_str() {
            "manifest" if manifest.is_none() => {
                let bytes = field.bytes().await.map_err(|e| upload_error(&state, e))?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::BadUpload("the `manifest` part is not UTF-8 text".into())
                })?;
                manifest = Some(text);
            }
            "component" if component.is_none() => {
                let bytes = field.bytes().await.map_err(|e| upload_error(&state, e))?;
                if bytes.len() as u64 > state.max_component_size.0 {
                    return Err(ApiError::PayloadTooLarge {
                        limit: state.max_component_size.to_string(),
                    });
                }
                component = Some(bytes);
            }
            "manifest" | "component" => {
                return Err(ApiError::BadUpload(format!(
                    "the part `{part}` appears more than once"
                )));
            }
            other => {
                return Err(ApiError::BadUpload(format!(
                    "unexpected part {other:?}; expected `manifest` and `component`"
                )));
            }
        }
    }
    let (Some(manifest), Some(component)) = (manifest, component) else {
        return Err(ApiError::BadUpload(
            "the upload needs both parts: `manifest` (plinth.toml text) and `component` (.wasm)"
                .into(),
        ));
    };
    let deployed = state.registry.deploy(&name, manifest, component).await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed.info)).into_response())
}
