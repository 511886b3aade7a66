//! `/admin/plugins/{name}/config`: operators set, list and remove a plugin's config and secrets.
//! Values marked secret are write-only: listings show them masked.

use super::admin::Operator;
use super::{ApiError, ApiJson, AppState};
use crate::audit::Actor;
use crate::registry::ConfigView;
use crate::registry::plugin_config::{ConfigError, ConfigKey, NewValue};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/plugins/{name}/config", get(show).put(set_many))
        .route(
            "/admin/plugins/{name}/config/{key}",
            put(set_one).delete(unset),
        )
}

/// A value as given: a plain string, or `{"value": "...", "secret": true}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ValueInput {
    Plain(String),
    Full(FullValue),
}

#[derive(Deserialize)]
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

async fn show(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ConfigView>, ApiError> {
    Ok(Json(state.registry.config_view(&name).await?))
}

/// `PUT .../config` with `{"KEY": "value", "SECRET": {"value": "...", "secret": true}}`: sets
/// every key given (atomically), leaves the others.
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

/// Sets the values and records which keys changed (never the values).
async fn set(
    state: &AppState,
    actor: &Actor,
    name: &str,
    values: BTreeMap<ConfigKey, NewValue>,
) -> Result<Json<ConfigView>, ApiError> {
    let keys: Vec<String> = values.keys().map(ToString::to_string).collect();
    let secrets: Vec<String> = values
        .iter()
        .filter(|(_, v)| v.secret)
        .map(|(k, _)| k.to_string())
        .collect();
    let view = state.registry.set_config(name, values).await?;
    state
        .audit
        .record(
            actor,
            "config.set",
            name,
            json!({ "keys": keys, "secrets": secrets }),
        )
        .await;
    Ok(Json(view))
}

/// `PUT .../config/{key}` with `{"value": "...", "secret": false}`.
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

async fn unset(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.registry.unset_config(&name, &key).await?;
    state
        .audit
        .record(&actor, "config.unset", &name, json!({ "keys": [key] }))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
