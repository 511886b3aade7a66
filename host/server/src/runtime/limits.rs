//! Engine settings and the pooling allocator's sizing, with the reasoning for each.
//!
//! Measured on this kind of machine (docs/performance.md): with memories and tables kept
//! resident and `PAGEMAP_SCAN` resetting only the pages a guest dirtied, a fresh instance per
//! request costs ~12 µs instead of ~30 µs, with isolation unchanged.
//!
//! # Host-side allocations a guest controls
//!
//! The guest's own memory limit bounds only its linear memory. Everything the host allocates
//! on a guest's behalf is bounded here too, or a plugin could take the whole server down:
//!
//! | what | bound |
//! | --- | --- |
//! | linear memories and tables of one instance | the plugin's `memory` limit, summed ([`MemoryWatch`]); at most [`CORE_INSTANCES_PER_COMPONENT`] core instances, [`MEMORIES_PER_COMPONENT`] memory and [`TABLES_PER_COMPONENT`] tables per component, refused at deploy beyond |
//! | data copied from the guest into one host call (strings, lists, however aliased) | wasmtime's hostcall fuel: [`hostcall_fuel`], twice [`MAX_BATCH_BYTES`] or the largest kv value plus 1 MiB |
//! | resource handles (streams, fields, buckets, requests) | [`MAX_RESOURCE_HANDLES`] per instance |
//! | one header map (`wasi:http` fields) | [`MAX_FIELDS_BYTES`] of names and values |
//! | `wasi:random` bytes | [`MAX_RANDOM_BYTES`] a call |
//! | `wasi:keyvalue` get / set / compare-and-swap | one value, at most the operator's `kv_max_value_size` |
//! | `wasi:keyvalue/batch` get-many, set-many, delete-many | [`MAX_BATCH_KEYS`] keys and [`MAX_BATCH_BYTES`] of keys and values a call, else `batch_too_large` |
//! | key-value data read and written by one request | [`MAX_REQUEST_KV_BYTES`], else `request_budget_exceeded` |
//! | `list-keys` pages | 1,000 keys of at most 1 KiB (`keyvalue::PAGE_LIMIT`) |
//! | list cursors the host keeps | [`MAX_CURSORS_PER_PLUGIN`] per plugin, 10 minutes each |
//! | `wasi:config/store` get-all | the plugin's operator-set config: values up to 64 KiB each |
//! | outbound calls in flight | [`MAX_OUTBOUND_PER_INSTANCE`] per instance, the plugin's `max_concurrency` times that per plugin; bodies stream through one frame at a time |
//! | plugin log lines (`log`, stdout, stderr) | [`MAX_LOG_LINE`] bytes each, control characters escaped; [`LOG_LINES_PER_SECOND`] per plugin into the server log |
//! | response body | the plugin's `max_response_body` ([`ResponseLimit`]) |

use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances. A running guest yields to the async runtime at every
/// tick, so a busy loop holds a tokio worker for at most this long, and deadlines are checked
/// at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Component resource handles (WASI streams, fields, buckets, ...) one instance may hold at
/// once. A request needs a few dozen; the default table allows a million.
pub const MAX_RESOURCE_HANDLES: usize = 1000;
/// Most random bytes one `wasi:random` call may ask for.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;
/// Most bytes of names and values in one `wasi:http` header map a guest builds (wasmtime's
/// default is 128 KiB; the front door takes at most 16 KiB of request head).
pub const MAX_FIELDS_BYTES: usize = 64 << 10;
/// Most keys one `wasi:keyvalue/batch` call may name.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Most bytes of keys and values one batch call may read or write.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most bytes of key-value data (values read and written, keys listed) one request may move.
pub const MAX_REQUEST_KV_BYTES: u64 = 256 << 20;
/// Most live `wasi:keyvalue` list cursors one plugin may hold; its oldest go beyond it.
pub const MAX_CURSORS_PER_PLUGIN: usize = 1000;
/// Outbound calls one instance may have in flight at once; more fail at once.
pub const MAX_OUTBOUND_PER_INSTANCE: usize = 8;
/// Longest plugin log line, in bytes; the rest is cut off. The same bound as a line of the
/// plugin's log buffer, so a line reads the same in both.
pub const MAX_LOG_LINE: usize = crate::plugin_logs::MAX_MESSAGE;
/// Plugin log lines per second (per plugin) written to the server log; the plugin's own buffer
/// still keeps every line. Beyond it lines are counted and reported once a second.
pub const LOG_LINES_PER_SECOND: u32 = 100;

