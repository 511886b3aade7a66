//! What is active: each loaded plugin version with its runtime state, the route table over
//! them, and the immutable set ([`Active`]) that a deploy, rollback or delete replaces whole.

use super::manifest::Manifest;
use crate::auth::AuthPolicy;
use crate::router::{RouteError, RouteTable};
use crate::runtime::limits::Limits;
use crate::runtime::{PluginCode, Runtime};
use crate::store::PluginRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

    pub(super) fn new(
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
    /// The route's request metrics, found at its first request and shared by its methods.
    pub metrics: Arc<std::sync::OnceLock<crate::metrics::RouteMetrics>>,
}

/// One consistent view of the active plugins and their routes.
#[derive(Default)]
pub struct Active {
    /// Active plugins by name.
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Their routes.
    pub routes: RouteTable<RouteTarget>,
}

impl Active {
    /// The set with `plugin` in place of any version of its name, or the route conflict that
    /// forbids it (naming `plugin` as the newcomer). Returns whether the name was new.
    pub(super) fn with(&self, plugin: Arc<LoadedPlugin>) -> Result<(Active, bool), RouteError> {
        let others = self
            .plugins
            .iter()
            .filter(|(name, _)| **name != *plugin.name)
            .map(|(_, p)| p);
        let routes = build_routes(others, Some(&plugin))?;
        let mut plugins = self.plugins.clone();
        let created = plugins.insert(plugin.name.to_string(), plugin).is_none();
        Ok((Active { plugins, routes }, created))
    }

    /// The set without the plugin `name`.
    pub(super) fn without(&self, name: &str) -> Result<Active, RouteError> {
        let mut plugins = self.plugins.clone();
        plugins.remove(name);
        let routes = build_routes(plugins.values(), None)?;
        Ok(Active { plugins, routes })
    }
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

    pub(crate) fn snapshot(&self) -> super::FailureCounts {
        super::FailureCounts {
            traps: self.traps.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            memory_limit: self.memory_limit.load(Ordering::Relaxed),
        }
    }
}

/// Builds the route table for `plugins`, adding `last` after the others so a conflict names
/// the plugin being deployed as the newcomer.
pub(super) fn build_routes<'a>(
    plugins: impl Iterator<Item = &'a Arc<LoadedPlugin>>,
    last: Option<&'a Arc<LoadedPlugin>>,
) -> Result<RouteTable<RouteTarget>, RouteError> {
    let mut table = RouteTable::default();
    for plugin in plugins.chain(last) {
        for route in &plugin.manifest.routes {
            let metrics = Arc::default();
            let methods = route.methods.iter().map(|m| {
                (
                    m.0.clone(),
                    RouteTarget {
                        plugin: plugin.clone(),
                        auth: route.auth.clone(),
                        forward_authorization: route.forward_authorization,
                        metrics: Arc::clone(&metrics),
                    },
                )
            });
            table.add(&plugin.name, route.path.as_str(), methods)?;
        }
    }
    Ok(table)
}
