//! Operators' access to a plugin's key-value data, the one path the admin API and the dashboard
//! share: pages of entries, one entry with its version tag, an edit or a delete, and export and
//! import as JSON lines. Every change is written with its audit entry in the same commit. The
//! plugin need not be deployed: its data outlives a delete without purge.
//!
//! **Invariant:** an audit entry names the bucket and key and counts bytes; it never holds a
//! value.

use crate::audit::Actor;
use crate::registry::manifest::PluginName;
use crate::store::{KvChange, KvEntry, KvError, KvLimits, Store};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Entries read from the store per chunk of a listing scan or an export, and the value bytes
/// a chunk holds at most (past one entry): a plugin that stored large values cannot make an
/// operator's page or export hold them all at once.
const CHUNK: usize = 500;
const CHUNK_BYTES: usize = 4 << 20;
/// Value bytes a page of a listing holds at most (past one entry); the rest is on the next.
const PAGE_BYTES: usize = 8 << 20;
/// Largest import body: a full default quota (256 MiB) grows by a third in base64, plus the
/// JSON around it.
pub(crate) const MAX_IMPORT_BYTES: usize = 512 << 20;

/// Which entries a page lists.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Only this bucket; every bucket when `None`.
    pub bucket: Option<String>,
    /// Only keys starting with this.
    pub prefix: String,
    /// Start after this (bucket, key).
    pub after: Option<(String, String)>,
    /// At most this many entries.
    pub limit: usize,
}

/// One page of a listing, ordered by bucket then key.
pub(crate) struct Page {
    pub entries: Vec<KvEntry>,
    /// Whether entries follow the last one.
    pub more: bool,
    /// Bytes the plugin stores.
    pub usage: u64,
}

/// The entries `listing` names, read a chunk at a time.
pub(crate) async fn page(
    store: &dyn Store,
    plugin: &PluginName,
    listing: &Listing,
) -> Result<Page, KvError> {
    let plugin = plugin.to_string();
    let limit = listing.limit.max(1);
    let mut entries = Vec::new();
    let mut more = false;
    match &listing.bucket {
        Some(bucket) => {
            let after_key = listing
                .after
                .as_ref()
                .filter(|(b, _)| b == bucket)
                .map(|(_, k)| k.as_str());
            let keys = store
                .kv_keys(&plugin, bucket, &listing.prefix, after_key, limit + 1)
                .await?;
            more = keys.len() > limit;
            let mut bytes = 0;
            for key in keys.into_iter().take(limit) {
                if !entries.is_empty() && bytes >= PAGE_BYTES {
                    more = true;
                    break;
                }
                if let Some(value) = store.kv_get(&plugin, bucket, &key).await? {
                    bytes += value.len();
                    entries.push(KvEntry {
                        bucket: bucket.clone(),
                        key,
                        value,
                    });
                }
            }
        }
        None => {
            let mut position = listing.after.clone();
            let mut bytes = 0;
            'scan: loop {
                let chunk = store
                    .kv_entries(
                        &plugin,
                        position.as_ref().map(|(b, k)| (b.as_str(), k.as_str())),
                        CHUNK,
                        CHUNK_BYTES,
                    )
                    .await?;
                let Some(last) = chunk.last() else {
                    break;
                };
                position = Some((last.bucket.clone(), last.key.clone()));
                for entry in chunk {
                    if !entry.key.starts_with(&listing.prefix) {
                        continue;
                    }
                    if entries.len() == limit || (!entries.is_empty() && bytes >= PAGE_BYTES) {
                        more = true;
                        break 'scan;
                    }
                    bytes += entry.value.len();
                    entries.push(entry);
                }
            }
        }
    }
    Ok(Page {
        usage: store.kv_usage(&plugin).await?,
        entries,
        more,
    })
}

/// A listing position: the last (bucket, key) shown, opaque to clients.
pub(crate) fn encode_cursor(bucket: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(bucket, key)).unwrap_or_default())
}

