//! The sled implementation of [`Store`]: one tree per kind of record, multi-tree transactions for
//! changes that must land together, and a flush before any change is acknowledged.

use super::{Entries, Op, PluginRecord, Space, Store, StoreError};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::path::Path;

const PLUGINS: &str = "plugins";
const BLOBS: &str = "blobs";
/// Reference counts of blobs, so a blob shared by several plugins is dropped with its last user.
const BLOB_REFS: &str = "blob_refs";
const META: &str = "meta";

/// sled-backed store in one directory.
pub struct SledStore {
    db: sled::Db,
    plugins: sled::Tree,
    blobs: sled::Tree,
    blob_refs: sled::Tree,
    meta: sled::Tree,
    /// One tree per [`Space`], in `Space::ALL` order.
    spaces: Vec<sled::Tree>,
    /// sled's data file, kept open to fsync it after each flush.
    data_file: std::fs::File,
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

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
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
        let was_empty = !db.was_recovered();
        let open = |name| db.open_tree(name).map_err(backend("open tree"));
        let spaces = Space::ALL
            .iter()
            .map(|space| open(space.name()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            spaces,
            plugins: open(PLUGINS)?,
            blobs: open(BLOBS)?,
            blob_refs: open(BLOB_REFS)?,
            meta: open(META)?,
            db,
            data_file,
            was_empty,
        })
    }

    fn space(&self, space: Space) -> &sled::Tree {
        &self.spaces[space.index()]
    }

    /// Makes every change so far durable before it is acknowledged.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend("flush"))?;
        self.data_file.sync_data().map_err(|e| StoreError::Backend {
            op: "fsync",
            message: e.to_string(),
        })
    }
}

impl Store for SledStore {
    fn put_plugin(&self, record: &PluginRecord, component: &[u8]) -> Result<(), StoreError> {
        let encoded = super::to_json(&format!("plugin record {}", record.name), record)?;
        (&self.plugins, &self.blobs, &self.blob_refs)
            .transaction(|(plugins, blobs, refs)| {
                let previous = plugins.insert(record.name.as_bytes(), encoded.as_slice())?;
                let previous_sha = match previous {
                    Some(bytes) => Some(
                        decode_record(record.name.as_bytes(), &bytes)
                            .map_err(ConflictableTransactionError::Abort)?
                            .sha256,
                    ),
                    None => None,
                };
                if previous_sha.as_deref() != Some(record.sha256.as_str()) {
                    if adjust_ref(blobs, refs, &record.sha256, 1)? == 1 {
                        blobs.insert(record.sha256.as_bytes(), component)?;
                    }
                    if let Some(old) = previous_sha {
                        adjust_ref(blobs, refs, &old, -1)?;
                    }
                }
                Ok(())
            })
            .map_err(|e| tx_error("put plugin", e))?;
        self.flush()
    }

    fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.plugins
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(backend("list plugins"))?;
                decode_record(&key, &value)
            })
            .collect()
    }

    fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .blobs
            .get(sha256)
            .map_err(backend("read component"))?
            .map(|v| v.to_vec()))
    }

    fn delete_plugin(&self, name: &str) -> Result<bool, StoreError> {
        let existed = (&self.plugins, &self.blobs, &self.blob_refs)
            .transaction(|(plugins, blobs, refs)| {
                let Some(bytes) = plugins.remove(name.as_bytes())? else {
                    return Ok(false);
                };
                let record = decode_record(name.as_bytes(), &bytes)
                    .map_err(ConflictableTransactionError::Abort)?;
                adjust_ref(blobs, refs, &record.sha256, -1)?;
                Ok(true)
            })
            .map_err(|e| tx_error("delete plugin", e))?;
        self.flush()?;
        Ok(existed)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .map_err(backend("read meta"))?
            .map(|v| v.to_vec()))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta
            .insert(key, value)
            .map_err(backend("write meta"))?;
        self.flush()
    }

    fn was_empty_at_open(&self) -> bool {
        self.was_empty
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .space(space)
            .get(key)
            .map_err(backend("read"))?
            .map(|v| v.to_vec()))
    }

    fn scan(
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

    fn commit(&self, ops: &[Op]) -> Result<bool, StoreError> {
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
        }
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
        let store = SledStore::open(&dir).unwrap();
        assert!(store.was_empty_at_open());
        store.put_plugin(&record("a", "s1"), b"one").unwrap();
        store.put_plugin(&record("b", "s1"), b"one").unwrap();
        assert!(store.delete_plugin("a").unwrap());
        assert_eq!(store.component("s1").unwrap().as_deref(), Some(&b"one"[..]));
        // Replacing b's component drops the old blob, which nothing else uses now.
        store.put_plugin(&record("b", "s2"), b"two").unwrap();
        assert_eq!(store.component("s1").unwrap(), None);
        assert_eq!(store.component("s2").unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!store.delete_plugin("a").unwrap());
        drop(store);

        let reopened = SledStore::open(&dir).unwrap();
        assert!(!reopened.was_empty_at_open());
        assert_eq!(reopened.plugins().unwrap(), vec![record("b", "s2")]);
        drop(reopened);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commits_are_atomic_and_conditional_and_scans_page() {
        let dir = temp_dir();
        let store = SledStore::open(&dir).unwrap();
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
        let store = SledStore::open(&dir).unwrap();
        store.put_plugin(&record("a", "s1"), b"one").unwrap();
        drop(store);
        // What a kill during sled's snapshot write leaves behind: a newer, unfinished snapshot.
        let partial = dir.join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&partial, b"half a snapshot, no valid checksum").unwrap();
        assert!(
            sled::Config::new().path(&dir).open().is_err(),
            "sled itself refuses to open with the partial snapshot present"
        );
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.plugins().unwrap(), vec![record("a", "s1")]);
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

    #[test]
    fn redeploying_the_same_bytes_keeps_the_blob() {
        let dir = temp_dir();
        let store = SledStore::open(&dir).unwrap();
        store.put_plugin(&record("a", "s1"), b"one").unwrap();
        store.put_plugin(&record("a", "s1"), b"one").unwrap();
        assert_eq!(store.component("s1").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(store.delete_plugin("a").unwrap());
        assert_eq!(store.component("s1").unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
