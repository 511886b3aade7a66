//! Deployed plugins: validation, compilation off the async threads, durable storage and atomic
//! activation of the set of active plugins with its route table.
//!
//! **Invariant:** the active set ([`Active`]) is immutable and replaced whole through an
//! `ArcSwap`. A request takes one snapshot and finishes on it, so a deploy never disturbs
//! requests in flight, and no request sees a half-built route table.
//!
//! **Invariant:** nothing changes until everything is checked: a deploy that fails validation,
//! compilation, linking or route checks leaves the store and the active set as they were.

pub mod manifest;
pub mod plugin_config;

use crate::audit::Actor;
use crate::auth::AuthPolicy;
use crate::config::LimitSettings;
use crate::router::{RouteError, RouteTable};
use crate::runtime::limits::{LimitError, Limits};
use crate::runtime::{CompileError, PluginCode, Runtime};
use crate::store::{PluginRecord, Store, StoreError};
use arc_swap::ArcSwap;
use bytes::Bytes;
use manifest::{Manifest, ManifestError, PluginName};
use plugin_config::{ConfigError, ConfigKey, ConfigSnapshot, NewValue, ShownValue};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a deploy or delete was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The name in the URL is not a valid plugin name.
    #[error("{0}")]
    InvalidName(String),
    /// The manifest names a different plugin than the URL.
    #[error("the URL names plugin {url:?} but the manifest names {manifest:?}")]
    NameMismatch {
        /// Name in the URL.
        url: String,
        /// Name in the manifest.
        manifest: String,
    },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component is not deployable.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A route clashes with another plugin's.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The manifest asks for limits beyond the operator's caps.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// No plugin of that name is deployed.
    #[error("no plugin named {0:?} is deployed")]
    NotFound(String),
    /// The plugin has no such kept version (or none before the active one).
    #[error("plugin {plugin:?} has {what}")]
    VersionNotFound {
        /// The plugin.
        plugin: String,
        /// e.g. `no version 3 (kept: 7, 6, 5)`.
        what: String,
    },
    /// Storage failed; nothing was activated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A background task died (a bug); nothing was activated.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A deployed, compiled plugin.
pub struct LoadedPlugin {
    /// Its name, shared with every request's log lines.
    pub name: Arc<str>,
    /// What is stored about it.
    pub record: PluginRecord,
    /// Its parsed manifest.
    pub manifest: Manifest,
    /// Its compiled code.
    pub code: PluginCode,
    /// The limits its requests run under.
    pub limits: Limits,
    /// One permit per instance allowed at once (`limits.max_concurrency`).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Failed requests of this version.
    pub failures: Failures,
    /// The origins it may call (`[outbound] allow`).
    pub outbound: Arc<[crate::runtime::outgoing_http::OutboundOrigin]>,
    /// The largest linear memory one of its instances grew to.
    pub memory_peak: Arc<std::sync::atomic::AtomicU64>,
    /// Instances kept between requests, when `limits.instance_reuse` allows.
    pub idle: Arc<crate::runtime::InstancePool>,
    /// Requests of this plugin in flight, shared by every version of the name: a purge waits
    /// for them, so none writes data back after it.
    pub running: Arc<crate::runtime::Running>,
}

impl LoadedPlugin {
    /// The config keys its manifest declares secret.
    pub fn declared_secrets(&self) -> BTreeSet<String> {
        self.manifest
            .config
            .secrets
            .iter()
            .map(|k| k.to_string())
            .collect()
    }

    fn new(
        runtime: &Runtime,
        record: PluginRecord,
        manifest: Manifest,
        code: PluginCode,
        limits: Limits,
        running: Arc<crate::runtime::Running>,
    ) -> Self {
        Self {
            name: Arc::from(record.name.as_str()),
            outbound: manifest.outbound.allow.clone().into(),
            record,
            manifest,
            code,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency as usize)),
            failures: Failures::default(),
            memory_peak: Arc::default(),
            idle: Arc::new(runtime.instance_pool(limits.max_concurrency as usize)),
            limits,
            running,
        }
    }
}

/// Where a route leads: the plugin and the auth settings of that route.
#[derive(Clone)]
pub struct RouteTarget {
    /// The plugin serving the route.
    pub plugin: Arc<LoadedPlugin>,
    /// Who may call it.
    pub auth: AuthPolicy,
    /// Whether the plugin sees the `Authorization` header.
    pub forward_authorization: bool,
}

