//! The synchronous half of the sled backend: one tree per kind of record, multi-tree
//! transactions for changes that must land together, and a flush before any change is
//! acknowledged. `sled_store` puts the async [`super::Store`] seam in front of it.

use super::group_commit::{Durability, GroupCommit, Ticket};
use super::kv::{self, KvChange, KvEntry, KvError, KvLimits, KvOutcome};
use super::{
    Artifact, AuditRecord, Component, Entries, Op, PluginHistory, PluginRecord, Space, StoreError,
};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Name → the active version's record.
const PLUGINS: &str = "plugins";
/// `name 00 version(u64 BE)` → an immutable version record.
const PLUGIN_VERSIONS: &str = "plugin_versions";
/// Name → [`History`]: the next version number and the kept ones.
const PLUGIN_HISTORY: &str = "plugin_history";
/// `sha256 / fingerprint` → compiled code of that component for that engine.
const ARTIFACTS: &str = "artifacts";
const BLOBS: &str = "blobs";
/// Reference counts of blobs: one per kept version using it, so a blob shared by several
/// versions or plugins is dropped with its last user.
const BLOB_REFS: &str = "blob_refs";
const META: &str = "meta";
/// Each plugin's key-value data lives in its own tree, `kv/<plugin name>`.
const KV_TREE_PREFIX: &str = "kv/";
/// In a plugin's kv tree: data keys start with `k`, the usage counter is `m:usage`.
const KV_DATA: u8 = b'k';
const KV_USAGE: &[u8] = b"m:usage";
/// In `meta`: present when the store was closed cleanly, so kv usage counters are exact.
const CLEAN_SHUTDOWN: &str = "clean_shutdown";
/// In `meta`: how kv usage is counted ([`KV_USAGE_VERSION`]); counters of another (older)
/// way are recounted once at open.
const KV_USAGE_FORMAT: &str = "kv_usage_format";
/// Version 2: each entry also counts `kv::ENTRY_OVERHEAD`.
const KV_USAGE_VERSION: &[u8] = b"2";

/// One plugin's kv tree and the lock that serialises its writes, so read-check-write (quota,
/// increment, CAS) is atomic. A lock per plugin: one plugin's writes never wait for another's.
/// Held only for the in-memory apply, never across the flush.
#[derive(Clone)]
struct KvTree {
    tree: sled::Tree,
    write: Arc<Mutex<KvWrites>>,
}

/// What the write lock of a plugin's tree guards besides the writes themselves.
#[derive(Default)]
struct KvWrites {
    /// The tree was purged: a writer that took the handle before must look again.
    purged: bool,
    /// The group-commit ticket of the newest write applied to the tree: a read that may have
    /// seen it answers only once it is durable.
    last: u64,
}

/// The sled database in one directory, with its trees.
pub(crate) struct SledDb {
    db: sled::Db,
    plugins: sled::Tree,
    versions: sled::Tree,
    history: sled::Tree,
    artifacts: sled::Tree,
    blobs: sled::Tree,
    blob_refs: sled::Tree,
    meta: sled::Tree,
    /// One tree per [`Space`], in `Space::ALL` order.
    spaces: Vec<sled::Tree>,
    /// Open kv trees by plugin name, each with its own write lock.
    kv_trees: RwLock<HashMap<String, KvTree>>,
    kv_durability: Durability,
    /// Flushes (sled `flush()` + `fdatasync` of its data file) shared by concurrent writers.
    group: GroupCommit,
    was_empty: bool,
}

/// Where partial snapshots are moved to, inside the data directory (never deleted).
const QUARANTINE_DIR: &str = "quarantine";

/// Moves unfinished `snap.*.generating` files into `<dir>/quarantine/`. Returns how many.
fn quarantine_partial_snapshots(dir: &Path) -> Result<usize, StoreError> {
    let io = |op: &'static str| {
        move |e: std::io::Error| StoreError::Backend {
            op,
            message: e.to_string(),
        }
    };
    let mut moved = 0;
    for entry in std::fs::read_dir(dir).map_err(io("scan data dir"))? {
        let entry = entry.map_err(io("scan data dir"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let quarantine = dir.join(QUARANTINE_DIR);
        std::fs::create_dir_all(&quarantine).map_err(io("create quarantine dir"))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let target = quarantine.join(format!("{stamp}-{name}"));
        std::fs::rename(entry.path(), &target).map_err(io("quarantine partial snapshot"))?;
        tracing::warn!(
            file = %target.display(),
            "moved an unfinished sled snapshot aside after a crash; the store reopens from its log"
        );
        moved += 1;
    }
    Ok(moved)
}

fn backend(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        message: e.to_string(),
    }
}

fn tx_error(op: &'static str, e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(op)(e),
    }
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<PluginRecord, StoreError> {
    super::from_json(
        &format!("plugin record {}", String::from_utf8_lossy(key)),
        bytes,
    )
}

/// Per plugin name: the next version number to give and the kept versions, oldest first. Kept
/// after a delete (with nothing kept) so numbers are never reused.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct History {
    next: u64,
    kept: Vec<u64>,
}

fn version_key(name: &str, version: u64) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn decode_history(
    name: &str,
    bytes: Option<sled::IVec>,
) -> Result<History, ConflictableTransactionError<StoreError>> {
    match bytes {
        None => Ok(History::default()),
        Some(b) => super::from_json(&format!("version history of {name}"), &b)
            .map_err(ConflictableTransactionError::Abort),
    }
}

fn encode<T: serde::Serialize>(
    what: &str,
    value: &T,
) -> Result<Vec<u8>, ConflictableTransactionError<StoreError>> {
    super::to_json(what, value).map_err(ConflictableTransactionError::Abort)
}

