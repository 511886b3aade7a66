//! The lifecycle of a plugin: load what is stored at start, deploy a new version, list and roll
//! back to kept versions, remove. Each builds a [`LoadedPlugin`] the same way ([`Registry::
//! checked`], then [`Registry::code`]) and changes the active set the same way (under the
//! `writes` lock: store, then swap a whole new [`Active`]).

use super::loaded::build_routes;
use super::manifest::{Manifest, PluginName};
use super::views::{Deployed, NotLoaded, VersionInfo};
use super::{Active, DeployError, LoadedPlugin, Registry, plugin_config};
use crate::audit::Actor;
use crate::router::RouteError;
use crate::runtime::PluginCode;
use crate::runtime::limits::Limits;
use crate::store::{PluginRecord, StoreError};
use crate::units::{now_ms, rfc3339};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// A component's code, and whether it had to be compiled (no usable artifact was stored).
struct Code {
    code: PluginCode,
    compiled: bool,
}

impl Registry {
    /// A manifest parsed and its limits resolved against the operator's caps (which may have
    /// been lowered since a stored version was deployed: then it is refused).
    fn checked(&self, manifest_text: &str) -> Result<(Manifest, Limits), DeployError> {
        let manifest = Manifest::parse(manifest_text)?;
        let limits = self
            .limits
            .defaults
            .for_manifest(&self.limits.caps, &manifest.limits)?;
        Ok((manifest, limits))
    }

