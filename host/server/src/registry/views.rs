//! The admin API's view of plugins: what operators see of a plugin, its routes, limits,
//! grants, failures, versions and config. Built from the active set; nothing here changes it.

use super::LoadedPlugin;
use super::plugin_config::{ConfigSnapshot, ShownValue};
use crate::units::{ByteSize, rfc3339};
use serde::{Deserialize, Serialize};

/// A route as shown to operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RouteInfo {
    /// The route pattern, e.g. `/hello/{name}` (`{*rest}` matches the rest of the path).
    pub path: String,
    /// The methods it answers, e.g. `GET` (`HEAD` is answered by `GET` routes too).
    pub methods: Vec<String>,
    /// Who may call it: `public`, `user` or `role:NAME`.
    pub auth: String,
    /// Whether the plugin sees the caller's `Authorization` header on this route (operator
    /// and admin credentials only with `forward_privileged_credentials`).
    pub forward_authorization: bool,
}

/// A plugin as shown to operators: the JSON of the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PluginInfo {
    /// The plugin's name, unique on the server.
    pub name: String,
    /// The routes of the active version, as its manifest declares them.
    pub routes: Vec<RouteInfo>,
    /// Whether the operator lets operator and admin credentials reach this plugin on its
    /// `forward_authorization` routes (`--forward-privileged-credentials`).
    pub forward_privileged_credentials: bool,
    /// The active version's number.
    pub version: u64,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// Component size in bytes.
    pub size: u64,
    /// When this version was deployed (RFC 3339, UTC).
    pub deployed_at: String,
    /// Who deployed this version, when known.
    pub deployed_by: Option<String>,
    /// Required config keys not set yet: until they are, the routes answer 503.
    pub missing_config: Vec<String>,
    /// The limits its requests run under.
    pub limits: LimitsInfo,
    /// The origins it may call.
    pub outbound: Vec<String>,
    /// What each interface the component imports gets from this host.
    pub grants: Vec<Grant>,
    /// Requests of this version that failed, by cause.
    pub failures: FailureCounts,
}

/// A plugin's limits as shown to operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LimitsInfo {
    /// e.g. `64MiB`.
    pub memory: String,
    /// e.g. `10s`.
    pub timeout: String,
    /// Instances at once.
    pub max_concurrency: u32,
    /// e.g. `10MiB`.
    pub max_request_body: String,
    /// e.g. `64MiB`.
    pub max_response_body: String,
    /// Which routes keep instances between requests: `off`, `public` or `all`.
    pub instance_reuse: String,
}

/// One imported interface and what the host gives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Grant {
    /// The interface, e.g. `wasi:filesystem/preopens@0.2.0`.
    pub interface: String,
    /// What it gets, e.g. `denied: no directories are shared`.
    pub access: String,
}

/// Counts of failed requests, so a plugin that keeps crashing shows it (it is never restarted
/// in a loop: every request gets a fresh instance anyway).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FailureCounts {
    /// Traps and panics.
    pub traps: u64,
    /// Requests past their deadline.
    pub timeouts: u64,
    /// Requests stopped at the memory limit.
    pub memory_limit: u64,
}

/// What the host gives an imported interface.
fn access(interface: &str, outbound: &[crate::runtime::outgoing_http::OutboundOrigin]) -> String {
    let package = interface.split('@').next().unwrap_or(interface);
    match package {
        p if p.starts_with("wasi:filesystem/") => "denied: no directories are shared".into(),
        p if p.starts_with("wasi:sockets/") => {
            "denied: no sockets (HTTP calls go through [outbound])".into()
        }
        "wasi:cli/environment" => "empty: no environment variables or arguments".into(),
        "wasi:cli/stdin" => "empty".into(),
        "wasi:cli/stdout" | "wasi:cli/stderr" => "to the server log".into(),
        "wasi:http/outgoing-handler" if outbound.is_empty() => {
            "denied: the manifest has no [outbound] allow entries".into()
        }
        "wasi:http/outgoing-handler" => format!(
            "only {}",
            outbound
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        p if p.starts_with("wasi:keyvalue/") => "the plugin's own buckets".into(),
        "wasi:config/store" => "this plugin's config and secrets".into(),
        _ => "granted".into(),
    }
}

/// A plugin's config as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ConfigView {
    /// The plugin these values belong to.
    pub plugin: String,
    /// Every set key; secrets masked.
    pub config: Vec<ShownValue>,
    /// Keys the deployed manifest requires (empty if the plugin is not deployed).
    pub required: Vec<String>,
    /// Required keys not set yet.
    pub missing: Vec<String>,
}

impl LoadedPlugin {
    /// The required config keys not in `config`.
    pub fn missing_config(&self, config: &ConfigSnapshot) -> Vec<String> {
        self.manifest
            .config
            .required()
            .filter(|k| !config.keys.contains(k.as_str()))
            .map(|k| k.to_string())
            .collect()
    }

    /// The operator's view of this plugin, given its current config.
    pub fn info(&self, config: &ConfigSnapshot) -> PluginInfo {
        PluginInfo {
            name: self.record.name.clone(),
            routes: self
                .manifest
                .routes
                .iter()
                .map(|r| RouteInfo {
                    path: r.path.as_str().to_string(),
                    methods: r.methods.iter().map(|m| m.0.to_string()).collect(),
                    auth: r.auth.to_string(),
                    forward_authorization: r.forward_authorization,
                })
                .collect(),
            forward_privileged_credentials: false,
            version: self.record.version,
            sha256: self.record.sha256.clone(),
            size: self.record.size,
            deployed_at: rfc3339(self.record.deployed_at_ms),
            deployed_by: self.record.deployed_by.clone(),
            missing_config: self.missing_config(config),
            limits: LimitsInfo {
                memory: ByteSize(self.limits.memory).to_string(),
                timeout: humantime::format_duration(self.limits.timeout).to_string(),
                max_concurrency: self.limits.max_concurrency,
                max_request_body: ByteSize(self.limits.max_request_body).to_string(),
                max_response_body: ByteSize(self.limits.max_response_body).to_string(),
                instance_reuse: self.limits.instance_reuse.as_str().to_string(),
            },
            outbound: self.outbound.iter().map(ToString::to_string).collect(),
            grants: self
                .code
                .imports
                .iter()
                .map(|interface| Grant {
                    access: access(interface, &self.outbound),
                    interface: interface.clone(),
                })
                .collect(),
            failures: self.failures.snapshot(),
        }
    }
}

/// The result of a successful deploy or rollback.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deployed {
    /// The plugin as now active.
    #[serde(flatten)]
    pub info: PluginInfo,
    /// Whether the name was new (201) rather than replaced (200).
    #[serde(skip)]
    pub created: bool,
    /// True when nothing changed: the same component and manifest were already active (or the
    /// rollback target already was). Only shown when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// One kept version of a plugin, as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Its number: 1 for a plugin's first deploy, one more for each later one.
    pub version: u64,
    /// Whether it is the one serving.
    pub active: bool,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// Component size in bytes.
    pub size: u64,
    /// When it was deployed (RFC 3339, UTC).
    pub deployed_at: String,
    /// Who deployed it, when known.
    pub deployed_by: Option<String>,
    /// The manifest exactly as uploaded.
    pub manifest: String,
}

/// A stored plugin that could not be activated at start (it stays stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NotLoaded {
    /// The stored plugin that is not serving.
    pub plugin: String,
    /// Why it could not be loaded (it stays stored; a redeploy replaces it).
    pub reason: String,
}
