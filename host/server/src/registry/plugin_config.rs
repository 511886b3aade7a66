//! Operator-set config and secrets of plugins: what is stored, what operators see (secrets
//! masked), and what an instance reads through `wasi:config/store`.
//!
//! **Invariant:** a secret's value leaves the host only to its own plugin's instances: the admin
//! API shows it masked, and no log line carries any config value.

use crate::store::{Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use wasmtime_wasi_config::WasiConfigVariables;

/// Largest config value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// What the admin API shows instead of a secret's value.
pub const MASK: &str = "********";

/// A config key: 1–128 characters of `A-Z a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigKey(String);

impl ConfigKey {
    /// Checks and wraps a key.
    pub fn parse(key: &str) -> Result<Self, String> {
        let ok = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(key.to_string()))
        } else {
            Err(format!(
                "config key {key:?} must be 1-128 characters of A-Z, a-z, 0-9, `_`, `.` and `-`"
            ))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConfigKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One stored config value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    /// The value as the operator set it (a secret's too: it is masked only when shown).
    pub value: String,
    /// Write-only: never shown back.
    pub secret: bool,
    /// When it was set, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl fmt::Debug for StoredValue {
    // Hand-written so a value never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredValue")
            .field("value", &MASK)
            .field("secret", &self.secret)
            .finish()
    }
}

/// A value to set.
#[derive(Clone, PartialEq, Eq)]
pub struct NewValue {
    /// The value to store.
    pub value: String,
    /// Whether it is a secret.
    pub secret: bool,
}

/// Why a config change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key or value is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The key is not set.
    #[error("config key {key:?} is not set for plugin {plugin:?}")]
    NotSet {
        /// The plugin named in the request.
        plugin: String,
        /// The key it does not have.
        key: String,
    },
    /// Storage failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One plugin's config as instances see it, rebuilt whenever the operator changes it.
#[derive(Default)]
pub struct ConfigSnapshot {
    /// What `wasi:config/store` serves.
    pub variables: Arc<WasiConfigVariables>,
    /// Which keys are set.
    pub keys: BTreeSet<String>,
}

fn storage_key(plugin: &str, key: &str) -> Vec<u8> {
    format!("{plugin}/{key}").into_bytes()
}

fn prefix(plugin: &str) -> Vec<u8> {
    format!("{plugin}/").into_bytes()
}

/// Every stored value of `plugin`, by key.
pub async fn load(
    store: &dyn Store,
    plugin: &str,
) -> Result<BTreeMap<String, StoredValue>, StoreError> {
    let prefix = prefix(plugin);
    let mut out = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::PluginConfig, &prefix, after.as_deref(), 500)
            .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (raw, bytes) in page {
            let key = String::from_utf8_lossy(&raw[prefix.len()..]).into_owned();
            let value = crate::store::from_json(&format!("config {plugin}/{key}"), &bytes)?;
            out.insert(key, value);
        }
    }
    Ok(out)
}

/// The plugins with any stored config.
pub async fn plugins_with_config(store: &dyn Store) -> Result<BTreeSet<String>, StoreError> {
    let mut plugins = BTreeSet::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::PluginConfig, b"", after.as_deref(), 500)
            .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (raw, _) in page {
            let text = String::from_utf8_lossy(&raw);
            if let Some((plugin, _)) = text.split_once('/') {
                plugins.insert(plugin.to_string());
            }
        }
    }
    Ok(plugins)
}

/// Builds what instances of a plugin read from its stored values.
pub fn snapshot(values: &BTreeMap<String, StoredValue>) -> ConfigSnapshot {
    ConfigSnapshot {
        variables: Arc::new(
            values
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
        ),
        keys: values.keys().cloned().collect(),
    }
}

/// Sets several keys of `plugin` in one atomic, durable step. Secrecy belongs to the stored
/// value and only grows: a key stored as secret, or declared secret by the manifest now
/// (`declared_secret`), stays secret whatever a later write or manifest says, until the key is
/// removed.
pub async fn set(
    store: &dyn Store,
    plugin: &str,
    values: &BTreeMap<ConfigKey, NewValue>,
    declared_secret: &BTreeSet<String>,
    now_ms: u64,
    audit: &crate::audit::Pending,
) -> Result<(), ConfigError> {
    let current = load(store, plugin).await?;
    let mut ops = Vec::with_capacity(values.len());
    for (key, new) in values {
        if new.value.len() > MAX_VALUE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "the value of config key {key:?} is {} bytes; the limit is {MAX_VALUE_BYTES}",
                new.value.len()
            )));
        }
        let was_secret = current.get(key.as_str()).is_some_and(|v| v.secret);
        let stored = StoredValue {
            value: new.value.clone(),
            secret: new.secret || was_secret || declared_secret.contains(key.as_str()),
            updated_at_ms: now_ms,
        };
        ops.push(Op::Put {
            space: Space::PluginConfig,
            key: storage_key(plugin, key.as_str()),
            value: crate::store::to_json("config value", &stored)?,
        });
    }
    ops.push(audit.op()?);
    store.commit(ops).await?;
    Ok(())
}

