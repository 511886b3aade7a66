//! The audit log: every change an operator or admin makes (deploys, rollbacks, deletes, config,
//! users, API keys, signing keys, kv imports) with who made it, when and from which address,
//! kept in the store and listed newest first.
//!
//! A change records itself: the code that commits it makes its entry ([`Actor::records`]) and
//! writes it in the same commit as the change, so no change is stored without its entry and no
//! entry names a change that did not happen.
//!
//! **Invariant:** entries record names and ids, never a secret value, password or key.

use crate::store::{AuditRecord, Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Who made a change, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// e.g. `user:3f2a… (ops@example.com)`, `api-key:k_12… (ci)`, `admin-token`.
    pub who: String,
    /// The client's address, as the connection saw it.
    pub address: Option<String>,
}

/// Orders entries made in the same millisecond. Starts anywhere, so two processes writing to
/// one store in the same millisecond are unlikely to pick the same key.
static SEQUENCE: LazyLock<AtomicU32> = LazyLock::new(|| AtomicU32::new(rand::random()));

impl Actor {
    /// The entry recording that this actor did `action` to `target`, stamped now, to be written
    /// in the change's own commit.
    pub fn records(&self, action: &str, target: &str, details: serde_json::Value) -> Pending {
        let at_ms = crate::units::now_ms();
        Pending {
            key: entry_key(at_ms, SEQUENCE.fetch_add(1, Ordering::Relaxed)),
            entry: AuditEntry {
                at: crate::units::rfc3339(at_ms),
                actor: self.who.clone(),
                address: self.address.clone(),
                action: action.to_string(),
                target: target.to_string(),
                details,
            },
        }
    }
}

/// An entry made for a change not yet committed.
#[derive(Debug, Clone)]
pub struct Pending {
    key: Vec<u8>,
    entry: AuditEntry,
}

impl Pending {
    /// The entry as the store writes it with the change.
    pub fn record(&self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            key: self.key.clone(),
            value: crate::store::to_json("audit entry", &self.entry)?,
        })
    }

    /// The entry as one step of a [`Store::commit`].
    pub fn op(&self) -> Result<Op, StoreError> {
        let AuditRecord { key, value } = self.record()?;
        Ok(Op::Put {
            space: Space::Audit,
            key,
            value,
        })
    }

    /// Writes the entry to the server log; call once its commit has succeeded.
    pub fn committed(&self) {
        let entry = &self.entry;
        tracing::info!(
            actor = entry.actor,
            address = entry.address,
            action = entry.action,
            target = entry.target,
            details = %entry.details,
            "audit"
        );
    }
}

/// One recorded change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who made the change: `user:<id> (<email>)`, `api-key:<id> (<name>)` or `admin-token`.
    pub actor: String,
    /// From which address.
    pub address: Option<String>,
    /// What, e.g. `plugin.deploy`.
    pub action: String,
    /// On what, e.g. the plugin name or user id.
    pub target: String,
    /// Facts of the change (version, keys changed, role...), never secret values.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// A page of entries, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Up to `limit` entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for older entries; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Why listing failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The cursor is not one this server gave.
    #[error("the cursor is not valid")]
    InvalidCursor,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Lists and prunes audit entries (changes write their own, see [`Actor::records`]).
pub struct AuditLog {
    store: Arc<dyn Store>,
}

/// Keys sort newest first: inverted milliseconds, then an inverted sequence number.
fn entry_key(at_ms: u64, sequence: u32) -> Vec<u8> {
    let mut key = (u64::MAX - at_ms).to_be_bytes().to_vec();
    key.extend_from_slice(&(u32::MAX - sequence).to_be_bytes());
    key
}

impl AuditLog {
    /// Deletes entries written before `before_ms` (the retention period's start), page by
    /// page; returns how many.
    pub async fn prune(store: &dyn Store, before_ms: u64) -> Result<usize, StoreError> {
        // Keys sort newest first: everything from the cut-off's key on is older.
        let start = entry_key(before_ms.saturating_sub(1), u32::MAX);
        let mut removed = 0;
        loop {
            let page = store.scan(Space::Audit, b"", Some(&start), 512).await?;
            if page.is_empty() {
                return Ok(removed);
            }
            let ops: Vec<Op> = page
                .into_iter()
                .map(|(key, _)| Op::Delete {
                    space: Space::Audit,
                    key,
                })
                .collect();
            removed += ops.len();
            store.commit(ops).await?;
        }
    }

    /// The audit log kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Up to `limit` entries, newest first, older than `cursor`; `action` and `target` filter
    /// exactly when given.
    pub async fn list(
        &self,
        cursor: Option<&str>,
        limit: usize,
        action: Option<String>,
        target: Option<String>,
    ) -> Result<AuditPage, AuditError> {
        let mut after = match cursor {
            Some(c) => Some(hex::decode(c).map_err(|_| AuditError::InvalidCursor)?),
            None => None,
        };
        if after.as_ref().is_some_and(|k| k.len() != 12) {
            return Err(AuditError::InvalidCursor);
        }
        let limit = limit.clamp(1, 1000);
        let mut entries = Vec::new();
        // Filters may skip entries: keep reading pages until the page is full or the log
        // ends, so a filtered listing never returns an empty page with more to come.
        loop {
            let page = self
                .store
                .scan(Space::Audit, b"", after.as_deref(), limit)
                .await?;
            let exhausted = page.len() < limit;
            for (key, value) in page {
                after = Some(key);
                let entry: AuditEntry = crate::store::from_json("audit entry", &value)?;
                let wanted = action.as_ref().is_none_or(|a| *a == entry.action)
                    && target.as_ref().is_none_or(|t| *t == entry.target);
                if wanted {
                    entries.push(entry);
                    if entries.len() == limit {
                        return Ok(AuditPage {
                            entries,
                            next_cursor: after.map(hex::encode),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(AuditPage {
                    entries,
                    next_cursor: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_sort_newest_first_and_in_write_order_within_a_millisecond() {
        let older = super::entry_key(1_000, 5);
        let newer = super::entry_key(2_000, 0);
        let same_ms_later = super::entry_key(2_000, 1);
        assert!(newer < older);
        assert!(same_ms_later < newer);
    }

    #[tokio::test]
    async fn entries_older_than_the_retention_are_pruned_and_newer_ones_kept() {
        use crate::store::{Durability, Op, SledStore, Space, Store};
        let dir = std::env::temp_dir().join(format!("plinth-audit-{}", rand::random::<u64>()));
        let store = SledStore::open(&dir, Durability::Durable).await.unwrap();
        let put = |at_ms, sequence| Op::Put {
            space: Space::Audit,
            key: super::entry_key(at_ms, sequence),
            value: b"{}".to_vec(),
        };
        store
            .commit(vec![
                put(1_000, 0),
                put(1_999, 7),
                put(2_000, 0),
                put(3_000, 1),
            ])
            .await
            .unwrap();
        assert_eq!(super::AuditLog::prune(&store, 2_000).await.unwrap(), 2);
        let left = store.scan(Space::Audit, b"", None, 10).await.unwrap();
        let keys: Vec<_> = left.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [super::entry_key(3_000, 1), super::entry_key(2_000, 0)]
        );
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
