//! Durable state behind one async trait: plugin records, component blobs, host metadata,
//! generic keyspaces for the domain modules, and plugins' key-value data.
//!
//! **Boundary:** no module but `store` names sled. Everything else talks to [`Store`], so another
//! backend (a networked one included) can replace sled without touching the registry or the API.
//!
//! **Invariant:** a method that changes data returns only once the change is on disk, so an
//! acknowledged deploy survives `kill -9` of the host (plugin kv writes under
//! `durability = "periodic"` excepted), and a read answers only with data that is durable.
//!
//! **Invariant:** no method blocks the async thread that awaits it. A backend runs what may wait
//! (a lock, a flush, a scan, a transaction) off the async threads; see `sled_store` for the
//! point reads sled answers inline.

#[cfg(test)]
mod conformance;
mod group_commit;
pub mod kv;
mod postgres;
mod sled_db;
mod sled_store;
#[doc(hidden)]
pub mod test_database;
pub mod transfer;

pub use group_commit::Durability;
pub use kv::{KvChange, KvEntry, KvError, KvLimits, KvOutcome};
pub use postgres::PgStore;
pub use sled_store::SledStore;
pub use transfer::{Component, PluginHistory};

use serde::{Deserialize, Serialize};

/// Metadata keys starting with this are the store's own bookkeeping (see
/// [`Store::meta_entries`]): never listed, never copied by a migration.
pub(crate) const INTERNAL_META: &str = "plinth.";

/// A storage failure. Carries the operation and the backend's message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, lock held by another process).
    #[error("storage {op} failed: {message}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// The store cannot be reached (its database is down, restarting or cut off). Worth
    /// retrying; whether a change sent when the connection broke was applied is not known.
    #[error("storage {op} failed: the store cannot be reached: {message}")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("stored {what} is unreadable: {message}")]
    Corrupt {
        /// The record that could not be read, e.g. `plugin record hello`.
        what: String,
        /// The decoder's message.
        message: String,
    },
}

impl StoreError {
    /// A stored record (`what`) that could not be encoded or decoded.
    pub fn corrupt(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            message: error.to_string(),
        }
    }
}

/// Encodes a record for storage as JSON; `what` names it in errors.
pub fn to_json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::corrupt(what, e))
}

/// Decodes a stored JSON record; a malformed one is [`StoreError::Corrupt`].
pub fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// What the host remembers about one deployed plugin. The component bytes live separately,
/// content-addressed by `sha256`, so records stay small to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The plugin's name (also the key).
    pub name: String,
    /// The manifest exactly as uploaded.
    pub manifest: String,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// When this version was deployed, in milliseconds since the Unix epoch.
    pub deployed_at_ms: u64,
    /// The version number, counting deploys of this name from 1 (assigned by the store).
    #[serde(default)]
    pub version: u64,
    /// Who deployed it (e.g. `user:ab12… (ops@example.com)`), when known.
    #[serde(default)]
    pub deployed_by: Option<String>,
}

/// A named set of keys: one sled tree each. Domain modules own the meaning of their spaces.
/// `ALL` lists them in declaration order, so a space's discriminant is its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Accounts by user id.
    Users,
    /// Normalised email → user id (uniqueness index).
    Emails,
    /// Refresh tokens by the SHA-256 of the token.
    RefreshTokens,
    /// Refresh-token families by id (a family is one login's chain of rotations).
    Families,
    /// `user id / family id` → nothing: which families a user has, for revoking them all.
    UserFamilies,
    /// JWT signing keys by key id.
    SigningKeys,
    /// API keys by the hex HMAC-SHA-256 of the key.
    ApiKeys,
    /// API key id → hex HMAC of the key (for listing and revoking by id).
    ApiKeyIds,
    /// Registration invitations by the SHA-256 of the code.
    Invites,
    /// Plugin config values by `plugin/key`.
    PluginConfig,
    /// Audit entries, newest first (see `audit`).
    Audit,
    /// Per-IP rate limits of the credential endpoints, by address bucket, where several hosts
    /// share the store (see `auth::shared_throttle`).
    RateLimits,
    /// Failed logins and lockouts by account, where several hosts share the store.
    LoginFailures,
    /// Dashboard browser sessions by the SHA-256 of their cookie token (see `auth`).
    WebSessions,
}

impl Space {
    /// Every space, in a fixed order (the order of the trees in a transaction).
    pub const ALL: [Space; 14] = [
        Space::Users,
        Space::Emails,
        Space::RefreshTokens,
        Space::Families,
        Space::UserFamilies,
        Space::SigningKeys,
        Space::ApiKeys,
        Space::ApiKeyIds,
        Space::Invites,
        Space::PluginConfig,
        Space::Audit,
        Space::RateLimits,
        Space::LoginFailures,
        Space::WebSessions,
    ];

    /// The position of this space in [`Space::ALL`] (declaration order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether hosts keep this space in memory (plugin config, the signing keys), so a change
    /// to it must reach every host sharing the store (see [`Change`]). The others are read
    /// from the store on every use.
    pub fn held_by_hosts(self) -> bool {
        matches!(self, Space::PluginConfig | Space::SigningKeys)
    }

