//! The PostgreSQL backend of the [`Store`] seam (`--store postgres://...`), for several hosts
//! sharing one database. The schema lives in `host/server/migrations/`, applied at open under
//! sqlx's advisory lock, so hosts starting together apply it once.
//!
//! How each guarantee of the seam is kept across hosts:
//! - Durable when a method returns: every change is one transaction, committed with
//!   `synchronous_commit` on (set per connection, whatever the server's default); a committed
//!   row is visible only once its commit is flushed, so a read never answers with data a crash
//!   could take back.
//! - [`Store::commit`] runs SERIALIZABLE and is retried on a serialization failure, so its
//!   preconditions hold against every other host's commits (one winner of a token rotation).
//! - A plugin's kv writes lock its `kv_usage` row first, which orders them across hosts as
//!   sled's per-plugin lock orders them in one process: quotas, increments and
//!   compare-and-swap are exact. On one host they queue and go in batches, one transaction
//!   and one flush each ([`apply_batch`]), as sled's group commit does: a row lock held to
//!   each commit's flush would otherwise allow one write per flush.
//! - Deploys, rollbacks and deletes take one advisory lock, so version numbers and blob
//!   references never race (they are rare; nothing on the request path takes it).
//!
//! - Every change another host keeps in memory (a plugin deployed, rolled back or deleted;
//!   plugin config; signing keys) is announced with `NOTIFY` in its own transaction, so the
//!   announcement goes out exactly when the change commits. Each host listens ([`Store::
//!   changes`]); when the listening connection was lost, it says to reread everything.
//!
//! The pool and its connections live on a thread of their own (`plinth-db`): connections are
//! tied to the runtime that opened them, and the serving threads each run their own.

use super::kv::{self, KvChange, KvEntry, KvError, KvLimits, KvOutcome};
use super::{
    Artifact, AuditOf, AuditRecord, Change, Component, Entries, Op, PluginHistory, PluginRecord,
    Space, Store, StoreError,
};
use crate::side_thread::SideThread;
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Connections one host keeps to the database.
const POOL_SIZE: u32 = 16;
/// How long a call waits for a free connection (or for the database to answer a connect)
/// before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Key-value reads one plugin may have running at once on a host: a quarter of the pool, so a
/// plugin whose requests flood reads leaves connections for the other plugins, sign-ins and
/// deploys (its own reads queue for a permit, holding no connection meanwhile).
const READS_PER_PLUGIN: usize = POOL_SIZE as usize / 4;
/// Key-value reads of all plugins at once on a host: half the pool, so plugins reading at
/// once (several floods) still leave connections for sign-ins, deploys and writes.
const PLUGIN_READS: usize = POOL_SIZE as usize / 2;
/// The advisory lock every change to the set of plugins takes.
const PLUGINS_LOCK: i64 = 0x706c_696e_7468_0001;
/// Most writes in one batch.
const BATCH_WRITES: usize = 256;
/// Most bytes of values in one batch (a single larger write goes alone).
const BATCH_BYTES: usize = 32 << 20;
/// How long a batch may take before its writes are answered with a failure (a connection
/// that stopped answering).
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The channel changes are announced on (`NOTIFY`, names only; see [`Change`]).
const CHANGES: &str = "plinth_changes";
/// How long the listening connection may stay quiet before it is pinged (and how long the
/// ping may take).
const LISTEN_PING: Duration = Duration::from_secs(10);
/// Pause before listening again after the listening connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// Attempts of a SERIALIZABLE commit that keeps meeting concurrent ones.
const COMMIT_ATTEMPTS: usize = 20;

/// The schema, version by version, embedded in the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "store", include_str!("../../migrations/0001_store.sql")),
    (
        2,
        "announcements",
        include_str!("../../migrations/0002_announcements.sql"),
    ),
];

/// [`MIGRATIONS`] as sqlx's migrator reads them (up to a version, for the upgrade test).
#[derive(Debug)]
struct Embedded(i64);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .filter(|(version, _, _)| *version <= self.0)
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A database failure during `op`: [`StoreError::Unavailable`] when the database cannot be
/// reached (or is shutting down, or keeps a lock too long), else a backend failure.
fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        let message = e.to_string();
        if out_of_reach(&e) {
            StoreError::Unavailable { op, message }
        } else {
            StoreError::Backend { op, message }
        }
    }
}

/// Whether `error` says the database is out of reach for now rather than the request wrong.
fn out_of_reach(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // Connection exceptions (08, but not a protocol violation), the server shutting
            // down or starting (57P), too many connections (53300), the database not taking
            // connections (55000), a lock waited for longer than `lock_timeout` (55P03).
            matches!(
                code.as_ref(),
                "08000" | "08001" | "08003" | "08004" | "08006" | "53300" | "55000" | "55P03"
            ) || code.starts_with("57P")
        }),
        _ => false,
    }
}

/// Whether `error` is PostgreSQL asking to run the transaction again (a serialization failure
/// or a deadlock).
fn must_retry(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40001" || code == "40P01")
}

/// The smallest byte string greater than every string starting with `prefix`, if any: the
/// exclusive end of a prefix range (`None` when `prefix` is empty or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn version_number(version: i64, name: &str) -> Result<u64, StoreError> {
    u64::try_from(version).map_err(|e| StoreError::corrupt(format!("version of {name}"), e))
}

/// The PostgreSQL store of one cluster of hosts.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    thread: Arc<SideThread>,
    was_empty: bool,
    /// Each plugin's kv traffic on this host (see [`PluginTraffic`]).
    traffic: Arc<std::sync::Mutex<HashMap<String, Arc<PluginTraffic>>>>,
    /// Permits for every plugin's reads together ([`PLUGIN_READS`]).
    plugin_reads: Arc<tokio::sync::Semaphore>,
    /// What the listener heard (see [`listen`]).
    changes: tokio::sync::broadcast::Sender<Change>,
    /// Whether the listener's connection is up: the database's reachability as `/readyz`
    /// reports it.
    reachable: Arc<std::sync::atomic::AtomicBool>,
    /// Accounts as last read (see [`ReadCache`]).
    cache: Arc<ReadCache>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// libpq's query parameters such as `sslmode`) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(db("read the database URL"))?;
        Self::open_with(options).await
    }

    /// [`PgStore::open`] with options already parsed.
    pub(crate) async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        // Whatever the server or role defaults to: a commit is on disk when it returns, and a
        // write waiting for another's lock, or a host stalled mid-transaction, gives up instead
        // of holding every other host's writes.
        let options = options.options([
            ("synchronous_commit", "on"),
            ("lock_timeout", "10s"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
        let thread = Arc::new(
            SideThread::start("plinth-db").map_err(|e| StoreError::Backend {
                op: "start the database thread",
                message: e.to_string(),
            })?,
        );
        let (pool, was_empty) = thread
            .runtime()
            .spawn(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(db("connect to the database"))?;
                let migrator =
                    Migrator::new(Embedded(i64::MAX))
                        .await
                        .map_err(|e| StoreError::Backend {
                            op: "read the schema migrations",
                            message: e.to_string(),
                        })?;
                migrator.run(&pool).await.map_err(|e| StoreError::Backend {
                    op: "migrate the database schema",
                    message: e.to_string(),
                })?;
                let was_empty: bool = sqlx::query_scalar(
                    "SELECT NOT EXISTS (SELECT 1 FROM meta) AND NOT EXISTS (SELECT 1 FROM records) \
                     AND NOT EXISTS (SELECT 1 FROM plugin_names)",
                )
                .fetch_one(&pool)
                .await
                .map_err(db("read the store"))?;
                Ok::<_, StoreError>((pool, was_empty))
            })
            .await
            .map_err(|e| StoreError::Backend {
                op: "open the database",
                message: e.to_string(),
            })??;
        let (changes, _) = tokio::sync::broadcast::channel(64);
        let reachable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cache = Arc::new(ReadCache::default());
        thread.runtime().spawn(listen(
            pool.clone(),
            changes.clone(),
            reachable.clone(),
            cache.clone(),
        ));
        Ok(Self {
            pool,
            thread,
            was_empty,
            traffic: Arc::default(),
            plugin_reads: Arc::new(tokio::sync::Semaphore::new(PLUGIN_READS)),
            changes,
            reachable,
            cache,
        })
    }

    /// `plugin`'s traffic on this host.
    fn plugin_traffic(&self, plugin: &str) -> Arc<PluginTraffic> {
        let mut traffic = self
            .traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match traffic.get(plugin) {
            Some(known) => known.clone(),
            None => traffic.entry(plugin.to_string()).or_default().clone(),
        }
    }

    /// Runs a plugin's read `work` with the pool on the database thread once one of the
    /// plugin's `reads` permits ([`READS_PER_PLUGIN`]) and then one of the host's
    /// ([`PLUGIN_READS`]) are free.
    async fn read<T, F>(
        &self,
        reads: Arc<tokio::sync::Semaphore>,
        work: impl FnOnce(PgPool) -> F + Send + 'static,
    ) -> Result<T, KvError>
    where
        F: Future<Output = Result<T, KvError>> + Send + 'static,
        T: Send + 'static,
    {
        let all = self.plugin_reads.clone();
        self.run(|pool| async move {
            // Never closed, so always permits; held until the read ends. The plugin's own
            // first, so its queue never holds one of the host's.
            let _own = reads.acquire_owned().await;
            let _host = all.acquire_owned().await;
            work(pool).await
        })
        .await
    }

    /// Refuses at once while the database is known to be out of reach (the listener lost its
    /// connection and has not got it back), instead of each call waiting for a pooled
    /// connection that cannot come: a request fails in microseconds with `store_unavailable`
    /// and gives its instance back, rather than queueing behind others until its deadline.
    fn reachable_now(&self) -> Result<(), StoreError> {
        if self.reachable.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable {
                op: "reach the database",
                message: "the connection was lost; reconnecting".into(),
            })
        }
    }

    /// Runs `work` with the pool on the database thread. The call runs to its end even if the
    /// caller stops waiting, so a change is never cut off half-way by a dropped request.
    async fn run<T, E, F>(&self, work: impl FnOnce(PgPool) -> F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.reachable_now()?;
        self.thread
            .runtime()
            .spawn(work(self.pool.clone()))
            .await
            .map_err(|e| {
                E::from(StoreError::Backend {
                    op: "database task",
                    message: e.to_string(),
                })
            })?
    }
}

