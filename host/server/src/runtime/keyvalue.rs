//! Host side of `wasi:keyvalue` (store, atomics, batch) and of Plinth's additions in
//! `plinth:host/kv` (compare-and-swap, prefix scans), over the plugin's own data in [`Store`].
//!
//! Every bucket a plugin opens is its own: the plugin's name is part of where the data lives, so
//! two plugins opening `"default"` never see each other's keys. Writes return once durable
//! (group commit) unless the operator chose periodic durability.
//!
//! The store never blocks the async thread that awaits it (its backend sends batches,
//! listings and writes that would wait for the plugin's lock off the async threads; see
//! `store::sled_store`), so a plugin's huge batch cannot stall the threads that serve
//! `/healthz` and every other plugin. What a call may copy is bounded (see
//! `limits::HOST_ALLOCATIONS`): keys per batch, bytes per call, bytes per request.

use super::bindings::Bucket;
use super::bindings::plinth::host::kv as plinth_kv;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::limits::{
    MAX_BATCH_BYTES, MAX_BATCH_KEYS, MAX_CURSORS_PER_PLUGIN, MAX_REQUEST_KV_BYTES,
};
use crate::store::{KvChange, KvEntry, KvError, KvLimits, KvOutcome, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Resource, ResourceTable};

/// Most keys one `list-keys` (or `list-keys-with-prefix`) call returns.
pub const PAGE_LIMIT: usize = 1000;
/// How long a `wasi:keyvalue` list cursor stays valid after it was handed out.
const CURSOR_TTL: Duration = Duration::from_secs(600);

/// Where a `wasi:keyvalue` listing stopped. The WIT cursor is a `u64`, too small to carry a key,
/// so the host remembers the last key under a random id, scoped to the plugin and bucket.
struct CursorState {
    bucket: String,
    last_key: String,
    issued: Instant,
}

/// The live list cursors of every plugin, shared by all requests. Each plugin has its own map,
/// capped at [`MAX_CURSORS_PER_PLUGIN`], so a plugin issuing cursors in a loop evicts only its
/// own oldest ones, never another plugin's.
#[derive(Default)]
pub struct Cursors {
    live: Mutex<HashMap<Arc<str>, HashMap<u64, CursorState>>>,
}

impl Cursors {
    fn issue(&self, plugin: &Arc<str>, bucket: &str, last_key: String) -> u64 {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, cursors| {
            cursors.retain(|_, c| c.issued.elapsed() < CURSOR_TTL);
            !cursors.is_empty()
        });
        let mine = live.entry(plugin.clone()).or_default();
        if mine.len() >= MAX_CURSORS_PER_PLUGIN
            && let Some(oldest) = mine.iter().min_by_key(|(_, c)| c.issued).map(|(id, _)| *id)
        {
            mine.remove(&oldest);
        }
        let id = loop {
            let id = rand::random::<u64>();
            if !mine.contains_key(&id) {
                break id;
            }
        };
        mine.insert(
            id,
            CursorState {
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
        live.get(plugin)?
            .get(&id)
            .filter(|c| c.bucket == bucket && c.issued.elapsed() < CURSOR_TTL)
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
    /// Bytes this request may still move between the store and the guest (values read and
    /// written, keys listed): [`MAX_REQUEST_KV_BYTES`] at the start of each request.
    pub budget: u64,
    /// The plugin's requests and store calls in flight: each store call counts until it ends,
    /// even if its request was cancelled meanwhile, so a purge waits for it.
    pub running: Arc<super::Running>,
}

/// The view the generated `Host` traits are implemented on.
pub struct KeyValue<'a> {
    /// The request's key-value context.
    pub ctx: &'a mut KeyValueCtx,
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

/// A batch over one of its bounds, as the interface's own error.
fn batch_too_large(what: String) -> store::Error {
    store::Error::Other(format!(
        "batch_too_large: {what}; nothing was read or written"
    ))
}

/// The request's byte budget is spent, as the interface's own error.
fn budget_spent() -> store::Error {
    store::Error::Other(format!(
        "request_budget_exceeded: this request has already moved {} of key-value data; \
         split the work across requests",
        crate::units::ByteSize(MAX_REQUEST_KV_BYTES)
    ))
}

/// Checks a batch's key count before anything is read or written.
fn check_batch_len(keys: usize) -> Result<(), store::Error> {
    if keys > MAX_BATCH_KEYS {
        return Err(batch_too_large(format!(
            "{keys} keys in one call, over the limit of {MAX_BATCH_KEYS}"
        )));
    }
    Ok(())
}

impl KeyValue<'_> {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.name.clone())
    }
}