    /// Whether a store shared by several hosts may keep this space's records in a read cache
    /// that every host drops when another announces a change to the space (accounts, read on
    /// every guarded request).
    pub fn cached_by_hosts(self) -> bool {
        matches!(self, Space::Users)
    }

    /// The tree name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Users => "users",
            Space::Emails => "emails",
            Space::RefreshTokens => "refresh_tokens",
            Space::Families => "families",
            Space::UserFamilies => "user_families",
            Space::SigningKeys => "signing_keys",
            Space::ApiKeys => "api_keys",
            Space::ApiKeyIds => "api_key_ids",
            Space::Invites => "invites",
            Space::PluginConfig => "plugin_config",
            Space::Audit => "audit",
            Space::RateLimits => "rate_limits",
            Space::LoginFailures => "login_failures",
            Space::WebSessions => "web_sessions",
        }
    }
}

/// What a store shared by several hosts announces to each of them after a change commits:
/// names only, never values. A host rereads what it keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A plugin was deployed, rolled back or deleted.
    Plugins,
    /// A record of a space hosts keep in memory ([`Space::held_by_hosts`]) or cache
    /// ([`Space::cached_by_hosts`]) changed.
    Space(Space),
    /// Announcements may have been missed (the store's connection was lost and is back):
    /// reread everything.
    Resync,
}

/// Key-value pairs in key order, as [`Store::scan`] returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One audit log entry (a [`Space::Audit`] key and value), written in the same commit as the
/// change it records (see `audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Where it sorts.
    pub key: Vec<u8>,
    /// The entry as JSON.
    pub value: Vec<u8>,
}

/// Compiled code of a component, for the engine whose compatibility key is `fingerprint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The engine's compatibility key.
    pub fingerprint: String,
    /// What the engine serialised.
    pub bytes: Vec<u8>,
}

/// Makes the audit entry of a change from what the change stored (a deploy's version number is
/// assigned in its commit).
pub type AuditOf<T> = Box<dyn Fn(&T) -> Result<AuditRecord, StoreError> + Send + Sync>;

/// One step of an atomic [`Store::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key.
    Put {
        /// The keyspace to write in.
        space: Space,
        /// The key to set.
        key: Vec<u8>,
        /// The value to store.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The keyspace to delete from.
        space: Space,
        /// The key to remove.
        key: Vec<u8>,
    },
    /// Precondition: the key currently holds exactly `value` (`None`: is absent). If any
    /// precondition fails, nothing in the commit is applied.
    Expect {
        /// The keyspace of the precondition.
        space: Space,
        /// The key whose value is checked.
        key: Vec<u8>,
        /// The value it must hold, or `None` for absent.
        value: Option<Vec<u8>>,
    },
}