fn read_count(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Adds `delta` to a blob's reference count inside a transaction; removes the blob at zero.
fn adjust_ref(
    blobs: &TransactionalTree,
    refs: &TransactionalTree,
    sha: &str,
    delta: i64,
) -> Result<u64, ConflictableTransactionError<StoreError>> {
    let count = read_count(refs.get(sha)?).saturating_add_signed(delta);
    if count == 0 {
        refs.remove(sha)?;
        blobs.remove(sha)?;
    } else {
        refs.insert(sha, &count.to_be_bytes())?;
    }
    Ok(count)
}

/// Removes versions of `name` inside a transaction, releasing their blob references. Returns the
/// hashes of blobs that went with them (their artifacts are dropped after the commit).
fn drop_versions(
    name: &str,
    gone: &[u64],
    versions: &TransactionalTree,
    blobs: &TransactionalTree,
    refs: &TransactionalTree,
) -> Result<Vec<String>, ConflictableTransactionError<StoreError>> {
    let mut dropped = Vec::new();
    for &version in gone {
        if let Some(bytes) = versions.remove(version_key(name, version))? {
            let old = decode_record(name.as_bytes(), &bytes)
                .map_err(ConflictableTransactionError::Abort)?;
            if adjust_ref(blobs, refs, &old.sha256, -1)? == 0 {
                dropped.push(old.sha256);
            }
        }
    }
    Ok(dropped)
}

impl SledDb {
    /// Opens (or creates) the store in `dir`, with durable kv writes.
    #[cfg(test)]
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Durability::Durable)
    }

    /// Opens (or creates) the store in `dir`; `kv_durability` says when plugin kv writes return.
    pub(crate) fn open_with(dir: &Path, kv_durability: Durability) -> Result<Self, StoreError> {
        let db = match sled::Config::new().path(dir).open() {
            Ok(db) => db,
            // A crash while sled writes a snapshot leaves a partial `snap.*.generating` file that
            // sled then reads as the newest snapshot and reports as corruption (sled #1527,
            // #1533). The data is intact: move the partial file aside and open again.
            Err(sled::Error::Corruption { .. }) if quarantine_partial_snapshots(dir)? > 0 => {
                sled::Config::new()
                    .path(dir)
                    .open()
                    .map_err(backend("open after quarantining partial snapshots"))?
            }
            Err(e) => return Err(backend("open")(e)),
        };
        // sled's flush uses sync_file_range, which does not reach the disk's write cache or file
        // metadata (sled #1452); an fsync on any descriptor of the data file does.
        let data_file = std::fs::File::open(dir.join("db")).map_err(|e| StoreError::Backend {
            op: "open data file for fsync",
            message: e.to_string(),
        })?;
        let flushed_db = db.clone();
        let group = GroupCommit::start(
            Box::new(move || {
                flushed_db.flush().map_err(backend("flush"))?;
                data_file.sync_data().map_err(|e| StoreError::Backend {
                    op: "fsync",
                    message: e.to_string(),
                })
            }),
            kv_durability == Durability::Periodic,
        )?;
        let was_empty = !db.was_recovered();
        let open = |name| db.open_tree(name).map_err(backend("open tree"));
        let meta = open(META)?;
        // Single-key kv writes update the data and the usage counter as two sled writes (one
        // atomic batch costs sled a sealed log buffer: 2.3x slower, measured), so a crash between
        // them leaves the counter off by that write. After an unclean stop, recount it once.
        let clean = meta.remove(CLEAN_SHUTDOWN).map_err(backend("read meta"))?;
        let format = meta.get(KV_USAGE_FORMAT).map_err(backend("read meta"))?;
        let current_format = format.as_deref() == Some(KV_USAGE_VERSION);
        if (clean.is_none() || !current_format) && !was_empty {
            recount_kv_usage(&db)?;
        }
        if !current_format {
            meta.insert(KV_USAGE_FORMAT, KV_USAGE_VERSION)
                .map_err(backend("write meta"))?;
        }
        let spaces = Space::ALL
            .iter()
            .map(|space| open(space.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let store = Self {
            spaces,
            plugins: open(PLUGINS)?,
            versions: open(PLUGIN_VERSIONS)?,
            history: open(PLUGIN_HISTORY)?,
            artifacts: open(ARTIFACTS)?,
            blobs: open(BLOBS)?,
            blob_refs: open(BLOB_REFS)?,
            meta,
            db,
            kv_trees: RwLock::new(HashMap::new()),
            kv_durability,
            group,
            was_empty,
        };
        store.migrate_unversioned_plugins()?;
        store.drop_orphan_artifacts()?;
        store.db.flush().map_err(backend("flush"))?;
        Ok(store)
    }

    /// Stores written before versions existed hold one record per plugin and one blob
    /// reference for it: make that record version 1 (the reference moves to the version).
    fn migrate_unversioned_plugins(&self) -> Result<(), StoreError> {
        for entry in self.plugins.iter() {
            let (key, value) = entry.map_err(backend("list plugins"))?;
            let mut record = decode_record(&key, &value)?;
            if record.version != 0 {
                continue;
            }
            record.version = 1;
            let encoded = super::to_json(&format!("plugin record {}", record.name), &record)?;
            let history = super::to_json(
                "version history",
                &History {
                    next: 2,
                    kept: vec![1],
                },
            )?;
            (&self.plugins, &self.versions, &self.history)
                .transaction(|(plugins, versions, history_tree)| {
                    plugins.insert(record.name.as_bytes(), encoded.as_slice())?;
                    versions.insert(version_key(&record.name, 1), encoded.as_slice())?;
                    history_tree.insert(record.name.as_bytes(), history.as_slice())?;
                    Ok(())
                })
                .map_err(|e| tx_error("migrate plugin record", e))?;
            tracing::info!(
                plugin = record.name,
                "stored plugin record became version 1"
            );
        }
        Ok(())
    }

    /// Artifacts whose component is gone (a crash between dropping a blob and its artifacts).
    fn drop_orphan_artifacts(&self) -> Result<(), StoreError> {
        for key in self.artifacts.iter().keys() {
            let key = key.map_err(backend("list artifacts"))?;
            let sha = key.split(|b| *b == b'/').next().unwrap_or_default();
            if !self.blobs.contains_key(sha).map_err(backend("read blob"))? {
                self.artifacts
                    .remove(&key)
                    .map_err(backend("drop artifact"))?;
            }
        }
        Ok(())
    }

    /// Drops the artifacts of `sha256` made by other engines than `fingerprint`'s: they are never
    /// loaded again.
    fn drop_other_artifacts(&self, sha256: &str, fingerprint: &str) -> Result<(), StoreError> {
        let kept = format!("{sha256}/{fingerprint}");
        for key in self.artifacts.scan_prefix(format!("{sha256}/")).keys() {
            let key = key.map_err(backend("list artifacts"))?;
            if key != kept.as_bytes() {
                self.artifacts
                    .remove(&key)
                    .map_err(backend("drop artifact"))?;
            }
        }
        Ok(())
    }

    /// Drops the compiled artifacts of components whose blobs are gone.
    fn drop_artifacts_of(&self, dropped: &[String]) -> Result<(), StoreError> {
        for sha in dropped {
            let prefix = format!("{sha}/");
            for key in self.artifacts.scan_prefix(prefix.as_bytes()).keys() {
                let key = key.map_err(backend("list artifacts"))?;
                self.artifacts
                    .remove(&key)
                    .map_err(backend("drop artifact"))?;
            }
        }
        Ok(())
    }

    fn space(&self, space: Space) -> &sled::Tree {
        &self.spaces[space.index()]
    }

    /// Makes every change so far durable before it is acknowledged (sharing the flush with
    /// concurrent writers).
    fn flush(&self) -> Result<(), StoreError> {
        self.group.written().wait_blocking()
    }

    /// The ticket of a kv write just applied, as the durability setting asks.
    fn kv_ticket(&self) -> Ticket {
        match self.kv_durability {
            Durability::Durable => self.group.written(),
            Durability::Periodic => self.group.written_lazily(),
        }
    }

    /// Checks and applies `change` to `tree`, whose write lock `writes` the caller holds.
    fn kv_apply_locked(
        &self,
        plugin: &str,
        tree: &sled::Tree,
        writes: &mut KvWrites,
        change: KvChange,
        limits: &KvLimits,
    ) -> Result<(KvOutcome, Ticket), KvError> {
        // Under the plugin's write lock, which a purge takes too: a request of a deleted
        // plugin still running cannot write data back after its purge.
        if self.was_deleted(plugin)? {
            return Err(KvError::PluginRemoved(plugin.to_string()));
        }
        let plan = kv_plan(tree, change, limits)?;
        if plan.writes.is_empty() {
            // Nothing written (a compare-and-swap that lost), but the outcome rests on what
            // was read: it waits for the writes that made it so.
            return Ok((plan.outcome, self.group.ticket(writes.last)));
        }
        if let [(bucket, key, value)] = plan.writes.as_slice() {
            // The common case, one key: two plain writes, far cheaper in sled than a batch.
            // A crash between them is repaired by the recount at the next open.
            let raw = kv_key(bucket, key);
            match value {
                Some(value) => tree.insert(raw, value.as_slice()).map(drop),
                None => tree.remove(raw).map(drop),
            }
            .and_then(|()| tree.insert(KV_USAGE, &plan.usage.to_be_bytes()).map(drop))
            .map_err(backend("kv write"))?;
        } else {
            // Several keys (set-many, delete-many, import): one atomic batch.
            let mut batch = sled::Batch::default();
            for (bucket, key, value) in &plan.writes {
                match value {
                    Some(value) => batch.insert(kv_key(bucket, key), value.as_slice()),
                    None => batch.remove(kv_key(bucket, key)),
                }
            }
            batch.insert(KV_USAGE, &plan.usage.to_be_bytes());
            tree.apply_batch(batch).map_err(backend("kv write"))?;
        }
        // Taken under the lock, so a reader that then takes the lock sees this write's
        // ticket if it could have seen the write.
        let ticket = self.kv_ticket();
        writes.last = writes.last.max(ticket.number());
        Ok((plan.outcome, ticket))
    }

    /// Checks `change` and writes it with `audit` (if any, and only if the change writes:
    /// a lost compare-and-swap records nothing) in one sled transaction, durably; `writes` is
    /// the plugin's write lock, held by the caller.
    fn kv_operator_change_locked(
        &self,
        tree: &sled::Tree,
        writes: &mut KvWrites,
        change: KvChange,
        limits: &KvLimits,
        audit: Option<&AuditRecord>,
    ) -> Result<(KvOutcome, u64, Ticket), KvError> {
        let plan = kv_plan(tree, change, limits)?;
        let audit = audit.filter(|_| plan.outcome.wrote());
        (tree, self.space(Space::Audit))
            .transaction(|(data, log)| {
                for (bucket, key, value) in &plan.writes {
                    if let Some(value) = value {
                        data.insert(kv_key(bucket, key), value.as_slice())?;
                    } else {
                        data.remove(kv_key(bucket, key))?;
                    }
                }
                data.insert(KV_USAGE, &plan.usage.to_be_bytes())?;
                if let Some(audit) = audit {
                    log.insert(audit.key.as_slice(), audit.value.as_slice())?;
                }
                Ok(())
            })
            .map_err(|e: TransactionError<StoreError>| tx_error("kv operator change", e))?;
        let ticket = self.group.written();
        writes.last = writes.last.max(ticket.number());
        Ok((plan.outcome, plan.usage, ticket))
    }

    /// Whether `plugin` was deployed once and is deleted now (its name's numbering is kept).
    fn was_deleted(&self, plugin: &str) -> Result<bool, StoreError> {
        Ok(!self
            .plugins
            .contains_key(plugin)
            .map_err(backend("read plugin"))?
            && self
                .history
                .contains_key(plugin)
                .map_err(backend("read plugin history"))?)
    }

    /// The kv tree of `plugin`, opened on first use.
    fn kv_tree(&self, plugin: &str) -> Result<KvTree, StoreError> {
        if let Some(tree) = self
            .kv_trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
        {
            return Ok(tree.clone());
        }
        // Opened under the map's write lock, so two first uses share one lock. A purge removes
        // the entry only after dropping the tree, so no open finds the old one.
        let mut trees = self
            .kv_trees
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tree) = trees.get(plugin) {
            return Ok(tree.clone());
        }
        let tree = KvTree {
            tree: self
                .db
                .open_tree(format!("{KV_TREE_PREFIX}{plugin}"))
                .map_err(backend("open kv tree"))?,
            write: Arc::default(),
        };
        trees.insert(plugin.to_string(), tree.clone());
        Ok(tree)
    }
}

