//! Per-plugin key-value data: the shapes a backend stores, the limits every write is checked
//! against, and the planning of a change (what to write, what it does to the plugin's quota), so
//! every backend gives plugins the same semantics.
//!
//! A plugin's data is addressed by (bucket, key). Both are guest strings; the backend keeps each
//! plugin's data apart from every other plugin's, so no bucket name or key can reach across.

use super::StoreError;

/// Longest key, in bytes. Generous for composite keys (`user/123/cart/9`), small enough that a
/// page of 1,000 keys stays under a megabyte.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest bucket name, in bytes.
pub const MAX_BUCKET_BYTES: usize = 255;

/// The limits a plugin's writes are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Largest value, in bytes.
    pub max_value: u64,
    /// Most bytes (bucket + key + value + [`ENTRY_OVERHEAD`] of every entry) one plugin may
    /// store.
    pub quota: u64,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The bucket the plugin opened (its own namespace; no other plugin's).
    pub bucket: String,
    /// Key within the bucket.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
}

impl KvEntry {
    /// What this entry counts against the quota.
    pub fn size(&self) -> u64 {
        entry_size(&self.bucket, &self.key, self.value.len())
    }
}

/// What every entry costs beyond its bytes: the backend's own keys, lengths and index (sled
/// measured about this much per small entry), so millions of tiny entries cost the quota
/// about what they cost the disk.
pub const ENTRY_OVERHEAD: u64 = 64;

/// What an entry counts against its plugin's quota.
pub fn entry_size(bucket: &str, key: &str, value_len: usize) -> u64 {
    (bucket.len() + key.len() + value_len) as u64 + ENTRY_OVERHEAD
}

/// One atomic change to a plugin's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    /// Set every entry (all or none).
    Put(Vec<KvEntry>),
    /// Remove these (bucket, key) pairs; absent keys are fine.
    Delete(Vec<(String, String)>),
    /// Add `delta` to the counter at (bucket, key), which holds a decimal `u64` (absent: 0).
    Increment {
        /// The bucket named.
        bucket: String,
        /// The key that is not valid.
        key: String,
        /// Amount to add.
        delta: u64,
    },
    /// Set (bucket, key) to `new` only if it holds exactly `expected` (`None`: absent).
    CompareAndSwap {
        /// The bucket holding the value.
        bucket: String,
        /// The key whose value is not a counter.
        key: String,
        /// The value the caller last saw.
        expected: Option<Vec<u8>>,
        /// The value to store.
        new: Vec<u8>,
    },
}

impl KvChange {
    /// How many keys the change touches.
    pub fn keys(&self) -> usize {
        match self {
            KvChange::Put(entries) => entries.len(),
            KvChange::Delete(keys) => keys.len(),
            KvChange::Increment { .. } | KvChange::CompareAndSwap { .. } => 1,
        }
    }
}

/// What a change did, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOutcome {
    /// Put applied.
    Done,
    /// Delete applied: how many of the keys named held a value.
    Deleted(usize),
    /// The counter's new value.
    Counter(u64),
    /// Whether the compare-and-swap applied.
    Swapped(bool),
}

impl KvOutcome {
    /// Whether the change wrote anything: not a lost compare-and-swap, nor a delete of keys
    /// that held nothing (an operator's audit entry is written only then).
    pub fn wrote(self) -> bool {
        !matches!(self, KvOutcome::Swapped(false) | KvOutcome::Deleted(0))
    }
}

/// Why a key-value operation failed. The plugin sees the message; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A bucket name or key is too long.
    #[error("invalid_key: {0}")]
    InvalidKey(String),
    /// A value is larger than allowed.
    #[error("value_too_large: a value of {size} bytes is over the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The write would take the plugin over its storage quota.
    #[error(
        "quota_exceeded: this write would use {would_use} bytes of the plugin's quota of \
         {quota} bytes; nothing was written"
    )]
    QuotaExceeded {
        /// Usage after the write.
        would_use: u64,
        /// The plugin's quota in bytes.
        quota: u64,
    },
    /// `increment` on a value that is not a decimal `u64`.
    #[error("not_a_counter: the value of key {0:?} is not a decimal u64")]
    NotACounter(String),
    /// `increment` past `u64::MAX`.
    #[error("overflow: incrementing key {0:?} would exceed u64::MAX")]
    Overflow(String),
    /// The plugin was deleted while its request ran: a write would outlive a purge of its data.
    #[error("plugin_removed: plugin {0} was deleted; nothing was written")]
    PluginRemoved(String),
    /// The backend failed, or cannot be reached (`store_unavailable`, worth retrying).
    #[error("{}", store_failure(.0))]
    Store(#[from] StoreError),
}

/// A backend failure as plugins see it: its code first, like every other kv error.
fn store_failure(error: &StoreError) -> String {
    match error {
        StoreError::Unavailable { .. } => format!(
            "store_unavailable: {error}; try again shortly (a write whose answer was lost may or \
             may not have been applied)"
        ),
        other => format!("storage_failed: {other}"),
    }
}