/// Announces `change` to every host when the transaction `conn` holds commits.
/// A change to a cached space only ([`Space::cached_by_hosts`]) is not counted: hosts drop
/// their cache on it, and on every reconnect, but reread nothing else.
async fn announce(conn: &mut PgConnection, change: Change) -> Result<(), sqlx::Error> {
    let (payload, counted) = match change {
        Change::Plugins => ("plugins".to_string(), true),
        Change::Space(space) => (format!("space:{}", space.name()), space.held_by_hosts()),
        Change::Resync => ("resync".to_string(), true),
    };
    let sql = if counted {
        "WITH bumped AS (UPDATE announcements SET generation = generation + 1 WHERE id = 1 \
           RETURNING generation) \
         SELECT pg_notify($1, $2) FROM bumped"
    } else {
        "SELECT pg_notify($1, $2)"
    };
    sqlx::query(sql)
        .bind(CHANGES)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records of the spaces hosts may cache ([`Space::cached_by_hosts`]), as last read. Dropped
/// whole when any host announces a change to such a space, when this host commits one, and
/// whenever the announcements may have been missed; bypassed while the database is out of
/// reach (a host cut off from the others' changes must not answer from what it remembers).
#[derive(Default)]
struct ReadCache {
    inner: std::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Bumped by every drop: a read that started before one is not kept.
    epoch: u64,
    entries: HashMap<(usize, Vec<u8>), Option<Vec<u8>>>,
}

/// Most records cached (a few MiB at most); past it the cache starts over.
const CACHED_RECORDS: usize = 10_000;

impl ReadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached record, or the epoch to keep a fresh read under.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, u64> {
        let state = self.lock();
        match state.entries.get(&(space.index(), key.to_vec())) {
            Some(value) => Ok(value.clone()),
            None => Err(state.epoch),
        }
    }

    /// Keeps a record read under `epoch`, unless the cache was dropped since.
    fn keep(&self, epoch: u64, space: Space, key: Vec<u8>, value: Option<Vec<u8>>) {
        let mut state = self.lock();
        if state.epoch != epoch {
            return;
        }
        if state.entries.len() >= CACHED_RECORDS {
            state.entries.clear();
        }
        state.entries.insert((space.index(), key), value);
    }

    fn drop_all(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.entries.clear();
    }
}

/// The change an announcement names (`None` for one this version does not know).
fn heard(payload: &str) -> Option<Change> {
    match payload.split_once(':') {
        None if payload == "plugins" => Some(Change::Plugins),
        None if payload == "resync" => Some(Change::Resync),
        Some(("space", name)) => Space::ALL
            .into_iter()
            .find(|space| space.name() == name)
            .map(Change::Space),
        _ => None,
    }
}

/// Listens for announcements for as long as the store lives, passing them to `changes`, and
/// keeps `reachable` to whether its connection is up. After every (re)connection it sends
/// [`Change::Resync`]: what was announced meanwhile is lost.
async fn listen(
    pool: PgPool,
    changes: tokio::sync::broadcast::Sender<Change>,
    reachable: Arc<std::sync::atomic::AtomicBool>,
    cache: Arc<ReadCache>,
) {
    use std::sync::atomic::Ordering;
    let lost = |why: &dyn std::fmt::Display| {
        cache.drop_all();
        if reachable.swap(false, Ordering::Release) {
            tracing::error!(error = %why, "the database cannot be reached; retrying every second");
        }
    };
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANGES).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(listener) => listener,
            Err(e) => {
                lost(&e);
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        if !reachable.swap(true, Ordering::Release) {
            tracing::info!("the database is reachable again");
        }
        cache.drop_all();
        let _ = changes.send(Change::Resync);
        loop {
            // A quiet connection is asked whether it is still there: a half-open one would
            // otherwise wait forever while announcements are lost and /readyz says ready.
            let received = match tokio::time::timeout(LISTEN_PING, listener.try_recv()).await {
                Ok(received) => received,
                Err(_) => {
                    let ping = sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(LISTEN_PING, ping).await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => {
                            lost(&e);
                            break;
                        }
                        Err(_) => {
                            lost(&"the listening connection stopped answering");
                            break;
                        }
                    }
                }
            };
            match received {
                Ok(Some(notification)) => {
                    if let Some(change) = heard(notification.payload()) {
                        let cached = match change {
                            Change::Space(space) => space.cached_by_hosts(),
                            Change::Plugins => false,
                            Change::Resync => true,
                        };
                        if cached {
                            cache.drop_all();
                        }
                        let _ = changes.send(change);
                    }
                }
                // The connection was lost: start over (after a pause, so a database that is
                // down is not hammered).
                Ok(None) => {
                    lost(&"the listening connection closed");
                    break;
                }
                Err(e) => {
                    lost(&e);
                    break;
                }
            }
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// Locks `plugin`'s usage row (creating it at 0) and returns the bytes it stores.
async fn lock_usage(conn: &mut PgConnection, plugin: &str) -> Result<u64, StoreError> {
    let bytes: i64 = sqlx::query_scalar(
        "INSERT INTO kv_usage (plugin, bytes) VALUES ($1, 0) \
         ON CONFLICT (plugin) DO UPDATE SET bytes = kv_usage.bytes RETURNING bytes",
    )
    .bind(plugin)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("lock kv usage"))?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// [`lock_usage`] for a plugin's own writes, then whether the plugin was deployed once and is
/// deleted now. The second is a statement of its own, after the lock (which a purge holds
/// until it commits): under READ COMMITTED it sees every delete committed before the lock was
/// granted, so a request of a deleted plugin still running on any host cannot write data back
/// after the purge. (In the locking statement itself the snapshot would predate a wait.)
async fn lock_usage_for_writes(
    conn: &mut PgConnection,
    plugin: &str,
) -> Result<(u64, bool), StoreError> {
    let bytes = lock_usage(conn, plugin).await?;
    let deleted: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM plugins WHERE name = $1) \
         AND EXISTS (SELECT 1 FROM plugin_names WHERE name = $1)",
    )
    .bind(plugin)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("check the plugin is deployed"))?;
    Ok((bytes, deleted))
}

