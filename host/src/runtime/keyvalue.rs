//! Host side of `wasi:keyvalue` (store, atomics, batch) and of Plinth's additions in
//! `plinth:host/kv` (compare-and-swap, prefix scans), over the plugin's own data in [`Store`].
//!
//! Every bucket a plugin opens is its own: the plugin's name is part of where the data lives, so
//! two plugins opening `"default"` never see each other's keys. Writes return once durable
//! (group commit) unless the operator chose periodic durability.

use super::bindings::plinth::host::kv as plinth_kv;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::store::{KvChange, KvEntry, KvError, KvLimits, KvOutcome, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Resource, ResourceTable};

/// Most keys one `list-keys` (or `list-keys-with-prefix`) call returns.
pub const PAGE_LIMIT: usize = 1000;
/// How long a `wasi:keyvalue` list cursor stays valid after it was handed out.
const CURSOR_TTL: Duration = Duration::from_secs(600);
/// Most live list cursors across all plugins; the oldest is dropped beyond it.
const MAX_CURSORS: usize = 10_000;

/// An open bucket: the name a plugin passed to `open`.
pub struct Bucket {
    name: String,
}

/// Where a `wasi:keyvalue` listing stopped. The WIT cursor is a `u64`, too small to carry a key,
/// so the host remembers the last key under a random id, scoped to the plugin and bucket.
struct CursorState {
    plugin: Arc<str>,
    bucket: String,
    last_key: String,
    issued: Instant,
}

/// The live list cursors of every plugin, shared by all requests.
#[derive(Default)]
pub struct Cursors {
    live: Mutex<HashMap<u64, CursorState>>,
}

impl Cursors {
    fn issue(&self, plugin: &Arc<str>, bucket: &str, last_key: String) -> u64 {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, c| c.issued.elapsed() < CURSOR_TTL);
        if live.len() >= MAX_CURSORS
            && let Some(oldest) = live.iter().min_by_key(|(_, c)| c.issued).map(|(id, _)| *id)
        {
            live.remove(&oldest);
        }
        let id = loop {
            let id = rand::random::<u64>();
            if !live.contains_key(&id) {
                break id;
            }
        };
        live.insert(
            id,
            CursorState {
                plugin: plugin.clone(),
                bucket: bucket.to_string(),
                last_key,
                issued: Instant::now(),
            },
        );
        id
    }

    /// The key a cursor stands for, if it was issued to this plugin for this bucket and is live.
    fn resolve(&self, plugin: &str, bucket: &str, id: u64) -> Option<String> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&id)
            .filter(|c| {
                &*c.plugin == plugin && c.bucket == bucket && c.issued.elapsed() < CURSOR_TTL
            })
            .map(|c| c.last_key.clone())
    }
}

/// What one request's instance may do with key-value data.
#[derive(Clone)]
pub struct KeyValueCtx {
    /// Whose data.
    pub plugin: Arc<str>,
    /// The store holding it.
    pub store: Arc<dyn Store>,
    /// Size limits and quota.
    pub limits: KvLimits,
    /// List cursors.
    pub cursors: Arc<Cursors>,
}

/// The view the generated `Host` traits are implemented on.
pub struct KeyValue<'a> {
    /// The request's key-value context.
    pub ctx: &'a KeyValueCtx,
    /// The request's resource table (buckets live here).
    pub table: &'a mut ResourceTable,
}

/// Marker for `add_to_linker`.
pub struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValue<'a>;
}

fn to_wit(e: KvError) -> store::Error {
    if let KvError::Store(inner) = &e {
        tracing::error!(error = %inner, "key-value storage failed");
    }
    store::Error::Other(e.to_string())
}

impl KeyValue<'_> {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.name.clone())
    }
}

