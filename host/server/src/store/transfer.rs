//! Moving a whole installation from one store to another (`plinth migrate`): from a sled data
//! directory to PostgreSQL when one host is no longer enough, and back. Every record is read
//! and written through the [`Store`] seam, section by section; then both stores are read again
//! and compared by counts and SHA-256 hashes, so a migration that reports success lost nothing.
//!
//! Run it with no host serving either store: sled refuses a second process its directory, but a
//! host writing to PostgreSQL meanwhile would make the comparison fail (nothing lost, yet the
//! copy would not be one moment's state).

use super::kv::{KvChange, KvEntry, KvError, KvLimits};
use super::{Artifact, Durability, Op, PgStore, PluginRecord, SledStore, Space, Store, StoreError};
use crate::settings::StoreLocation;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Everything a store knows about one plugin name ([`Store::plugin_histories`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginHistory {
    /// The plugin's name.
    pub name: String,
    /// The number the next deploy of this name gets (numbers are never reused).
    pub next_version: u64,
    /// The kept versions, oldest first.
    pub versions: Vec<PluginRecord>,
    /// The version that serves, if the plugin is deployed (`None` after a delete).
    pub active: Option<u64>,
}

/// A component's bytes with what the engines compiled of it ([`Store::restore_plugin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
    /// The component.
    pub bytes: Vec<u8>,
    /// Compiled code, by engine fingerprint.
    pub artifacts: Vec<Artifact>,
}

/// The metadata key a migration marks its target with, to recognise a source that is the same
/// store under another name (internal: never listed or copied).
const PROBE: &str = "plinth.migrate_probe";

/// Records read or written per call.
const PAGE: usize = 500;
/// Most value bytes a page of kv entries holds (past one entry): large values never fill
/// memory, whatever a plugin stored.
const PAGE_BYTES: usize = 8 << 20;

/// One keyspace of a store, read [`PAGE`] records at a time in key order.
struct SpacePages<'a> {
    store: &'a dyn Store,
    space: Space,
    after: Option<Vec<u8>>,
    done: bool,
}

impl<'a> SpacePages<'a> {
    fn new(store: &'a dyn Store, space: Space) -> Self {
        Self {
            store,
            space,
            after: None,
            done: false,
        }
    }

    /// The next page; `None` once the keyspace is read.
    async fn next(&mut self) -> Result<Option<super::Entries>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .scan(self.space, b"", self.after.as_deref(), PAGE)
            .await?;
        self.done = page.len() < PAGE;
        self.after = page.last().map(|(key, _)| key.clone());
        Ok((!page.is_empty()).then_some(page))
    }
}

/// One plugin's key-value data, read [`PAGE`] entries at a time by bucket, then key.
struct KvPages<'a> {
    store: &'a dyn Store,
    plugin: &'a str,
    after: Option<(String, String)>,
    done: bool,
}

impl<'a> KvPages<'a> {
    fn new(store: &'a dyn Store, plugin: &'a str) -> Self {
        Self {
            store,
            plugin,
            after: None,
            done: false,
        }
    }

    /// The next page; `None` once the data is read.
    async fn next(&mut self) -> Result<Option<Vec<KvEntry>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let after = self.after.as_ref().map(|(b, k)| (b.as_str(), k.as_str()));
        let page = self
            .store
            .kv_entries(self.plugin, after, PAGE, PAGE_BYTES)
            .await?;
        self.done = page.is_empty();
        self.after = page.last().map(|e| (e.bucket.clone(), e.key.clone()));
        Ok((!page.is_empty()).then_some(page))
    }
}