/// The storage seam. Every method is async and never blocks the thread that awaits it; a
/// change is durable when its method returns.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new version of a plugin (its number assigned here, one past the last ever
    /// given to that name) with its component, and makes it the active one, in one atomic,
    /// durable step. Only the newest `keep` versions stay; older ones go, with any blob nothing
    /// else uses. The component's `artifact` (when the deploy compiled it) and `audit` are
    /// written in the same commit. Returns the record as stored.
    async fn put_plugin(
        &self,
        record: PluginRecord,
        component: bytes::Bytes,
        artifact: Option<Artifact>,
        keep: usize,
        audit: AuditOf<PluginRecord>,
    ) -> Result<PluginRecord, StoreError>;
    /// The active version of every stored plugin, ordered by name.
    async fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError>;
    /// The kept versions of a plugin, newest first (empty if none).
    async fn plugin_versions(&self, name: &str) -> Result<Vec<PluginRecord>, StoreError>;
    /// Makes a kept version the active one, durably, with its audit entry. `None` (and nothing
    /// written) if the plugin has no such version.
    async fn activate_version(
        &self,
        name: &str,
        version: u64,
        audit: AuditRecord,
    ) -> Result<Option<PluginRecord>, StoreError>;
    /// The component bytes with this SHA-256, if stored.
    async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes a plugin with all its versions and any blob nothing else uses. Returns whether
    /// it existed (nothing, the audit entry included, is written if not). Version numbers are
    /// not reused by a later deploy of the same name.
    async fn delete_plugin(&self, name: &str, audit: AuditRecord) -> Result<bool, StoreError>;
    /// A compiled artifact stored for the component `sha256` under `fingerprint` (the engine's
    /// compatibility key).
    async fn artifact(
        &self,
        sha256: &str,
        fingerprint: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a compiled artifact if the component is stored; it is dropped with the
    /// component's blob. Not durable on its own: an artifact lost in a crash is compiled again.
    async fn put_artifact(&self, sha256: &str, artifact: Artifact) -> Result<(), StoreError>;
    /// A host metadata value (admin token hash, ...).
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a host metadata value durably.
    async fn set_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    /// Stores `value` under `key` durably unless a value is already there, and returns the
    /// value in force: several hosts starting on one empty store all agree on the first one
    /// written (a generated secret, say).
    async fn init_meta(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError>;
    /// Whether the store held no data at all when it was opened (a first start).
    fn was_empty_at_open(&self) -> bool;
    /// Whether the store can be reached now (`/readyz` says not ready while it cannot).
    fn is_reachable(&self) -> bool {
        true
    }
    /// How many changes have been announced through [`Store::changes`] so far (`None` for a
    /// store only this process uses): a host that saw this number unchanged missed nothing.
    async fn announced(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// The changes other hosts sharing this store make, as they commit (this host's own
    /// too); `None` for a store only this process uses.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// The value of `key` in `space`.
    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries of `space` whose keys start with `prefix`, in key order, starting
    /// after `after` when given (for cursor pagination).
    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Applies `ops` atomically and durably. Returns `false` (and changes nothing) when an
    /// [`Op::Expect`] precondition does not hold.
    async fn commit(&self, ops: Vec<Op>) -> Result<bool, StoreError>;

    // Plugin key-value data (see [`kv`]). Each plugin's data is apart from every other's, and
    // a read answers only once every write of the plugin it may have seen is durable.

    /// The value at (bucket, key) of `plugin`.
    async fn kv_get(
        &self,
        plugin: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError>;
    /// The values of `keys` in one bucket, in order; `None` (and nothing more read) as soon as
    /// they come to more than `max_bytes`.
    async fn kv_get_many(
        &self,
        plugin: &str,
        bucket: &str,
        keys: Vec<String>,
        max_bytes: u64,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, KvError>;
    /// Up to `limit` keys of one bucket that start with `prefix`, in key order, after `after`.
    async fn kv_keys(
        &self,
        plugin: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;
    /// Checks and applies one change atomically (nothing is written if any check fails) and
    /// returns once it is durable. A change that writes nothing (a lost compare-and-swap) is
    /// answered only once the data its outcome rests on is durable.
    async fn kv_apply(
        &self,
        plugin: &str,
        change: KvChange,
        limits: KvLimits,
    ) -> Result<KvOutcome, KvError>;
    /// Applies an operator's change (an import, an edit or a delete; also to a deleted
    /// plugin's data) with its audit entry in one atomic, durable commit, under the same checks
    /// as [`Store::kv_apply`]; a change that writes nothing ([`KvOutcome::wrote`]) writes no
    /// entry either. Returns the outcome and
    /// the plugin's usage after. Only `plinth migrate`, which copies the source's audit log as
    /// it is, writes no entry.
    async fn kv_operator_change(
        &self,
        plugin: &str,
        change: KvChange,
        limits: KvLimits,
        audit: Option<AuditRecord>,
    ) -> Result<(KvOutcome, u64), KvError>;
    /// Up to `limit` entries of every bucket, ordered by bucket then key, after (bucket, key),
    /// ending with the entry whose value takes their total to `max_bytes` or past (at least
    /// one entry, so a scan always moves on): a plugin's large values never fill memory. The
    /// data is read to its end when a page comes back empty.
    async fn kv_entries(
        &self,
        plugin: &str,
        after: Option<(&str, &str)>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, StoreError>;
    /// The bytes `plugin` stores (bucket + key + value of every entry), kept up to date by
    /// every write rather than counted.
    async fn kv_usage(&self, plugin: &str) -> Result<u64, StoreError>;
    /// Deletes all of `plugin`'s data, durably.
    async fn kv_purge(&self, plugin: &str) -> Result<(), StoreError>;

    // A whole installation read out and written back (`plinth migrate`, see [`transfer`]):
    // what the methods above do not reach.

    /// Every host metadata value, by key (the backend's own bookkeeping left out).
    async fn meta_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Every plugin name ever deployed, by name: its kept versions, the active one and the
    /// next version number (a deleted plugin's name keeps that number and nothing else).
    async fn plugin_histories(&self) -> Result<Vec<PluginHistory>, StoreError>;
    /// The compiled artifacts stored for the component `sha256`, by fingerprint.
    async fn artifacts_of(&self, sha256: &str) -> Result<Vec<Artifact>, StoreError>;
    /// Replaces the plugin `history.name` (its versions, the active one, its numbering) with
    /// `history`, in one atomic, durable step; `components` hold the bytes (and artifacts)
    /// of every component its versions use. Nothing is audited: the audit log is copied.
    async fn restore_plugin(
        &self,
        history: PluginHistory,
        components: Vec<Component>,
    ) -> Result<(), StoreError>;
    /// The plugins that store key-value data, by name.
    async fn kv_plugins(&self) -> Result<Vec<String>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::Space;

    #[test]
    fn spaces_are_listed_in_declaration_order_with_distinct_names() {
        for (i, space) in Space::ALL.iter().enumerate() {
            assert_eq!(space.index(), i);
        }
        let mut names: Vec<_> = Space::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Space::ALL.len());
    }
}