/// One consistent view of the active plugins and their routes.
#[derive(Default)]
pub struct Active {
    /// Active plugins by name.
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Their routes.
    pub routes: RouteTable<RouteTarget>,
}

/// A route as shown to operators.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RouteInfo {
    /// The pattern.
    pub path: String,
    /// Accepted methods.
    pub methods: Vec<String>,
    /// Auth policy.
    pub auth: String,
    /// Whether the plugin sees the caller's `Authorization` header on this route (operator
    /// and admin credentials only with `forward_privileged_credentials`).
    pub forward_authorization: bool,
}

/// A plugin as shown to operators: the JSON of the admin API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Routes.
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
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
    pub instance_reuse: &'static str,
}

/// One imported interface and what the host gives it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Grant {
    /// The interface, e.g. `wasi:filesystem/preopens@0.2.0`.
    pub interface: String,
    /// What it gets, e.g. `denied: no directories are shared`.
    pub access: String,
}

/// Counts of failed requests, so a plugin that keeps crashing shows it (it is never restarted
/// in a loop: every request gets a fresh instance anyway).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FailureCounts {
    /// Traps and panics.
    pub traps: u64,
    /// Requests past their deadline.
    pub timeouts: u64,
    /// Requests stopped at the memory limit.
    pub memory_limit: u64,
}

/// Live failure counters of one deployed version.
#[derive(Debug, Default)]
pub struct Failures {
    traps: std::sync::atomic::AtomicU64,
    timeouts: std::sync::atomic::AtomicU64,
    memory_limit: std::sync::atomic::AtomicU64,
}

