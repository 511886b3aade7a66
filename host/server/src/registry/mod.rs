//! Deployed plugins: validation, compilation off the async threads, durable storage and atomic
//! activation of the set of active plugins with its route table.
//!
//! **Invariant:** the active set ([`Active`]) is immutable and replaced whole through an
//! `ArcSwap`. A request takes one snapshot and finishes on it, so a deploy never disturbs
//! requests in flight, and no request sees a half-built route table.
//!
//! **Invariant:** nothing changes until everything is checked: a deploy that fails validation,
//! compilation, linking or route checks leaves the store and the active set as they were.

mod lifecycle;
mod loaded;
pub mod manifest;
pub mod plugin_config;
mod views;

pub use loaded::{Active, Failures, LoadedPlugin, RouteTarget};
pub use views::{
    ConfigView, Deployed, FailureCounts, Grant, LimitsInfo, NotLoaded, PluginInfo, RouteInfo,
    VersionInfo,
};

use crate::audit::Actor;
use crate::router::RouteError;
use crate::runtime::limits::LimitError;
use crate::runtime::{CompileError, Runtime};
use crate::settings::LimitSettings;
use crate::store::{PluginRecord, Store, StoreError};
use crate::units::now_ms;
use arc_swap::ArcSwap;
use manifest::{ManifestError, PluginName};
use plugin_config::{ConfigError, ConfigKey, ConfigSnapshot, NewValue};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
        /// The plugin named in the request.
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
    /// Stored plugins not serving, with the record that failed when trying it again would
    /// fail the same way (not tried again while unchanged).
    not_loaded: std::sync::Mutex<BTreeMap<String, (Option<PluginRecord>, NotLoaded)>>,
    /// Plugins granted operator and admin credentials on `forward_authorization` routes.
    forward_privileged: BTreeSet<String>,
    /// Requests in flight by plugin name, across versions.
    running: std::sync::Mutex<BTreeMap<String, Arc<crate::runtime::Running>>>,
    /// One permit per core: components load or compile at most this many at once (uploads and
    /// the start-up load alike), so a burst of deploys queues instead of taking every blocking
    /// thread and core from requests.
    compiles: Arc<tokio::sync::Semaphore>,
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
            compiles: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
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
        let values = plugin_config::load(&*self.store, plugin).await?;
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

    /// Rereads every plugin's config from the store, after another host sharing it changed
    /// some: plugins with config stored now, and those this host had config for.
    pub async fn reload_config(&self) -> Result<(), StoreError> {
        let _guard = self.writes.lock().await;
        let mut plugins = plugin_config::plugins_with_config(&*self.store).await?;
        plugins.extend(self.config.load().keys().cloned());
        for plugin in plugins {
            self.refresh_config(&plugin).await?;
        }
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
        let declared = self
            .active()
            .plugins
            .get(name.as_str())
            .map(|p| p.declared_secrets())
            .unwrap_or_default();
        plugin_config::set(
            &*self.store,
            name.as_str(),
            &values,
            &declared,
            now_ms(),
            &audit,
        )
        .await?;
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
        plugin_config::unset(&*self.store, name.as_str(), &key, &audit).await?;
        audit.committed();
        self.refresh_config(name.as_str()).await?;
        tracing::info!(plugin = %name, key = %key, "plugin config key removed");
        Ok(())
    }

    /// A plugin's config as operators see it (secrets masked).
    pub async fn config_view(&self, plugin: &str) -> Result<ConfigView, ConfigError> {
        let name = PluginName::parse(plugin).map_err(ConfigError::Invalid)?;
        let values = plugin_config::load(&*self.store, name.as_str()).await?;
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
        self.lock_not_loaded()
            .values()
            .map(|(_, why)| why.clone())
            .collect()
    }

    fn lock_not_loaded(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (Option<PluginRecord>, NotLoaded)>> {
        self.not_loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
}