/// A migration that did not complete, or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A store could not be opened.
    #[error("opening {place}: {source}")]
    Open {
        /// Where.
        place: String,
        /// Why.
        source: StoreError,
    },
    /// The source names a folder that holds no Plinth data.
    #[error("{0} holds no Plinth data")]
    NotAStore(String),
    /// There is nothing to move.
    #[error("{0} is empty: nothing to migrate")]
    SourceEmpty(String),
    /// The target already holds data and the operator did not say to copy into it.
    #[error(
        "{place} already holds data ({holds}); pass --force to copy into it anyway (records \
         with the same keys and plugins with the same names are replaced)"
    )]
    TargetNotEmpty {
        /// Where.
        place: String,
        /// A summary of what it holds.
        holds: String,
    },
    /// Reading or writing failed part-way (the target may hold part of the copy).
    #[error("copying failed: {0}")]
    Store(#[from] StoreError),
    /// Writing a plugin's key-value data failed part-way.
    #[error("copying key-value data failed: {0}")]
    Kv(#[from] KvError),
    /// `--from` and `--to` name the same store (copying a store onto itself with --force
    /// would clear each plugin's data before reading it).
    #[error("{0} is both the source and the target")]
    SamePlace(String),
    /// The copy does not match its source.
    #[error("the copy does not match its source: {}", .0.join("; "))]
    Mismatch(Vec<String>),
}

/// Where a store lives, as `plinth migrate` names it: a `postgres://` URL or a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// sled in a data directory.
    Directory(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

impl Place {
    /// Reads a `--from` / `--to` value.
    pub fn parse(text: &str) -> Place {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Place::Postgres(text.to_string())
        } else {
            Place::Directory(PathBuf::from(text))
        }
    }

    /// Whether two places name the same store: the same folder, or the same database on the
    /// same server and port.
    pub fn same_as(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::Directory(a), Place::Directory(b)) => {
                let resolve = |dir: &PathBuf| dir.canonicalize().unwrap_or_else(|_| dir.clone());
                resolve(a) == resolve(b)
            }
            (Place::Postgres(a), Place::Postgres(b)) => {
                let server = |url: &str| {
                    sqlx::postgres::PgConnectOptions::from_str(url)
                        .ok()
                        .map(|o| {
                            (
                                o.get_host().to_string(),
                                o.get_port(),
                                o.get_database().map(str::to_string),
                            )
                        })
                };
                a == b || server(a).is_some_and(|s| Some(s) == server(b))
            }
            _ => false,
        }
    }

    /// Opens the store. A source directory must hold a store; a target directory may be
    /// missing or empty (it is created), but a folder of other files is refused rather than
    /// filled.
    pub async fn open(&self, source: bool) -> Result<Arc<dyn Store>, TransferError> {
        let opened: Result<Arc<dyn Store>, StoreError> = match self {
            Place::Directory(dir) => {
                // sled's data file: present in every data directory that ever held a store.
                let holds_store = dir.join("db").is_file();
                let is_empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
                if !holds_store && (source || !is_empty) {
                    return Err(TransferError::NotAStore(self.to_string()));
                }
                SledStore::open(dir, Durability::Durable)
                    .await
                    .map(|store| Arc::new(store) as Arc<dyn Store>)
            }
            Place::Postgres(url) => PgStore::open(url)
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>),
        };
        opened.map_err(|source| TransferError::Open {
            place: self.to_string(),
            source,
        })
    }
}

impl std::fmt::Display for Place {
    /// The place without a database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Directory(dir) => write!(f, "the data directory {}", dir.display()),
            Place::Postgres(url) => StoreLocation::Postgres(url.clone()).fmt(f),
        }
    }
}

/// How many records one section of a store holds, how many bytes, and the SHA-256 of them in
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Records in the section.
    pub records: u64,
    /// Their bytes (keys and values).
    pub bytes: u64,
    /// Hex SHA-256 of every record, length-prefixed, in order.
    pub sha256: String,
}

/// Every record of a store, section by section: `meta`, `space:<name>` for each keyspace,
/// `plugin:<name>` (the numbering, the active version and each kept version's record),
/// `component:<sha256>` (the bytes and each artifact) and `kv:<plugin>`. Empty sections are
/// left out, so two stores holding the same records have equal inventories.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// The sections by name.
    pub sections: BTreeMap<String, Tally>,
}