/// Resolves `change` against what `tree` holds now (see [`kv::plan`]).
fn kv_plan(tree: &sled::Tree, change: KvChange, limits: &KvLimits) -> Result<kv::Plan, KvError> {
    let usage = kv_usage_of(tree)?;
    let read = |bucket: &str, key: &str| tree.get(kv_key(bucket, key)).map_err(backend("kv read"));
    kv::plan(
        change,
        usage,
        limits,
        |bucket, key| Ok(read(bucket, key)?.map(|v| v.to_vec())),
        |bucket, key| Ok(read(bucket, key)?.map(|v| v.len())),
    )
}

/// The tree key of (bucket, key): `k`, the bucket with NUL escaped as `00 FF`, the terminator
/// `00 01`, then the key. Entries sort by bucket, then key, and no bucket name can end early or
/// run into another's keys.
fn kv_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = kv_bucket_prefix(bucket);
    out.extend_from_slice(key.as_bytes());
    out
}

fn kv_bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 3);
    out.push(KV_DATA);
    for &b in bucket.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
    out
}

/// Splits a tree key made by [`kv_key`] back into (bucket, key).
fn kv_split(raw: &[u8]) -> Option<(String, String)> {
    let rest = raw.strip_prefix(&[KV_DATA])?;
    let mut bucket = Vec::new();
    let mut i = 0;
    loop {
        match (*rest.get(i)?, rest.get(i + 1).copied()) {
            (0, Some(0xFF)) => {
                bucket.push(0);
                i += 2;
            }
            (0, Some(1)) => break,
            (0, _) => return None,
            (b, _) => {
                bucket.push(b);
                i += 1;
            }
        }
    }
    let key = rest.get(i + 2..)?;
    Some((
        String::from_utf8(bucket).ok()?,
        String::from_utf8(key.to_vec()).ok()?,
    ))
}

/// Sets every plugin's kv usage counter to what its entries really use (reads all kv data).
fn recount_kv_usage(db: &sled::Db) -> Result<(), StoreError> {
    for name in db.tree_names() {
        let Some(plugin) = name.strip_prefix(KV_TREE_PREFIX.as_bytes()) else {
            continue;
        };
        let tree = db.open_tree(&name).map_err(backend("open kv tree"))?;
        let mut used = 0u64;
        for entry in tree.range::<&[u8], _>(&[KV_DATA][..]..&[KV_DATA + 1][..]) {
            let (raw, value) = entry.map_err(backend("recount kv usage"))?;
            if let Some((bucket, key)) = kv_split(&raw) {
                used += kv::entry_size(&bucket, &key, value.len());
            }
        }
        let stored = kv_usage_of(&tree)?;
        if stored != used {
            tracing::warn!(
                plugin = %String::from_utf8_lossy(plugin),
                stored,
                used,
                "kv usage counter corrected after an unclean stop"
            );
            tree.insert(KV_USAGE, &used.to_be_bytes())
                .map_err(backend("write kv usage"))?;
        }
    }
    Ok(())
}