impl KeyValueCtx {
    /// Applies a change and waits until it is durable.
    async fn apply(&self, change: KvChange) -> Result<KvOutcome, store::Error> {
        let (outcome, ticket) = self
            .store
            .kv_apply(&self.plugin, change, &self.limits)
            .map_err(to_wit)?;
        ticket.wait().await.map_err(|e| to_wit(e.into()))?;
        Ok(outcome)
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, store::Error> {
        self.store.kv_get(&self.plugin, bucket, key).map_err(to_wit)
    }

    fn keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, store::Error> {
        self.store
            .kv_keys(&self.plugin, bucket, prefix, after, limit)
            .map_err(to_wit)
    }
}

impl store::Host for KeyValue<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        if let Err(e) = crate::store::kv::check_key(&identifier, "") {
            return Ok(Err(to_wit(e)));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl store::HostBucket for KeyValue<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let name = self.bucket(&bucket)?;
        Ok(self.ctx.get(&name, &key))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let bucket = self.bucket(&bucket)?;
        let change = KvChange::Put(vec![KvEntry { bucket, key, value }]);
        Ok(self.ctx.apply(change).await.map(|_| ()))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let bucket = self.bucket(&bucket)?;
        let change = KvChange::Delete(vec![(bucket, key)]);
        Ok(self.ctx.apply(change).await.map(|_| ()))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let name = self.bucket(&bucket)?;
        Ok(self.ctx.get(&name, &key).map(|v| v.is_some()))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let name = self.bucket(&bucket)?;
        let after = match cursor {
            None => None,
            Some(id) => match self.ctx.cursors.resolve(&self.ctx.plugin, &name, id) {
                Some(key) => Some(key),
                None => {
                    return Ok(Err(store::Error::Other(format!(
                        "invalid_cursor: cursor {id} is unknown or expired (cursors live {} \
                         minutes); start the listing again",
                        CURSOR_TTL.as_secs() / 60
                    ))));
                }
            },
        };
        let keys = match self.ctx.keys(&name, "", after.as_deref(), PAGE_LIMIT) {
            Ok(keys) => keys,
            Err(e) => return Ok(Err(e)),
        };
        let cursor = match keys.last() {
            Some(last) if keys.len() == PAGE_LIMIT => Some(self.ctx.cursors.issue(
                &self.ctx.plugin,
                &name,
                last.clone(),
            )),
            _ => None,
        };
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KeyValue<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, store::Error>> {
        let bucket = self.bucket(&bucket)?;
        Ok(self
            .ctx
            .apply(KvChange::Increment { bucket, key, delta })
            .await
            .map(|outcome| match outcome {
                KvOutcome::Counter(n) => n,
                _ => 0,
            }))
    }
}

impl batch::Host for KeyValue<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let name = self.bucket(&bucket)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.ctx.get(&name, &key) {
                Ok(value) => out.push(value.map(|v| (key, v))),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket(&bucket)?;
        let entries = key_values
            .into_iter()
            .map(|(key, value)| KvEntry {
                bucket: name.clone(),
                key,
                value,
            })
            .collect();
        Ok(self.ctx.apply(KvChange::Put(entries)).await.map(|_| ()))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket(&bucket)?;
        let keys = keys.into_iter().map(|key| (name.clone(), key)).collect();
        Ok(self.ctx.apply(KvChange::Delete(keys)).await.map(|_| ()))
    }
}

impl plinth_kv::Host for KeyValue<'_> {
    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let bucket = self.bucket(&bucket)?;
        let change = KvChange::CompareAndSwap {
            bucket,
            key,
            expected,
            new: value,
        };
        Ok(self
            .ctx
            .apply(change)
            .await
            .map(|outcome| outcome == KvOutcome::Swapped(true)))
    }

    async fn list_keys_with_prefix(
        &mut self,
        bucket: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<plinth_kv::KeyPage, store::Error>> {
        let name = self.bucket(&bucket)?;
        // Clamp what the guest asks for: a page is at most PAGE_LIMIT keys, and at least one.
        let limit = (limit as usize).clamp(1, PAGE_LIMIT);
        Ok(self
            .ctx
            .keys(&name, &prefix, cursor.as_deref(), limit)
            .map(|keys| {
                let cursor = if keys.len() == limit {
                    keys.last().cloned()
                } else {
                    None
                };
                plinth_kv::KeyPage { keys, cursor }
            }))
    }
}

/// Adds `wasi:keyvalue/{store,atomics,batch}` and `plinth:host/kv` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> KeyValue<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKeyValue>(linker, view)?;
    atomics::add_to_linker::<T, HasKeyValue>(linker, view)?;
    batch::add_to_linker::<T, HasKeyValue>(linker, view)?;
    plinth_kv::add_to_linker::<T, HasKeyValue>(linker, view)
}