/// The (bucket, key) pairs a change reads or writes.
fn touched(change: &KvChange) -> Vec<(&str, &str)> {
    match change {
        KvChange::Put(entries) => entries
            .iter()
            .map(|e| (e.bucket.as_str(), e.key.as_str()))
            .collect(),
        KvChange::Delete(keys) => keys.iter().map(|(b, k)| (b.as_str(), k.as_str())).collect(),
        KvChange::Increment { bucket, key, .. } | KvChange::CompareAndSwap { bucket, key, .. } => {
            vec![(bucket.as_str(), key.as_str())]
        }
    }
}

/// What a batch of kv writes knows of the keys it touches: read in one query at its start
/// (lengths, and values only where a counter or a compare-and-swap needs them: a batch can name
/// a thousand large values), then kept up to date by the batch's own writes, which are held
/// here and written once at its end (the last value of each key).
#[derive(Default)]
struct BatchKeys {
    /// (bucket, key) → what was stored there at the batch's start (`None`: absent).
    known: HashMap<(String, String), Option<Seen>>,
    /// The final value of every key the batch changed (`None`: deleted).
    changed: HashMap<(String, String), Option<Vec<u8>>>,
}

/// What a batch knows is stored at one key.
struct Seen {
    /// The value's length.
    len: usize,
    /// The value, where a counter or a swap needs it.
    value: Option<Vec<u8>>,
}

impl BatchKeys {
    /// Reads what `changes` touch, in one query.
    async fn read(
        conn: &mut PgConnection,
        plugin: &str,
        changes: &[&KvChange],
    ) -> Result<Self, StoreError> {
        let mut wanted: HashMap<(&str, &str), bool> = HashMap::new();
        for change in changes {
            let needs_value = matches!(
                change,
                KvChange::Increment { .. } | KvChange::CompareAndSwap { .. }
            );
            for pair in touched(change) {
                *wanted.entry(pair).or_default() |= needs_value;
            }
        }
        let buckets: Vec<&[u8]> = wanted.keys().map(|(b, _)| b.as_bytes()).collect();
        let names: Vec<&[u8]> = wanted.keys().map(|(_, k)| k.as_bytes()).collect();
        let with_value: Vec<bool> = wanted.values().copied().collect();
        let rows = sqlx::query(
            "SELECT kv.bucket, kv.key, octet_length(kv.value)::bigint, \
               CASE WHEN wanted.with_value THEN kv.value END FROM kv \
             JOIN unnest($2::bytea[], $3::bytea[], $4::bool[]) AS wanted (bucket, key, with_value) \
               ON kv.bucket = wanted.bucket AND kv.key = wanted.key \
             WHERE kv.plugin = $1",
        )
        .bind(plugin)
        .bind(&buckets)
        .bind(&names)
        .bind(&with_value)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("kv read"))?;
        let mut known: HashMap<(String, String), Option<Seen>> = wanted
            .keys()
            .map(|(b, k)| ((b.to_string(), k.to_string()), None))
            .collect();
        for row in rows {
            let bucket = String::from_utf8_lossy(row.get::<&[u8], _>(0)).into_owned();
            let key = String::from_utf8_lossy(row.get::<&[u8], _>(1)).into_owned();
            let length: i64 = row.get(2);
            let value: Option<Vec<u8>> = row.get(3);
            let len = usize::try_from(length).unwrap_or(0);
            known.insert((bucket, key), Some(Seen { len, value }));
        }
        Ok(Self {
            known,
            changed: HashMap::new(),
        })
    }

    /// Checks `change` against what is known and `usage`, and records its writes. Returns the
    /// outcome and the usage after; a refused change records nothing.
    fn apply(
        &mut self,
        change: KvChange,
        limits: &KvLimits,
        usage: u64,
    ) -> Result<(KvOutcome, u64), KvError> {
        for (bucket, key) in touched(&change) {
            kv::check_key(bucket, key)?;
        }
        // What the batch wrote itself comes first (each value is held there only), then what
        // was read.
        let (known, changed) = (&self.known, &self.changed);
        let pair = |bucket: &str, key: &str| (bucket.to_string(), key.to_string());
        let plan = kv::plan(
            change,
            usage,
            limits,
            |bucket, key| {
                let pair = pair(bucket, key);
                if let Some(written) = changed.get(&pair) {
                    return Ok(written.clone());
                }
                match known.get(&pair) {
                    Some(Some(Seen {
                        value: Some(value), ..
                    })) => Ok(Some(value.clone())),
                    Some(None) => Ok(None),
                    // Read with its value for counters and swaps; anything else is a bug.
                    _ => Err(StoreError::Backend {
                        op: "kv write",
                        message: format!("the value of {bucket:?}/{key:?} was not read"),
                    }),
                }
            },
            |bucket, key| {
                let pair = pair(bucket, key);
                Ok(match changed.get(&pair) {
                    Some(written) => written.as_ref().map(Vec::len),
                    None => known
                        .get(&pair)
                        .and_then(|s| s.as_ref().map(|seen| seen.len)),
                })
            },
        )?;
        for (bucket, key, value) in plan.writes {
            self.changed.insert((bucket, key), value);
        }
        Ok((plan.outcome, plan.usage))
    }

    /// Writes the batch's changes in the transaction `conn` holds: one statement for the keys
    /// set, one for the ones deleted.
    async fn write(self, conn: &mut PgConnection, plugin: &str) -> Result<(), StoreError> {
        let (mut put, mut delete) = (Vec::new(), Vec::new());
        for ((bucket, key), value) in &self.changed {
            match value {
                Some(value) => put.push((bucket.as_bytes(), key.as_bytes(), value.as_slice())),
                None => delete.push((bucket.as_bytes(), key.as_bytes())),
            }
        }
        if !put.is_empty() {
            let buckets: Vec<&[u8]> = put.iter().map(|p| p.0).collect();
            let keys: Vec<&[u8]> = put.iter().map(|p| p.1).collect();
            let values: Vec<&[u8]> = put.iter().map(|p| p.2).collect();
            sqlx::query(
                "INSERT INTO kv (plugin, bucket, key, value) \
                 SELECT $1, * FROM unnest($2::bytea[], $3::bytea[], $4::bytea[]) \
                 ON CONFLICT (plugin, bucket, key) DO UPDATE SET value = excluded.value",
            )
            .bind(plugin)
            .bind(&buckets)
            .bind(&keys)
            .bind(&values)
            .execute(&mut *conn)
            .await
            .map_err(db("kv write"))?;
        }
        if !delete.is_empty() {
            let buckets: Vec<&[u8]> = delete.iter().map(|d| d.0).collect();
            let keys: Vec<&[u8]> = delete.iter().map(|d| d.1).collect();
            sqlx::query(
                "DELETE FROM kv USING unnest($2::bytea[], $3::bytea[]) AS gone (bucket, key) \
                 WHERE kv.plugin = $1 AND kv.bucket = gone.bucket AND kv.key = gone.key",
            )
            .bind(plugin)
            .bind(&buckets)
            .bind(&keys)
            .execute(&mut *conn)
            .await
            .map_err(db("kv delete"))?;
        }
        Ok(())
    }
}

/// Writes a plugin's usage in the transaction `conn` holds.
async fn write_usage(conn: &mut PgConnection, plugin: &str, usage: u64) -> Result<(), StoreError> {
    sqlx::query("UPDATE kv_usage SET bytes = $2 WHERE plugin = $1")
        .bind(plugin)
        .bind(i64::try_from(usage).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await
        .map_err(db("kv usage"))?;
    Ok(())
}

/// One kv write waiting in its plugin's queue, and where its outcome goes.
struct QueuedWrite {
    change: KvChange,
    limits: KvLimits,
    done: tokio::sync::oneshot::Sender<Result<KvOutcome, KvError>>,
}

/// One plugin's kv traffic on this host: its writes, batched, and a bound on its reads.
struct PluginTraffic {
    /// Writes waiting for the next batch.
    queue: std::sync::Mutex<Vec<QueuedWrite>>,
    /// Held by whoever writes for the plugin: a batch, an import or a purge. One at a time
    /// per host (the usage row orders the hosts), and without a connection while waiting, so
    /// one plugin's burst never holds every pooled connection while the rest of the host
    /// (other plugins, sign-ins, deploys) waits for one.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Permits for the plugin's reads running at once ([`READS_PER_PLUGIN`]).
    reads: Arc<tokio::sync::Semaphore>,
}

impl Default for PluginTraffic {
    fn default() -> Self {
        Self {
            queue: std::sync::Mutex::default(),
            turn: Arc::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(READS_PER_PLUGIN)),
        }
    }
}