/// Checks a bucket name and key against the size limits.
pub fn check_key(bucket: &str, key: &str) -> Result<(), KvError> {
    if bucket.len() > MAX_BUCKET_BYTES {
        return Err(KvError::InvalidKey(format!(
            "bucket names are at most {MAX_BUCKET_BYTES} bytes, got {}",
            bucket.len()
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidKey(format!(
            "keys are at most {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8], limits: &KvLimits) -> Result<(), KvError> {
    let size = value.len() as u64;
    if size > limits.max_value {
        return Err(KvError::ValueTooLarge {
            size,
            max: limits.max_value,
        });
    }
    Ok(())
}

/// The writes a change resolves to, once checked: `(bucket, key, new value or None to remove)`,
/// the plugin's usage afterwards, and the outcome to report.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Writes to apply atomically.
    pub writes: Vec<(String, String, Option<Vec<u8>>)>,
    /// The plugin's usage once applied.
    pub usage: u64,
    /// What to tell the caller.
    pub outcome: KvOutcome,
}

/// Resolves `change` against the current data and usage, checking every limit first:
/// `current(bucket, key)` is the value stored (read only for a counter or a compare-and-swap),
/// `current_len(bucket, key)` its length (all the quota needs, so a batch over large values
/// never has to read them). A backend applies the plan atomically while no other write to the
/// plugin runs. Writes that only shrink usage are allowed even over quota, so a full plugin can
/// clean up.
pub fn plan(
    change: KvChange,
    usage: u64,
    limits: &KvLimits,
    mut current: impl FnMut(&str, &str) -> Result<Option<Vec<u8>>, StoreError>,
    mut current_len: impl FnMut(&str, &str) -> Result<Option<usize>, StoreError>,
) -> Result<Plan, KvError> {
    let mut writes = Vec::new();
    let outcome = match change {
        KvChange::Put(entries) => {
            for entry in entries {
                check_key(&entry.bucket, &entry.key)?;
                check_value(&entry.value, limits)?;
                writes.push((entry.bucket, entry.key, Some(entry.value)));
            }
            KvOutcome::Done
        }
        KvChange::Delete(keys) => {
            let mut held = 0;
            for (bucket, key) in keys {
                check_key(&bucket, &key)?;
                if current_len(&bucket, &key)?.is_some() {
                    held += 1;
                }
                writes.push((bucket, key, None));
            }
            KvOutcome::Deleted(held)
        }
        KvChange::Increment { bucket, key, delta } => {
            check_key(&bucket, &key)?;
            let now = match current(&bucket, &key)? {
                None => 0,
                Some(bytes) => std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| KvError::NotACounter(key.clone()))?,
            };
            let next = now
                .checked_add(delta)
                .ok_or_else(|| KvError::Overflow(key.clone()))?;
            writes.push((bucket, key, Some(next.to_string().into_bytes())));
            KvOutcome::Counter(next)
        }
        KvChange::CompareAndSwap {
            bucket,
            key,
            expected,
            new,
        } => {
            check_key(&bucket, &key)?;
            check_value(&new, limits)?;
            if current(&bucket, &key)? != expected {
                return Ok(Plan {
                    writes,
                    usage,
                    outcome: KvOutcome::Swapped(false),
                });
            }
            writes.push((bucket, key, Some(new)));
            KvOutcome::Swapped(true)
        }
    };
    // Later writes to the same key win, as if applied in order; count each key's change once.
    let mut last: std::collections::HashMap<(&str, &str), Option<usize>> =
        std::collections::HashMap::new();
    for (bucket, key, value) in &writes {
        last.insert((bucket, key), value.as_ref().map(Vec::len));
    }
    let mut next_usage = usage as i128;
    for ((bucket, key), new_len) in last {
        if let Some(old) = current_len(bucket, key)? {
            next_usage -= entry_size(bucket, key, old) as i128;
        }
        if let Some(len) = new_len {
            next_usage += entry_size(bucket, key, len) as i128;
        }
    }
    let next_usage = u64::try_from(next_usage.max(0)).unwrap_or(u64::MAX);
    if next_usage > limits.quota && next_usage > usage {
        return Err(KvError::QuotaExceeded {
            would_use: next_usage,
            quota: limits.quota,
        });
    }
    Ok(Plan {
        writes,
        usage: next_usage,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_store_out_of_reach_is_told_apart_from_a_failing_one() {
        let unavailable = KvError::Store(StoreError::Unavailable {
            op: "kv write",
            message: "connection refused".into(),
        });
        assert!(unavailable.to_string().starts_with("store_unavailable: "));
        let failed = KvError::Store(StoreError::Backend {
            op: "kv write",
            message: "disk full".into(),
        });
        assert!(failed.to_string().starts_with("storage_failed: "));
    }

    /// Each entry's overhead, shortened.
    const O: u64 = ENTRY_OVERHEAD;

    const LIMITS: KvLimits = KvLimits {
        max_value: 10,
        quota: 20 + 2 * O,
    };

    fn data(entries: &[(&str, &str, &str)]) -> HashMap<(String, String), Vec<u8>> {
        entries
            .iter()
            .map(|(b, k, v)| ((b.to_string(), k.to_string()), v.as_bytes().to_vec()))
            .collect()
    }

    fn run(
        change: KvChange,
        usage: u64,
        data: &HashMap<(String, String), Vec<u8>>,
    ) -> Result<Plan, KvError> {
        let get = |b: &str, k: &str| data.get(&(b.to_string(), k.to_string()));
        plan(
            change,
            usage,
            &LIMITS,
            |b, k| Ok(get(b, k).cloned()),
            |b, k| Ok(get(b, k).map(Vec::len)),
        )
    }

    fn put(bucket: &str, key: &str, value: &str) -> KvEntry {
        KvEntry {
            bucket: bucket.into(),
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn usage_follows_replacements_and_deletes() {
        let d = data(&[("b", "k", "12345")]);
        // Replacing a 5-byte value with a 2-byte one frees 3 bytes.
        let p = run(KvChange::Put(vec![put("b", "k", "xy")]), 7 + O, &d).unwrap();
        assert_eq!(p.usage, 4 + O);
        let p = run(KvChange::Delete(vec![("b".into(), "k".into())]), 7 + O, &d).unwrap();
        assert_eq!(p.usage, 0);
        // Writing the same key twice in one batch counts the last value once.
        let p = run(
            KvChange::Put(vec![put("b", "n", "1"), put("b", "n", "22")]),
            7 + O,
            &d,
        )
        .unwrap();
        assert_eq!(p.usage, 7 + O + 4 + O);
    }

    #[test]
    fn every_entry_costs_its_overhead_so_tiny_entries_are_not_free() {
        let d = data(&[]);
        // Three empty values under one-byte keys: 3 bytes of data, 3 entries of overhead.
        let tiny = KvChange::Put(vec![
            put("b", "1", ""),
            put("b", "2", ""),
            put("b", "3", ""),
        ]);
        let err = run(tiny, 0, &d).unwrap_err();
        assert!(matches!(err, KvError::QuotaExceeded { would_use, .. } if would_use == 6 + 3 * O));
    }

    #[test]
    fn over_quota_fails_but_shrinking_is_allowed() {
        let d = data(&[("b", "k", "1234567890")]);
        let err = run(
            KvChange::Put(vec![put("b", "new", "123456789")]),
            12 + O,
            &d,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            KvError::QuotaExceeded { would_use, quota }
                if would_use == 25 + 2 * O && quota == 20 + 2 * O
        ));
        // Already over quota (the operator lowered it): a smaller value still goes in.
        let p = run(KvChange::Put(vec![put("b", "k", "1")]), 300 + O, &d).unwrap();
        assert_eq!(p.usage, 291 + O);
    }

    #[test]
    fn limits_on_keys_and_values() {
        let d = data(&[]);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            run(KvChange::Put(vec![put("b", &long_key, "v")]), 0, &d),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            run(KvChange::Put(vec![put("b", "k", "12345678901")]), 0, &d),
            Err(KvError::ValueTooLarge { size: 11, max: 10 })
        ));
        // Empty keys and bucket names are ordinary keys.
        assert!(run(KvChange::Put(vec![put("", "", "v")]), 0, &d).is_ok());
    }

    #[test]
    fn counters_and_compare_and_swap() {
        let d = data(&[("b", "n", "41"), ("b", "text", "hello")]);
        let inc = |key: &str, delta| KvChange::Increment {
            bucket: "b".into(),
            key: key.into(),
            delta,
        };
        assert_eq!(
            run(inc("n", 1), 0, &d).unwrap().outcome,
            KvOutcome::Counter(42)
        );
        assert_eq!(
            run(inc("new", 5), 0, &d).unwrap().outcome,
            KvOutcome::Counter(5)
        );
        assert!(matches!(
            run(inc("text", 1), 0, &d),
            Err(KvError::NotACounter(_))
        ));
        assert!(matches!(
            run(inc("n", u64::MAX), 0, &d),
            Err(KvError::Overflow(_))
        ));
        let cas = |expected: Option<&str>| KvChange::CompareAndSwap {
            bucket: "b".into(),
            key: "n".into(),
            expected: expected.map(|e| e.as_bytes().to_vec()),
            new: b"7".to_vec(),
        };
        let lost = run(cas(Some("40")), 0, &d).unwrap();
        assert_eq!(lost.outcome, KvOutcome::Swapped(false));
        assert!(lost.writes.is_empty());
        assert_eq!(
            run(cas(None), 0, &d).unwrap().outcome,
            KvOutcome::Swapped(false)
        );
        let won = run(cas(Some("41")), 4 + O, &d).unwrap();
        assert_eq!(won.outcome, KvOutcome::Swapped(true));
        assert_eq!(won.usage, 3 + O);
    }
}
