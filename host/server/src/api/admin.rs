//! The operator API under `/admin/`: deploy, list, show and delete plugins (operators and
//! admins), and the extractors that guard every `/admin/` endpoint.

use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::audit::Actor;
use crate::auth::{Principal, ROLE_ADMIN, ROLE_OPERATOR};
use crate::registry::PluginInfo;
use crate::registry::{Deployed, VersionInfo};
use crate::units::ByteSize;
use axum::Json;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, Multipart, Path, Query, State,
};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use std::net::SocketAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Room for the multipart framing and the manifest on top of the component itself.
const MULTIPART_OVERHEAD: u64 = 1 << 20;

pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let limit = state
        .max_component_size
        .0
        .saturating_add(MULTIPART_OVERHEAD);
    let plugin = OpenApiRouter::new()
        .routes(routes!(show, deploy, remove))
        .layer(DefaultBodyLimit::max(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    OpenApiRouter::new()
        .routes(routes!(list))
        .merge(plugin)
        .routes(routes!(versions))
        .routes(routes!(rollback))
        .routes(routes!(audit))
}

fn authorization(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn actor(parts: &Parts, principal: &Principal) -> Actor {
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    principal.actor(address)
}

/// Extractor admitting operators and admins (plugins); runs before the body is read. Carries
/// who is calling, for the audit log.
pub(super) struct Operator(pub Actor);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = state
            .auth
            .require(ROLE_OPERATOR, authorization(parts))
            .await?;
        Ok(Operator(actor(parts, &principal)))
    }
}

/// Extractor admitting only admins (users, API keys, signing keys): the principal (for rules
/// such as "not yourself") and the actor (for the audit log).
pub(super) struct AdminOnly(pub Principal, pub Actor);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = state.auth.require(ROLE_ADMIN, authorization(parts)).await?;
        let actor = actor(parts, &principal);
        Ok(AdminOnly(principal, actor))
    }
}

/// Deployed plugins.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginList {
    /// Every active plugin, by name.
    pub plugins: Vec<PluginInfo>,
}

/// A plugin's kept versions, newest first.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VersionList {
    /// The plugin these versions belong to.
    pub plugin: String,
    /// Its kept versions, newest first.
    pub versions: Vec<VersionInfo>,
}

/// The deploy upload (documentation of the multipart parts).
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used: it documents the multipart parts"
)]
struct DeployUpload {
    /// The plinth.toml text.
    manifest: String,
    /// The component (.wasm bytes).
    #[schema(format = Binary, value_type = String)]
    component: Vec<u8>,
}

/// Every deployed plugin.
#[utoipa::path(get, path = "/admin/plugins", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, body = PluginList), (status = 401, body = ErrorBody)))]
async fn list(_: Operator, State(state): State<AppState>) -> Json<PluginList> {
    let active = state.registry.active();
    let plugins: Vec<PluginInfo> = active
        .plugins
        .values()
        .map(|p| state.registry.info(p))
        .collect();
    Json(PluginList { plugins })
}

/// One deployed plugin.
#[utoipa::path(get, path = "/admin/plugins/{name}", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, body = PluginInfo), (status = 404, body = ErrorBody, description = "plugin_not_found")))]
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

/// Stops serving a plugin; its kv data and config stay unless `purge=true`.
#[utoipa::path(delete, path = "/admin/plugins/{name}", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"),
        ("purge" = Option<bool>, Query, description = "Also delete its data, config and logs")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn remove(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidBody(e.body_text()))?;
    remove_plugin(state, name, query.purge, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops serving `name`, and with `purge` deletes its data, config and logs: the one path the
/// API and the dashboard share, run to completion even if the client goes away.
pub(crate) async fn remove_plugin(
    state: AppState,
    name: String,
    purge: bool,
    actor: Actor,
) -> Result<(), ApiError> {
    super::to_completion(async move {
        state.registry.remove(&name, purge, &actor).await?;
        if purge {
            state.logs.forget(&name);
        }
        Ok(())
    })
    .await
}

/// The kept versions of a plugin, newest first.
#[utoipa::path(get, path = "/admin/plugins/{name}/versions", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorBody)))]
async fn versions(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let versions = state.registry.versions(&name).await?;
    Ok(Json(VersionList {
        plugin: name,
        versions,
    }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// The version to activate; absent: the newest one before the active one.
    version: Option<u64>,
}

/// `POST /admin/plugins/{name}/rollback` with `{"version": N}` or no body.
#[utoipa::path(post, path = "/admin/plugins/{name}/rollback", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin")),
    request_body(content = Option<RollbackBody>, description = "The version; none: the one before the active one"),
    responses((status = 200, body = Deployed), (status = 404, body = ErrorBody, description = "plugin_not_found, version_not_found")))]
async fn rollback(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<crate::registry::Deployed>, ApiError> {
    let body: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody(e.to_string()))?
    };
    Ok(Json(
        rollback_plugin(state, name, body.version, actor).await?,
    ))
}