impl PluginTraffic {
    /// The next batch: the oldest queued writes, at most [`BATCH_WRITES`] of them and
    /// [`BATCH_BYTES`] of values (always at least one).
    fn next_batch(&self) -> Vec<QueuedWrite> {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut count, mut bytes) = (0, 0);
        for write in queue.iter() {
            let size = write_bytes(&write.change);
            if count > 0 && (count == BATCH_WRITES || bytes + size > BATCH_BYTES) {
                break;
            }
            count += 1;
            bytes += size;
        }
        queue.drain(..count).collect()
    }
}

/// The bytes of values a write carries.
fn write_bytes(change: &KvChange) -> usize {
    match change {
        KvChange::Put(entries) => entries.iter().map(|e| e.value.len()).sum(),
        KvChange::CompareAndSwap { new, expected, .. } => {
            new.len() + expected.as_ref().map_or(0, Vec::len)
        }
        KvChange::Delete(_) | KvChange::Increment { .. } => 0,
    }
}

/// Applies `writes` in order in one transaction, as if one after the other: each sees what
/// the ones before it wrote, a refused one writes nothing, and all are acknowledged by one
/// commit (one flush for the batch, where one each would queue behind the usage row's lock).
async fn apply_batch(pool: &PgPool, plugin: &str, writes: Vec<QueuedWrite>) {
    let mut outcomes = Vec::with_capacity(writes.len());
    // Keys over their limits are refused before anything is sent to the database.
    let writes: Vec<QueuedWrite> = writes
        .into_iter()
        .filter_map(|write| {
            let checked = touched(&write.change)
                .into_iter()
                .try_for_each(|(bucket, key)| kv::check_key(bucket, key));
            match checked {
                Ok(()) => Some(write),
                Err(refused) => {
                    let _ = write.done.send(Err(refused));
                    None
                }
            }
        })
        .collect();
    if writes.is_empty() {
        return;
    }
    let mut pending = writes.into_iter();
    let batch = async {
        let mut tx = pool.begin().await.map_err(db("begin"))?;
        let (before, deleted) = lock_usage_for_writes(&mut tx, plugin).await?;
        if deleted {
            return Err(None);
        }
        let changes: Vec<&KvChange> = pending.as_slice().iter().map(|w| &w.change).collect();
        let mut keys = BatchKeys::read(&mut tx, plugin, &changes)
            .await
            .map_err(Some)?;
        let mut usage = before;
        for write in pending.by_ref() {
            match keys.apply(write.change, &write.limits, usage) {
                Ok((outcome, after)) => {
                    usage = after;
                    outcomes.push((write.done, Ok(outcome)));
                }
                // Not a refusal: nothing of the batch is kept.
                Err(KvError::Store(e)) => return Err(Some(e)),
                // Refused before writing anything: the others go on.
                Err(refused) => outcomes.push((write.done, Err(refused))),
            }
        }
        keys.write(&mut tx, plugin).await.map_err(Some)?;
        if usage != before {
            write_usage(&mut tx, plugin, usage).await.map_err(Some)?;
        }
        // A commit whose connection broke may or may not have happened: not a failure to
        // retry blindly (an increment would count twice), whatever the cause.
        tx.commit().await.map_err(|e| {
            Some(StoreError::Backend {
                op: "commit kv writes (its outcome is unknown)",
                message: e.to_string(),
            })
        })
    };
    match batch.await {
        Ok(()) => {
            for (done, outcome) in outcomes {
                let _ = done.send(outcome);
            }
        }
        // Every write of the batch (planned or not yet) gets the failure: the store's (`Some`),
        // or that the plugin was deleted (`None`).
        Err(failure) => {
            let planned = outcomes.into_iter().map(|(done, _)| done);
            for done in planned.chain(pending.map(|write| write.done)) {
                let _ = done.send(Err(match &failure {
                    Some(e) => KvError::Store(clone_error(e)),
                    None => KvError::PluginRemoved(plugin.to_string()),
                }));
            }
        }
    }
}

/// A copy of a store failure, for every write of a failed batch.
fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Backend { op, message } => StoreError::Backend {
            op,
            message: message.clone(),
        },
        StoreError::Unavailable { op, message } => StoreError::Unavailable {
            op,
            message: message.clone(),
        },
        StoreError::Corrupt { what, message } => StoreError::Corrupt {
            what: what.clone(),
            message: message.clone(),
        },
    }
}

/// Writes an audit entry in the transaction `conn` holds.
async fn insert_audit(conn: &mut PgConnection, audit: &AuditRecord) -> Result<(), StoreError> {
    put_record(conn, Space::Audit, &audit.key, &audit.value).await
}

async fn put_record(
    conn: &mut PgConnection,
    space: Space,
    key: &[u8],
    value: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO records (space, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
    )
    .bind(space.name())
    .bind(key)
    .bind(value)
    .execute(&mut *conn)
    .await
    .map_err(db("write"))?;
    Ok(())
}

/// Takes the lock every change to the set of plugins holds until its commit.
async fn lock_plugins(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PLUGINS_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db("lock the plugins"))?;
    Ok(())
}

/// Removes the blobs among `candidates` that no kept version uses (their artifacts go with
/// them).
async fn drop_unused_blobs(
    conn: &mut PgConnection,
    candidates: &[String],
) -> Result<(), StoreError> {
    if candidates.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM blobs WHERE sha256 = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM plugin_versions v WHERE v.sha256 = blobs.sha256)",
    )
    .bind(candidates)
    .execute(&mut *conn)
    .await
    .map_err(db("drop unused components"))?;
    Ok(())
}

fn decode_record(name: &str, bytes: &[u8]) -> Result<PluginRecord, StoreError> {
    super::from_json(&format!("plugin record {name}"), bytes)
}