impl Inventory {
    /// Reads every record of `store`.
    pub async fn of(store: &dyn Store) -> Result<Inventory, StoreError> {
        let mut sections = Sections::default();
        for (key, value) in store.meta_entries().await? {
            sections.add("meta".into(), &[key.as_bytes(), &value]);
        }
        for space in Space::ALL {
            let mut pages = SpacePages::new(store, space);
            while let Some(page) = pages.next().await? {
                for (key, value) in &page {
                    sections.add(format!("space:{}", space.name()), &[key, value]);
                }
            }
        }
        for history in store.plugin_histories().await? {
            let section = format!("plugin:{}", history.name);
            let active = history.active.map(u64::to_be_bytes).unwrap_or_default();
            sections.add(
                section.clone(),
                &[&history.next_version.to_be_bytes(), &active],
            );
            for record in &history.versions {
                sections.add(section.clone(), &[&super::to_json("version", record)?]);
                if sections.has(&format!("component:{}", record.sha256)) {
                    continue;
                }
                let component = read_component(store, &record.sha256).await?;
                let section = format!("component:{}", component.sha256);
                sections.add(section.clone(), &[&component.bytes]);
                for artifact in &component.artifacts {
                    sections.add(
                        section.clone(),
                        &[artifact.fingerprint.as_bytes(), &artifact.bytes],
                    );
                }
            }
        }
        for plugin in store.kv_plugins().await? {
            let mut pages = KvPages::new(store, &plugin);
            while let Some(page) = pages.next().await? {
                for entry in &page {
                    sections.add(
                        format!("kv:{plugin}"),
                        &[entry.bucket.as_bytes(), entry.key.as_bytes(), &entry.value],
                    );
                }
            }
        }
        Ok(sections.finish())
    }

    /// Whether the store holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// Records, bytes and sections per kind (the part of a section's name before `:`).
    pub fn kinds(&self) -> BTreeMap<&str, (u64, u64, usize)> {
        let mut kinds = BTreeMap::new();
        for (name, tally) in &self.sections {
            let kind = name.split(':').next().unwrap_or_default();
            let entry = kinds.entry(kind).or_insert((0, 0, 0));
            entry.0 += tally.records;
            entry.1 += tally.bytes;
            entry.2 += 1;
        }
        kinds
    }