/// The position a cursor of [`encode_cursor`] names; `None` for one it did not make.
pub(crate) fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A value's version tag: its SHA-256 in hex. An edit made against a tag applies only while
/// the value is still the one tagged, so an operator never overwrites a change they did not see.
pub(crate) fn tag(value: &[u8]) -> String {
    hex::encode(Sha256::digest(value))
}

/// The value at (bucket, key), if any.
pub(crate) async fn value(
    store: &dyn Store,
    plugin: &PluginName,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, KvError> {
    store.kv_get(&plugin.to_string(), bucket, key).await
}

/// What an edit expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Anything: the edit replaces whatever is there.
    Any,
    /// No value: the edit creates the key.
    Absent,
    /// Some value, whichever: the edit replaces it, and never creates the key.
    Present,
    /// The value with this [`tag`].
    Tagged(String),
}

/// What an edit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit {
    /// Written; the plugin's usage after.
    Written { usage: u64 },
    /// The value was not what the edit expected; nothing was written.
    Changed,
}

/// Sets (bucket, key) to `value` if it holds what `expect` says, under the plugin's limits.
#[allow(clippy::too_many_arguments)] // each is one fact of the edit
pub(crate) async fn set(
    store: &dyn Store,
    limits: KvLimits,
    plugin: &PluginName,
    bucket: &str,
    key: &str,
    value: Vec<u8>,
    expect: Expect,
    actor: &Actor,
) -> Result<Edit, KvError> {
    let name = plugin.to_string();
    let bytes = value.len();
    let change = match expect {
        Expect::Any => KvChange::Put(vec![KvEntry {
            bucket: bucket.to_string(),
            key: key.to_string(),
            value,
        }]),
        Expect::Absent | Expect::Present | Expect::Tagged(_) => {
            let expected = match expect {
                // Swapped against the bytes read, so a write between this read and the swap
                // is caught too.
                Expect::Tagged(seen) => match store.kv_get(&name, bucket, key).await? {
                    Some(current) if tag(&current) == seen => Some(current),
                    _ => return Ok(Edit::Changed),
                },
                Expect::Present => match store.kv_get(&name, bucket, key).await? {
                    Some(current) => Some(current),
                    None => return Ok(Edit::Changed),
                },
                _ => None,
            };
            KvChange::CompareAndSwap {
                bucket: bucket.to_string(),
                key: key.to_string(),
                expected,
                new: value,
            }
        }
    };
    let audit = actor.records(
        "kv.set",
        &name,
        serde_json::json!({ "bucket": bucket, "key": key, "bytes": bytes }),
    );
    let (outcome, usage) = store
        .kv_operator_change(&name, change, limits, Some(audit.record()?))
        .await?;
    if !outcome.wrote() {
        return Ok(Edit::Changed);
    }
    audit.committed();
    Ok(Edit::Written { usage })
}

/// Removes (bucket, key). Returns whether there was a value; removing nothing records nothing.
pub(crate) async fn delete(
    store: &dyn Store,
    limits: KvLimits,
    plugin: &PluginName,
    bucket: &str,
    key: &str,
    actor: &Actor,
) -> Result<bool, KvError> {
    let name = plugin.to_string();
    let audit = actor.records(
        "kv.delete",
        &name,
        serde_json::json!({ "bucket": bucket, "key": key }),
    );
    let change = KvChange::Delete(vec![(bucket.to_string(), key.to_string())]);
    // The store writes the entry only if the key held a value when the delete ran.
    let (outcome, _) = store
        .kv_operator_change(&name, change, limits, Some(audit.record()?))
        .await?;
    if !outcome.wrote() {
        return Ok(false);
    }
    audit.committed();
    Ok(true)
}

/// One line of an export: an entry with its exact bytes.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportLine {
    pub bucket: String,
    pub key: String,
    /// The value as text when it is UTF-8 (listings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The exact bytes, base64 (standard alphabet, padded).
    pub value_base64: String,
}