/// Makes a kept version of `name` active (the newest before the active one by default),
/// counted in the metrics: the one path the API and the dashboard share.
pub(crate) async fn rollback_plugin(
    state: AppState,
    name: String,
    version: Option<u64>,
    actor: Actor,
) -> Result<crate::registry::Deployed, ApiError> {
    super::to_completion(async move {
        let done = state.registry.rollback(&name, version, &actor).await?;
        if !done.unchanged {
            state.metrics.rolled_back();
        }
        Ok(done)
    })
    .await
}

/// Deploys `manifest` and `component` as `name`, counted in the metrics: the one path the API
/// and the dashboard share.
pub(crate) async fn deploy_plugin(
    state: AppState,
    name: String,
    manifest: String,
    component: Bytes,
    actor: Actor,
) -> Result<crate::registry::Deployed, ApiError> {
    super::to_completion(async move {
        let deployed = state
            .registry
            .deploy(&name, manifest, component, &actor)
            .await?;
        if !deployed.unchanged {
            state.metrics.deployed();
        }
        Ok(deployed)
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    action: Option<String>,
    target: Option<String>,
}

/// `GET /admin/audit?cursor=&limit=&action=&target=`: admins only (it names every account).
#[utoipa::path(get, path = "/admin/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = crate::audit::AuditPage), (status = 400, body = ErrorBody, description = "invalid_cursor")))]
async fn audit(
    _: AdminOnly,
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::audit::AuditPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidBody(e.body_text()))?;
    let page = state
        .audit
        .list(
            query.cursor.as_deref(),
            query.limit.unwrap_or(100),
            query.action,
            query.target,
        )
        .await?;
    Ok(Json(page))
}

/// Maps a multipart read error to 413 when the body limit was hit, 400 otherwise.
fn upload_error(max_component: ByteSize, e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: max_component.to_string(),
        }
    } else {
        ApiError::BadUpload(format!(
            "cannot read the multipart upload: {}",
            e.body_text()
        ))
    }
}

/// Reads the parts of a deploy upload: `manifest` (UTF-8 text) and `component` (at most
/// `max_component` bytes), each exactly once, nothing else.
pub(crate) async fn read_upload(
    mut multipart: Multipart,
    max_component: ByteSize,
) -> Result<(String, Bytes), ApiError> {
    let mut manifest: Option<String> = None;
    let mut component: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| upload_error(max_component, e))?
    {
        let part = field.name().unwrap_or_default().to_string();
        match part.as_str() {
            "manifest" if manifest.is_none() => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| upload_error(max_component, e))?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::BadUpload("the `manifest` part is not UTF-8 text".into())
                })?;
                manifest = Some(text);
            }
            "component" if component.is_none() => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| upload_error(max_component, e))?;
                if bytes.len() as u64 > max_component.0 {
                    return Err(ApiError::PayloadTooLarge {
                        limit: max_component.to_string(),
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
    Ok((manifest, component))
}

/// `PUT /admin/plugins/{name}` with multipart parts `manifest` (plinth.toml) and `component`.
#[utoipa::path(put, path = "/admin/plugins/{name}", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin (must match the manifest's name)")),
    request_body(content = DeployUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = Deployed, description = "a new plugin"),
        (status = 200, body = Deployed, description = "a new version, or `unchanged`"),
        (status = 400, body = ErrorBody, description = "invalid manifest or component, route_conflict, limit_over_cap"),
        (status = 413, body = ErrorBody)))]
async fn deploy(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let multipart = multipart.map_err(|e| {
        ApiError::BadUpload(format!(
            "expected multipart/form-data with parts `manifest` and `component`: {}",
            e.body_text()
        ))
    })?;
    let (manifest, component) = read_upload(multipart, state.max_component_size).await?;
    let deployed = deploy_plugin(state, name, manifest, component, actor).await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)).into_response())
}