    /// One hash of every section: equal for two stores holding the same records.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, tally) in &self.sections {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(tally.records.to_be_bytes());
            hasher.update(tally.sha256.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// A short account of what the store holds, for messages.
    pub fn summary(&self) -> String {
        self.kinds()
            .iter()
            .map(|(kind, (records, _, sections))| match *kind {
                "meta" => format!("{records} metadata values"),
                "space" => format!("{records} records in {sections} keyspaces"),
                "plugin" => format!("{sections} plugin names"),
                "component" => format!("{sections} components"),
                "kv" => format!("{records} key-value entries of {sections} plugins"),
                other => format!("{records} {other} records"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Sections being counted and hashed.
#[derive(Default)]
struct Sections(BTreeMap<String, (u64, u64, Sha256)>);

impl Sections {
    fn add(&mut self, section: String, parts: &[&[u8]]) {
        let (records, bytes, hasher) = self.0.entry(section).or_default();
        *records += 1;
        for part in parts {
            *bytes += part.len() as u64;
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }

    fn has(&self, section: &str) -> bool {
        self.0.contains_key(section)
    }

    fn finish(self) -> Inventory {
        Inventory {
            sections: self
                .0
                .into_iter()
                .map(|(name, (records, bytes, hasher))| {
                    let sha256 = hex::encode(hasher.finalize());
                    (
                        name,
                        Tally {
                            records,
                            bytes,
                            sha256,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A component with its artifacts; an error if it is missing or its bytes do not hash to its
/// name (a migration never carries damage over silently).
async fn read_component(store: &dyn Store, sha256: &str) -> Result<Component, StoreError> {
    let bytes = store
        .component(sha256)
        .await?
        .ok_or_else(|| StoreError::corrupt(format!("component {sha256}"), "it is missing"))?;
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        return Err(StoreError::corrupt(
            format!("component {sha256}"),
            "its bytes do not match its hash",
        ));
    }
    Ok(Component {
        sha256: sha256.to_string(),
        bytes,
        artifacts: store.artifacts_of(sha256).await?,
    })
}

/// What a migration moved: the source's inventory, which the target was checked against.
#[derive(Debug)]
pub struct Report {
    /// Every record of the source, counted and hashed.
    pub inventory: Inventory,
    /// Whether the target held data before (then only the source's records were checked).
    pub into_non_empty: bool,
}

/// Copies every record of `source` into `target` and checks the copy. A target that holds
/// data is refused unless `force`; then the source's records replace those with the same keys,
/// and a plugin present in both (its versions, or its key-value data) is replaced as a whole.
pub async fn migrate(
    source: &dyn Store,
    target: &dyn Store,
    places: (&Place, &Place),
    force: bool,
) -> Result<Report, TransferError> {
    // Two names for one store (an alias of the database's host, a socket and a port) must not
    // get past: a forced copy clears each plugin's data in the target before copying it.
    let probe = hex::encode(rand::random::<[u8; 16]>());
    target.set_meta(PROBE, probe.as_bytes().to_vec()).await?;
    if source.meta(PROBE).await?.as_deref() == Some(probe.as_bytes()) {
        return Err(TransferError::SamePlace(places.0.to_string()));
    }
    let inventory = Inventory::of(source).await?;
    if inventory.is_empty() {
        return Err(TransferError::SourceEmpty(places.0.to_string()));
    }
    let before = Inventory::of(target).await?;
    let into_non_empty = !before.is_empty();
    if into_non_empty && !force {
        return Err(TransferError::TargetNotEmpty {
            place: places.1.to_string(),
            holds: before.summary(),
        });
    }
    copy_meta(source, target).await?;
    copy_spaces(source, target).await?;
    copy_plugins(source, target).await?;
    copy_kv(source, target, into_non_empty).await?;

    let after = Inventory::of(target).await?;
    let mut differences = Vec::new();
    if into_non_empty {
        // The target keeps records of its own: every plugin and kv section the source has is
        // replaced whole, so must be equal; meta and keyspace records are looked up one by one.
        for (name, tally) in &inventory.sections {
            let whole = !(name == "meta" || name.starts_with("space:"));
            if whole && after.sections.get(name) != Some(tally) {
                differences.push(format!("{name} differs"));
            }
        }
        differences.extend(missing_records(source, target).await?);
    } else {
        let names: std::collections::BTreeSet<&String> = inventory
            .sections
            .keys()
            .chain(after.sections.keys())
            .collect();
        for name in names {
            let (wanted, found) = (inventory.sections.get(name), after.sections.get(name));
            if wanted != found {
                differences.push(match (wanted, found) {
                    (Some(w), Some(f)) => format!(
                        "{name}: {} records in the source, {} in the copy{}",
                        w.records,
                        f.records,
                        if w.records == f.records {
                            " (contents differ)"
                        } else {
                            ""
                        }
                    ),
                    (Some(_), None) => format!("{name}: missing from the copy"),
                    _ => format!("{name}: in the copy but not the source"),
                });
            }
        }
    }
    if !differences.is_empty() {
        return Err(TransferError::Mismatch(differences));
    }
    Ok(Report {
        inventory,
        into_non_empty,
    })
}

async fn copy_meta(source: &dyn Store, target: &dyn Store) -> Result<(), StoreError> {
    for (key, value) in source.meta_entries().await? {
        target.set_meta(&key, value).await?;
    }
    Ok(())
}

async fn copy_spaces(source: &dyn Store, target: &dyn Store) -> Result<(), StoreError> {
    for space in Space::ALL {
        let mut pages = SpacePages::new(source, space);
        while let Some(page) = pages.next().await? {
            let ops = page
                .into_iter()
                .map(|(key, value)| Op::Put { space, key, value })
                .collect();
            target.commit(ops).await?;
        }
    }
    Ok(())
}

async fn copy_plugins(source: &dyn Store, target: &dyn Store) -> Result<(), StoreError> {
    for history in source.plugin_histories().await? {
        let mut components: Vec<Component> = Vec::new();
        for record in &history.versions {
            if !components.iter().any(|c| c.sha256 == record.sha256) {
                components.push(read_component(source, &record.sha256).await?);
            }
        }
        target.restore_plugin(history, components).await?;
    }
    Ok(())
}

async fn copy_kv(
    source: &dyn Store,
    target: &dyn Store,
    into_non_empty: bool,
) -> Result<(), TransferError> {
    // The source's data was within its limits when written; the copy must not drop any of it
    // because the limits changed since.
    let unlimited = KvLimits {
        max_value: u64::MAX,
        quota: u64::MAX,
    };
    for plugin in source.kv_plugins().await? {
        if into_non_empty {
            target.kv_purge(&plugin).await?;
        }
        let mut pages = KvPages::new(source, &plugin);
        while let Some(page) = pages.next().await? {
            target
                .kv_operator_change(&plugin, KvChange::Put(page), unlimited, None)
                .await?;
        }
    }
    Ok(())
}

/// The source's metadata and keyspace records the target does not hold as they are.
async fn missing_records(
    source: &dyn Store,
    target: &dyn Store,
) -> Result<Vec<String>, StoreError> {
    let mut missing = Vec::new();
    for (key, value) in source.meta_entries().await? {
        if target.meta(&key).await?.as_ref() != Some(&value) {
            missing.push(format!("meta {key} differs"));
        }
    }
    for space in Space::ALL {
        let mut pages = SpacePages::new(source, space);
        while let Some(page) = pages.next().await? {
            for (key, value) in &page {
                if target.get(space, key).await?.as_ref() != Some(value) {
                    missing.push(format!(
                        "space:{} record {} differs",
                        space.name(),
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::{KvChange, KvEntry};
    use crate::store::test_database::TestDatabase;
    use crate::store::{AuditRecord, PluginRecord};

    const LIMITS: KvLimits = KvLimits {
        max_value: 1 << 20,
        quota: 1 << 30,
    };

    fn scratch_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "plinth-transfer-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ))
    }

    async fn sled(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(SledStore::open(dir, Durability::Durable).await.unwrap())
    }

    fn audit(key: &str) -> AuditRecord {
        AuditRecord {
            key: key.as_bytes().to_vec(),
            value: b"{}".to_vec(),
        }
    }

    async fn deploy(store: &dyn Store, name: &str, component: &[u8]) -> PluginRecord {
        let record = PluginRecord {
            name: name.into(),
            manifest: format!("name = \"{name}\""),
            sha256: hex::encode(Sha256::digest(component)),
            size: component.len() as u64,
            deployed_at_ms: 7,
            version: 0,
            deployed_by: Some("user:test".into()),
        };
        let artifact = Artifact {
            fingerprint: "engine-1".into(),
            bytes: [component, b"-compiled"].concat(),
        };
        let key = format!("deploy {name} {}", hex::encode(rand::random::<[u8; 4]>()));
        store
            .put_plugin(
                record,
                component.to_vec().into(),
                Some(artifact),
                10,
                Box::new(move |_| Ok(audit(&key))),
            )
            .await
            .unwrap()
    }

    /// A store holding a record of every kind: metadata, every keyspace, a plugin with two
    /// versions and an earlier one active, a deleted plugin (its numbering kept), a component
    /// two plugins share, and key-value data across pages and odd bucket names.
    async fn populate(store: &dyn Store) {
        store
            .set_meta("admin_token_hash", vec![1, 2, 3])
            .await
            .unwrap();
        store.set_meta("api_key_secret", vec![9; 32]).await.unwrap();
        let ops = Space::ALL
            .iter()
            .flat_map(|&space| {
                (0..3u8).map(move |i| Op::Put {
                    space,
                    key: vec![b'k', i, 0xFF],
                    value: format!("{} {i}", space.name()).into_bytes(),
                })
            })
            .collect();
        assert!(store.commit(ops).await.unwrap());
        deploy(store, "a", b"component one").await;
        deploy(store, "a", b"component two").await;
        assert!(
            store
                .activate_version("a", 1, audit("rollback a"))
                .await
                .unwrap()
                .is_some()
        );
        deploy(store, "b", b"component one").await;
        deploy(store, "gone", b"component three").await;
        assert!(
            store
                .delete_plugin("gone", audit("delete gone"))
                .await
                .unwrap()
        );
        let many = (0..1200)
            .map(|i| KvEntry {
                bucket: if i % 2 == 0 { "b1" } else { "b\0x" }.into(),
                key: format!("key/{i:05}"),
                value: vec![(i % 251) as u8; i % 40],
            })
            .collect::<Vec<_>>();
        for chunk in many.chunks(100) {
            store
                .kv_apply("a", KvChange::Put(chunk.to_vec()), LIMITS)
                .await
                .unwrap();
        }
        let one = vec![KvEntry {
            bucket: "only".into(),
            key: "ü".into(),
            value: b"v".to_vec(),
        }];
        store
            .kv_apply("b", KvChange::Put(one), LIMITS)
            .await
            .unwrap();
    }

    fn places() -> (Place, Place) {
        (
            Place::Directory("source".into()),
            Place::Directory("target".into()),
        )
    }

    /// Everything a host reads back: equal on both stores after a migration.
    async fn served(store: &dyn Store) -> (Vec<PluginRecord>, Vec<PluginRecord>, u64, u64) {
        (
            store.plugins().await.unwrap(),
            store.plugin_versions("a").await.unwrap(),
            store.kv_usage("a").await.unwrap(),
            store.kv_usage("b").await.unwrap(),
        )
    }

    async fn round_trip(source: &dyn Store, middle: &dyn Store, back: &dyn Store) {
        let (from, to) = places();
        let there = migrate(source, middle, (&from, &to), false).await.unwrap();
        let again = migrate(middle, back, (&from, &to), false).await.unwrap();
        let original = Inventory::of(source).await.unwrap();
        assert_eq!(there.inventory, original);
        assert_eq!(again.inventory, original);
        assert_eq!(Inventory::of(back).await.unwrap(), original);
        assert_eq!(original.sections["kv:a"].records, 1200);
        assert_eq!(original.sections["space:users"].records, 3);
        assert!(original.sections.contains_key("plugin:gone"));
        assert_eq!(served(middle).await, served(source).await);
        assert_eq!(served(back).await, served(source).await);
        assert_eq!(
            middle.kv_get("b", "only", "ü").await.unwrap(),
            Some(b"v".to_vec())
        );
        // The numbering came along: no version number is given twice.
        assert_eq!(deploy(back, "gone", b"again").await.version, 2);
        assert_eq!(deploy(middle, "a", b"again").await.version, 3);
    }

    #[tokio::test]
    async fn every_record_goes_to_postgres_and_back_unchanged() {
        let (first, last) = (scratch_dir(), scratch_dir());
        let source = sled(&first).await;
        populate(&*source).await;
        if let Some(database) = TestDatabase::create().await {
            let middle: Arc<dyn Store> =
                Arc::new(PgStore::open_with(database.options()).await.unwrap());
            round_trip(&*source, &*middle, &*sled(&last).await).await;
            database.remove().await;
        } else {
            let middle_dir = scratch_dir();
            round_trip(&*source, &*sled(&middle_dir).await, &*sled(&last).await).await;
            let _ = std::fs::remove_dir_all(middle_dir);
        }
        for dir in [first, last] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[tokio::test]
    async fn a_target_holding_data_is_refused_unless_forced_and_then_the_source_wins() {
        let (source_dir, target_dir) = (scratch_dir(), scratch_dir());
        let source = sled(&source_dir).await;
        populate(&*source).await;
        forced(&*source, &*sled(&target_dir).await).await;
        if let Some(database) = TestDatabase::create().await {
            let target = PgStore::open_with(database.options()).await.unwrap();
            forced(&*source, &target).await;
            database.remove().await;
        }
        for dir in [source_dir, target_dir] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    async fn forced(source: &dyn Store, target: &dyn Store) {
        let (from, to) = places();
        deploy(target, "a", b"the target's own").await;
        deploy(target, "kept", b"only in the target").await;
        let entry = |value: &[u8]| KvEntry {
            bucket: "b1".into(),
            key: "theirs".into(),
            value: value.to_vec(),
        };
        target
            .kv_apply("a", KvChange::Put(vec![entry(b"x")]), LIMITS)
            .await
            .unwrap();
        let before = Inventory::of(target).await.unwrap();
        let refused = migrate(source, target, (&from, &to), false).await;
        assert!(
            matches!(refused, Err(TransferError::TargetNotEmpty { .. })),
            "{refused:?}"
        );
        assert_eq!(Inventory::of(target).await.unwrap(), before);

        let report = migrate(source, target, (&from, &to), true).await.unwrap();
        assert!(report.into_non_empty);
        let after = Inventory::of(target).await.unwrap();
        for name in ["plugin:a", "kv:a", "kv:b", "plugin:gone"] {
            assert_eq!(
                after.sections[name], report.inventory.sections[name],
                "{name}"
            );
        }
        assert!(after.sections.contains_key("plugin:kept"));
        assert_eq!(target.kv_get("a", "b1", "theirs").await.unwrap(), None);
        // The target's own deploy of "a" had number 1; the source's numbering is higher.
        assert_eq!(deploy(target, "a", b"next").await.version, 3);
    }

    #[tokio::test]
    async fn one_store_under_two_names_is_refused_before_anything_is_written() {
        let dir = scratch_dir();
        let store = sled(&dir).await;
        populate(&*store).await;
        let before = Inventory::of(&*store).await.unwrap();
        let (from, to) = places();
        let refused = migrate(&*store, &*store, (&from, &to), true).await;
        assert!(
            matches!(refused, Err(TransferError::SamePlace(_))),
            "{refused:?}"
        );
        assert_eq!(Inventory::of(&*store).await.unwrap(), before);
        if let Some(database) = TestDatabase::create().await {
            // Two connections to one database, as two URLs naming it differently would give.
            let a = PgStore::open_with(database.options()).await.unwrap();
            let b = PgStore::open_with(database.options()).await.unwrap();
            populate(&a).await;
            let before = Inventory::of(&a).await.unwrap();
            let refused = migrate(&a, &b, (&from, &to), true).await;
            assert!(
                matches!(refused, Err(TransferError::SamePlace(_))),
                "{refused:?}"
            );
            assert_eq!(Inventory::of(&b).await.unwrap(), before);
            database.remove().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_empty_source_a_folder_of_other_files_and_one_place_twice_are_refused() {
        let (empty_dir, target_dir) = (scratch_dir(), scratch_dir());
        let (from, to) = places();
        let empty = sled(&empty_dir).await;
        let target = sled(&target_dir).await;
        assert!(matches!(
            migrate(&*empty, &*target, (&from, &to), true).await,
            Err(TransferError::SourceEmpty(_))
        ));
        let other = scratch_dir();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "mine").unwrap();
        for source in [true, false] {
            assert!(matches!(
                Place::Directory(other.clone()).open(source).await,
                Err(TransferError::NotAStore(_))
            ));
        }
        assert!(matches!(
            Place::Directory(other.join("missing")).open(true).await,
            Err(TransferError::NotAStore(_))
        ));
        assert!(
            Place::parse("postgres://u:p@db:5432/plinth").same_as(&Place::parse(
                "postgres://other:secret@db:5432/plinth?sslmode=require"
            ))
        );
        assert!(!Place::parse("postgres://db/one").same_as(&Place::parse("postgres://db/two")));
        assert!(Place::Directory(other.clone()).same_as(&Place::Directory(other.join("."))));
        assert!(
            !Place::parse("postgres://u:secret@db/x")
                .to_string()
                .contains("secret")
        );
        for dir in [empty_dir, target_dir, other] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