impl ExportLine {
    /// `entry` as a line; `with_text` adds the value as text when it is UTF-8.
    pub(crate) fn new(entry: KvEntry, with_text: bool) -> Self {
        let value_base64 = STANDARD.encode(&entry.value);
        let value = if with_text {
            String::from_utf8(entry.value).ok()
        } else {
            None
        };
        Self {
            bucket: entry.bucket,
            key: entry.key,
            value,
            value_base64,
        }
    }
}

/// Every entry of `plugin` as JSON lines, in key order, a chunk at a time (never the whole
/// export in memory). A failure ends the stream with an error, logged here.
pub(crate) fn export(
    store: Arc<dyn Store>,
    plugin: &PluginName,
) -> tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>> {
    let plugin = plugin.to_string();
    // One chunk waits while the next is read: at most two chunks' worth in memory.
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut after: Option<(String, String)> = None;
        loop {
            let position = after.as_ref().map(|(b, k)| (b.as_str(), k.as_str()));
            let chunk = match store
                .kv_entries(&plugin, position, CHUNK, CHUNK_BYTES)
                .await
            {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::error!(plugin, error = %e, "kv export failed");
                    let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let Some(last) = chunk.last() else {
                return; // done
            };
            after = Some((last.bucket.clone(), last.key.clone()));
            let mut lines = Vec::new();
            for entry in chunk {
                if serde_json::to_writer(&mut lines, &ExportLine::new(entry, false)).is_err() {
                    return;
                }
                lines.push(b'\n');
            }
            if sender.send(Ok(Bytes::from(lines))).await.is_err() {
                return; // client gone
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Why an import's body was refused: the 1-based line and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadLine {
    pub line: usize,
    pub message: String,
}

/// The entries of an export's lines (blank lines skipped), or the first bad line.
pub(crate) fn parse_export(body: &[u8]) -> Result<Vec<KvEntry>, BadLine> {
    let mut entries = Vec::new();
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |message: String| BadLine {
            line: index + 1,
            message,
        };
        let entry: ExportLine = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        let value = STANDARD
            .decode(&entry.value_base64)
            .map_err(|e| bad(format!("value_base64: {e}")))?;
        entries.push(KvEntry {
            bucket: entry.bucket,
            key: entry.key,
            value,
        });
    }
    Ok(entries)
}

/// Writes `entries` in one atomic step (same keys replaced), or none of them. Returns the
/// plugin's usage after.
pub(crate) async fn import(
    store: &dyn Store,
    limits: KvLimits,
    plugin: &PluginName,
    entries: Vec<KvEntry>,
    actor: &Actor,
) -> Result<u64, KvError> {
    let name = plugin.to_string();
    let count = entries.len();
    let bytes: usize = entries
        .iter()
        .map(|e| e.bucket.len() + e.key.len() + e.value.len())
        .sum();
    let audit = actor.records(
        "kv.import",
        &name,
        serde_json::json!({ "entries": count, "bytes": bytes }),
    );
    let (_, usage) = store
        .kv_operator_change(&name, KvChange::Put(entries), limits, Some(audit.record()?))
        .await?;
    audit.committed();
    tracing::info!(plugin = name, entries = count, "kv data imported");
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_line_reads_back_as_the_same_bytes() {
        let entry = KvEntry {
            bucket: "b".into(),
            key: "k".into(),
            value: vec![0, 159, 146, 150],
        };
        let line = serde_json::to_string(&ExportLine::new(entry.clone(), false)).unwrap();
        assert_eq!(
            parse_export(format!("\n{line}\n\n").as_bytes()),
            Ok(vec![entry])
        );
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let body = b"{\"bucket\":\"b\",\"key\":\"k\",\"value_base64\":\"\"}\n{\"bucket\":\"b\"}\n";
        let bad = parse_export(body).unwrap_err();
        assert_eq!(bad.line, 2);
        assert!(bad.message.contains("key"), "{}", bad.message);
        let bad =
            parse_export(b"{\"bucket\":\"b\",\"key\":\"k\",\"value_base64\":\"%%\"}").unwrap_err();
        assert!(bad.message.starts_with("value_base64"), "{}", bad.message);
    }

    #[test]
    fn a_tag_is_the_values_sha256() {
        assert_eq!(
            tag(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