fn kv_usage_of(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(read_count(
        tree.get(KV_USAGE).map_err(backend("read kv usage"))?,
    ))
}

impl Drop for SledDb {
    /// Marks a clean stop, so the next open trusts the kv usage counters.
    fn drop(&mut self) {
        let marked = self.meta.insert(CLEAN_SHUTDOWN, &[1u8]).is_ok();
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "flushing the store on close failed");
        } else if marked {
            tracing::debug!("store closed cleanly");
        }
    }
}

/// The synchronous operations behind [`super::SledStore`]: each may block on a lock, a flush or
/// the disk, so the async side runs them on the blocking pool (point reads excepted).
impl SledDb {
    pub(crate) fn put_plugin(
        &self,
        record: &PluginRecord,
        component: &[u8],
        artifact: Option<&Artifact>,
        keep: usize,
        audit: &(dyn Fn(&PluginRecord) -> Result<AuditRecord, StoreError> + Sync),
    ) -> Result<PluginRecord, StoreError> {
        let name = record.name.as_str();
        let trees = (
            &self.plugins,
            &self.versions,
            &self.history,
            &self.blobs,
            &self.blob_refs,
            &self.artifacts,
            self.space(Space::Audit),
        );
        let (stored, dropped) = trees
            .transaction(
                |(plugins, versions, history_tree, blobs, refs, artifacts, audit_tree)| {
                    let mut history = decode_history(name, history_tree.get(name)?)?;
                    let mut stored = record.clone();
                    stored.version = history.next.max(1);
                    history.next = stored.version + 1;
                    history.kept.push(stored.version);
                    let encoded = encode("plugin record", &stored)?;
                    versions.insert(version_key(name, stored.version), encoded.as_slice())?;
                    plugins.insert(name.as_bytes(), encoded.as_slice())?;
                    if adjust_ref(blobs, refs, &stored.sha256, 1)? == 1 {
                        blobs.insert(stored.sha256.as_bytes(), component)?;
                    }
                    if let Some(artifact) = artifact {
                        let key = format!("{}/{}", stored.sha256, artifact.fingerprint);
                        artifacts.insert(key.as_bytes(), artifact.bytes.as_slice())?;
                    }
                    let excess = history.kept.len().saturating_sub(keep.max(1));
                    let gone: Vec<u64> = history.kept.drain(..excess).collect();
                    let dropped = drop_versions(name, &gone, versions, blobs, refs)?;
                    history_tree.insert(name.as_bytes(), encode("version history", &history)?)?;
                    let entry = audit(&stored).map_err(ConflictableTransactionError::Abort)?;
                    audit_tree.insert(entry.key, entry.value)?;
                    Ok((stored, dropped))
                },
            )
            .map_err(|e| tx_error("put plugin", e))?;
        self.drop_artifacts_of(&dropped)?;
        if let Some(artifact) = artifact {
            self.drop_other_artifacts(&stored.sha256, &artifact.fingerprint)?;
        }
        self.flush()?;
        Ok(stored)
    }