impl Failures {
    /// Counts one failed request.
    pub fn record(&self, error: &crate::runtime::HandleError) {
        use crate::runtime::HandleError as E;
        let counter = match error {
            E::Trap(_) | E::NoResponse => &self.traps,
            E::Timeout(_) => &self.timeouts,
            E::MemoryLimit(_) => &self.memory_limit,
            E::Instantiate(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> FailureCounts {
        FailureCounts {
            traps: self.traps.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            memory_limit: self.memory_limit.load(Ordering::Relaxed),
        }
    }
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ConfigView {
    /// The plugin.
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
                memory: crate::config::ByteSize(self.limits.memory).to_string(),
                timeout: humantime::format_duration(self.limits.timeout).to_string(),
                max_concurrency: self.limits.max_concurrency,
                max_request_body: crate::config::ByteSize(self.limits.max_request_body).to_string(),
                max_response_body: crate::config::ByteSize(self.limits.max_response_body)
                    .to_string(),
                instance_reuse: self.limits.instance_reuse.as_str(),
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

/// A millisecond Unix time as RFC 3339 (UTC).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The result of a successful deploy or rollback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deployed {
    /// The plugin as now active.
    #[serde(flatten)]
    pub info: PluginInfo,
    /// Whether the name was new (201) rather than replaced (200).
    #[serde(skip)]
    pub created: bool,
    /// True when nothing changed: the same component and manifest were already active (or the
    /// rollback target already was). Only shown when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// One kept version of a plugin, as operators see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Its number.
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

/// Deployed plugins and the operations on them.
pub struct Registry {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    active: ArcSwap<Active>,
    ready: AtomicBool,
    /// Serialises changes to the active set and to config; compilation happens before taking it.
    writes: tokio::sync::Mutex<()>,
    /// Each plugin's config as its instances read it; replaced whole on every change.
    config: ArcSwap<BTreeMap<String, Arc<ConfigSnapshot>>>,
    /// Server defaults and caps for plugin limits.
    limits: LimitSettings,
    /// Versions kept per plugin.
    keep_versions: usize,
    /// Stored plugins the last load left inactive, with the reason.
    not_loaded: std::sync::Mutex<Vec<NotLoaded>>,
    /// Plugins granted operator and admin credentials on `forward_authorization` routes.
    forward_privileged: BTreeSet<String>,
    /// Requests in flight by plugin name, across versions.
    running: std::sync::Mutex<BTreeMap<String, Arc<crate::runtime::Running>>>,
    /// One permit per core: uploads compile at most this many at once, so a burst of deploys
    /// queues instead of taking every blocking thread and core from requests.
    compiles: tokio::sync::Semaphore,
}

/// A stored plugin that could not be activated at start (it stays stored).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NotLoaded {
    /// The plugin.
    pub plugin: String,
    /// Why.
    pub reason: String,
}

/// Builds the route table for `plugins`, adding `last` after the others so a conflict names
/// the plugin being deployed as the newcomer.
fn build_routes<'a>(
    plugins: impl Iterator<Item = &'a Arc<LoadedPlugin>>,
    last: Option<&'a Arc<LoadedPlugin>>,
) -> Result<RouteTable<RouteTarget>, RouteError> {
    let mut table = RouteTable::default();
    for plugin in plugins.chain(last) {
        for route in &plugin.manifest.routes {
            let methods = route.methods.iter().map(|m| {
                (
                    m.0.clone(),
                    RouteTarget {
                        plugin: plugin.clone(),
                        auth: route.auth.clone(),
                        forward_authorization: route.forward_authorization,
                    },
                )
            });
            table.add(&plugin.name, route.path.as_str(), methods)?;
        }
    }
    Ok(table)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DeployError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DeployError::Internal(e.to_string()))
}

/// The audit entry of a deploy that stored `stored`.
fn deploy_entry(by: &Actor, stored: &PluginRecord) -> crate::audit::Pending {
    by.records(
        "plugin.deploy",
        &stored.name,
        serde_json::json!({
            "version": stored.version,
            "sha256": stored.sha256,
            "size": stored.size,
        }),
    )
}

/// Runs store work off the async threads; a task that dies (a bug) is a storage failure, not
/// the caller's fault.
async fn store_task<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend {
            op: "background task",
            message: e.to_string(),
        })
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    /// An empty registry over `store`; call [`Registry::load`] to activate what is stored.
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        limits: LimitSettings,
        keep_versions: usize,
        forward_privileged: BTreeSet<String>,
    ) -> Self {
        Self {
            store,
            runtime,
            active: ArcSwap::from_pointee(Active::default()),
            ready: AtomicBool::new(false),
            writes: tokio::sync::Mutex::new(()),
            config: ArcSwap::from_pointee(BTreeMap::new()),
            limits,
            keep_versions,
            not_loaded: std::sync::Mutex::default(),
            forward_privileged,
            running: std::sync::Mutex::default(),
            compiles: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            ),
        }
    }

    /// The config instances of `plugin` read now (empty if none is set).
    pub fn config(&self, plugin: &str) -> Arc<ConfigSnapshot> {
        self.config.load().get(plugin).cloned().unwrap_or_default()
    }

    /// The operator's view of a plugin: its active version and what config it still needs.
    pub fn info(&self, plugin: &LoadedPlugin) -> PluginInfo {
        PluginInfo {
            forward_privileged_credentials: self.forwards_privileged(&plugin.name),
            ..plugin.info(&self.config(&plugin.name))
        }
    }

    /// The in-flight counter of every version of `plugin`.
    fn running(&self, plugin: &str) -> Arc<crate::runtime::Running> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(plugin.to_string())
            .or_default()
            .clone()
    }

    /// Whether the operator granted `plugin` the operator and admin credentials of callers on
    /// its `forward_authorization` routes.
    pub fn forwards_privileged(&self, plugin: &str) -> bool {
        self.forward_privileged.contains(plugin)
    }

    /// Re-reads one plugin's stored config and publishes it. Call with `writes` held.
    async fn refresh_config(&self, plugin: &str) -> Result<(), StoreError> {
        let store = self.store.clone();
        let name = plugin.to_string();
        let values = store_task(move || plugin_config::load(&*store, &name)).await??;
        let mut all = (**self.config.load()).clone();
        if values.is_empty() {
            all.remove(plugin);
        } else {
            all.insert(
                plugin.to_string(),
                Arc::new(plugin_config::snapshot(&values)),
            );
        }
        self.config.store(Arc::new(all));
        Ok(())
    }

    /// Sets config keys of a plugin (deployed or not yet); the next request sees them.
    pub async fn set_config(
        &self,
        plugin: &str,
        values: BTreeMap<ConfigKey, NewValue>,
        by: &Actor,
    ) -> Result<ConfigView, ConfigError> {
        let name = PluginName::parse(plugin).map_err(ConfigError::Invalid)?;
        // Which keys changed and which were given as secret; never the values.
        let keys: Vec<&str> = values.keys().map(ConfigKey::as_str).collect();
        let secrets: Vec<&str> = values
            .iter()
            .filter(|(_, v)| v.secret)
            .map(|(k, _)| k.as_str())
            .collect();
        let details = serde_json::json!({ "keys": keys, "secrets": secrets });
        // Stamped under the lock, so entries sort in the order their changes commit.
        let _guard = self.writes.lock().await;
        let audit = by.records("config.set", name.as_str(), details);
        let store = self.store.clone();
        let owned = name.to_string();
        let declared = self
            .active()
            .plugins
            .get(name.as_str())
            .map(|p| p.declared_secrets())
            .unwrap_or_default();
        let entry = audit.clone();
        store_task(move || {
            plugin_config::set(&*store, &owned, &values, &declared, now_ms(), &entry)
        })
        .await??;
        audit.committed();
        self.refresh_config(name.as_str()).await?;
        let keys: Vec<_> = self.config(name.as_str()).keys.iter().cloned().collect();
        tracing::info!(plugin = %name, ?keys, "plugin config changed");
        drop(_guard);
        self.config_view(name.as_str()).await
    }

    /// Removes one config key of a plugin.
    pub async fn unset_config(
        &self,
        plugin: &str,
        key: &str,
        by: &Actor,
    ) -> Result<(), ConfigError> {
        let name = PluginName::parse(plugin).map_err(ConfigError::Invalid)?;
        let key = ConfigKey::parse(key).map_err(ConfigError::Invalid)?;
        let _guard = self.writes.lock().await;
        let audit = by.records(
            "config.unset",
            name.as_str(),
            serde_json::json!({ "keys": [key.as_str()] }),
        );
        let store = self.store.clone();
        let owned = name.to_string();
        let unset = key.clone();
        let entry = audit.clone();
        store_task(move || plugin_config::unset(&*store, &owned, &unset, &entry)).await??;
        audit.committed();
        self.refresh_config(name.as_str()).await?;
        tracing::info!(plugin = %name, key = %key, "plugin config key removed");
        Ok(())
    }

    /// A plugin's config as operators see it (secrets masked).
    pub async fn config_view(&self, plugin: &str) -> Result<ConfigView, ConfigError> {
        let name = PluginName::parse(plugin).map_err(ConfigError::Invalid)?;
        let store = self.store.clone();
        let owned = name.to_string();
        let values = store_task(move || plugin_config::load(&*store, &owned)).await??;
        let active = self.active();
        let deployed = active.plugins.get(name.as_str());
        let declared_secret: BTreeSet<String> =
            deployed.map(|p| p.declared_secrets()).unwrap_or_default();
        let required = deployed
            .map(|p| {
                p.manifest
                    .config
                    .required()
                    .map(|k| k.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let missing = deployed
            .map(|p| p.missing_config(&plugin_config::snapshot(&values)))
            .unwrap_or_default();
        Ok(ConfigView {
            plugin: name.to_string(),
            config: plugin_config::shown(&values, &declared_secret),
            required,
            missing,
        })
    }

    /// The current active set. Hold the returned `Arc` for the whole request.
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Stored plugins the last load could not activate.
    pub fn not_loaded(&self) -> Vec<NotLoaded> {
        self.not_loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Marks the server ready (stored plugins loaded, and `--apply` done): plugin routes and
    /// `/readyz` answer from now on.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the stored plugins have been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Compiles and activates every stored plugin (call [`Registry::mark_ready`] after). A plugin that no longer compiles or links is
    /// logged and left inactive (its data stays stored) rather than stopping the server.
    pub async fn load(&self) -> Result<usize, DeployError> {
        let _guard = self.writes.lock().await;
        let store = self.store.clone();
        let configured = blocking(move || plugin_config::plugins_with_config(&*store)).await??;
        for plugin in configured {
            self.refresh_config(&plugin).await?;
        }
        let store = self.store.clone();
        let records = blocking(move || store.plugins()).await??;
        // Loading is CPU-bound: one blocking thread per core, not one per plugin (a thousand
        // threads, each with its own allocator cache, would only add memory).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = Arc::new(tokio::sync::Semaphore::new(cores));
        let mut tasks = Vec::new();
        for record in records {
            let store = self.store.clone();
            let runtime = self.runtime.clone();
            let settings = self.limits;
            let running = self.running(&record.name);
            let permit = threads
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| DeployError::Internal(e.to_string()))?;
            tasks.push(tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let name = record.name.clone();
                let result = (|| -> Result<LoadedPlugin, String> {
                    let manifest = Manifest::parse(&record.manifest).map_err(|e| e.to_string())?;
                    // Caps may have been lowered since the deploy: then the plugin stays
                    // inactive, with the reason in the log, rather than run over the caps.
                    let limits = settings
                        .defaults
                        .for_manifest(&settings.caps, &manifest.limits)
                        .map_err(|e| e.to_string())?;
                    let bytes = store
                        .component(&record.sha256)
                        .map_err(|e| e.to_string())?
                        .ok_or("its component blob is missing")?;
                    let code = runtime
                        .load(&record.sha256, &bytes)
                        .map_err(|e| e.to_string())?;
                    Ok(LoadedPlugin::new(
                        &runtime, record, manifest, code, limits, running,
                    ))
                })();
                (name, result)
            }));
        }
        let mut plugins = BTreeMap::new();
        let mut not_loaded = Vec::new();
        for task in tasks {
            let (name, result) = task
                .await
                .map_err(|e| DeployError::Internal(e.to_string()))?;
            match result {
                Ok(plugin) => {
                    // Values stored before secrecy was kept with them: mark what the active
                    // manifest declares, so a later manifest without it cannot unmask them.
                    let (store, secrets, owned) =
                        (self.store.clone(), plugin.declared_secrets(), name.clone());
                    if !secrets.is_empty() {
                        blocking(move || plugin_config::mark_secret(&*store, &owned, &secrets))
                            .await??;
                    }
                    plugins.insert(name, Arc::new(plugin));
                }
                Err(reason) => {
                    tracing::error!(plugin = name, %reason, "stored plugin not loaded");
                    not_loaded.push(NotLoaded {
                        plugin: name,
                        reason,
                    });
                }
            }
        }
        // Stored plugins never clash (deploys check), but stay defensive: drop a clashing one.
        let routes = loop {
            match build_routes(plugins.values(), None) {
                Ok(routes) => break routes,
                Err(RouteError::Conflict { owner, .. }) if plugins.contains_key(&owner) => {
                    tracing::error!(plugin = owner, "stored plugin not loaded: route conflict");
                    plugins.remove(&owner);
                    not_loaded.push(NotLoaded {
                        plugin: owner,
                        reason: "its routes clash with another plugin's".into(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        };
        *self
            .not_loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = not_loaded;
        let count = plugins.len();
        self.active.store(Arc::new(Active { plugins, routes }));
        Ok(count)
    }

    /// Validates, compiles, stores and activates a plugin as its next version. Deploying the
    /// component and manifest already active changes nothing and says so (and is not audited).
    pub async fn deploy(
        &self,
        url_name: &str,
        manifest_text: String,
        component: Bytes,
        by: &Actor,
    ) -> Result<Deployed, DeployError> {
        let name = PluginName::parse(url_name).map_err(DeployError::InvalidName)?;
        let manifest = Manifest::parse(&manifest_text)?;
        let limits = self
            .limits
            .defaults
            .for_manifest(&self.limits.caps, &manifest.limits)?;
        if manifest.name != name {
            return Err(DeployError::NameMismatch {
                url: name.to_string(),
                manifest: manifest.name.to_string(),
            });
        }
        let sha256 = hex::encode(Sha256::digest(&component));
        if let Some(current) = self.active().plugins.get(name.as_str())
            && current.record.sha256 == sha256
            && current.record.manifest == manifest_text
        {
            return Ok(Deployed {
                info: self.info(current),
                created: false,
                unchanged: true,
            });
        }
        let runtime = self.runtime.clone();
        let bytes = component.clone();
        let sha = sha256.clone();
        // Bytes already compiled (another plugin or an earlier version) load from their artifact;
        // new ones compile here and have their artifact stored once their blob is, below.
        let compiling = self
            .compiles
            .acquire()
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let started = std::time::Instant::now();
        tracing::info!(plugin = %name, sha256, "loading or compiling the component");
        let (code, compiled) = blocking(move || runtime.load_or_compile(&sha, &bytes)).await??;
        tracing::info!(
            plugin = %name,
            compiled,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component ready"
        );
        drop(compiling);
        let record = PluginRecord {
            name: name.to_string(),
            manifest: manifest_text,
            sha256,
            size: component.len() as u64,
            deployed_at_ms: now_ms(),
            version: 0,
            deployed_by: Some(by.who.clone()),
        };
        let candidate = Arc::new(LoadedPlugin::new(
            &self.runtime,
            record.clone(),
            manifest.clone(),
            code.clone(),
            limits,
            self.running(name.as_str()),
        ));

        let _guard = self.writes.lock().await;
        let current = self.active.load_full();
        let others = || {
            current
                .plugins
                .iter()
                .filter(|(n, _)| *n != name.as_str())
                .map(|(_, p)| p)
        };
        build_routes(others(), Some(&candidate))?;
        let store = self.store.clone();
        let runtime = self.runtime.clone();
        let saved = code.clone();
        let keep = self.keep_versions;
        let secrets = candidate.declared_secrets();
        let actor = by.clone();
        let stored = blocking(move || {
            let audit = |stored: &PluginRecord| deploy_entry(&actor, stored).record();
            // New code is stored with its component, so a restart (even after a crash) loads it
            // instead of compiling again.
            let artifact = if compiled {
                runtime.artifact(&saved)
            } else {
                None
            };
            let stored = store.put_plugin(&record, &component, artifact.as_ref(), keep, &audit)?;
            // Values the manifest declares secret stay secret whatever later manifests say.
            plugin_config::mark_secret(&*store, &stored.name, &secrets)?;
            Ok::<_, StoreError>(stored)
        })
        .await??;
        // The same facts as the entry stored with the version (whose number the commit gave).
        deploy_entry(by, &stored).committed();
        let plugin = Arc::new(LoadedPlugin::new(
            &self.runtime,
            stored,
            manifest,
            code,
            limits,
            self.running(name.as_str()),
        ));
        let routes = build_routes(others(), Some(&plugin))?;
        let mut plugins = current.plugins.clone();
        let created = plugins.insert(name.to_string(), plugin.clone()).is_none();
        self.active.store(Arc::new(Active { plugins, routes }));
        tracing::info!(
            plugin = %name,
            version = plugin.record.version,
            sha256 = plugin.record.sha256,
            created,
            "plugin deployed"
        );
        Ok(Deployed {
            info: self.info(&plugin),
            created,
            unchanged: false,
        })
    }

    /// The kept versions of a deployed plugin, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, DeployError> {
        let active = self.active();
        let plugin = active
            .plugins
            .get(name)
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?;
        let active_version = plugin.record.version;
        let store = self.store.clone();
        let owned = name.to_string();
        let records = blocking(move || store.plugin_versions(&owned)).await??;
        Ok(records
            .into_iter()
            .map(|r| VersionInfo {
                active: r.version == active_version,
                version: r.version,
                sha256: r.sha256,
                size: r.size,
                deployed_at: rfc3339(r.deployed_at_ms),
                deployed_by: r.deployed_by,
                manifest: r.manifest,
            })
            .collect())
    }

    /// Makes a kept version active again: `to`, or the newest one before the active one.
    /// Requests in flight finish on the version they started on.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u64>,
        by: &Actor,
    ) -> Result<Deployed, DeployError> {
        let current = self.active();
        let active = current
            .plugins
            .get(name)
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?
            .clone();
        let store = self.store.clone();
        let owned = name.to_string();
        let kept = blocking(move || store.plugin_versions(&owned)).await??;
        let kept_list = || {
            kept.iter()
                .map(|r| r.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let target = match to {
            Some(v) => kept.iter().find(|r| r.version == v),
            None => kept.iter().find(|r| r.version < active.record.version),
        }
        .cloned()
        .ok_or_else(|| DeployError::VersionNotFound {
            plugin: name.to_string(),
            what: match to {
                Some(v) => format!("no version {v} (kept: {})", kept_list()),
                None => format!(
                    "no version before {} (kept: {})",
                    active.record.version,
                    kept_list()
                ),
            },
        })?;
        if target.version == active.record.version {
            return Ok(Deployed {
                info: self.info(&active),
                created: false,
                unchanged: true,
            });
        }
        let manifest = Manifest::parse(&target.manifest)?;
        let limits = self
            .limits
            .defaults
            .for_manifest(&self.limits.caps, &manifest.limits)?;
        let store = self.store.clone();
        let runtime = self.runtime.clone();
        let sha = target.sha256.clone();
        let code = blocking(move || {
            let bytes = store.component(&sha)?.ok_or_else(|| {
                StoreError::corrupt(format!("component {sha}"), "the blob is missing")
            })?;
            Ok::<_, DeployError>(runtime.load(&sha, &bytes)?)
        })
        .await??;

        let _guard = self.writes.lock().await;
        let current = self.active.load_full();
        let Some(active) = current.plugins.get(name) else {
            return Err(DeployError::NotFound(name.to_string()));
        };
        // A rollback that finished while this one waited for the lock may have made the target
        // active already: then nothing changes, and nothing is recorded.
        if active.record.version == target.version {
            return Ok(Deployed {
                info: self.info(active),
                created: false,
                unchanged: true,
            });
        }
        let from = active.record.version;
        let plugin = Arc::new(LoadedPlugin::new(
            &self.runtime,
            target,
            manifest,
            code,
            limits,
            self.running(name),
        ));
        let others = current
            .plugins
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(_, p)| p);
        let routes = build_routes(others, Some(&plugin))?;
        let store = self.store.clone();
        let owned = name.to_string();
        let version = plugin.record.version;
        let audit = by.records(
            "plugin.rollback",
            name,
            serde_json::json!({
                "from": from,
                "to": version,
                "sha256": plugin.record.sha256,
            }),
        );
        let entry = audit.record()?;
        blocking(move || store.activate_version(&owned, version, &entry))
            .await??
            .ok_or_else(|| DeployError::VersionNotFound {
                plugin: name.to_string(),
                what: format!("no version {version} any more"),
            })?;
        audit.committed();
        let mut plugins = current.plugins.clone();
        plugins.insert(name.to_string(), plugin.clone());
        self.active.store(Arc::new(Active { plugins, routes }));
        tracing::info!(plugin = name, version, "plugin rolled back");
        Ok(Deployed {
            info: self.info(&plugin),
            created: false,
            unchanged: false,
        })
    }

    /// Deactivates and deletes a plugin. Its key-value data and config stay stored (a later
    /// deploy of the same name finds them) unless `purge` is set.
    pub async fn remove(&self, name: &str, purge: bool, by: &Actor) -> Result<(), DeployError> {
        let _guard = self.writes.lock().await;
        let current = self.active.load_full();
        let deployed = current.plugins.get(name).cloned();
        match &deployed {
            Some(_) => {
                let mut plugins = current.plugins.clone();
                plugins.remove(name);
                let routes = build_routes(plugins.values(), None)?;
                let audit =
                    by.records("plugin.delete", name, serde_json::json!({ "purge": purge }));
                let entry = audit.record()?;
                let store = self.store.clone();
                let owned = name.to_string();
                if !blocking(move || store.delete_plugin(&owned, &entry)).await?? {
                    return Err(DeployError::NotFound(name.to_string()));
                }
                audit.committed();
                self.active.store(Arc::new(Active { plugins, routes }));
            }
            // `?purge=true` after a plain delete: the plugin is gone, its data may not be.
            None if purge => {
                let store = self.store.clone();
                let owned = name.to_string();
                let stored = blocking(move || {
                    let config = plugin_config::load(&*store, &owned)?;
                    Ok::<_, StoreError>(store.kv_usage(&owned)? > 0 || !config.is_empty())
                })
                .await??;
                if !stored {
                    return Err(DeployError::NotFound(name.to_string()));
                }
            }
            None => return Err(DeployError::NotFound(name.to_string())),
        }
        if purge {
            // Requests in flight (of any version, queued ones included) and their store calls
            // end first, each request within its deadline, so none writes data back after the
            // purge.
            let running = self.running(name);
            let deadline = tokio::time::Instant::now()
                + self.limits.caps.timeout
                + std::time::Duration::from_secs(2);
            while running.count() > 0 {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        plugin = name,
                        running = running.count(),
                        "purging while requests of the plugin are still running"
                    );
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        if purge {
            // Recorded with its last step: the entry says the data is gone, and an interrupted
            // purge (its kv tree is dropped whole, not in one commit with the rest) has none.
            let audit = by.records("plugin.purge", name, serde_json::json!({}));
            let entry = audit.clone();
            let store = self.store.clone();
            let owned = name.to_string();
            blocking(move || {
                store.kv_purge(&owned)?;
                plugin_config::purge(&*store, &owned, &entry)
            })
            .await??;
            audit.committed();
            self.refresh_config(name).await?;
        }
        tracing::info!(plugin = name, purge, "plugin deleted");
        Ok(())
    }
}
