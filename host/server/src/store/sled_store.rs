//! The sled backend of the async [`Store`] seam: `sled_db` does the work synchronously, and this
//! module decides where it runs.
//!
//! Whatever may wait (a transaction, a flush, a scan, another writer's lock) runs on tokio's
//! blocking pool through [`SledStore::offload`], the one place that maps a dead background task
//! to a [`StoreError`] and logs slow calls. Two kinds of call answer inline, on the awaiting
//! thread, because a thread hop costs several times what they do: a point read (sled serves
//! it from its page cache, or reads one page), and a one-key kv write whose plugin's write lock
//! is free (a lookup and two in-memory writes). Waiting for durability is always async (the
//! group commit's ticket).

use super::kv::{KvChange, KvEntry, KvError, KvLimits, KvOutcome};
use super::sled_db::SledDb;
use super::{
    Artifact, AuditOf, AuditRecord, Component, Durability, Entries, Op, PluginHistory,
    PluginRecord, Space, Store, StoreError,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A store call that takes longer than this is logged: the disk or a lock is in trouble.
const SLOW_CALL: Duration = Duration::from_secs(1);

/// The sled-backed store of one data directory.
#[derive(Clone)]
pub struct SledStore {
    db: Arc<SledDb>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`; `kv_durability` says when plugin kv writes
    /// return. Opening may recover from a crash (quarantine, recount), so it runs off the
    /// async threads.
    pub async fn open(dir: &Path, kv_durability: Durability) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        let db = offload_task(move || SledDb::open_with(&dir, kv_durability)).await??;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `work` on the blocking pool. A call slower than [`SLOW_CALL`] is logged with `op`.
    async fn offload<T, E>(
        &self,
        op: &'static str,
        work: impl FnOnce(&SledDb) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        let started = Instant::now();
        let result = offload_task(move || work(&db)).await?;
        let elapsed = started.elapsed();
        if elapsed > SLOW_CALL {
            tracing::warn!(
                op,
                elapsed_ms = elapsed.as_millis() as u64,
                "slow store call"
            );
        }
        result
    }
}

/// Runs `work` on tokio's blocking pool; a task that dies (a bug) is a storage failure, not the
/// caller's fault.
async fn offload_task<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Backend {
            op: "background task",
            message: e.to_string(),
        })
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn put_plugin(
        &self,
        record: PluginRecord,
        component: bytes::Bytes,
        artifact: Option<Artifact>,
        keep: usize,
        audit: AuditOf<PluginRecord>,
    ) -> Result<PluginRecord, StoreError> {
        self.offload("put plugin", move |db| {
            db.put_plugin(&record, &component, artifact.as_ref(), keep, &*audit)
        })
        .await
    }

    async fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.offload("list plugins", |db| db.plugins()).await
    }

    async fn plugin_versions(&self, name: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let name = name.to_string();
        self.offload("list plugin versions", move |db| db.plugin_versions(&name))
            .await
    }

    async fn activate_version(
        &self,
        name: &str,
        version: u64,
        audit: AuditRecord,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let name = name.to_string();
        self.offload("activate plugin version", move |db| {
            db.activate_version(&name, version, &audit)
        })
        .await
    }

    async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sha256 = sha256.to_string();
        self.offload("read component", move |db| db.component(&sha256))
            .await
    }

    async fn delete_plugin(&self, name: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.offload("delete plugin", move |db| db.delete_plugin(&name, &audit))
            .await
    }

    async fn artifact(
        &self,
        sha256: &str,
        fingerprint: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (sha256, fingerprint) = (sha256.to_string(), fingerprint.to_string());
        self.offload("read artifact", move |db| {
            db.artifact(&sha256, &fingerprint)
        })
        .await
    }

    async fn put_artifact(&self, sha256: &str, artifact: Artifact) -> Result<(), StoreError> {
        let sha256 = sha256.to_string();
        self.offload("write artifact", move |db| {
            db.put_artifact(&sha256, &artifact.fingerprint, &artifact.bytes)
        })
        .await
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.meta(key)
    }

    async fn set_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.to_string();
        self.offload("write meta", move |db| db.set_meta(&key, &value))
            .await
    }

    async fn init_meta(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let key = key.to_string();
        self.offload("write meta", move |db| db.init_meta(&key, value))
            .await
    }

    fn was_empty_at_open(&self) -> bool {
        self.db.was_empty_at_open()
    }

    /// Inline: a point read (see the module doc).
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(space, key)
    }

    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.offload("scan", move |db| {
            db.scan(space, &prefix, after.as_deref(), limit)
        })
        .await
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<bool, StoreError> {
        self.offload("commit", move |db| db.commit(&ops)).await
    }

    /// Inline: a point read, then (only if a write of the plugin is being applied right now)
    /// the wait for its lock offloaded, then the wait for durability.
    async fn kv_get(
        &self,
        plugin: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let value = self.db.kv_get(plugin, bucket, key)?;
        self.read_barrier(plugin).await?;
        Ok(value)
    }

    async fn kv_get_many(
        &self,
        plugin: &str,
        bucket: &str,
        keys: Vec<String>,
        max_bytes: u64,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, KvError> {
        let (plugin, bucket) = (plugin.to_string(), bucket.to_string());
        let (values, ticket) = self
            .offload("kv get many", move |db| {
                let mut values = Vec::with_capacity(keys.len());
                let mut read = 0u64;
                for key in &keys {
                    let value = db.kv_get(&plugin, &bucket, key)?;
                    read += value.as_ref().map_or(0, |v| v.len() as u64);
                    if read > max_bytes {
                        return Ok((None, None));
                    }
                    values.push(value);
                }
                Ok::<_, KvError>((Some(values), Some(db.kv_read_barrier(&plugin)?)))
            })
            .await?;
        if let Some(ticket) = ticket {
            ticket.wait().await?;
        }
        Ok(values)
    }

    async fn kv_keys(
        &self,
        plugin: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let (plugin, bucket, prefix) = (plugin.to_string(), bucket.to_string(), prefix.to_string());
        let after = after.map(str::to_string);
        let (keys, ticket) = self
            .offload("kv list", move |db| {
                let keys = db.kv_keys(&plugin, &bucket, &prefix, after.as_deref(), limit)?;
                Ok::<_, KvError>((keys, db.kv_read_barrier(&plugin)?))
            })
            .await?;
        ticket.wait().await?;
        Ok(keys)
    }

    /// A one-key change is applied inline when the plugin's write lock is free; a batch, or a
    /// wait for the lock, is offloaded. Either way the wait for durability is async.
    async fn kv_apply(
        &self,
        plugin: &str,
        change: KvChange,
        limits: KvLimits,
    ) -> Result<KvOutcome, KvError> {
        let change = if change.keys() == 1 {
            match self.db.kv_try_apply(plugin, change, &limits)? {
                Ok((outcome, ticket)) => {
                    ticket.wait().await?;
                    return Ok(outcome);
                }
                Err(change) => change,
            }
        } else {
            change
        };
        let plugin = plugin.to_string();
        let (outcome, ticket) = self
            .offload("kv write", move |db| db.kv_apply(&plugin, change, &limits))
            .await?;
        ticket.wait().await?;
        Ok(outcome)
    }

    async fn kv_operator_change(
        &self,
        plugin: &str,
        change: KvChange,
        limits: KvLimits,
        audit: Option<AuditRecord>,
    ) -> Result<(KvOutcome, u64), KvError> {
        let plugin = plugin.to_string();
        self.offload("kv operator change", move |db| {
            db.kv_operator_change(&plugin, change, &limits, audit.as_ref())
        })
        .await
    }

    async fn kv_entries(
        &self,
        plugin: &str,
        after: Option<(&str, &str)>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let plugin = plugin.to_string();
        let after = after.map(|(b, k)| (b.to_string(), k.to_string()));
        self.offload("kv scan", move |db| {
            db.kv_entries(
                &plugin,
                after.as_ref().map(|(b, k)| (b.as_str(), k.as_str())),
                limit,
                max_bytes,
            )
        })
        .await
    }

    /// Inline: a point read of the plugin's usage counter.
    async fn kv_usage(&self, plugin: &str) -> Result<u64, StoreError> {
        self.db.kv_usage(plugin)
    }

    async fn kv_purge(&self, plugin: &str) -> Result<(), StoreError> {
        let plugin = plugin.to_string();
        self.offload("kv purge", move |db| db.kv_purge(&plugin))
            .await
    }

    async fn meta_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.offload("list meta", |db| db.meta_entries()).await
    }

    async fn plugin_histories(&self) -> Result<Vec<PluginHistory>, StoreError> {
        self.offload("list plugin histories", |db| db.plugin_histories())
            .await
    }

    async fn artifacts_of(&self, sha256: &str) -> Result<Vec<Artifact>, StoreError> {
        let sha256 = sha256.to_string();
        self.offload("list artifacts", move |db| db.artifacts_of(&sha256))
            .await
    }

    async fn restore_plugin(
        &self,
        history: PluginHistory,
        components: Vec<Component>,
    ) -> Result<(), StoreError> {
        self.offload("restore plugin", move |db| {
            db.restore_plugin(&history, &components)
        })
        .await
    }

    async fn kv_plugins(&self) -> Result<Vec<String>, StoreError> {
        self.offload("list kv plugins", |db| db.kv_plugins()).await
    }
}

impl SledStore {
    /// Returns once every write of `plugin` a read just made could have seen is durable. The
    /// lock is tried inline; only a write being applied right now sends the wait off the async
    /// threads.
    async fn read_barrier(&self, plugin: &str) -> Result<(), StoreError> {
        let ticket = match self.db.kv_read_barrier_now(plugin)? {
            Some(ticket) => ticket,
            None => {
                let plugin = plugin.to_string();
                self.offload("kv read barrier", move |db| db.kv_read_barrier(&plugin))
                    .await?
            }
        };
        ticket.wait().await
    }
}