/// Runs a store write to its end even if the request is dropped meanwhile, counted in
/// `running` until then, so a purge that waits for the plugin's calls sees no write land after
/// it. A write the store finishes at once costs no task; one that waits (for a lock, a flush)
/// finishes in its own task.
async fn to_completion<T: Send + 'static>(
    running: &Arc<super::Running>,
    call: impl Future<Output = Result<T, KvError>> + Send + 'static,
) -> Result<T, KvError> {
    let counted = running.enter();
    let mut call = Box::pin(call);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(done) = first {
        return done;
    }
    match tokio::spawn(async move {
        let _counted = counted;
        call.await
    })
    .await
    {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is stopping.
        Err(e) => Err(KvError::Store(crate::store::StoreError::Backend {
            op: "kv write",
            message: e.to_string(),
        })),
    }
}

impl KeyValueCtx {
    /// Takes `bytes` from the request's budget, or fails without taking any.
    fn spend(&mut self, bytes: u64) -> Result<(), store::Error> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(budget_spent)?;
        Ok(())
    }

    /// Applies a change and waits until it is durable.
    async fn apply(&mut self, change: KvChange) -> Result<KvOutcome, store::Error> {
        let written = match &change {
            KvChange::Put(entries) => entries.iter().map(KvEntry::size).sum(),
            KvChange::CompareAndSwap { new, .. } => new.len() as u64,
            KvChange::Delete(_) | KvChange::Increment { .. } => 0,
        };
        self.spend(written)?;
        let (store, plugin, limits) = (self.store.clone(), self.plugin.clone(), self.limits);
        to_completion(&self.running, async move {
            store.kv_apply(&plugin, change, limits).await
        })
        .await
        .map_err(to_wit)
    }

    /// One value, once every write it may have seen is durable.
    async fn get(&mut self, bucket: String, key: String) -> Result<Option<Vec<u8>>, store::Error> {
        let value = self
            .store
            .kv_get(&self.plugin, &bucket, &key)
            .await
            .map_err(to_wit)?;
        self.spend(value.as_ref().map_or(0, |v| v.len() as u64))?;
        Ok(value)
    }

    /// The values of `keys`, reading no more than [`MAX_BATCH_BYTES`] (or what is left of the
    /// request's budget) before failing: the host never holds more than that for one call.
    async fn get_many(
        &mut self,
        bucket: String,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        check_batch_len(keys.len())?;
        let allowed = (MAX_BATCH_BYTES as u64).min(self.budget);
        let values = self
            .store
            .kv_get_many(&self.plugin, &bucket, keys.clone(), allowed)
            .await
            .map_err(to_wit)?
            .ok_or_else(|| {
                if allowed < MAX_BATCH_BYTES as u64 {
                    budget_spent()
                } else {
                    batch_too_large(format!(
                        "the values come to more than {} in one call",
                        crate::units::ByteSize(MAX_BATCH_BYTES as u64)
                    ))
                }
            })?;
        let read = values.iter().flatten().map(|v| v.len() as u64).sum();
        self.spend(read)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|v| (key, v)))
            .collect())
    }

    async fn keys(
        &mut self,
        bucket: String,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<String>, store::Error> {
        let keys = self
            .store
            .kv_keys(&self.plugin, &bucket, &prefix, after.as_deref(), limit)
            .await
            .map_err(to_wit)?;
        self.spend(keys.iter().map(|k| k.len() as u64).sum())?;
        Ok(keys)
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
        Ok(self.ctx.get(name, key).await)
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
        Ok(self.ctx.get(name, key).await.map(|v| v.is_some()))
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
        let keys = match self
            .ctx
            .keys(name.clone(), String::new(), after, PAGE_LIMIT)
            .await
        {
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
        Ok(self.ctx.get_many(name, keys).await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket(&bucket)?;
        if let Err(e) = check_batch_len(key_values.len()) {
            return Ok(Err(e));
        }
        let bytes: usize = key_values.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_BATCH_BYTES {
            return Ok(Err(batch_too_large(format!(
                "{} in one call, over the limit of {}",
                crate::units::ByteSize(bytes as u64),
                crate::units::ByteSize(MAX_BATCH_BYTES as u64)
            ))));
        }
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
        if let Err(e) = check_batch_len(keys.len()) {
            return Ok(Err(e));
        }
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
            .keys(name, prefix, cursor, limit)
            .await
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