/// Marks the stored values of `keys` secret (a manifest declaring them secret was deployed), so
/// they stay masked after a redeploy, rollback or delete that drops the declaration.
pub async fn mark_secret(
    store: &dyn Store,
    plugin: &str,
    keys: &BTreeSet<String>,
) -> Result<(), StoreError> {
    let mut ops = Vec::new();
    for (key, mut value) in load(store, plugin).await? {
        if keys.contains(&key) && !value.secret {
            value.secret = true;
            ops.push(Op::Put {
                space: Space::PluginConfig,
                key: storage_key(plugin, &key),
                value: crate::store::to_json("config value", &value)?,
            });
        }
    }
    if !ops.is_empty() {
        store.commit(ops).await?;
    }
    Ok(())
}

/// Removes one key of `plugin`, with its audit entry.
pub async fn unset(
    store: &dyn Store,
    plugin: &str,
    key: &ConfigKey,
    audit: &crate::audit::Pending,
) -> Result<(), ConfigError> {
    let storage = storage_key(plugin, key.as_str());
    // Changed meanwhile (the precondition failed): still set, so try again with the new value.
    loop {
        let Some(current) = store.get(Space::PluginConfig, &storage).await? else {
            return Err(ConfigError::NotSet {
                plugin: plugin.to_string(),
                key: key.to_string(),
            });
        };
        let ops = vec![
            Op::Expect {
                space: Space::PluginConfig,
                key: storage.clone(),
                value: Some(current),
            },
            Op::Delete {
                space: Space::PluginConfig,
                key: storage.clone(),
            },
            audit.op()?,
        ];
        if store.commit(ops).await? {
            return Ok(());
        }
    }
}

/// Removes every key of `plugin` (the last step of a purge of its data), with the purge's
/// audit entry.
pub async fn purge(
    store: &dyn Store,
    plugin: &str,
    audit: &crate::audit::Pending,
) -> Result<(), StoreError> {
    let mut ops: Vec<Op> = load(store, plugin)
        .await?
        .into_keys()
        .map(|key| Op::Delete {
            space: Space::PluginConfig,
            key: storage_key(plugin, &key),
        })
        .collect();
    ops.push(audit.op()?);
    store.commit(ops).await?;
    Ok(())
}

/// One key as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ShownValue {
    /// The config key, e.g. `api_base`.
    pub key: String,
    /// The value, or [`MASK`] for a secret.
    pub value: String,
    /// Whether the value is secret.
    pub secret: bool,
    /// When it was set (RFC 3339, UTC).
    pub updated_at: String,
}

/// The operator's view of stored values: secrets (stored as secret, or declared secret by the
/// manifest) masked.
pub fn shown(
    values: &BTreeMap<String, StoredValue>,
    declared_secret: &BTreeSet<String>,
) -> Vec<ShownValue> {
    values
        .iter()
        .map(|(key, stored)| {
            let secret = stored.secret || declared_secret.contains(key);
            ShownValue {
                key: key.clone(),
                value: if secret {
                    MASK.to_string()
                } else {
                    stored.value.clone()
                },
                secret,
                updated_at: crate::units::rfc3339(stored.updated_at_ms),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(ConfigKey::parse("API_BASE.v2-x").is_ok());
        for bad in ["", "a/b", "a b", "ключ", &"k".repeat(129)] {
            assert!(ConfigKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_masked_and_never_debug_printed() {
        let mut values = BTreeMap::new();
        let stored = |value: &str, secret| StoredValue {
            value: value.into(),
            secret,
            updated_at_ms: 0,
        };
        values.insert("api_key".to_string(), stored("sk_live_123", true));
        values.insert("declared".to_string(), stored("also-secret", false));
        values.insert("base".to_string(), stored("https://x", false));
        let declared: BTreeSet<String> = ["declared".to_string()].into();
        let shown = shown(&values, &declared);
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("sk_live_123") && !text.contains("also-secret"));
        assert!(text.contains("https://x"));
        assert!(!format!("{values:?}").contains("sk_live_123"));
    }
}