/// One SERIALIZABLE attempt at [`Store::commit`]; a serialization failure means run again.
async fn try_commit(pool: &PgPool, ops: &[Op]) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *tx)
        .await?;
    for op in ops {
        if let Op::Expect { space, key, value } = op {
            let current: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT value FROM records WHERE space = $1 AND key = $2")
                    .bind(space.name())
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if current.as_deref() != value.as_deref() {
                tx.rollback().await?;
                return Ok(false);
            }
        }
    }
    for op in ops {
        match op {
            Op::Put { space, key, value } => {
                sqlx::query(
                    "INSERT INTO records (space, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
                )
                .bind(space.name())
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            Op::Delete { space, key } => {
                sqlx::query("DELETE FROM records WHERE space = $1 AND key = $2")
                    .bind(space.name())
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Expect { .. } => {}
        }
    }
    let mut held: Vec<Space> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Put { space, .. } | Op::Delete { space, .. } => Some(*space),
            Op::Expect { .. } => None,
        })
        .filter(|space| space.held_by_hosts() || space.cached_by_hosts())
        .collect();
    held.sort_by_key(|space| space.index());
    held.dedup();
    for space in held {
        announce(&mut tx, Change::Space(space)).await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn put_plugin(
        &self,
        record: PluginRecord,
        component: bytes::Bytes,
        artifact: Option<Artifact>,
        keep: usize,
        audit: AuditOf<PluginRecord>,
    ) -> Result<PluginRecord, StoreError> {
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            lock_plugins(&mut tx).await?;
            let name = record.name.clone();
            let next: i64 = sqlx::query_scalar(
                "INSERT INTO plugin_names (name, next_version) VALUES ($1, 2) \
                 ON CONFLICT (name) DO UPDATE SET next_version = plugin_names.next_version + 1 \
                 RETURNING next_version",
            )
            .bind(&name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("number the version"))?;
            let mut stored = record;
            stored.version = version_number(next - 1, &name)?;
            let encoded = super::to_json("plugin record", &stored)?;
            sqlx::query(
                "INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&stored.sha256)
            .bind(component.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(db("store the component"))?;
            sqlx::query(
                "INSERT INTO plugin_versions (name, version, sha256, record) VALUES ($1, $2, $3, $4)",
            )
            .bind(&name)
            .bind(next - 1)
            .bind(&stored.sha256)
            .bind(&encoded)
            .execute(&mut *tx)
            .await
            .map_err(db("store the version"))?;
            sqlx::query(
                "INSERT INTO plugins (name, version) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            )
            .bind(&name)
            .bind(next - 1)
            .execute(&mut *tx)
            .await
            .map_err(db("activate the version"))?;
            if let Some(artifact) = &artifact {
                sqlx::query(
                    "INSERT INTO artifacts (sha256, fingerprint, bytes) VALUES ($1, $2, $3) \
                     ON CONFLICT (sha256, fingerprint) DO UPDATE SET bytes = excluded.bytes",
                )
                .bind(&stored.sha256)
                .bind(&artifact.fingerprint)
                .bind(&artifact.bytes)
                .execute(&mut *tx)
                .await
                .map_err(db("store the artifact"))?;
            }
            let dropped: Vec<String> = sqlx::query_scalar(
                "DELETE FROM plugin_versions WHERE name = $1 AND version IN \
                 (SELECT version FROM plugin_versions WHERE name = $1 \
                  ORDER BY version DESC OFFSET $2) RETURNING sha256",
            )
            .bind(&name)
            .bind(i64::try_from(keep.max(1)).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("drop old versions"))?;
            drop_unused_blobs(&mut tx, &dropped).await?;
            insert_audit(&mut tx, &audit(&stored)?).await?;
            announce(&mut tx, Change::Plugins)
                .await
                .map_err(db("announce the deploy"))?;
            tx.commit().await.map_err(db("commit the deploy"))?;
            Ok(stored)
        })
        .await
    }

    async fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT p.name, v.record FROM plugins p \
                 JOIN plugin_versions v ON v.name = p.name AND v.version = p.version \
                 ORDER BY p.name",
            )
            .fetch_all(&pool)
            .await
            .map_err(db("list plugins"))?;
            rows.iter()
                .map(|row| decode_record(row.get(0), row.get(1)))
                .collect()
        })
        .await
    }

    async fn plugin_versions(&self, name: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let name = name.to_string();
        self.run(|pool| async move {
            let records: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT record FROM plugin_versions WHERE name = $1 ORDER BY version DESC",
            )
            .bind(&name)
            .fetch_all(&pool)
            .await
            .map_err(db("list plugin versions"))?;
            records.iter().map(|r| decode_record(&name, r)).collect()
        })
        .await
    }

    async fn activate_version(
        &self,
        name: &str,
        version: u64,
        audit: AuditRecord,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let name = name.to_string();
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            lock_plugins(&mut tx).await?;
            let version = i64::try_from(version).unwrap_or(i64::MAX);
            let record: Option<Vec<u8>> = sqlx::query_scalar(
                "UPDATE plugins SET version = $2 WHERE name = $1 \
                 AND EXISTS (SELECT 1 FROM plugin_versions WHERE name = $1 AND version = $2) \
                 RETURNING (SELECT record FROM plugin_versions WHERE name = $1 AND version = $2)",
            )
            .bind(&name)
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("activate plugin version"))?;
            let Some(record) = record else {
                return Ok(None);
            };
            insert_audit(&mut tx, &audit).await?;
            announce(&mut tx, Change::Plugins)
                .await
                .map_err(db("announce the rollback"))?;
            tx.commit().await.map_err(db("commit the rollback"))?;
            decode_record(&name, &record).map(Some)
        })
        .await
    }

    async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sha256 = sha256.to_string();
        self.run(|pool| async move {
            sqlx::query_scalar("SELECT bytes FROM blobs WHERE sha256 = $1")
                .bind(&sha256)
                .fetch_optional(&pool)
                .await
                .map_err(db("read component"))
        })
        .await
    }

    async fn delete_plugin(&self, name: &str, audit: AuditRecord) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            lock_plugins(&mut tx).await?;
            let existed = sqlx::query("DELETE FROM plugins WHERE name = $1")
                .bind(&name)
                .execute(&mut *tx)
                .await
                .map_err(db("delete plugin"))?
                .rows_affected()
                > 0;
            if !existed {
                return Ok(false);
            }
            let dropped: Vec<String> =
                sqlx::query_scalar("DELETE FROM plugin_versions WHERE name = $1 RETURNING sha256")
                    .bind(&name)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db("delete plugin versions"))?;
            drop_unused_blobs(&mut tx, &dropped).await?;
            insert_audit(&mut tx, &audit).await?;
            announce(&mut tx, Change::Plugins)
                .await
                .map_err(db("announce the delete"))?;
            tx.commit().await.map_err(db("commit the delete"))?;
            Ok(true)
        })
        .await
    }

    async fn artifact(
        &self,
        sha256: &str,
        fingerprint: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (sha256, fingerprint) = (sha256.to_string(), fingerprint.to_string());
        self.run(|pool| async move {
            sqlx::query_scalar("SELECT bytes FROM artifacts WHERE sha256 = $1 AND fingerprint = $2")
                .bind(&sha256)
                .bind(&fingerprint)
                .fetch_optional(&pool)
                .await
                .map_err(db("read artifact"))
        })
        .await
    }

    async fn put_artifact(&self, sha256: &str, artifact: Artifact) -> Result<(), StoreError> {
        let sha256 = sha256.to_string();
        self.run(|pool| async move {
            // Only beside its component: a blob deleted meanwhile takes nothing with it.
            let stored = sqlx::query(
                "INSERT INTO artifacts (sha256, fingerprint, bytes) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM blobs WHERE sha256 = $1) \
                 ON CONFLICT (sha256, fingerprint) DO UPDATE SET bytes = excluded.bytes",
            )
            .bind(&sha256)
            .bind(&artifact.fingerprint)
            .bind(&artifact.bytes)
            .execute(&pool)
            .await;
            match stored {
                // The blob went between the check and the insert: nothing to keep.
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(()),
                other => other.map(|_| ()).map_err(db("write artifact")),
            }
        })
        .await
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.run(|pool| async move {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(&key)
                .fetch_optional(&pool)
                .await
                .map_err(db("read meta"))
        })
        .await
    }

    async fn set_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.to_string();
        self.run(|pool| async move {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(&key)
            .bind(&value)
            .execute(&pool)
            .await
            .map_err(db("write meta"))?;
            Ok(())
        })
        .await
    }

    async fn init_meta(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let key = key.to_string();
        self.run(|pool| async move {
            // On conflict the row is "updated" to itself, which returns the value in force.
            sqlx::query_scalar(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = meta.value RETURNING value",
            )
            .bind(&key)
            .bind(&value)
            .fetch_one(&pool)
            .await
            .map_err(db("write meta"))
        })
        .await
    }

    fn was_empty_at_open(&self) -> bool {
        self.was_empty
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    fn is_reachable(&self) -> bool {
        self.reachable.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn announced(&self) -> Result<Option<u64>, StoreError> {
        self.run(|pool| async move {
            let generation: i64 =
                sqlx::query_scalar("SELECT generation FROM announcements WHERE id = 1")
                    .fetch_one(&pool)
                    .await
                    .map_err(db("read the announcements"))?;
            Ok(Some(u64::try_from(generation).unwrap_or(0)))
        })
        .await
    }

    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let cached = space.cached_by_hosts() && self.is_reachable();
        let epoch = if cached {
            match self.cache.get(space, key) {
                Ok(value) => return Ok(value),
                Err(epoch) => Some(epoch),
            }
        } else {
            None
        };
        let key = key.to_vec();
        let read = key.clone();
        let value: Option<Vec<u8>> = self
            .run(|pool| async move {
                sqlx::query_scalar("SELECT value FROM records WHERE space = $1 AND key = $2")
                    .bind(space.name())
                    .bind(&read)
                    .fetch_optional(&pool)
                    .await
                    .map_err(db("read"))
            })
            .await?;
        if let Some(epoch) = epoch {
            self.cache.keep(epoch, space, key, value.clone());
        }
        Ok(value)
    }

    async fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let (start, end) = (prefix.to_vec(), prefix_end(prefix));
        let after = after.map(<[u8]>::to_vec);
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT key, value FROM records WHERE space = $1 AND key >= $2 \
                 AND ($3::bytea IS NULL OR key < $3) AND ($4::bytea IS NULL OR key > $4) \
                 ORDER BY key LIMIT $5",
            )
            .bind(space.name())
            .bind(&start)
            .bind(&end)
            .bind(&after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(db("scan"))?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<bool, StoreError> {
        // This host reads its own writes at once, not when its announcement comes back. Dropped
        // before and after: a read racing the commit is not kept either way.
        let touches_cache = ops.iter().any(|op| match op {
            Op::Put { space, .. } | Op::Delete { space, .. } => space.cached_by_hosts(),
            Op::Expect { .. } => false,
        });
        if touches_cache {
            self.cache.drop_all();
        }
        let committed = self
            .run(|pool| async move {
                for attempt in 1..=COMMIT_ATTEMPTS {
                    match try_commit(&pool, &ops).await {
                        Ok(applied) => return Ok(applied),
                        Err(e) if must_retry(&e) && attempt < COMMIT_ATTEMPTS => {
                            // Another host's commit touched the same keys: run again against what
                            // it wrote, after a short random pause so the two do not collide again.
                            let pause = rand::random_range(1..=5 * attempt as u64);
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                        }
                        Err(e) => return Err(db("commit")(e)),
                    }
                }
                Err(StoreError::Backend {
                    op: "commit",
                    message: format!("still conflicting after {COMMIT_ATTEMPTS} attempts"),
                })
            })
            .await;
        if touches_cache {
            self.cache.drop_all();
        }
        committed
    }

    async fn kv_get(
        &self,
        plugin: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        kv::check_key(bucket, key)?;
        let reads = self.plugin_traffic(plugin).reads.clone();
        let (plugin, bucket, key) = (plugin.to_string(), bucket.to_string(), key.to_string());
        self.read(reads, move |pool| async move {
            sqlx::query_scalar(
                "SELECT value FROM kv WHERE plugin = $1 AND bucket = $2 AND key = $3",
            )
            .bind(&plugin)
            .bind(bucket.as_bytes())
            .bind(key.as_bytes())
            .fetch_optional(&pool)
            .await
            .map_err(|e| KvError::from(db("kv get")(e)))
        })
        .await
    }

    async fn kv_get_many(
        &self,
        plugin: &str,
        bucket: &str,
        keys: Vec<String>,
        max_bytes: u64,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, KvError> {
        let reads = self.plugin_traffic(plugin).reads.clone();
        for key in &keys {
            kv::check_key(bucket, key)?;
        }
        let (plugin, bucket) = (plugin.to_string(), bucket.to_string());
        self.read(reads, move |pool| async move {
            // The values come only when their total fits: a plugin asking for many large
            // values at once gets its refusal without the host reading them.
            let wanted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            let rows = sqlx::query(
                "WITH found AS (SELECT key, value FROM kv \
                   WHERE plugin = $1 AND bucket = $2 AND key = ANY($3)) \
                 SELECT key, octet_length(value)::bigint, \
                   CASE WHEN (SELECT coalesce(sum(octet_length(value)), 0) FROM found) <= $4 \
                   THEN value END \
                 FROM found",
            )
            .bind(&plugin)
            .bind(bucket.as_bytes())
            .bind(&wanted)
            .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(|e| KvError::from(db("kv get many")(e)))?;
            let mut found: HashMap<Vec<u8>, (u64, Option<Vec<u8>>)> = HashMap::new();
            for row in rows {
                let length: i64 = row.get(1);
                found.insert(row.get(0), (u64::try_from(length).unwrap_or(0), row.get(2)));
            }
            // Counted per key asked for, as often as it is asked for.
            let total: u64 = keys
                .iter()
                .filter_map(|k| found.get(k.as_bytes()).map(|(len, _)| *len))
                .sum();
            if total > max_bytes {
                return Ok(None);
            }
            Ok(Some(
                keys.iter()
                    .map(|k| found.get(k.as_bytes()).and_then(|(_, v)| v.clone()))
                    .collect(),
            ))
        })
        .await
    }

    async fn kv_keys(
        &self,
        plugin: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let reads = self.plugin_traffic(plugin).reads.clone();
        kv::check_key(bucket, prefix)?;
        let (plugin, bucket) = (plugin.to_string(), bucket.to_string());
        let (start, end) = (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()));
        let after = after.map(|a| a.as_bytes().to_vec());
        self.read(reads, move |pool| async move {
            let keys: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT key FROM kv WHERE plugin = $1 AND bucket = $2 AND key >= $3 \
                 AND ($4::bytea IS NULL OR key < $4) AND ($5::bytea IS NULL OR key > $5) \
                 ORDER BY key LIMIT $6",
            )
            .bind(&plugin)
            .bind(bucket.as_bytes())
            .bind(&start)
            .bind(&end)
            .bind(&after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(|e| KvError::from(db("kv list")(e)))?;
            Ok(keys
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .collect())
        })
        .await
    }

    async fn kv_apply(
        &self,
        plugin: &str,
        change: KvChange,
        limits: KvLimits,
    ) -> Result<KvOutcome, KvError> {
        self.reachable_now()?;
        let writes = self.plugin_traffic(plugin);
        let (done, outcome) = tokio::sync::oneshot::channel();
        writes
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(QueuedWrite {
                change,
                limits,
                done,
            });
        let (pool, plugin) = (self.pool.clone(), plugin.to_string());
        // On the database thread, and to its end even if this request goes away: whoever
        // holds the plugin's turn takes every write queued by then into one batch (this one,
        // or a batch before it already did).
        self.thread.runtime().spawn(async move {
            let _turn = writes.turn.clone().lock_owned().await;
            // Every write queued by now, in batches of bounded size (PostgreSQL takes at most
            // 1 GB in one message, and a batch holds the plugin's lock until it commits).
            loop {
                let batch = writes.next_batch();
                if batch.is_empty() {
                    break;
                }
                let applied = apply_batch(&pool, &plugin, batch);
                if tokio::time::timeout(BATCH_TIMEOUT, applied).await.is_err() {
                    // Its writes learn of it through their dropped answers.
                    tracing::error!(plugin, "a batch of kv writes timed out");
                }
            }
        });
        outcome.await.unwrap_or_else(|_| {
            Err(KvError::Store(StoreError::Backend {
                op: "kv write (its outcome is unknown)",
                message: "the write's batch did not finish".into(),
            }))
        })
    }

    async fn kv_operator_change(
        &self,
        plugin: &str,
        change: KvChange,
        limits: KvLimits,
        audit: Option<AuditRecord>,
    ) -> Result<(KvOutcome, u64), KvError> {
        let writes = self.plugin_traffic(plugin);
        let plugin = plugin.to_string();
        self.run(|pool| async move {
            let _turn = writes.turn.clone().lock_owned().await;
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            let before = lock_usage(&mut tx, &plugin).await?;
            let mut keys = BatchKeys::read(&mut tx, &plugin, &[&change]).await?;
            let (outcome, usage) = keys.apply(change, &limits, before)?;
            keys.write(&mut tx, &plugin).await?;
            write_usage(&mut tx, &plugin, usage).await?;
            // A lost compare-and-swap or a delete of nothing changed nothing: no entry.
            if let Some(audit) = audit.filter(|_| outcome.wrote()) {
                insert_audit(&mut tx, &audit).await?;
            }
            tx.commit().await.map_err(db("commit kv operator change"))?;
            Ok((outcome, usage))
        })
        .await
    }

    async fn kv_entries(
        &self,
        plugin: &str,
        after: Option<(&str, &str)>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let plugin = plugin.to_string();
        let after = after.map(|(b, k)| (b.as_bytes().to_vec(), k.as_bytes().to_vec()));
        self.run(|pool| async move {
            let (after_bucket, after_key) = after.unzip();
            // `before`: the bytes of the page's values ahead of this one. Lengths come from
            // the stored header; only the values sent are read whole.
            let rows = sqlx::query(
                "SELECT bucket, key, value FROM ( \
                   SELECT bucket, key, value, \
                     sum(octet_length(value)) OVER (ORDER BY bucket, key \
                       ROWS UNBOUNDED PRECEDING) - octet_length(value) AS before \
                   FROM kv WHERE plugin = $1 \
                   AND ($2::bytea IS NULL OR (bucket, key) > ($2, $3)) \
                   ORDER BY bucket, key LIMIT $4) page \
                 WHERE before < $5 ORDER BY bucket, key",
            )
            .bind(&plugin)
            .bind(&after_bucket)
            .bind(&after_key)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(max_bytes.max(1)).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await
            .map_err(db("kv scan"))?;
            Ok(rows
                .iter()
                .map(|row| KvEntry {
                    bucket: String::from_utf8_lossy(row.get::<&[u8], _>(0)).into_owned(),
                    key: String::from_utf8_lossy(row.get::<&[u8], _>(1)).into_owned(),
                    value: row.get(2),
                })
                .collect())
        })
        .await
    }

    async fn kv_usage(&self, plugin: &str) -> Result<u64, StoreError> {
        let plugin = plugin.to_string();
        self.run(|pool| async move {
            let bytes: Option<i64> =
                sqlx::query_scalar("SELECT bytes FROM kv_usage WHERE plugin = $1")
                    .bind(&plugin)
                    .fetch_optional(&pool)
                    .await
                    .map_err(db("kv usage"))?;
            Ok(bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)))
        })
        .await
    }

    async fn kv_purge(&self, plugin: &str) -> Result<(), StoreError> {
        let writes = self.plugin_traffic(plugin);
        let plugin = plugin.to_string();
        self.run(|pool| async move {
            let _turn = writes.turn.clone().lock_owned().await;
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            // Under the usage row's lock: a write waiting for it finds the data gone.
            lock_usage(&mut tx, &plugin).await?;
            sqlx::query("DELETE FROM kv WHERE plugin = $1")
                .bind(&plugin)
                .execute(&mut *tx)
                .await
                .map_err(db("purge kv"))?;
            sqlx::query("DELETE FROM kv_usage WHERE plugin = $1")
                .bind(&plugin)
                .execute(&mut *tx)
                .await
                .map_err(db("purge kv"))?;
            tx.commit().await.map_err(db("commit kv purge"))?;
            Ok(())
        })
        .await
    }

    async fn meta_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.run(|pool| async move {
            let entries: Vec<(String, Vec<u8>)> =
                sqlx::query_as("SELECT key, value FROM meta ORDER BY key")
                    .fetch_all(&pool)
                    .await
                    .map_err(db("list meta"))?;
            Ok(entries
                .into_iter()
                .filter(|(key, _)| !key.starts_with(super::INTERNAL_META))
                .collect())
        })
        .await
    }

    async fn plugin_histories(&self) -> Result<Vec<PluginHistory>, StoreError> {
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            // One snapshot of the three tables.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db("begin"))?;
            let names: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT n.name, n.next_version, p.version FROM plugin_names n \
                 LEFT JOIN plugins p ON p.name = n.name ORDER BY n.name",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db("list plugin histories"))?;
            let versions: Vec<(String, Vec<u8>)> =
                sqlx::query_as("SELECT name, record FROM plugin_versions ORDER BY name, version")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db("list plugin versions"))?;
            tx.commit().await.map_err(db("end the read"))?;
            let mut versions = versions.into_iter().peekable();
            let mut out = Vec::with_capacity(names.len());
            for (name, next, active) in names {
                let mut kept = Vec::new();
                while let Some((_, record)) = versions.next_if(|(n, _)| *n == name) {
                    kept.push(decode_record(&name, &record)?);
                }
                out.push(PluginHistory {
                    next_version: version_number(next, &name)?,
                    active: active.map(|v| version_number(v, &name)).transpose()?,
                    versions: kept,
                    name,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn artifacts_of(&self, sha256: &str) -> Result<Vec<Artifact>, StoreError> {
        let sha256 = sha256.to_string();
        self.run(|pool| async move {
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT fingerprint, bytes FROM artifacts WHERE sha256 = $1 ORDER BY fingerprint",
            )
            .bind(&sha256)
            .fetch_all(&pool)
            .await
            .map_err(db("list artifacts"))?;
            Ok(rows
                .into_iter()
                .map(|(fingerprint, bytes)| Artifact { fingerprint, bytes })
                .collect())
        })
        .await
    }

    async fn restore_plugin(
        &self,
        history: PluginHistory,
        components: Vec<Component>,
    ) -> Result<(), StoreError> {
        self.run(|pool| async move {
            let name = history.name.as_str();
            let mut tx = pool.begin().await.map_err(db("begin"))?;
            lock_plugins(&mut tx).await?;
            sqlx::query("DELETE FROM plugins WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db("restore plugin"))?;
            let dropped: Vec<String> =
                sqlx::query_scalar("DELETE FROM plugin_versions WHERE name = $1 RETURNING sha256")
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db("restore plugin"))?;
            let next = i64::try_from(history.next_version).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO plugin_names (name, next_version) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE \
                 SET next_version = greatest(plugin_names.next_version, excluded.next_version)",
            )
            .bind(name)
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(db("restore plugin"))?;
            for component in &components {
                sqlx::query(
                    "INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) \
                     ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&component.sha256)
                .bind(&component.bytes)
                .execute(&mut *tx)
                .await
                .map_err(db("restore a component"))?;
                for artifact in &component.artifacts {
                    sqlx::query(
                        "INSERT INTO artifacts (sha256, fingerprint, bytes) VALUES ($1, $2, $3) \
                         ON CONFLICT (sha256, fingerprint) DO UPDATE SET bytes = excluded.bytes",
                    )
                    .bind(&component.sha256)
                    .bind(&artifact.fingerprint)
                    .bind(&artifact.bytes)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("restore an artifact"))?;
                }
            }
            for record in &history.versions {
                sqlx::query(
                    "INSERT INTO plugin_versions (name, version, sha256, record) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(name)
                .bind(i64::try_from(record.version).unwrap_or(i64::MAX))
                .bind(&record.sha256)
                .bind(super::to_json("plugin record", record)?)
                .execute(&mut *tx)
                .await
                .map_err(db("restore a version"))?;
            }
            if let Some(active) = history.active {
                sqlx::query("INSERT INTO plugins (name, version) VALUES ($1, $2)")
                    .bind(name)
                    .bind(i64::try_from(active).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("restore the active version"))?;
            }
            drop_unused_blobs(&mut tx, &dropped).await?;
            announce(&mut tx, Change::Plugins)
                .await
                .map_err(db("announce the restore"))?;
            tx.commit().await.map_err(db("commit the restore"))?;
            Ok(())
        })
        .await
    }

    async fn kv_plugins(&self) -> Result<Vec<String>, StoreError> {
        self.run(|pool| async move {
            sqlx::query_scalar("SELECT DISTINCT plugin FROM kv ORDER BY plugin")
                .fetch_all(&pool)
                .await
                .map_err(db("list kv plugins"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_database::TestDatabase;

    /// Another session of `database` in a transaction that has run `statement` (taking a lock
    /// the test then holds until it commits).
    async fn holding(database: &TestDatabase, statement: &str) -> PgConnection {
        let mut other = <PgConnection as sqlx::Connection>::connect_with(&database.options())
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query(statement).execute(&mut other).await.unwrap();
        other
    }

    #[tokio::test]
    async fn one_plugins_waiting_writers_never_hold_the_hosts_connections() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::open_with(database.options()).await.unwrap();
        let limits = KvLimits {
            max_value: 1024,
            quota: 1 << 20,
        };
        let put = |key: String| {
            KvChange::Put(vec![KvEntry {
                bucket: "b".into(),
                key,
                value: b"v".to_vec(),
            }])
        };
        store
            .kv_apply("busy", put("first".into()), limits)
            .await
            .unwrap();
        // Another host holds the busy plugin's write lock for now.
        let mut other = holding(
            &database,
            "SELECT bytes FROM kv_usage WHERE plugin = 'busy' FOR UPDATE",
        )
        .await;
        // Twice as many writers as the pool has connections, all waiting for that lock.
        let writers: Vec<_> = (0..2 * POOL_SIZE)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.kv_apply("busy", put(format!("k{i}")), limits).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The rest of the host still gets connections (with every connection taken, these
        // would fail after the pool's acquire timeout).
        for _ in 0..3 {
            store.kv_get("quiet", "b", "k").await.unwrap();
            store
                .kv_apply("quiet", put("k".into()), limits)
                .await
                .unwrap();
            store.meta("anything").await.unwrap();
        }
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        assert_eq!(
            store
                .kv_keys("busy", "b", "", None, 100)
                .await
                .unwrap()
                .len(),
            1 + 2 * POOL_SIZE as usize
        );
        drop(store);
        database.remove().await;
    }

    #[tokio::test]
    async fn one_plugins_flood_of_reads_leaves_connections_for_the_rest_of_the_host() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::open_with(database.options()).await.unwrap();
        // Every read of plugin data stalls: another session holds the table.
        let mut other = holding(&database, "LOCK TABLE kv IN ACCESS EXCLUSIVE MODE").await;
        // Four plugins flooding at once: each is held to its share, and all together to half
        // the pool.
        let readers: Vec<_> = (0..2 * POOL_SIZE)
            .map(|i| {
                let store = store.clone();
                let plugin = format!("flood{}", i % 4);
                tokio::spawn(async move { store.kv_get(&plugin, "b", &format!("k{i}")).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The rest of the host still gets connections at once (with every connection taken by
        // the stalled reads, these would wait for the pool's acquire timeout and fail).
        let rest = async {
            for _ in 0..3 {
                store.meta("anything").await.unwrap();
                store.get(Space::Users, b"someone").await.unwrap();
                assert!(
                    store
                        .commit(vec![Op::Put {
                            space: Space::Invites,
                            key: b"k".to_vec(),
                            value: b"v".to_vec(),
                        }])
                        .await
                        .unwrap()
                );
            }
        };
        tokio::time::timeout(ACQUIRE_TIMEOUT / 2, rest)
            .await
            .expect("the host's other work waited for a connection");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap(), None);
        }
        drop(store);
        database.remove().await;
    }

    #[tokio::test]
    async fn writes_batched_together_apply_in_order_and_a_refused_one_changes_nothing() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::open_with(database.options()).await.unwrap();
        let limits = KvLimits {
            max_value: 1024,
            quota: 1 << 20,
        };
        let entry = |key: &str, value: &str| KvEntry {
            bucket: "b".into(),
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        store
            .kv_apply("p", KvChange::Put(vec![entry("k", "5")]), limits)
            .await
            .unwrap();
        // Another host holds the plugin's lock while the writes queue up behind it, so they
        // all go in one batch once it lets go.
        let mut other = holding(
            &database,
            "SELECT bytes FROM kv_usage WHERE plugin = 'p' FOR UPDATE",
        )
        .await;
        let increment = || KvChange::Increment {
            bucket: "b".into(),
            key: "k".into(),
            delta: 1,
        };
        let changes = vec![
            increment(),
            KvChange::CompareAndSwap {
                bucket: "b".into(),
                key: "k".into(),
                expected: Some(b"6".to_vec()),
                new: b"x".to_vec(),
            },
            increment(),
            KvChange::Put(vec![entry("k2", "y"), entry("k", "z")]),
            KvChange::Put(vec![entry("big", &"v".repeat(2000))]),
            KvChange::Delete(vec![("b".into(), "k2".into())]),
        ];
        let mut queued = Vec::new();
        for change in changes {
            let store = store.clone();
            queued.push(tokio::spawn(async move {
                store.kv_apply("p", change, limits).await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        let mut outcomes = Vec::new();
        for write in queued {
            outcomes.push(write.await.unwrap());
        }
        assert!(
            matches!(outcomes[0], Ok(KvOutcome::Counter(6))),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[1], Ok(KvOutcome::Swapped(true))),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[2], Err(KvError::NotACounter(_))),
            "{outcomes:?}"
        );
        assert!(matches!(outcomes[3], Ok(KvOutcome::Done)), "{outcomes:?}");
        assert!(
            matches!(outcomes[4], Err(KvError::ValueTooLarge { .. })),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[5], Ok(KvOutcome::Deleted(1))),
            "{outcomes:?}"
        );
        assert_eq!(
            store.kv_get("p", "b", "k").await.unwrap(),
            Some(b"z".to_vec())
        );
        assert_eq!(store.kv_get("p", "b", "k2").await.unwrap(), None);
        assert_eq!(store.kv_get("p", "b", "big").await.unwrap(), None);
        assert_eq!(
            store.kv_usage("p").await.unwrap(),
            kv::entry_size("b", "k", 1),
            "usage counts exactly what the batch left"
        );
        drop(store);
        database.remove().await;
    }

    #[tokio::test]
    async fn announced_changes_are_counted_and_nothing_else() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::open_with(database.options()).await.unwrap();
        let mut changes = store.changes().unwrap();
        let before = store.announced().await.unwrap().unwrap();
        let audit = |key: &str| AuditRecord {
            key: key.as_bytes().to_vec(),
            value: b"{}".to_vec(),
        };
        let record = PluginRecord {
            name: "p".into(),
            manifest: String::new(),
            sha256: "s".into(),
            size: 1,
            deployed_at_ms: 1,
            version: 0,
            deployed_by: None,
        };
        let entry = audit("deploy");
        store
            .put_plugin(
                record,
                bytes::Bytes::from_static(b"c"),
                None,
                1,
                Box::new(move |_| Ok(entry.clone())),
            )
            .await
            .unwrap();
        // Config is held by hosts, users are not; kv data never is.
        let put = |space, key: &str| Op::Put {
            space,
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        };
        store
            .commit(vec![put(Space::PluginConfig, "p/k")])
            .await
            .unwrap();
        store.commit(vec![put(Space::Users, "u")]).await.unwrap();
        let limits = KvLimits {
            max_value: 10,
            quota: 1000,
        };
        let kv = KvChange::Increment {
            bucket: "b".into(),
            key: "n".into(),
            delta: 1,
        };
        store.kv_apply("p", kv, limits).await.unwrap();
        assert_eq!(store.announced().await.unwrap(), Some(before + 2));
        let mut heard = Vec::new();
        while heard.len() < 2 {
            let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
                .await
                .expect("an announcement")
                .unwrap();
            if change != Change::Resync {
                heard.push(change);
            }
        }
        assert_eq!(
            heard,
            vec![Change::Plugins, Change::Space(Space::PluginConfig)]
        );
        drop(store);
        database.remove().await;
    }

    #[tokio::test]
    async fn hosts_starting_together_migrate_once_and_an_older_schema_is_upgraded() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        // A database left at the first schema version, holding data.
        let pool = PgPoolOptions::new()
            .connect_with(database.options())
            .await
            .unwrap();
        Migrator::new(Embedded(1))
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('kept', 'v')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        // Three hosts start at once on it.
        let opening = (0..3).map(|_| PgStore::open_with(database.options()));
        let hosts = futures_util::future::join_all(opening).await;
        for host in &hosts {
            let host = host.as_ref().unwrap();
            assert!(!host.was_empty_at_open());
            assert_eq!(host.meta("kept").await.unwrap(), Some(b"v".to_vec()));
            assert!(
                host.announced().await.unwrap().is_some(),
                "version 2 applied"
            );
        }
        let pool = PgPoolOptions::new()
            .connect_with(database.options())
            .await
            .unwrap();
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        let expected: Vec<i64> = MIGRATIONS.iter().map(|(version, _, _)| *version).collect();
        assert_eq!(applied, expected);
        pool.close().await;
        drop(hosts);
        database.remove().await;
    }

    #[test]
    fn a_prefix_range_ends_at_the_next_string_of_its_length() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