/// The most data a guest may copy into one host call (wasmtime's hostcall fuel), for a host
/// whose kv values may be `kv_max_value` bytes: a full batch, or the largest value, with room
/// for the list headers around them. Lifting a list whose entries all point at the same guest
/// bytes copies them again for each entry; fuel bounds that too.
pub fn hostcall_fuel(kv_max_value: u64) -> usize {
    let value = usize::try_from(kv_max_value).unwrap_or(usize::MAX);
    (2 * MAX_BATCH_BYTES).max(value.saturating_add(1 << 20))
}
/// Core module instances one component may contain. A Rust component has its main module plus
/// the shims wit-component adds (fewer than ten); interpreted guests link a few more. The pool
/// holds this many per instance slot, so no component can drain the slots of others.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Linear memories one component may define. Every toolchain we know (Rust, componentize-py,
/// componentize-js, the WASI adapters) shares one memory across its modules; the pool holds one
/// memory slot per instance slot, so a component defining more is refused at deploy instead of
/// taking other plugins' slots.
pub const MEMORIES_PER_COMPONENT: u32 = 1;
/// Tables one component may define (the main module's and the shims').
pub const TABLES_PER_COMPONENT: u32 = 4;
/// Elements in one table (function pointers of a large guest fit easily).
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// What one table element counts against an instance's memory limit: a function reference.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The limits one plugin's requests run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes an instance may hold in its linear memories and tables together.
    pub memory: u64,
    /// Wall-clock deadline of a request, from instantiation to the end of the response body.
    pub timeout: Duration,
    /// Instances of the plugin alive at once; more requests wait, then get 503.
    pub max_concurrency: u32,
    /// Largest request body, in bytes (413 beyond it).
    pub max_request_body: u64,
    /// Largest response body, in bytes (the response is cut off beyond it).
    pub max_response_body: u64,
    /// Which of the plugin's routes may keep an instance for later requests.
    pub instance_reuse: InstanceReuse,
}

/// Whether one instance may serve more than one request. Reuse trades isolation between
/// requests for speed: whatever a request leaves in the instance's memory (globals, caches,
/// a half-finished state after a bug) is there for the next one, which may come from another
/// user. So it is off unless the manifest asks (`[limits] instance_reuse = true`) and the
/// operator allows it (`plinth serve --instance-reuse`); as a cap, `public` allows it on
/// `auth = "public"` routes only, `all` on every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InstanceReuse {
    /// A fresh instance for every request (the default).
    #[default]
    Off,
    /// Instances are kept between requests of public routes; guarded routes get fresh ones.
    Public,
    /// Instances are kept between requests of every route, guarded ones too.
    All,
}

impl InstanceReuse {
    /// The setting's name, as flags and manifests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Public => "public",
            Self::All => "all",
        }
    }

    /// Whether a route with this auth policy may reuse an instance.
    pub fn allows(self, public_route: bool) -> bool {
        match self {
            Self::Off => false,
            Self::Public => public_route,
            Self::All => true,
        }
    }
}

/// Server defaults for every plugin.
pub const DEFAULT_LIMITS: Limits = Limits {
    memory: 64 << 20,
    timeout: Duration::from_secs(10),
    max_concurrency: 16,
    max_request_body: 10 << 20,
    max_response_body: 64 << 20,
    instance_reuse: InstanceReuse::Off,
};

/// How far a manifest may raise a limit.
pub const DEFAULT_CAPS: Limits = Limits {
    memory: 256 << 20,
    timeout: Duration::from_secs(30),
    max_concurrency: 64,
    max_request_body: 100 << 20,
    max_response_body: 1 << 30,
    // The operator must allow reuse explicitly.
    instance_reuse: InstanceReuse::Off,
};