    pub(crate) fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.plugins
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(backend("list plugins"))?;
                decode_record(&key, &value)
            })
            .collect()
    }

    pub(crate) fn plugin_versions(&self, name: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let mut records = self
            .versions
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(backend("list plugin versions"))?;
                decode_record(&key, &value)
            })
            .collect::<Result<Vec<_>, _>>()?;
        records.reverse();
        Ok(records)
    }

    pub(crate) fn activate_version(
        &self,
        name: &str,
        version: u64,
        audit: &AuditRecord,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let activated = (&self.plugins, &self.versions, self.space(Space::Audit))
            .transaction(|(plugins, versions, audit_tree)| {
                let Some(bytes) = versions.get(version_key(name, version))? else {
                    return Ok(None);
                };
                if plugins.get(name.as_bytes())?.is_none() {
                    return Ok(None);
                }
                plugins.insert(name.as_bytes(), bytes.clone())?;
                audit_tree.insert(audit.key.as_slice(), audit.value.as_slice())?;
                Ok(Some(
                    decode_record(name.as_bytes(), &bytes)
                        .map_err(ConflictableTransactionError::Abort)?,
                ))
            })
            .map_err(|e| tx_error("activate plugin version", e))?;
        if activated.is_some() {
            self.flush()?;
        }
        Ok(activated)
    }

    pub(crate) fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .blobs
            .get(sha256)
            .map_err(backend("read component"))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn delete_plugin(
        &self,
        name: &str,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let trees = (
            &self.plugins,
            &self.versions,
            &self.history,
            &self.blobs,
            &self.blob_refs,
            self.space(Space::Audit),
        );
        let (existed, dropped) = trees
            .transaction(
                |(plugins, versions, history_tree, blobs, refs, audit_tree)| {
                    if plugins.remove(name.as_bytes())?.is_none() {
                        return Ok((false, Vec::new()));
                    }
                    audit_tree.insert(audit.key.as_slice(), audit.value.as_slice())?;
                    let mut history = decode_history(name, history_tree.get(name)?)?;
                    let gone = std::mem::take(&mut history.kept);
                    let dropped = drop_versions(name, &gone, versions, blobs, refs)?;
                    history_tree.insert(name.as_bytes(), encode("version history", &history)?)?;
                    Ok((true, dropped))
                },
            )
            .map_err(|e| tx_error("delete plugin", e))?;
        self.drop_artifacts_of(&dropped)?;
        self.flush()?;
        Ok(existed)
    }

    pub(crate) fn artifact(
        &self,
        sha256: &str,
        fingerprint: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .artifacts
            .get(format!("{sha256}/{fingerprint}"))
            .map_err(backend("read artifact"))?
            .map(|v| v.to_vec()))
    }

    /// Not flushed on its own: an artifact lost in a crash is compiled again.
    pub(crate) fn put_artifact(
        &self,
        sha256: &str,
        fingerprint: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if !self
            .blobs
            .contains_key(sha256)
            .map_err(backend("read blob"))?
        {
            return Ok(());
        }
        self.artifacts
            .insert(format!("{sha256}/{fingerprint}"), bytes)
            .map_err(backend("write artifact"))?;
        self.drop_other_artifacts(sha256, fingerprint)
    }

    pub(crate) fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .map_err(backend("read meta"))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta
            .insert(key, value)
            .map_err(backend("write meta"))?;
        self.flush()
    }

    pub(crate) fn init_meta(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let swapped = self
            .meta
            .compare_and_swap(key, None::<&[u8]>, Some(value.as_slice()))
            .map_err(backend("write meta"))?;
        match swapped {
            Ok(()) => {
                self.flush()?;
                Ok(value)
            }
            Err(held) => Ok(held.current.map(|v| v.to_vec()).unwrap_or(value)),
        }
    }

    pub(crate) fn was_empty_at_open(&self) -> bool {
        self.was_empty
    }

    pub(crate) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .space(space)
            .get(key)
            .map_err(backend("read"))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let tree = self.space(space);
        let iter = match after {
            Some(after) => tree
                .range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => tree.range::<&[u8], _>(prefix..),
        };
        let mut out = Vec::new();
        for entry in iter {
            let (key, value) = entry.map_err(backend("scan"))?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    pub(crate) fn kv_get(
        &self,
        plugin: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        kv::check_key(bucket, key)?;
        Ok(self
            .kv_tree(plugin)?
            .tree
            .get(kv_key(bucket, key))
            .map_err(backend("kv get"))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn kv_keys(
        &self,
        plugin: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        kv::check_key(bucket, prefix)?;
        let tree = self.kv_tree(plugin)?.tree;
        let start = kv_key(bucket, prefix);
        let iter = match after {
            Some(after) => tree.range::<Vec<u8>, _>((
                std::ops::Bound::Excluded(kv_key(bucket, after)),
                std::ops::Bound::Unbounded,
            )),
            None => tree.range::<Vec<u8>, _>(start.clone()..),
        };
        let mut keys = Vec::new();
        for entry in iter.keys() {
            let raw = entry.map_err(backend("kv list"))?;
            if !raw.starts_with(&start) || keys.len() >= limit {
                break;
            }
            if let Some((_, key)) = kv_split(&raw) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    pub(crate) fn kv_apply(
        &self,
        plugin: &str,
        change: KvChange,
        limits: &KvLimits,
    ) -> Result<(KvOutcome, Ticket), KvError> {
        loop {
            let KvTree { tree, write } = self.kv_tree(plugin)?;
            let mut writes = write.lock().unwrap_or_else(PoisonError::into_inner);
            if writes.purged {
                continue; // purged while we waited: write to the tree that replaced it
            }
            return self.kv_apply_locked(plugin, &tree, &mut writes, change, limits);
        }
    }

    pub(crate) fn kv_try_apply(
        &self,
        plugin: &str,
        change: KvChange,
        limits: &KvLimits,
    ) -> Result<Result<(KvOutcome, Ticket), KvChange>, KvError> {
        let KvTree { tree, write } = self.kv_tree(plugin)?;
        let mut writes = match write.try_lock() {
            Ok(writes) => writes,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(Err(change)),
        };
        if writes.purged {
            return Ok(Err(change)); // the waiting path finds the tree that replaced it
        }
        self.kv_apply_locked(plugin, &tree, &mut writes, change, limits)
            .map(Ok)
    }

    pub(crate) fn kv_read_barrier_now(&self, plugin: &str) -> Result<Option<Ticket>, StoreError> {
        if self.kv_durability == Durability::Periodic {
            return Ok(Some(Ticket::ready()));
        }
        let KvTree { write, .. } = self.kv_tree(plugin)?;
        let writes = match write.try_lock() {
            Ok(writes) => writes,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        Ok(Some(self.group.ticket(writes.last)))
    }

    pub(crate) fn kv_read_barrier(&self, plugin: &str) -> Result<Ticket, StoreError> {
        if self.kv_durability == Durability::Periodic {
            return Ok(Ticket::ready());
        }
        let KvTree { write, .. } = self.kv_tree(plugin)?;
        // Taking the lock waits out a write being applied right now, which the read before
        // this may have seen.
        let writes = write.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(self.group.ticket(writes.last))
    }

    pub(crate) fn kv_operator_change(
        &self,
        plugin: &str,
        change: KvChange,
        limits: &KvLimits,
        audit: Option<&AuditRecord>,
    ) -> Result<(KvOutcome, u64), KvError> {
        let (outcome, usage, ticket) = loop {
            let KvTree { tree, write } = self.kv_tree(plugin)?;
            let mut writes = write.lock().unwrap_or_else(PoisonError::into_inner);
            if writes.purged {
                continue; // purged while we waited: write to the tree that replaced it
            }
            break self.kv_operator_change_locked(&tree, &mut writes, change, limits, audit)?;
        };
        ticket.wait_blocking()?;
        Ok((outcome, usage))
    }

    pub(crate) fn kv_entries(
        &self,
        plugin: &str,
        after: Option<(&str, &str)>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let tree = self.kv_tree(plugin)?.tree;
        let iter = match after {
            Some((bucket, key)) => tree.range::<Vec<u8>, _>((
                std::ops::Bound::Excluded(kv_key(bucket, key)),
                std::ops::Bound::Unbounded,
            )),
            None => tree.range::<Vec<u8>, _>(vec![KV_DATA]..),
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in iter {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            let (raw, value) = entry.map_err(backend("kv scan"))?;
            let Some((bucket, key)) = kv_split(&raw) else {
                break; // past the data keys
            };
            bytes += value.len();
            out.push(KvEntry {
                bucket,
                key,
                value: value.to_vec(),
            });
        }
        Ok(out)
    }

    pub(crate) fn kv_usage(&self, plugin: &str) -> Result<u64, StoreError> {
        kv_usage_of(&self.kv_tree(plugin)?.tree)
    }

    pub(crate) fn kv_purge(&self, plugin: &str) -> Result<(), StoreError> {
        {
            let KvTree { write, .. } = self.kv_tree(plugin)?;
            let mut writes = write.lock().unwrap_or_else(PoisonError::into_inner);
            writes.purged = true;
            // Dropped under this plugin's own lock only, so no other plugin's lookup waits for
            // it (a big tree takes a while). This plugin's writers wait on the lock, find it
            // purged, and look again: the map's entry goes only after the drop, so no writer
            // opens the old tree meanwhile; after it, they open the tree that replaces it.
            let dropped = self.db.drop_tree(format!("{KV_TREE_PREFIX}{plugin}"));
            self.kv_trees
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(plugin);
            drop(writes);
            dropped.map_err(backend("purge kv"))?;
        }
        self.flush()
    }

    pub(crate) fn commit(&self, ops: &[Op]) -> Result<bool, StoreError> {
        let applied = self
            .spaces
            .as_slice()
            .transaction(|trees| {
                for op in ops {
                    if let Op::Expect { space, key, value } = op {
                        let current = trees[space.index()].get(key)?;
                        if current.as_deref() != value.as_deref() {
                            return Ok(false);
                        }
                    }
                }
                for op in ops {
                    match op {
                        Op::Put { space, key, value } => {
                            trees[space.index()].insert(key.as_slice(), value.as_slice())?;
                        }
                        Op::Delete { space, key } => {
                            trees[space.index()].remove(key.as_slice())?;
                        }
                        Op::Expect { .. } => {}
                    }
                }
                Ok(true)
            })
            .map_err(|e: TransactionError<StoreError>| tx_error("commit", e))?;
        if applied {
            self.flush()?;
        }
        Ok(applied)
    }

    pub(crate) fn meta_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.meta.iter() {
            let (key, value) = entry.map_err(backend("list meta"))?;
            let key = String::from_utf8_lossy(&key).into_owned();
            if key != CLEAN_SHUTDOWN
                && key != KV_USAGE_FORMAT
                && !key.starts_with(super::INTERNAL_META)
            {
                out.push((key, value.to_vec()));
            }
        }
        Ok(out)
    }

    pub(crate) fn plugin_histories(&self) -> Result<Vec<PluginHistory>, StoreError> {
        let mut out = Vec::new();
        for entry in self.history.iter() {
            let (key, value) = entry.map_err(backend("list plugin histories"))?;
            let name = String::from_utf8_lossy(&key).into_owned();
            let history: History = super::from_json(&format!("version history of {name}"), &value)?;
            let mut versions = self.plugin_versions(&name)?;
            versions.reverse();
            let active = match self.plugins.get(&key).map_err(backend("read plugin"))? {
                Some(bytes) => Some(decode_record(&key, &bytes)?.version),
                None => None,
            };
            out.push(PluginHistory {
                name,
                next_version: history.next,
                versions,
                active,
            });
        }
        Ok(out)
    }

    pub(crate) fn artifacts_of(&self, sha256: &str) -> Result<Vec<Artifact>, StoreError> {
        let prefix = format!("{sha256}/");
        self.artifacts
            .scan_prefix(prefix.as_bytes())
            .map(|entry| {
                let (key, bytes) = entry.map_err(backend("list artifacts"))?;
                Ok(Artifact {
                    fingerprint: String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
                    bytes: bytes.to_vec(),
                })
            })
            .collect()
    }

    pub(crate) fn restore_plugin(
        &self,
        history: &PluginHistory,
        components: &[Component],
    ) -> Result<(), StoreError> {
        let name = history.name.as_str();
        let trees = (
            &self.plugins,
            &self.versions,
            &self.history,
            &self.blobs,
            &self.blob_refs,
        );
        let dropped = trees
            .transaction(|(plugins, versions, history_tree, blobs, refs)| {
                let held = decode_history(name, history_tree.get(name)?)?;
                let dropped = drop_versions(name, &held.kept, versions, blobs, refs)?;
                plugins.remove(name.as_bytes())?;
                for record in &history.versions {
                    let encoded = encode("plugin record", record)?;
                    versions.insert(version_key(name, record.version), encoded.as_slice())?;
                    if adjust_ref(blobs, refs, &record.sha256, 1)? == 1 {
                        let component = components
                            .iter()
                            .find(|c| c.sha256 == record.sha256)
                            .ok_or_else(|| {
                                ConflictableTransactionError::Abort(StoreError::corrupt(
                                    format!("plugin {name} version {}", record.version),
                                    "its component is missing",
                                ))
                            })?;
                        blobs.insert(record.sha256.as_bytes(), component.bytes.as_slice())?;
                    }
                    if history.active == Some(record.version) {
                        plugins.insert(name.as_bytes(), encoded)?;
                    }
                }
                let restored = History {
                    next: history.next_version.max(held.next),
                    kept: history.versions.iter().map(|r| r.version).collect(),
                };
                history_tree.insert(name.as_bytes(), encode("version history", &restored)?)?;
                Ok(dropped)
            })
            .map_err(|e| tx_error("restore plugin", e))?;
        let gone: Vec<String> = dropped
            .into_iter()
            .filter(|sha| !components.iter().any(|c| &c.sha256 == sha))
            .collect();
        self.drop_artifacts_of(&gone)?;
        for component in components {
            for artifact in &component.artifacts {
                let key = format!("{}/{}", component.sha256, artifact.fingerprint);
                self.artifacts
                    .insert(key.as_bytes(), artifact.bytes.as_slice())
                    .map_err(backend("write artifact"))?;
            }
        }
        self.flush()
    }

    pub(crate) fn kv_plugins(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let Some(plugin) = name.strip_prefix(KV_TREE_PREFIX.as_bytes()) else {
                continue;
            };
            let tree = self.db.open_tree(&name).map_err(backend("open kv tree"))?;
            let first = tree
                .range::<&[u8], _>(&[KV_DATA][..]..&[KV_DATA + 1][..])
                .next()
                .transpose()
                .map_err(backend("kv scan"))?;
            if first.is_some() {
                out.push(String::from_utf8_lossy(plugin).into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, sha: &str) -> PluginRecord {
        PluginRecord {
            name: name.into(),
            manifest: format!("name = \"{name}\""),
            sha256: sha.into(),
            size: 3,
            deployed_at_ms: 1,
            version: 0,
            deployed_by: None,
        }
    }

    fn versioned(name: &str, sha: &str, version: u64) -> PluginRecord {
        PluginRecord {
            version,
            ..record(name, sha)
        }
    }

    /// The audit entry a test's deploy writes, named by what it stored.
    fn logged(stored: &PluginRecord) -> Result<AuditRecord, StoreError> {
        Ok(entry(&format!("deploy {} {}", stored.name, stored.version)))
    }

    fn entry(name: &str) -> AuditRecord {
        AuditRecord {
            key: name.as_bytes().to_vec(),
            value: b"{}".to_vec(),
        }
    }

    /// The audit entries stored, by name.
    fn audit_keys(store: &SledDb) -> Vec<String> {
        store
            .scan(Space::Audit, b"", None, 100)
            .unwrap()
            .into_iter()
            .map(|(key, _)| String::from_utf8(key).unwrap())
            .collect()
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "plinth-store-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn shared_blobs_live_until_their_last_plugin_goes() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        assert!(store.was_empty_at_open());
        store
            .put_plugin(&record("a", "s1"), b"one", None, 1, &logged)
            .unwrap();
        store
            .put_plugin(&record("b", "s1"), b"one", None, 1, &logged)
            .unwrap();
        assert!(store.delete_plugin("a", &entry("delete a")).unwrap());
        assert_eq!(store.component("s1").unwrap().as_deref(), Some(&b"one"[..]));
        // Replacing b's component (keeping one version) drops the old blob, unused now.
        store
            .put_plugin(&record("b", "s2"), b"two", None, 1, &logged)
            .unwrap();
        assert_eq!(store.component("s1").unwrap(), None);
        assert_eq!(store.component("s2").unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!store.delete_plugin("a", &entry("delete a again")).unwrap());
        drop(store);

        let reopened = SledDb::open(&dir).unwrap();
        assert!(!reopened.was_empty_at_open());
        assert_eq!(reopened.plugins().unwrap(), vec![versioned("b", "s2", 2)]);
        drop(reopened);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commits_are_atomic_and_conditional_and_scans_page() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        let put = |k: &str, v: &str| Op::Put {
            space: Space::Users,
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        assert!(
            store
                .commit(&[put("u/1", "a"), put("u/2", "b"), put("v/1", "c")])
                .unwrap()
        );
        // A failed precondition applies nothing, not even the ops before it.
        let guarded = [
            put("u/3", "x"),
            Op::Expect {
                space: Space::Users,
                key: b"u/1".to_vec(),
                value: None,
            },
        ];
        assert!(!store.commit(&guarded).unwrap());
        assert_eq!(store.get(Space::Users, b"u/3").unwrap(), None);
        assert_eq!(store.get(Space::Emails, b"u/1").unwrap(), None);
        let page = store.scan(Space::Users, b"u/", None, 1).unwrap();
        assert_eq!(page, vec![(b"u/1".to_vec(), b"a".to_vec())]);
        let next = store.scan(Space::Users, b"u/", Some(b"u/1"), 10).unwrap();
        assert_eq!(next, vec![(b"u/2".to_vec(), b"b".to_vec())]);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_partial_snapshot_left_by_a_crash_is_quarantined_and_the_store_opens() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        store
            .put_plugin(&record("a", "s1"), b"one", None, 10, &logged)
            .unwrap();
        drop(store);
        // What a kill during sled's snapshot write leaves behind: a newer, unfinished snapshot.
        let partial = dir.join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&partial, b"half a snapshot, no valid checksum").unwrap();
        assert!(
            sled::Config::new().path(&dir).open().is_err(),
            "sled itself refuses to open with the partial snapshot present"
        );
        let store = SledDb::open(&dir).unwrap();
        assert_eq!(store.plugins().unwrap(), vec![versioned("a", "s1", 1)]);
        assert!(!partial.exists());
        let quarantined: Vec<_> = std::fs::read_dir(dir.join(QUARANTINE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(quarantined.len(), 1);
        assert!(quarantined[0].ends_with("snap.7FFFFFFFFFFFFFFF.generating"));
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    const LIMITS: KvLimits = KvLimits {
        max_value: 1 << 20,
        quota: 1 << 20,
    };

    fn kv_put(store: &SledDb, plugin: &str, bucket: &str, key: &str, value: &[u8]) {
        let entry = KvEntry {
            bucket: bucket.into(),
            key: key.into(),
            value: value.to_vec(),
        };
        let (_, ticket) = store
            .kv_apply(plugin, KvChange::Put(vec![entry]), &LIMITS)
            .unwrap();
        ticket.wait_blocking().unwrap();
    }

    #[test]
    fn an_import_is_stored_with_its_audit_entry_or_not_at_all() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        let entries = |value: Vec<u8>| {
            vec![
                KvEntry {
                    bucket: "b".into(),
                    key: "one".into(),
                    value: value.clone(),
                },
                KvEntry {
                    bucket: "b".into(),
                    key: "two".into(),
                    value,
                },
            ]
        };
        let (_, usage) = store
            .kv_operator_change(
                "a",
                KvChange::Put(entries(b"v".to_vec())),
                &LIMITS,
                Some(&entry("import 1")),
            )
            .unwrap();
        assert_eq!(usage, store.kv_usage("a").unwrap());
        assert_eq!(store.kv_get("a", "b", "two").unwrap().unwrap(), b"v");
        // Over the quota: neither the data nor the entry is written.
        let big = vec![0; LIMITS.max_value as usize];
        let refused = store.kv_operator_change(
            "a",
            KvChange::Put(entries(big)),
            &LIMITS,
            Some(&entry("import 2")),
        );
        assert!(matches!(refused, Err(KvError::QuotaExceeded { .. })));
        assert_eq!(store.kv_get("a", "b", "one").unwrap().unwrap(), b"v");
        assert_eq!(store.kv_usage("a").unwrap(), usage);
        assert_eq!(audit_keys(&store), ["import 1"]);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn kv_keys_never_cross_plugins_or_buckets() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        // Bucket names that are prefixes of each other, contain NUL, or look like encodings.
        kv_put(&store, "a", "default", "k", b"a1");
        kv_put(&store, "ab", "default", "k", b"ab1");
        kv_put(&store, "a", "def", "aultk", b"x");
        kv_put(&store, "a", "d\0", "k", b"nul");
        kv_put(&store, "a", "d", "\0k", b"key-nul");
        kv_put(&store, "a", "", "", b"empty");
        assert_eq!(store.kv_get("a", "default", "k").unwrap().unwrap(), b"a1");
        assert_eq!(store.kv_get("ab", "default", "k").unwrap().unwrap(), b"ab1");
        assert_eq!(store.kv_get("b", "default", "k").unwrap(), None);
        assert_eq!(store.kv_get("a", "d\0", "k").unwrap().unwrap(), b"nul");
        assert_eq!(store.kv_get("a", "d", "\0k").unwrap().unwrap(), b"key-nul");
        assert_eq!(store.kv_keys("a", "def", "", None, 10).unwrap(), ["aultk"]);
        assert_eq!(store.kv_keys("a", "d", "", None, 10).unwrap(), ["\0k"]);
        let all: Vec<_> = store
            .kv_entries("a", None, 100, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.bucket, e.key))
            .collect();
        let expected = [
            ("", ""),
            ("d", "\0k"),
            ("d\0", "k"),
            ("def", "aultk"),
            ("default", "k"),
        ];
        assert_eq!(
            all,
            expected
                .map(|(b, k)| (b.to_string(), k.to_string()))
                .to_vec()
        );
        let used = store.kv_usage("a").unwrap();
        assert_eq!(
            used,
            (7 + 1 + 2) + (3 + 5 + 1) + (2 + 1 + 3) + (1 + 2 + 7) + 5 + 5 * kv::ENTRY_OVERHEAD
        );
        store.kv_purge("a").unwrap();
        assert_eq!(store.kv_get("a", "default", "k").unwrap(), None);
        assert_eq!(store.kv_usage("a").unwrap(), 0);
        assert_eq!(store.kv_get("ab", "default", "k").unwrap().unwrap(), b"ab1");
        drop(store);
        let reopened = SledDb::open(&dir).unwrap();
        assert_eq!(
            reopened.kv_usage("ab").unwrap(),
            7 + 1 + 3 + kv::ENTRY_OVERHEAD
        );
        drop(reopened);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_read_answers_only_once_the_writes_it_may_have_seen_are_durable() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        // Another plugin's reads never wait for this one's writes.
        let entry = KvEntry {
            bucket: "b".into(),
            key: "k".into(),
            value: b"v".to_vec(),
        };
        let (_, written) = store
            .kv_apply("p", KvChange::Put(vec![entry]), &LIMITS)
            .unwrap();
        assert_eq!(store.kv_read_barrier("q").unwrap().number(), 0);
        // A read of p waits for that write (unless the flusher was quicker: then nothing).
        let barrier = store.kv_read_barrier("p").unwrap();
        assert!(
            [0, written.number()].contains(&barrier.number()),
            "{} vs {}",
            barrier.number(),
            written.number()
        );
        // So does a compare-and-swap that lost and wrote nothing.
        let lost = KvChange::CompareAndSwap {
            bucket: "b".into(),
            key: "k".into(),
            expected: Some(b"other".to_vec()),
            new: b"x".to_vec(),
        };
        let (outcome, ticket) = store.kv_apply("p", lost, &LIMITS).unwrap();
        assert_eq!(outcome, KvOutcome::Swapped(false));
        assert!([0, written.number()].contains(&ticket.number()));
        barrier.wait_blocking().unwrap();
        // Once durable, later reads have nothing to wait for.
        assert_eq!(store.kv_read_barrier("p").unwrap().number(), 0);
        written.wait_blocking().unwrap();
        ticket.wait_blocking().unwrap();
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn one_plugins_kv_writes_never_wait_for_anothers() {
        let dir = temp_dir();
        let store = std::sync::Arc::new(SledDb::open(&dir).unwrap());
        kv_put(&store, "a", "b", "k", b"1");
        // Hold plugin a's write lock as a long batch would...
        let held = store.kv_tree("a").unwrap().write;
        let _a = held.lock().unwrap();
        // ...a write of a that must not wait comes back unapplied...
        let entry = KvEntry {
            bucket: "b".into(),
            key: "k".into(),
            value: b"later".to_vec(),
        };
        let back = store
            .kv_try_apply("a", KvChange::Put(vec![entry]), &LIMITS)
            .unwrap();
        assert!(matches!(back, Err(KvChange::Put(_))));
        // ...and plugin b still writes at once.
        let (done, finished) = std::sync::mpsc::channel();
        let writer = std::thread::spawn({
            let store = store.clone();
            move || {
                kv_put(&store, "b", "b", "k", b"2");
                done.send(()).unwrap();
            }
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("plugin b's write waited for plugin a's lock");
        writer.join().unwrap();
        drop(_a);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_usage_counter_left_wrong_by_a_crash_is_recounted() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        kv_put(&store, "p", "b", "k", b"12345");
        // What a kill between the data write and the counter write leaves behind.
        store
            .kv_tree("p")
            .unwrap()
            .tree
            .insert(KV_USAGE, &999u64.to_be_bytes())
            .unwrap();
        recount_kv_usage(&store.db).unwrap();
        assert_eq!(store.kv_usage("p").unwrap(), 1 + 1 + 5 + kv::ENTRY_OVERHEAD);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn kv_key_pages_visit_each_key_once_in_order() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        let entries: Vec<_> = (0..250)
            .map(|i| KvEntry {
                bucket: "b".into(),
                key: format!("user/{i:04}"),
                value: vec![1],
            })
            .collect();
        let (_, ticket) = store
            .kv_apply("p", KvChange::Put(entries), &LIMITS)
            .unwrap();
        ticket.wait_blocking().unwrap();
        kv_put(&store, "p", "b", "zzz", b"other prefix");
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .kv_keys("p", "b", "user/", after.as_deref(), 100)
                .unwrap();
            let Some(last) = page.last().cloned() else {
                break;
            };
            seen.extend(page);
            after = Some(last);
        }
        let expected: Vec<_> = (0..250).map(|i| format!("user/{i:04}")).collect();
        assert_eq!(seen, expected);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_deploys_artifact_is_stored_with_its_component_and_goes_with_it() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        let artifact = Artifact {
            fingerprint: "fp".into(),
            bytes: b"code".to_vec(),
        };
        store
            .put_plugin(&record("a", "s1"), b"one", Some(&artifact), 1, &logged)
            .unwrap();
        drop(store);
        let store = SledDb::open(&dir).unwrap();
        assert_eq!(store.artifact("s1", "fp").unwrap().unwrap(), b"code");
        assert!(store.delete_plugin("a", &entry("delete a")).unwrap());
        assert_eq!(store.artifact("s1", "fp").unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn redeploying_the_same_bytes_keeps_the_blob() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        store
            .put_plugin(&record("a", "s1"), b"one", None, 1, &logged)
            .unwrap();
        store
            .put_plugin(&record("a", "s1"), b"one", None, 1, &logged)
            .unwrap();
        assert_eq!(store.component("s1").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(store.delete_plugin("a", &entry("delete a")).unwrap());
        assert_eq!(store.component("s1").unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn versions_are_numbered_kept_to_the_limit_and_activated() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        for (i, sha) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
            let stored = store
                .put_plugin(&record("a", sha), sha.as_bytes(), None, 3, &logged)
                .unwrap();
            assert_eq!(stored.version, i as u64 + 1);
        }
        store.put_artifact("s1", "fp", b"code").unwrap();
        store.put_artifact("s4", "fp", b"code").unwrap();
        let kept: Vec<_> = store
            .plugin_versions("a")
            .unwrap()
            .iter()
            .map(|r| (r.version, r.sha256.clone()))
            .collect();
        assert_eq!(kept, [(4, "s4".into()), (3, "s3".into()), (2, "s2".into())]);
        // Version 1 went, with its blob and its artifact.
        assert_eq!(store.component("s1").unwrap(), None);
        assert_eq!(store.artifact("s1", "fp").unwrap(), None);
        assert_eq!(store.artifact("s4", "fp").unwrap().unwrap(), b"code");

        assert_eq!(
            store
                .activate_version("a", 1, &entry("activate a 1"))
                .unwrap(),
            None
        );
        let active = store
            .activate_version("a", 2, &entry("activate a 2"))
            .unwrap()
            .unwrap();
        assert_eq!(active.sha256, "s2");
        drop(store);
        let store = SledDb::open(&dir).unwrap();
        assert_eq!(store.plugins().unwrap(), vec![versioned("a", "s2", 2)]);

        // A delete drops every version and blob, and numbers are not reused.
        assert!(store.delete_plugin("a", &entry("delete a")).unwrap());
        assert!(store.plugin_versions("a").unwrap().is_empty());
        for sha in ["s2", "s3", "s4"] {
            assert_eq!(store.component(sha).unwrap(), None);
        }
        assert_eq!(store.artifact("s4", "fp").unwrap(), None);
        assert_eq!(
            store
                .activate_version("a", 2, &entry("activate a 2 again"))
                .unwrap(),
            None
        );
        let again = store
            .put_plugin(&record("a", "s9"), b"nine", None, 3, &logged)
            .unwrap();
        assert_eq!(again.version, 5);
        // Each change that happened wrote its entry in its own commit; those that did not
        // (no version 1 any more, nothing left to activate) wrote none.
        assert_eq!(
            audit_keys(&store),
            [
                "activate a 2",
                "delete a",
                "deploy a 1",
                "deploy a 2",
                "deploy a 3",
                "deploy a 4",
                "deploy a 5",
            ]
        );
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn records_stored_before_versions_become_version_one() {
        let dir = temp_dir();
        let store = SledDb::open(&dir).unwrap();
        // What an older Plinth stored: the record, the blob and one reference for it.
        let old = super::super::to_json("record", &record("a", "s1")).unwrap();
        store.plugins.insert("a", old).unwrap();
        store.blobs.insert("s1", &b"one"[..]).unwrap();
        store.blob_refs.insert("s1", &1u64.to_be_bytes()).unwrap();
        drop(store);
        let store = SledDb::open(&dir).unwrap();
        assert_eq!(store.plugins().unwrap(), vec![versioned("a", "s1", 1)]);
        assert_eq!(store.plugin_versions("a").unwrap().len(), 1);
        let next = store
            .put_plugin(&record("a", "s2"), b"two", None, 1, &logged)
            .unwrap();
        assert_eq!(next.version, 2);
        assert_eq!(store.component("s1").unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