    /// The code of the component `sha256`: from its stored artifact when one fits this engine,
    /// else compiled, on the blocking pool and at most one per core at a time. `bytes` are the
    /// component's (read from the store when `None`). A deploy's (`uploaded_as`) is logged
    /// when it starts, holding its permit, and when it is ready.
    async fn code(
        &self,
        sha256: &str,
        bytes: Option<Bytes>,
        uploaded_as: Option<&PluginName>,
    ) -> Result<Code, DeployError> {
        // The permit first: a load of many plugins reads each one's blob and artifact only
        // when a core is free for it, so they are never all in memory at once.
        let _permit = self
            .compiles
            .acquire()
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => Bytes::from(self.store.component(sha256).await?.ok_or_else(|| {
                StoreError::corrupt(format!("component {sha256}"), "the blob is missing")
            })?),
        };
        let artifact = self.runtime.stored_artifact(sha256).await;
        let started = std::time::Instant::now();
        if let Some(plugin) = uploaded_as {
            tracing::info!(%plugin, sha256, "loading or compiling the component");
        }
        let (runtime, sha) = (self.runtime.clone(), sha256.to_string());
        let (code, compiled) =
            tokio::task::spawn_blocking(move || runtime.load_or_compile(&sha, artifact, &bytes))
                .await
                .map_err(|e| DeployError::Internal(e.to_string()))??;
        if let Some(plugin) = uploaded_as {
            tracing::info!(
                %plugin,
                compiled,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "component ready"
            );
        }
        Ok(Code { code, compiled })
    }

    /// A stored version made ready to serve: checked, its code loaded (a compiled one's
    /// artifact stored for the next start).
    async fn stored_version(&self, record: PluginRecord) -> Result<LoadedPlugin, DeployError> {
        let (manifest, limits) = self.checked(&record.manifest)?;
        let Code { code, compiled } = self.code(&record.sha256, None, None).await?;
        if compiled {
            self.runtime.save_artifact(&record.sha256, &code).await;
        }
        let running = self.running(&record.name);
        Ok(LoadedPlugin::new(
            &self.runtime,
            record,
            manifest,
            code,
            limits,
            running,
        ))
    }

    /// Compiles and activates every stored plugin (call [`Registry::mark_ready`] after). A
    /// plugin that no longer compiles or links is logged and left inactive (its data stays
    /// stored) rather than stopping the server.
    pub async fn load(&self) -> Result<usize, DeployError> {
        let _guard = self.writes.lock().await;
        for plugin in plugin_config::plugins_with_config(&*self.store).await? {
            self.refresh_config(&plugin).await?;
        }
        let records = self.store.plugins().await?;
        self.activate_stored(records).await
    }

    /// Brings the active set in line with the store, after another host sharing it deployed,
    /// rolled back or deleted a plugin. Unchanged plugins keep their loaded code, and a
    /// version the plugin's own fault kept from loading (its manifest, its code, its limits) is
    /// not tried again; one kept out by a store failure or a route clash is, every time.
    /// Returns whether anything changed.
    pub async fn reconcile(&self) -> Result<bool, DeployError> {
        let _guard = self.writes.lock().await;
        let records = self.store.plugins().await?;
        let active = self.active.load_full();
        let unchanged = {
            let failed = self.lock_not_loaded();
            records.len() == active.plugins.len() + failed.len()
                && records.iter().all(|record| {
                    active
                        .plugins
                        .get(&record.name)
                        .map(|p| &p.record)
                        .or_else(|| failed.get(&record.name).and_then(|(r, _)| r.as_ref()))
                        == Some(record)
                })
        };
        if unchanged {
            return Ok(false);
        }
        let count = self.activate_stored(records).await?;
        tracing::info!(
            plugins = count,
            "plugins changed by another host are active"
        );
        Ok(true)
    }

    /// Activates exactly `records` (the store's active versions), reusing what is already
    /// loaded for the same record. Call with `writes` held.
    async fn activate_stored(&self, records: Vec<PluginRecord>) -> Result<usize, DeployError> {
        let active = self.active.load_full();
        let failed_before = self.lock_not_loaded().clone();
        // Concurrently, so one core's worth of plugins load at a time (`code` takes a permit
        // per core); a thousand at once would only queue.
        let loading = records.iter().map(|record| {
            let active = &active;
            let failed_before = &failed_before;
            async move {
                let name = record.name.clone();
                if let Some(loaded) = active.plugins.get(&name)
                    && loaded.record == *record
                {
                    return (name, Ok(Ok(loaded.clone())));
                }
                if let Some((Some(tried), why)) = failed_before.get(&name)
                    && tried == record
                {
                    return (name, Ok(Err((why.reason.clone(), true))));
                }
                match self.stored_version(record.clone()).await {
                    Ok(plugin) => (name, Ok(Ok(Arc::new(plugin)))),
                    // The host itself failed (not the plugin): stop, as at start.
                    Err(DeployError::Internal(reason)) => (name, Err(reason)),
                    // Maybe passing (the database cut off a moment): try again next time.
                    Err(e @ DeployError::Store(_)) => (name, Ok(Err((e.to_string(), false)))),
                    Err(e) => (name, Ok(Err((e.to_string(), true)))),
                }
            }
        });
        let mut plugins = BTreeMap::new();
        let mut not_loaded = BTreeMap::new();
        let by_name: BTreeMap<&str, &PluginRecord> =
            records.iter().map(|r| (r.name.as_str(), r)).collect();
        for (name, result) in futures_util::future::join_all(loading).await {
            match result.map_err(DeployError::Internal)? {
                Ok(plugin) => {
                    let newly_loaded = active
                        .plugins
                        .get(&name)
                        .is_none_or(|before| before.record != plugin.record);
                    if newly_loaded {
                        // Values stored before secrecy was kept with them: mark what the
                        // active manifest declares, so a later manifest without it cannot
                        // unmask them.
                        let secrets = plugin.declared_secrets();
                        if !secrets.is_empty() {
                            plugin_config::mark_secret(&*self.store, &name, &secrets).await?;
                        }
                    }
                    plugins.insert(name, plugin);
                }
                Err((reason, settled)) => {
                    if !failed_before.contains_key(&name) {
                        tracing::error!(plugin = name, %reason, "stored plugin not loaded");
                    }
                    // The record is kept only when trying it again would fail the same way.
                    let record = settled.then(|| by_name[name.as_str()].clone());
                    let why = NotLoaded {
                        plugin: name.clone(),
                        reason,
                    };
                    not_loaded.insert(name, (record, why));
                }
            }
        }
        // Stored plugins never clash on one host (deploys check), but two hosts may each have
        // accepted one of two clashing deploys: the one deployed first keeps serving, on every
        // host alike.
        let routes = loop {
            match build_routes(plugins.values(), None) {
                Ok(routes) => break routes,
                Err(RouteError::Conflict {
                    owner, other_owner, ..
                }) if plugins.contains_key(&owner) => {
                    let deployed = |name: &str| {
                        plugins
                            .get(name)
                            .map(|p: &Arc<LoadedPlugin>| p.record.deployed_at_ms)
                    };
                    let owner = match (deployed(&owner), deployed(&other_owner)) {
                        (Some(mine), Some(theirs)) if theirs > mine => other_owner,
                        _ => owner,
                    };
                    tracing::error!(plugin = owner, "stored plugin not loaded: route conflict");
                    plugins.remove(&owner);
                    // Not settled: once the other plugin goes, it may load.
                    let why = NotLoaded {
                        plugin: owner.clone(),
                        reason: "its routes clash with another plugin's".into(),
                    };
                    not_loaded.insert(owner, (None, why));
                }
                Err(e) => return Err(e.into()),
            }
        };
        *self.lock_not_loaded() = not_loaded;
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
        let (manifest, limits) = self.checked(&manifest_text)?;
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
        // Bytes already compiled (another plugin or an earlier version) load from their
        // artifact; new ones compile here and have their artifact stored with the version.
        let Code { code, compiled } = self
            .code(&sha256, Some(component.clone()), Some(&name))
            .await?;
        let record = PluginRecord {
            name: name.to_string(),
            manifest: manifest_text,
            sha256,
            size: component.len() as u64,
            deployed_at_ms: now_ms(),
            version: 0,
            deployed_by: Some(by.who.clone()),
        };
        let running = self.running(name.as_str());
        let loaded = |record| {
            Arc::new(LoadedPlugin::new(
                &self.runtime,
                record,
                manifest.clone(),
                code.clone(),
                limits,
                running.clone(),
            ))
        };
        let candidate = loaded(record.clone());

        let _guard = self.writes.lock().await;
        let current = self.active.load_full();
        current.with(candidate.clone())?;
        // New code is stored with its component, so a restart (even after a crash) loads it
        // instead of compiling again.
        let artifact = if compiled {
            self.runtime.artifact(&code)
        } else {
            None
        };
        let actor = by.clone();
        let stored = self
            .store
            .put_plugin(
                record,
                component,
                artifact,
                self.keep_versions,
                Box::new(move |stored| deploy_entry(&actor, stored).record()),
            )
            .await?;
        // Values the manifest declares secret stay secret whatever later manifests say.
        plugin_config::mark_secret(&*self.store, &stored.name, &candidate.declared_secrets())
            .await?;
        // The same facts as the entry stored with the version (whose number the commit gave).
        deploy_entry(by, &stored).committed();
        let plugin = loaded(stored);
        let (active, created) = current.with(plugin.clone())?;
        self.active.store(Arc::new(active));
        self.lock_not_loaded().remove(name.as_str());
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
        let records = self.store.plugin_versions(name).await?;
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
        let active = self
            .active()
            .plugins
            .get(name)
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?
            .clone();
        let kept = self.store.plugin_versions(name).await?;
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
        let plugin = Arc::new(self.stored_version(target).await?);

        let _guard = self.writes.lock().await;
        let current = self.active.load_full();
        let Some(active) = current.plugins.get(name) else {
            return Err(DeployError::NotFound(name.to_string()));
        };
        // A rollback that finished while this one waited for the lock may have made the target
        // active already: then nothing changes, and nothing is recorded.
        if active.record.version == plugin.record.version {
            return Ok(Deployed {
                info: self.info(active),
                created: false,
                unchanged: true,
            });
        }
        let (next, _) = current.with(plugin.clone())?;
        let version = plugin.record.version;
        let audit = by.records(
            "plugin.rollback",
            name,
            serde_json::json!({
                "from": active.record.version,
                "to": version,
                "sha256": plugin.record.sha256,
            }),
        );
        self.store
            .activate_version(name, version, audit.record()?)
            .await?
            .ok_or_else(|| DeployError::VersionNotFound {
                plugin: name.to_string(),
                what: format!("no version {version} any more"),
            })?;
        audit.committed();
        self.active.store(Arc::new(next));
        self.lock_not_loaded().remove(name);
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
        if current.plugins.contains_key(name) {
            let next = current.without(name)?;
            let audit = by.records("plugin.delete", name, serde_json::json!({ "purge": purge }));
            if !self.store.delete_plugin(name, audit.record()?).await? {
                return Err(DeployError::NotFound(name.to_string()));
            }
            audit.committed();
            self.active.store(Arc::new(next));
            self.lock_not_loaded().remove(name);
        } else if !purge || !self.has_data(name).await? {
            // `?purge=true` after a plain delete finds the plugin gone but maybe not its data.
            return Err(DeployError::NotFound(name.to_string()));
        }
        if purge {
            self.purge(name, by).await?;
        }
        tracing::info!(plugin = name, purge, "plugin deleted");
        Ok(())
    }

    /// Whether `name` has key-value data or config stored.
    async fn has_data(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.store.kv_usage(name).await? > 0
            || !plugin_config::load(&*self.store, name).await?.is_empty())
    }

    /// Deletes a removed plugin's key-value data and config. Call with `writes` held.
    async fn purge(&self, name: &str, by: &Actor) -> Result<(), DeployError> {
        // Requests in flight (of any version, queued ones included) and their store calls end
        // first, each request within its deadline, so none writes data back after the purge.
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
        // Recorded with its last step: the entry says the data is gone, and an interrupted
        // purge (its kv tree is dropped whole, not in one commit with the rest) has none.
        let audit = by.records("plugin.purge", name, serde_json::json!({}));
        self.store.kv_purge(name).await?;
        plugin_config::purge(&*self.store, name, &audit).await?;
        audit.committed();
        self.refresh_config(name).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Lookup;
    use crate::runtime::Runtime;
    use crate::runtime::limits::PoolSize;
    use crate::settings::LimitSettings;
    use crate::store::{Durability, KvLimits, SledStore, Store};
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// A guest component built by `cargo xtask build-guests` (the test command builds them).
    fn guest(name: &str) -> Bytes {
        let dir = std::env::var_os("PLINTH_GUEST_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests"),
            PathBuf::from,
        );
        let path = dir.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run cargo xtask build-guests)", path.display()));
        Bytes::from(bytes)
    }

    /// A manifest for plugin `name` with one public GET route per path.
    fn manifest(name: &str, paths: &[&str]) -> String {
        let mut text = format!("name = \"{name}\"\n");
        for path in paths {
            text.push_str(&format!(
                "[[routes]]\npath = \"{path}\"\nmethods = [\"GET\"]\nauth = \"public\"\n"
            ));
        }
        text
    }

    fn operator() -> Actor {
        Actor {
            who: "test-operator".into(),
            address: None,
        }
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plinth-registry-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A registry over the store in `dir`, as `serve` builds it, with nothing loaded yet.
    async fn registry(dir: &Path) -> (Registry, Arc<dyn Store>) {
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir, Durability::Durable).await.unwrap());
        let runtime = Runtime::new(
            store.clone(),
            KvLimits {
                max_value: 1 << 20,
                quota: 256 << 20,
            },
            PoolSize {
                instances: 8,
                idle: 0,
                max_memory: 64 << 20,
            },
            Arc::new(crate::plugin_logs::PluginLogs::new(100)),
            Arc::new(crate::runtime::outgoing_http::Sender::new(None).unwrap()),
        )
        .unwrap();
        let registry = Registry::new(
            store.clone(),
            Arc::new(runtime),
            LimitSettings::default(),
            3,
            BTreeSet::new(),
        );
        (registry, store)
    }

    /// Whether the active set routes `GET path` to `plugin`.
    fn routes_to(registry: &Registry, path: &str, plugin: &str) -> bool {
        let active = registry.active();
        matches!(
            active.routes.lookup(&http::Method::GET, path),
            Lookup::Found { target, .. } if &*target.plugin.name == plugin
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deploys_are_numbered_versions_and_the_same_upload_changes_nothing() {
        let dir = temp_dir();
        let (registry, store) = registry(&dir).await;
        let hello = guest("hello");
        let by = operator();

        let first = registry
            .deploy(
                "hello",
                manifest("hello", &["/hello/{name}"]),
                hello.clone(),
                &by,
            )
            .await
            .unwrap();
        assert!(first.created && !first.unchanged);
        assert_eq!(first.info.version, 1);
        assert!(routes_to(&registry, "/hello/you", "hello"));

        let again = registry
            .deploy(
                "hello",
                manifest("hello", &["/hello/{name}"]),
                hello.clone(),
                &by,
            )
            .await
            .unwrap();
        assert!(again.unchanged && !again.created);
        assert_eq!(again.info.version, 1);
        assert_eq!(store.plugin_versions("hello").await.unwrap().len(), 1);

        // The same bytes under a new manifest are a new version, with the new routes only.
        let second = registry
            .deploy("hello", manifest("hello", &["/hi/{name}"]), hello, &by)
            .await
            .unwrap();
        assert!(!second.created && !second.unchanged);
        assert_eq!(second.info.version, 2);
        assert!(routes_to(&registry, "/hi/you", "hello"));
        assert!(!routes_to(&registry, "/hello/you", "hello"));
        let versions = registry.versions("hello").await.unwrap();
        let listed: Vec<(u64, bool)> = versions.iter().map(|v| (v.version, v.active)).collect();
        assert_eq!(listed, [(2, true), (1, false)]);
        let audited = store
            .scan(crate::store::Space::Audit, b"", None, 10)
            .await
            .unwrap();
        assert_eq!(
            audited.len(),
            2,
            "two deploys changed something; the repeat did not"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_clashing_deploys_accepted_by_two_hosts_the_first_keeps_serving() {
        let dir = temp_dir();
        let (first_host, store) = registry(&dir).await;
        let second_host = Registry::new(
            store.clone(),
            first_host.runtime.clone(),
            LimitSettings::default(),
            3,
            BTreeSet::new(),
        );
        let by = operator();
        // Each host checks the clash against what it has active, and neither knows the other's
        // deploy yet.
        first_host
            .deploy("zeta", manifest("zeta", &["/x"]), guest("hello"), &by)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        second_host
            .deploy("alpha", manifest("alpha", &["/x"]), guest("hello"), &by)
            .await
            .unwrap();
        for host in [&first_host, &second_host] {
            host.reconcile().await.unwrap();
            assert!(routes_to(host, "/x", "zeta"), "the first deploy serves");
            let not_loaded = host.not_loaded();
            assert_eq!(not_loaded.len(), 1);
            assert_eq!(not_loaded[0].plugin, "alpha");
        }
        // Once the first goes, the other is tried again and serves.
        first_host.remove("zeta", false, &by).await.unwrap();
        second_host.reconcile().await.unwrap();
        assert!(routes_to(&second_host, "/x", "alpha"));
        assert!(second_host.not_loaded().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_deploy_leaves_the_store_and_the_active_set_as_they_were() {
        let dir = temp_dir();
        let (registry, store) = registry(&dir).await;
        let by = operator();
        registry
            .deploy(
                "hello",
                manifest("hello", &["/hello/{name}"]),
                guest("hello"),
                &by,
            )
            .await
            .unwrap();

        let clash = registry
            .deploy(
                "other",
                manifest("other", &["/hello/{x}"]),
                guest("hello"),
                &by,
            )
            .await;
        assert!(matches!(clash, Err(DeployError::Route(_))), "{clash:?}");
        let mismatch = registry
            .deploy("other", manifest("hello", &["/o"]), guest("hello"), &by)
            .await;
        assert!(matches!(mismatch, Err(DeployError::NameMismatch { .. })));
        let garbage = registry
            .deploy(
                "other",
                manifest("other", &["/o"]),
                Bytes::from_static(b"nope"),
                &by,
            )
            .await;
        assert!(matches!(garbage, Err(DeployError::Compile(_))));
        let bad_name = registry
            .deploy(
                "Not A Name",
                manifest("other", &["/o"]),
                guest("hello"),
                &by,
            )
            .await;
        assert!(matches!(bad_name, Err(DeployError::InvalidName(_))));

        let stored: Vec<String> = store
            .plugins()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(stored, ["hello"]);
        assert_eq!(
            registry.active().plugins.keys().collect::<Vec<_>>(),
            ["hello"]
        );
        assert!(routes_to(&registry, "/hello/you", "hello"));
        assert!(store.plugin_versions("other").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_is_kept_across_a_restart_and_remove_deactivates() {
        let dir = temp_dir();
        let by = operator();
        {
            let (registry, _) = registry(&dir).await;
            let hello = guest("hello");
            for paths in [["/hello/{name}"], ["/hi/{name}"]] {
                registry
                    .deploy("hello", manifest("hello", &paths), hello.clone(), &by)
                    .await
                    .unwrap();
            }
            let missing = registry.rollback("hello", Some(9), &by).await;
            assert!(matches!(missing, Err(DeployError::VersionNotFound { .. })));
            let back = registry.rollback("hello", None, &by).await.unwrap();
            assert_eq!(back.info.version, 1);
            assert!(!back.unchanged);
            assert!(routes_to(&registry, "/hello/you", "hello"));
            assert!(!routes_to(&registry, "/hi/you", "hello"));
            let again = registry.rollback("hello", Some(1), &by).await.unwrap();
            assert!(again.unchanged);
            let nobody = registry.rollback("nobody", None, &by).await;
            assert!(matches!(nobody, Err(DeployError::NotFound(_))));
        }

        // A new registry over the same data loads the rolled-back version.
        let (registry, store) = registry(&dir).await;
        assert!(registry.active().plugins.is_empty());
        assert_eq!(registry.load().await.unwrap(), 1);
        assert!(registry.not_loaded().is_empty());
        assert_eq!(registry.active().plugins["hello"].record.version, 1);
        assert!(routes_to(&registry, "/hello/you", "hello"));

        registry.remove("hello", false, &by).await.unwrap();
        assert!(registry.active().plugins.is_empty());
        assert!(!routes_to(&registry, "/hello/you", "hello"));
        assert!(store.plugins().await.unwrap().is_empty());
        let twice = registry.remove("hello", false, &by).await;
        assert!(matches!(twice, Err(DeployError::NotFound(_))));
    }
}
