//! One plugin's page: its routes and guards, versions with what changed in each manifest and a
//! rollback, config and secrets (secrets write-only), limits, outbound origins, grants and
//! failures; and the forms that change it, through the same registry calls as the API.

use super::session::{Posted, SignedIn, unconfirmed};
use super::{charts, layout};
use crate::api::{ApiError, AppState, to_completion};
use crate::metrics::history::Minute;
use crate::registry::plugin_config::{ConfigError, ConfigKey, NewValue};
use crate::registry::{PluginInfo, VersionInfo};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `GET /_/plugins/{name}`.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
    signed_in: SignedIn,
) -> Response {
    let active = state.registry.active();
    let Some(plugin) = active.plugins.get(&name) else {
        return layout::error_page(
            StatusCode::NOT_FOUND,
            "plugin_not_found",
            &format!("No plugin named {name:?} is deployed."),
        );
    };
    let info = state.registry.info(plugin);
    let versions = match state.registry.versions(&name).await {
        Ok(versions) => versions,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let config = match state.registry.config_view(&name).await {
        Ok(config) => config,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let csrf = signed_in.session.csrf.clone();
    let content = html! {
        p { a href={ "/_/plugins/" (name) "/logs" } { "Log, live" } " · " a href={ "/_/plugins/" (name) "/kv" } { "Data (key-value)" } }
        (summary(&info))
        (last_hour(&state.metrics.history().plugin(&name)))
        (routes(&info))
        (versions_section(&name, &versions, &csrf))
        section aria-labelledby="config" {
            h2 id="config" { "Config and secrets" }
            @if !config.missing.is_empty() {
                p.warning role="status" { "Its routes answer 503 until these are set: " (config.missing.join(", ")) }
            }
            @if config.config.is_empty() {
                p { "No config is set." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } th scope="col" { "Set" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for value in &config.config {
                            tr {
                                th scope="row" { code { (value.key) } }
                                td { @if value.secret { span.badge { "secret" } " " } code { (value.value) } }
                                td { time datetime=(value.updated_at) { (value.updated_at) } }
                                td {
                                    form method="post" action={ "/_/plugins/" (name) "/config/delete" } {
                                        input type="hidden" name="_csrf" value=(csrf);
                                        input type="hidden" name="key" value=(value.key);
                                        button type="submit" aria-label={ "Remove " (value.key) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.inline method="post" action={ "/_/plugins/" (name) "/config" } {
                input type="hidden" name="_csrf" value=(csrf);
                label { "Key" input name="key" required pattern="[A-Za-z0-9_.\\-]{1,128}"; }
                label { "Value" input type="password" name="value" autocomplete="off"; }
                label.check { input type="checkbox" name="secret" value="true" checked; "Secret (never shown again)" }
                button type="submit" { "Set" }
            }
        }
        (limits(&info))
        section aria-labelledby="remove" {
            h2 id="remove" { "Delete the plugin" }
            form.stacked method="post" action={ "/_/plugins/" (name) "/delete" } {
                input type="hidden" name="_csrf" value=(csrf);
                label.check { input type="checkbox" name="purge" value="true"; "Also delete its key-value data, config, secrets and logs (cannot be undone)" }
                label.check { input type="checkbox" name="confirm" value="yes" required; "Yes, stop serving " (name) }
                button.danger type="submit" { "Delete" }
            }
            p.hint { "Without the first box its data and config stay, and a new deploy under the same name finds them." }
        }
    };
    layout::page(&signed_in, "Plugins", &name, content).into_response()
}

fn summary(info: &PluginInfo) -> Markup {
    html! {
        dl.facts {
            div { dt { "Version" } dd { (info.version) } }
            div { dt { "Deployed" } dd { time datetime=(info.deployed_at) { (info.deployed_at) } @if let Some(by) = &info.deployed_by { " by " (by) } } }
            div { dt { "Component" } dd { code { (&info.sha256[..info.sha256.len().min(12)]) } " · " (layout::bytes(info.size)) } }
            div { dt { "Failures" } dd { (info.failures.traps) " traps · " (info.failures.timeouts) " timeouts · " (info.failures.memory_limit) " over memory" } }
        }
    }
}

/// The plugin's requests, errors and p95 latency over the last hour.
fn last_hour(minutes: &[Minute]) -> Markup {
    let series = |value: fn(&Minute) -> Option<f64>| -> Vec<Option<f64>> {
        minutes.iter().map(value).collect()
    };
    html! {
        section.charts aria-labelledby="last-hour" {
            h2 id="last-hour" { "The last hour" }
            (charts::chart("Requests per minute", "", &series(|m| Some(m.requests as f64)), charts::number))
            (charts::chart("Errors per minute", "", &series(|m| Some(m.errors as f64)), charts::number))
            (charts::chart("p95 latency", " ms", &series(|m| m.p95_ms), charts::number))
        }
    }
}

fn routes(info: &PluginInfo) -> Markup {
    html! {
        section aria-labelledby="routes" {
            h2 id="routes" { "Routes" }
            table {
                thead { tr { th scope="col" { "Methods" } th scope="col" { "Path" } th scope="col" { "Who may call" } th scope="col" { "Sees Authorization" } } }
                tbody {
                    @for route in &info.routes {
                        tr {
                            td { code { (route.methods.join(" ")) } }
                            td { code { (route.path) } }
                            td { span.badge { (route.auth) } }
                            td { @if route.forward_authorization { "yes" } @else { "no" } }
                        }
                    }
                }
            }
        }
    }
}

fn versions_section(name: &str, versions: &[VersionInfo], csrf: &str) -> Markup {
    let active = versions.iter().find(|v| v.active);
    html! {
        section aria-labelledby="versions" {
            h2 id="versions" { "Versions" }
            table {
                thead { tr { th scope="col" { "Version" } th scope="col" { "Deployed" } th scope="col" { "Component" } th scope="col" { "Manifest" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for version in versions {
                        tr {
                            th scope="row" { (version.version) @if version.active { " " span.badge { "active" } } }
                            td { time datetime=(version.deployed_at) { (version.deployed_at) } @if let Some(by) = &version.deployed_by { br; (by) } }
                            td { code { (&version.sha256[..version.sha256.len().min(12)]) } }
                            td {
                                @match active {
                                    Some(active) if !version.active => {
                                        details {
                                            summary { "What rolling back to it changes" }
                                            (manifest_diff(&active.manifest, &version.manifest))
                                        }
                                    }
                                    _ => { details { summary { "Manifest" } pre { (version.manifest) } } }
                                }
                            }
                            td {
                                @if !version.active {
                                    form method="post" action={ "/_/plugins/" (name) "/rollback" } {
                                        input type="hidden" name="_csrf" value=(csrf);
                                        input type="hidden" name="version" value=(version.version);
                                        button type="submit" { "Roll back to " (version.version) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The lines that differ between two manifests, marked `-` (only in `from`) and `+` (only in
/// `to`), with the unchanged lines around them.
fn manifest_diff(from: &str, to: &str) -> Markup {
    let diff = similar::TextDiff::from_lines(from, to);
    html! {
        pre.diff {
            @for change in diff.iter_all_changes() {
                @match change.tag() {
                    similar::ChangeTag::Delete => { del { "- " (change.value()) } }
                    similar::ChangeTag::Insert => { ins { "+ " (change.value()) } }
                    similar::ChangeTag::Equal => { span { "  " (change.value()) } }
                }
            }
        }
    }
}

fn limits(info: &PluginInfo) -> Markup {
    let limits = &info.limits;
    html! {
        section aria-labelledby="limits" {
            h2 id="limits" { "Limits, outbound calls and grants" }
            dl.facts {
                div { dt { "Memory" } dd { (limits.memory) } }
                div { dt { "Timeout" } dd { (limits.timeout) } }
                div { dt { "Instances at once" } dd { (limits.max_concurrency) } }
                div { dt { "Request body" } dd { (limits.max_request_body) } }
                div { dt { "Response body" } dd { (limits.max_response_body) } }
                div { dt { "Instance reuse" } dd { (limits.instance_reuse) } }
            }
            h3 { "May call" }
            @if info.outbound.is_empty() {
                p { "Nothing outside the host." }
            } @else {
                ul { @for origin in &info.outbound { li { code { (origin) } } } }
            }
            h3 { "What each import gets" }
            table {
                tbody {
                    @for grant in &info.grants {
                        tr { th scope="row" { code { (grant.interface) } } td { (grant.access) } }
                    }
                }
            }
        }
    }
}

/// A rollback form's fields.
#[derive(Deserialize)]
pub(super) struct RollbackForm {
    version: u64,
}

/// `POST /_/plugins/{name}/rollback`: makes a kept version the active one.
pub(super) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { form, actor, .. }: Posted<RollbackForm>,
) -> Response {
    let done = crate::api::rollback_plugin(state, name.clone(), Some(form.version), actor).await;
    layout::then_show(done, &format!("/_/plugins/{name}"))
}

/// The delete form's fields.
#[derive(Deserialize)]
pub(super) struct RemoveForm {
    /// `yes` once the box is ticked.
    #[serde(default)]
    confirm: String,
    /// Present (as `true`) when its box is ticked.
    #[serde(default)]
    purge: bool,
}

/// `POST /_/plugins/{name}/delete`: stops serving the plugin, once confirmed.
pub(super) async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { form, actor, .. }: Posted<RemoveForm>,
) -> Response {
    if form.confirm != "yes" {
        return unconfirmed();
    }
    let removed = crate::api::remove_plugin(state, name, form.purge, actor).await;
    layout::then_show(removed, "/_/plugins")
}

/// The config form's fields.
#[derive(Deserialize)]
pub(super) struct ConfigForm {
    key: String,
    #[serde(default)]
    value: String,
    /// Present (as `true`) when the box is ticked.
    #[serde(default)]
    secret: bool,
}

/// `POST /_/plugins/{name}/config`: sets one key.
pub(super) async fn set_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { form, actor, .. }: Posted<ConfigForm>,
) -> Response {
    let key = match ConfigKey::parse(&form.key) {
        Ok(key) => key,
        Err(e) => return layout::refusal(&ApiError::Config(ConfigError::Invalid(e))),
    };
    let values = BTreeMap::from([(
        key,
        NewValue {
            value: form.value,
            secret: form.secret,
        },
    )]);
    let (registry, target) = (state.registry.clone(), name.clone());
    let set =
        to_completion(async move { Ok(registry.set_config(&target, values, &actor).await?) }).await;
    layout::then_show(set, &format!("/_/plugins/{name}#config"))
}

/// The remove-a-key form's fields.
#[derive(Deserialize)]
pub(super) struct UnsetForm {
    key: String,
}

/// `POST /_/plugins/{name}/config/delete`: removes one key.
pub(super) async fn unset_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { form, actor, .. }: Posted<UnsetForm>,
) -> Response {
    let (registry, target) = (state.registry.clone(), name.clone());
    let removed =
        to_completion(async move { Ok(registry.unset_config(&target, &form.key, &actor).await?) })
            .await;
    layout::then_show(removed, &format!("/_/plugins/{name}#config"))
}
