//! `/admin/plugins/{name}/config`: operators set, list and remove a plugin's config and secrets.
//! Values marked secret are write-only: listings show them masked.

use super::admin::Operator;
use super::openapi::ErrorBody;
use super::{ApiError, ApiJson, AppState};
use crate::audit::Actor;
use crate::registry::ConfigView;
use crate::registry::plugin_config::{ConfigError, ConfigKey, NewValue};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, set_many))
        .routes(routes!(set_one, unset))
}

/// A value as given: a plain string, or `{"value": "...", "secret": true}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum ValueInput {
    Plain(String),
    Full(FullValue),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FullValue {
    value: String,
    #[serde(default)]
    secret: bool,
}

impl From<ValueInput> for NewValue {
    fn from(input: ValueInput) -> Self {
        match input {
            ValueInput::Plain(value) => NewValue {
                value,
                secret: false,
            },
            ValueInput::Full(full) => NewValue {
                value: full.value,
                secret: full.secret,
            },
        }
    }
}

/// A plugin's config (secrets masked), required and missing keys.
#[utoipa::path(get, path = "/admin/plugins/{name}/config", tag = "config", security(("bearer" = [])), params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, body = ConfigView), (status = 400, body = ErrorBody)))]
async fn show(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ConfigView>, ApiError> {
    Ok(Json(state.registry.config_view(&name).await?))
}

/// `PUT .../config` with `{"KEY": "value", "SECRET": {"value": "...", "secret": true}}`: sets
/// every key given (atomically), leaves the others.
/// Sets every key given, atomically; leaves the others.
#[utoipa::path(put, path = "/admin/plugins/{name}/config", tag = "config", security(("bearer" = [])), params(("name" = String, Path, description = "The plugin")),
    request_body(content = BTreeMap<String, ValueInput>, description = "`{\"KEY\": \"value\", \"SECRET\": {\"value\": \"...\", \"secret\": true}}`"),
    responses((status = 200, body = ConfigView), (status = 400, body = ErrorBody)))]
async fn set_many(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<BTreeMap<String, ValueInput>>,
) -> Result<Json<ConfigView>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::InvalidBody(
            "give at least one key, e.g. {\"api_base\": \"https://...\"}".into(),
        ));
    }
    let mut values = BTreeMap::new();
    for (key, value) in body {
        let key = ConfigKey::parse(&key).map_err(ConfigError::Invalid)?;
        values.insert(key, NewValue::from(value));
    }
    set(&state, &actor, &name, values).await
}

/// Sets the values (the registry records which keys changed, never the values).
async fn set(
    state: &AppState,
    actor: &Actor,
    name: &str,
    values: BTreeMap<ConfigKey, NewValue>,
) -> Result<Json<ConfigView>, ApiError> {
    let (state, actor, name) = (state.clone(), actor.clone(), name.to_string());
    super::to_completion(async move {
        Ok(Json(
            state.registry.set_config(&name, values, &actor).await?,
        ))
    })
    .await
}

/// `PUT .../config/{key}` with `{"value": "...", "secret": false}`.
/// Sets one key.
#[utoipa::path(put, path = "/admin/plugins/{name}/config/{key}", tag = "config", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), ("key" = String, Path, description = "The key")),
    request_body = FullValue, responses((status = 200, body = ConfigView), (status = 400, body = ErrorBody)))]
async fn set_one(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<FullValue>,
) -> Result<Json<ConfigView>, ApiError> {
    let key = ConfigKey::parse(&key).map_err(ConfigError::Invalid)?;
    let values = BTreeMap::from([(key, NewValue::from(ValueInput::Full(body)))]);
    set(&state, &actor, &name, values).await
}

/// Removes one key.
#[utoipa::path(delete, path = "/admin/plugins/{name}/config/{key}", tag = "config", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), ("key" = String, Path, description = "The key")),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
async fn unset(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    super::to_completion(async move {
        state.registry.unset_config(&name, &key, &actor).await?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