/// A manifest's `[limits]`: each value may lower the server default or raise it up to the
/// operator's cap.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// e.g. `"128MiB"`.
    pub memory: Option<crate::units::ByteSize>,
    /// e.g. `"2s"`.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// e.g. `32`.
    pub max_concurrency: Option<u32>,
    /// e.g. `"1MiB"`.
    pub max_request_body: Option<crate::units::ByteSize>,
    /// e.g. `"256MiB"`.
    pub max_response_body: Option<crate::units::ByteSize>,
    /// `true` asks to keep instances between requests, as far as the operator allows (see
    /// [`InstanceReuse`]).
    pub instance_reuse: Option<bool>,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
}

/// A manifest limit above the operator's cap (or zero).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[limits] {name} = {value} is not allowed: {reason}")]
pub struct LimitError {
    /// The limit.
    pub name: &'static str,
    /// The value asked for.
    pub value: String,
    /// Why not.
    pub reason: String,
}

impl Limits {
    /// The limits of a plugin whose manifest asks for `spec`, with `self` as the defaults and
    /// `caps` as the most a manifest may ask for.
    pub fn for_manifest(&self, caps: &Limits, spec: &LimitsSpec) -> Result<Limits, LimitError> {
        fn pick<T: PartialOrd + Copy + std::fmt::Debug>(
            name: &'static str,
            asked: Option<T>,
            default: T,
            cap: T,
            zero: T,
            show: impl Fn(T) -> String,
        ) -> Result<T, LimitError> {
            let Some(value) = asked else {
                return Ok(if default > cap { cap } else { default });
            };
            if value <= zero {
                return Err(LimitError {
                    name,
                    value: show(value),
                    reason: "it must be more than zero".into(),
                });
            }
            if value > cap {
                return Err(LimitError {
                    name,
                    value: show(value),
                    reason: format!("the operator's cap is {}", show(cap)),
                });
            }
            Ok(value)
        }
        let bytes = |n: u64| crate::units::ByteSize(n).to_string();
        Ok(Limits {
            memory: pick(
                "memory",
                spec.memory.map(|b| b.0),
                self.memory,
                caps.memory,
                0,
                bytes,
            )?,
            timeout: pick(
                "timeout",
                spec.timeout,
                self.timeout,
                caps.timeout,
                Duration::ZERO,
                |d| humantime::format_duration(d).to_string(),
            )?,
            max_concurrency: pick(
                "max_concurrency",
                spec.max_concurrency,
                self.max_concurrency,
                caps.max_concurrency,
                0,
                |n| n.to_string(),
            )?,
            max_request_body: pick(
                "max_request_body",
                spec.max_request_body.map(|b| b.0),
                self.max_request_body,
                caps.max_request_body,
                0,
                bytes,
            )?,
            max_response_body: pick(
                "max_response_body",
                spec.max_response_body.map(|b| b.0),
                self.max_response_body,
                caps.max_response_body,
                0,
                bytes,
            )?,
            instance_reuse: match spec.instance_reuse {
                None | Some(false) => InstanceReuse::Off,
                Some(true) if caps.instance_reuse == InstanceReuse::Off => {
                    return Err(LimitError {
                        name: "instance_reuse",
                        value: "true".into(),
                        reason: "the operator has not allowed instance reuse \
                                 (plinth serve --instance-reuse public|all)"
                            .into(),
                    });
                }
                Some(true) => caps.instance_reuse,
            },
        })
    }

    /// Bytes one instance may hold in linear memories and tables together.
    pub fn footprint(&self) -> usize {
        usize::try_from(self.memory).unwrap_or(usize::MAX)
    }
}

/// A memory (or table) grew past the instance's limit; the guest traps with this error.
#[derive(Debug, thiserror::Error)]
#[error("the instance would hold {wanted} bytes of memory and tables, over its limit of {limit}")]
pub struct MemoryLimitExceeded {
    /// What the instance would have held.
    pub wanted: usize,
    /// The most the manifest may declare.
    pub limit: usize,
}

/// The resource limiter of one instance: the plugin's `memory` limit bounds the sum of all its
/// linear memories and tables (a component may define several; counted one by one, each would
/// get the whole limit). Growth past it traps, rather than returning -1 (which a Rust guest
/// turns into an abort anyway), so the host can tell the operator why the request failed.
/// Also raises a per-plugin high-water mark of memory held (shown by `/metrics`).
pub struct MemoryWatch {
    limit: usize,
    /// Bytes the instance holds now, memories and tables together. Kept when a reused instance
    /// takes its next request: its memories are still there.
    held: usize,
    /// The growth last allowed, taken back if the grow then fails.
    pending: usize,
    peak: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryWatch {
    /// Enforces `limits` on a new instance, raising `peak` to what it holds.
    pub fn new(limits: &Limits, peak: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            limit: limits.footprint(),
            held: 0,
            pending: 0,
            peak,
        }
    }

    /// The same instance under `limits` (a reused instance's next request: the plugin's limits
    /// may have changed with a redeploy, its memories have not).
    pub fn renew(&mut self, limits: &Limits, peak: Arc<std::sync::atomic::AtomicU64>) {
        self.limit = limits.footprint();
        self.peak = peak;
    }

    fn grow(&mut self, by: usize) -> wasmtime::Result<bool> {
        let wanted = self.held.saturating_add(by);
        if wanted > self.limit {
            return Err(MemoryLimitExceeded {
                wanted,
                limit: self.limit,
            }
            .into());
        }
        self.held = wanted;
        self.pending = by;
        self.peak.fetch_max(wanted as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn grow_failed(&mut self) {
        self.held = self.held.saturating_sub(std::mem::take(&mut self.pending));
    }
}

impl wasmtime::ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        TABLES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MEMORIES_PER_COMPONENT as usize
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread; stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let engine = engine.clone();
        let thread = std::thread::Builder::new()
            .name("plinth-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
/// How the engine's instance pool is sized. Each slot reserves address space up front (about
/// `max_memory` plus guard pages), so the product must fit what the host lets a process map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Instances alive at once across all plugins, in flight or kept idle for reuse.
    pub instances: u32,
    /// Of those, how many may be kept idle for reuse: what requests in flight cannot need.
    pub idle: u32,
    /// The largest memory any plugin may have (the operator's cap): the size of each slot.
    pub max_memory: u64,
}

/// Resident bytes kept per memory and table slot between instances, instead of handing the
/// pages back to the kernel: saves the `madvise` + page faults on every request.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine configuration every plugin runs under, its pool sized by `size`.
pub fn engine_config(size: PoolSize) -> Config {
    let max_memory = usize::try_from(size.max_memory).unwrap_or(usize::MAX);
    let instances = size.instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // Every slot holds what one component may use at most; a component needing more is refused
    // when it is compiled (at deploy), so none can take the slots of other plugins' instances.
    pool.total_component_instances(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(instances)
        .max_memory_size(max_memory)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        // keep_resident is only a win with PAGEMAP_SCAN (Linux >= 6.7); `Auto` falls back to
        // the plain reset on older kernels instead of refusing to start.
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // WASI 0.2 guests never use the component-model async runtime; building it into every
        // store costs ~2.7 µs per instance.
        .concurrency_support(false)
        // A guest is interrupted at every epoch tick to yield (see `EpochTicker`), so a busy
        // loop cannot hold a worker thread, and its deadline can end it.
        .epoch_interruption(true);
    config
}

/// A response body that ends with an error once it has passed `limit` bytes, so a plugin
/// cannot stream without bound. The client sees the response cut off.
pub struct ResponseLimit<B> {
    inner: B,
    remaining: u64,
    limit: u64,
}

impl<B> ResponseLimit<B> {
    /// Wraps `inner`, allowing `limit` bytes.
    pub fn new(inner: B, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl<B> http_body::Body for ResponseLimit<B>
where
    B: http_body::Body<Data = bytes::Bytes, Error = wasmtime_wasi_http::Error> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > this.remaining {
                this.remaining = 0;
                tracing::warn!(
                    limit = this.limit,
                    "plugin response cut off at its size limit"
                );
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpResponseBodySize(Some(this.limit)),
                )));
            }
            this.remaining -= len;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyViolation {
    /// More bytes than allowed (413).
    TooLarge,
    /// No data for longer than allowed (408).
    TooSlow,
}

/// Tells the dispatcher that a request body broke its limits, so it can answer at once.
#[derive(Default)]
pub struct BodyWatch {
    notify: tokio::sync::Notify,
    violation: std::sync::Mutex<Option<BodyViolation>>,
}

impl BodyWatch {
    fn report(&self, violation: BodyViolation) {
        *self
            .violation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(violation);
        self.notify.notify_one();
    }

    /// The limit the body broke, if it did.
    pub fn current(&self) -> Option<BodyViolation> {
        *self
            .violation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when the body breaks a limit, with which one.
    pub async fn violated(&self) -> BodyViolation {
        loop {
            self.notify.notified().await;
            if let Some(v) = *self
                .violation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                return v;
            }
        }
    }
}

/// A request body that fails once it has passed `limit` bytes, or when no data comes for
/// `idle`, and reports it to a [`BodyWatch`]: the dispatcher then answers 413 or 408 without
/// reading (or buffering) the rest. With a minimum rate it also fails when, after the first
/// `idle`, the body falls behind that many bytes a second on average: a client dripping a byte
/// just before each idle timeout would otherwise hold its request forever.
pub struct RequestLimit<B> {
    inner: B,
    remaining: u64,
    idle: Duration,
    stall: std::pin::Pin<Box<tokio::time::Sleep>>,
    watch: Arc<BodyWatch>,
    min_rate: Option<u64>,
    started: tokio::time::Instant,
    received: u64,
}

/// The slowest average a host route's request body may arrive at (after its first idle
/// timeout): a 64 MiB upload may take an hour, a drip of a byte every few seconds may not.
pub const MIN_HOST_BODY_RATE: u64 = 16 << 10;

impl<B> RequestLimit<B> {
    /// Wraps `inner`, allowing `limit` bytes and pauses up to `idle`.
    pub fn new(inner: B, limit: u64, idle: Duration, watch: Arc<BodyWatch>) -> Self {
        Self {
            inner,
            remaining: limit,
            idle,
            stall: Box::pin(tokio::time::sleep(idle)),
            watch,
            min_rate: None,
            started: tokio::time::Instant::now(),
            received: 0,
        }
    }

    /// Also requires an average of `bytes_per_second` once the first `idle` has passed.
    pub fn with_min_rate(mut self, bytes_per_second: u64) -> Self {
        self.min_rate = Some(bytes_per_second.max(1));
        self
    }

    /// When the body breaks a limit if nothing more comes: its idle timeout, or the moment
    /// what it has sent falls below the minimum rate.
    fn deadline(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let idle = now + self.idle;
        match self.min_rate {
            None => idle,
            Some(rate) => {
                let earned = Duration::from_secs_f64(self.received as f64 / rate as f64);
                idle.min(self.started + self.idle + earned)
            }
        }
    }
}

impl<B> http_body::Body for RequestLimit<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = bytes::Bytes;
    type Error = String;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.watch.report(BodyViolation::TooLarge);
                        return Poll::Ready(Some(Err("request body over its limit".into())));
                    }
                    this.remaining -= len;
                    this.received += len;
                }
                let next = this.deadline(tokio::time::Instant::now());
                this.stall.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.to_string()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.stall.as_mut().poll(cx).is_ready() {
                    this.watch.report(BodyViolation::TooSlow);
                    return Poll::Ready(Some(Err("request body stalled".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_lower_or_raise_up_to_the_cap() {
        let spec: LimitsSpec =
            toml::from_str("memory = \"128MiB\"\ntimeout = \"2s\"\nmax_concurrency = 4").unwrap();
        let limits = DEFAULT_LIMITS.for_manifest(&DEFAULT_CAPS, &spec).unwrap();
        assert_eq!(limits.memory, 128 << 20);
        assert_eq!(limits.timeout, Duration::from_secs(2));
        assert_eq!(limits.max_concurrency, 4);
        assert_eq!(limits.max_request_body, DEFAULT_LIMITS.max_request_body);
        let greedy: LimitsSpec = toml::from_str("timeout = \"5m\"").unwrap();
        let err = DEFAULT_LIMITS
            .for_manifest(&DEFAULT_CAPS, &greedy)
            .unwrap_err();
        assert_eq!(err.name, "timeout");
        assert!(err.reason.contains("30s"), "{err}");
        let zero: LimitsSpec = toml::from_str("max_concurrency = 0").unwrap();
        assert!(DEFAULT_LIMITS.for_manifest(&DEFAULT_CAPS, &zero).is_err());
        assert!(toml::from_str::<LimitsSpec>("cpu = 3").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_body_must_keep_its_minimum_rate_after_the_first_idle_timeout() {
        use http_body_util::BodyExt;
        let idle = Duration::from_secs(10);
        let (sender, frames) = tokio::sync::mpsc::channel(16);
        let frames = tokio_stream::wrappers::ReceiverStream::new(frames);
        let watch = Arc::new(BodyWatch::default());
        let mut body = RequestLimit::new(
            http_body_util::StreamBody::new(frames),
            u64::MAX,
            idle,
            watch.clone(),
        )
        .with_min_rate(100);
        let byte = || {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(
                b"x",
            )))
        };
        // A byte every 9 s never trips the idle timeout, but falls behind 100 bytes a second.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(9)).await;
            sender.send(byte()).await.unwrap();
            if body.frame().await.unwrap().is_err() {
                break;
            }
        }
        let stalled = tokio::time::timeout(Duration::from_secs(30), body.frame()).await;
        assert!(matches!(stalled, Ok(Some(Err(_)))), "{stalled:?}");
        assert_eq!(watch.current(), Some(BodyViolation::TooSlow));
    }

    #[test]
    fn the_memory_limit_bounds_every_memory_and_table_of_an_instance_together() {
        use wasmtime::ResourceLimiter;
        let limits = Limits {
            memory: 4 << 20,
            ..DEFAULT_LIMITS
        };
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut watch = MemoryWatch::new(&limits, peak.clone());
        // Two memories of 2 MiB each fill the limit; counted one by one, both would fit again.
        assert!(watch.memory_growing(0, 2 << 20, None).unwrap());
        assert!(watch.memory_growing(0, 2 << 20, None).unwrap());
        let over = watch.memory_growing(2 << 20, (2 << 20) + 65536, None);
        assert!(over.unwrap_err().is::<MemoryLimitExceeded>());
        // Tables count too, a function reference per element.
        assert!(watch.table_growing(0, 1, None).is_err());
        assert_eq!(peak.load(Ordering::Relaxed), 4 << 20);
        // A growth the engine then fails is taken back.
        let mut watch = MemoryWatch::new(&limits, peak);
        assert!(watch.memory_growing(0, 4 << 20, None).unwrap());
        watch
            .memory_grow_failed(wasmtime::Error::msg("no room"))
            .unwrap();
        assert!(watch.memory_growing(0, 4 << 20, None).unwrap());
        // A reused instance keeps what it holds under renewed limits.
        watch.renew(&limits, Arc::default());
        assert!(
            watch
                .memory_growing(4 << 20, (4 << 20) + 65536, None)
                .is_err()
        );
    }

    #[test]
    fn instance_reuse_is_what_the_manifest_asks_within_the_operators_cap() {
        let asks: LimitsSpec = toml::from_str("instance_reuse = true").unwrap();
        let declines: LimitsSpec = toml::from_str("instance_reuse = false").unwrap();
        let silent = LimitsSpec::default();
        // The default cap is off: asking is refused, not silently ignored.
        let err = DEFAULT_LIMITS
            .for_manifest(&DEFAULT_CAPS, &asks)
            .unwrap_err();
        assert_eq!(err.name, "instance_reuse");
        for cap in [InstanceReuse::Public, InstanceReuse::All] {
            let caps = Limits {
                instance_reuse: cap,
                ..DEFAULT_CAPS
            };
            let reuse = |spec| {
                DEFAULT_LIMITS
                    .for_manifest(&caps, spec)
                    .unwrap()
                    .instance_reuse
            };
            assert_eq!(reuse(&asks), cap);
            assert_eq!(reuse(&declines), InstanceReuse::Off);
            assert_eq!(reuse(&silent), InstanceReuse::Off);
        }
        assert!(!InstanceReuse::Off.allows(true));
        assert!(InstanceReuse::Public.allows(true));
        assert!(!InstanceReuse::Public.allows(false));
        assert!(InstanceReuse::All.allows(false));
        use clap::ValueEnum;
        assert_eq!(
            InstanceReuse::from_str("public", false),
            Ok(InstanceReuse::Public)
        );
        assert!(InstanceReuse::from_str("sometimes", false).is_err());
        // Flags and manifests spell a mode the way operators see it.
        for mode in InstanceReuse::value_variants() {
            let flag = mode.to_possible_value().unwrap();
            assert_eq!(flag.get_name(), mode.as_str());
        }
    }
}
