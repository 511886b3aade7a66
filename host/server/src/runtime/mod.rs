//! The wasmtime side: one engine and linker, compiling components into ready-to-instantiate
//! [`PluginCode`], and serving one HTTP request per fresh instance.
//!
//! **Boundary:** `runtime` never sees axum types. It takes and returns plain `http` requests and
//! responses, so the API layer can change without touching the sandbox.
//!
//! **Invariant:** every request gets a new `Store` and a new instance from a pre-linked
//! `InstancePre`; nothing a guest did in one request is visible to the next. The store is dropped
//! when the guest finishes, traps or is cancelled. The one exception is opt-in: a plugin whose
//! manifest asks for instance reuse, on a route the operator's `--instance-reuse` allows, may
//! get an instance that served an earlier request and finished cleanly (see `reuse`).

pub mod artifacts;
mod bindings;
pub mod identity;
pub mod keyvalue;
pub mod limits;
pub mod log;
pub mod outgoing_http;
mod reuse;
pub mod route;
mod stdio;

use crate::store::KvLimits;
use bytes::Bytes;
use http_body_util::BodyExt;
use identity::IdentityCtx;
use keyvalue::{Cursors, KeyValue, KeyValueCtx};
use limits::{EpochTicker, Limits, ResponseLimit};
use outgoing_http::OutboundPolicy;
use reuse::IdleBudget;
pub use reuse::InstancePool;
use route::RouteCtx;
use std::sync::Arc;
use stdio::{PluginOutput, Stream};
use wasmtime::component::{
    Component, HasSelf, Linker, ResourceTable, ResourceType, types::ComponentItem,
};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The response a plugin produced: head plus a body the guest may still be streaming, cut off
/// at the plugin's response size limit.
pub type PluginResponse = http::Response<ResponseLimit<HyperOutgoingBody>>;

/// Why a component cannot be deployed. Each variant is something the uploader can fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not WebAssembly at all.
    #[error("the upload is not a WebAssembly binary (it does not start with `\\0asm`)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "the upload is a core WebAssembly module, not a component: build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component failed to validate or compile.
    #[error("the component is invalid: {0}")]
    Invalid(String),
    /// The component needs more core instances, memories or tables than one instance may have.
    #[error(
        "the component needs more than one instance may have (at most {cores} core instances, \
         {memories} linear memory, {tables} tables): {0}",
        cores = limits::CORE_INSTANCES_PER_COMPONENT,
        memories = limits::MEMORIES_PER_COMPONENT,
        tables = limits::TABLES_PER_COMPONENT
    )]
    OverInstanceLimits(String),
    /// The component imports interfaces the host does not provide.
    #[error("the component imports what this host does not provide: {}", .0.join(", "))]
    UnsupportedImports(Vec<String>),
    /// The component does not export `wasi:http/incoming-handler`.
    #[error("the component does not export wasi:http/incoming-handler@0.2.x: {0}")]
    MissingExport(String),
}

/// Why a request to a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The instance could not be created (e.g. the instance pool is exhausted).
    #[error("could not start the plugin: {0}")]
    Instantiate(String),
    /// The guest trapped or panicked before producing a response.
    #[error("the plugin failed: {0}")]
    Trap(String),
    /// The guest returned without setting a response.
    #[error("the plugin returned without a response")]
    NoResponse,
    /// The request ran past its deadline; the instance was stopped.
    #[error("the plugin did not finish within its {} deadline", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    /// The guest tried to grow its memory past its limit.
    #[error("the plugin went over its memory limit of {0} bytes")]
    MemoryLimit(u64),
}

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasm engine: {0}")]
pub struct EngineError(String);

/// Per-request store data: WASI state, HTTP state, and the host interfaces' contexts.
pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundPolicy,
    route: RouteCtx,
    identity: IdentityCtx,
    log: log::LogCtx,
    keyvalue: KeyValueCtx,
    config: Arc<WasiConfigVariables>,
    limits: limits::MemoryWatch,
}

/// Requests of one plugin name in flight, across its versions, with the store calls they
/// started (which may outlive a request cancelled at its deadline). A purge waits for them, so
/// nothing writes the plugin's data back after it.
#[derive(Debug, Default)]
pub struct Running(std::sync::atomic::AtomicUsize);

impl Running {
    /// Counts one more until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> RunningGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        RunningGuard(self.clone())
    }

    /// How many are in flight now.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// One request or store call in flight (see [`Running`]).
#[derive(Debug)]
pub struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What the host knows about a request before the plugin runs.
#[derive(Clone, Default)]
pub struct RequestContext {
    /// The matched route.
    pub route: RouteCtx,
    /// The authenticated caller, if any.
    pub caller: Option<identity::Caller>,
    /// The plugin's config and secrets, as `wasi:config/store` serves them.
    pub config: Arc<WasiConfigVariables>,
    /// The origins the plugin may call.
    pub outbound: Arc<[outgoing_http::OutboundOrigin]>,
    /// The request's `x-request-id`, on every log line it causes.
    pub request_id: Option<Arc<str>>,
    /// Where the plugin's largest instance memory so far is kept (for `/metrics`).
    pub memory_peak: Arc<std::sync::atomic::AtomicU64>,
    /// The plugin's requests and store calls in flight.
    pub running: Arc<Running>,
}

impl RequestState {
    /// Readies a reused instance's state for its next request: that request's route, caller,
    /// config and id, fresh HTTP state, and the plugin's current limits.
    fn next_request(&mut self, context: RequestContext, limits: &Limits) {
        self.route = context.route;
        self.identity = IdentityCtx {
            caller: context.caller,
        };
        self.config = context.config;
        self.log.set_request(context.request_id);
        self.keyvalue.budget = limits::MAX_REQUEST_KV_BYTES;
        self.keyvalue.running = context.running.clone();
        self.http = http_ctx();
        self.limits.renew(limits, context.memory_peak);
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// A compiled, linked component, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct PluginCode {
    pre: ProxyPre<RequestState>,
    /// The interfaces the component imports, e.g. `wasi:filesystem/preopens@0.2.0`.
    pub imports: Arc<[String]>,
}

/// The engine and linker shared by every plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RequestState>,
    store: Arc<dyn crate::store::Store>,
    kv_limits: KvLimits,
    cursors: Arc<Cursors>,
    /// Every plugin's log buffer.
    logs: Arc<crate::plugin_logs::PluginLogs>,
    /// The engine's compatibility fingerprint, the key of stored artifacts.
    fingerprint: String,
    /// How plugins' code was obtained (compiled or loaded from an artifact).
    pub code_stats: artifacts::CodeStats,
    /// The pool slots idle reused instances may keep, shared by every plugin's pool.
    idle_budget: Arc<IdleBudget>,
    /// Resolver and TLS settings of plugins' outbound calls.
    outbound: Arc<outgoing_http::Sender>,
    /// Advances the epoch that interrupts running guests; stops with the runtime.
    _ticker: EpochTicker,
}

/// The header of a core module and of a component (magic + version/layer).
const CORE_MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";
const COMPONENT_MAGIC: [u8; 4] = *b"\0asm";

/// Refuses what is not WebAssembly, or is a core module rather than a component.
fn check_header(bytes: &[u8]) -> Result<(), CompileError> {
    if bytes.len() < 8 || bytes[..4] != COMPONENT_MAGIC {
        return Err(CompileError::NotWasm);
    }
    if bytes[..8] == CORE_MODULE_HEADER {
        return Err(CompileError::CoreModule);
    }
    Ok(())
}

impl Runtime {
    /// Builds the engine, its instance pool sized by `pool` (see `limits`), and the linker with
    /// everything a plugin may import. Plugins keep their key-value data in `store`, within
    /// `kv_limits`.
    pub fn new(
        store: Arc<dyn crate::store::Store>,
        kv_limits: KvLimits,
        pool: limits::PoolSize,
        logs: Arc<crate::plugin_logs::PluginLogs>,
        outbound: Arc<outgoing_http::Sender>,
    ) -> Result<Self, EngineError> {
        let engine =
            Engine::new(&limits::engine_config(pool)).map_err(|e| EngineError(format!("{e:#}")))?;
        let ticker = EpochTicker::start(&engine).map_err(|e| EngineError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        // All of WASI 0.2 is linked so standard components instantiate, but the context grants
        // nothing: no preopened directories, no env vars, no args, no sockets.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| {
                bindings::plinth::host::route::add_to_linker::<_, HasSelf<RouteCtx>>(
                    &mut linker,
                    |state: &mut RequestState| &mut state.route,
                )
            })
            .and_then(|()| {
                bindings::plinth::host::identity::add_to_linker::<_, HasSelf<IdentityCtx>>(
                    &mut linker,
                    |state: &mut RequestState| &mut state.identity,
                )
            })
            .and_then(|()| {
                bindings::plinth::host::log::add_to_linker::<_, HasSelf<log::LogCtx>>(
                    &mut linker,
                    |state: &mut RequestState| &mut state.log,
                )
            })
            .and_then(|()| {
                keyvalue::add_to_linker(&mut linker, |state: &mut RequestState| KeyValue {
                    ctx: &mut state.keyvalue,
                    table: &mut state.table,
                })
            })
            .and_then(|()| {
                wasmtime_wasi_config::add_to_linker(&mut linker, |state: &mut RequestState| {
                    WasiConfig::new(&state.config)
                })
            })
            .map_err(|e| EngineError(format!("{e:#}")))?;
        Ok(Self {
            fingerprint: artifacts::fingerprint(&engine),
            engine,
            linker,
            store,
            kv_limits,
            cursors: Arc::default(),
            logs,
            code_stats: artifacts::CodeStats::default(),
            idle_budget: Arc::new(IdleBudget::new(pool.idle as usize)),
            outbound,
            _ticker: ticker,
        })
    }

    /// An empty pool for a plugin version's idle instances, keeping at most `capacity` of them
    /// and drawing on the budget all pools share.
    pub fn instance_pool(&self, capacity: usize) -> InstancePool {
        InstancePool::new(capacity, self.idle_budget.clone())
    }

    /// Validates, compiles and links a component without storing its artifact. CPU-heavy and
    /// blocking: call it from `spawn_blocking`, never on an async worker.
    pub fn compile(&self, bytes: &[u8]) -> Result<PluginCode, CompileError> {
        let component = self.compile_component(bytes)?;
        self.link(&component)
    }

    /// Links a compiled component against the host and checks its export.
    fn link(&self, component: &Component) -> Result<PluginCode, CompileError> {
        let instance_pre = match self.linker.instantiate_pre(component) {
            Ok(pre) => pre,
            Err(first) => return Err(self.explain_link_failure(component, first)),
        };
        let pre = ProxyPre::new(instance_pre)
            .map_err(|e| CompileError::MissingExport(format!("{e:#}")))?;
        let imports = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        Ok(PluginCode { pre, imports })
    }

    /// Linking stops at the first unsatisfied import. To list every one, stub the failing import
    /// in a scratch linker and link again until it passes.
    fn explain_link_failure(&self, component: &Component, first: wasmtime::Error) -> CompileError {
        let ty = component.component_type();
        let names: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let mut scratch = self.linker.clone();
        scratch.allow_shadowing(true);
        let mut missing: Vec<String> = Vec::new();
        let mut error = first;
        for _ in 0..=names.len() {
            let message = format!("{error:#}");
            let Some(name) = names
                .iter()
                .find(|n| {
                    !missing.contains(n) && message.contains(&format!("imports {}", quoted(n)))
                })
                .or_else(|| {
                    names
                        .iter()
                        .find(|n| !missing.contains(n) && message.contains(&quoted(n)))
                })
            else {
                break;
            };
            missing.push(name.clone());
            if stub_import(&mut scratch, &self.engine, component, name).is_err() {
                break;
            }
            match scratch.instantiate_pre(component) {
                Ok(_) => break,
                Err(e) => error = e,
            }
        }
        if missing.is_empty() {
            CompileError::Invalid(format!("{error:#}"))
        } else {
            CompileError::UnsupportedImports(missing)
        }
    }

    /// Serves one request on an instance of `code` under `limits`: a fresh one, or with `reuse`
    /// an idle one from that pool (a fresh one when it is empty), which goes back to the pool
    /// if the request finishes cleanly. The guest runs in its own task so it can keep streaming
    /// the body after the response head has been returned; `hold` (e.g. concurrency permits)
    /// lives exactly as long as that task.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one part of a request; a struct would only rename them"
    )]
    pub async fn handle<B>(
        &self,
        code: &PluginCode,
        plugin: Arc<str>,
        context: RequestContext,
        request: http::Request<B>,
        limits: Limits,
        reuse: Option<Arc<InstancePool>>,
        hold: impl Send + 'static,
    ) -> Result<PluginResponse, HandleError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let (mut store, proxy) = match reuse.as_deref().and_then(InstancePool::take) {
            Some(idle) => {
                let mut store = idle.store;
                store.data_mut().next_request(context, &limits);
                (store, Some(idle.proxy))
            }
            None => {
                let memory_peak = context.memory_peak.clone();
                let mut state = self.request_state(plugin.clone(), context);
                state.limits = limits::MemoryWatch::new(&limits, memory_peak);
                state.table.set_max_capacity(limits::MAX_RESOURCE_HANDLES);
                let mut store = Store::new(&self.engine, state);
                store.limiter(|state| &mut state.limits);
                store.set_hostcall_fuel(limits::hostcall_fuel(self.kv_limits.max_value));
                // At each tick the guest yields through tokio's `yield_now`, which lets the
                // thread's runtime poll its sockets and timers before the guest runs again. A
                // plain yield would be rescheduled at once, and a current-thread runtime polls
                // its sockets only every 61 task runs: ~0.6 s for the other connections of a
                // serving thread while one guest spins.
                store.epoch_deadline_callback(|_| {
                    Ok(UpdateDeadline::YieldCustom(
                        1,
                        Box::pin(tokio::task::yield_now()),
                    ))
                });
                (store, None)
            }
        };
        // Yield to the async runtime at every epoch tick: a busy guest shares its thread, and
        // the deadline below can end it.
        store.set_epoch_deadline(1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = request.map(|body| {
            body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
        });
        let http = &mut store.data_mut().http();
        let incoming = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| HandleError::Instantiate(format!("{e:#}")))?;
        let outparam = http
            .new_response_outparam(sender)
            .map_err(|e| HandleError::Instantiate(format!("{e:#}")))?;
        let pre = code.pre.clone();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let task = tokio::spawn(async move {
            let _hold = hold;
            let run = async move {
                let proxy = match proxy {
                    Some(proxy) => proxy,
                    None => pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| HandleError::Instantiate(format!("{e:#}")))?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
                    .map_err(|e| trap_error(e, limits.memory))?;
                Ok(reuse::Idle { store, proxy })
            };
            // Past the deadline the future, and so the store, is dropped: the instance stops
            // at its next epoch tick and a response still streaming is cut off.
            match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(idle)) => {
                    // A clean finish: back to the pool when reuse is on, else the store, and
                    // with it the instance and its memory, is dropped here.
                    if let Some(pool) = reuse {
                        pool.put(idle);
                    }
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(HandleError::Timeout(limits.timeout)),
            }
        });
        match receiver.await {
            Ok(Ok(response)) => {
                Ok(response.map(|body| ResponseLimit::new(body, limits.max_response_body)))
            }
            Ok(Err(code)) => Err(HandleError::Trap(format!(
                "the plugin answered with an error: {code:?}"
            ))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(HandleError::NoResponse),
                Ok(Err(e)) => Err(e),
                Err(join) => Err(HandleError::Trap(join.to_string())),
            },
        }
    }

    fn request_state(&self, plugin: Arc<str>, context: RequestContext) -> RequestState {
        let log = log::LogCtx {
            plugin: plugin.clone(),
            request_id: Arc::new(std::sync::Mutex::new(context.request_id)),
            logs: self.logs.clone(),
        };
        let wasi = WasiCtx::builder()
            .stdout(PluginOutput::new(log.clone(), Stream::Stdout))
            .stderr(PluginOutput::new(log.clone(), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // WASI's own resource limits, off by default: a guest asking for a gigabyte of
            // random bytes gets an error, not a host allocation of that size.
            .max_random_size(limits::MAX_RANDOM_BYTES)
            .build();
        RequestState {
            limits: limits::MemoryWatch::new(&limits::DEFAULT_LIMITS, Arc::default()),
            wasi,
            http: http_ctx(),
            table: ResourceTable::new(),
            outbound: OutboundPolicy::new(plugin.clone(), context.outbound, self.outbound.clone()),
            route: context.route,
            identity: IdentityCtx {
                caller: context.caller,
            },
            log,
            keyvalue: KeyValueCtx {
                plugin,
                store: self.store.clone(),
                limits: self.kv_limits,
                cursors: self.cursors.clone(),
                budget: limits::MAX_REQUEST_KV_BYTES,
                running: context.running.clone(),
            },
            config: context.config,
        }
    }
}

/// Fresh `wasi:http` state, its header maps bounded.
fn http_ctx() -> WasiHttpCtx {
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(limits::MAX_FIELDS_BYTES);
    http
}

/// A guest failure, telling a memory limit apart from other traps.
fn trap_error(error: wasmtime::Error, memory_limit: u64) -> HandleError {
    if error
        .downcast_ref::<limits::MemoryLimitExceeded>()
        .is_some()
    {
        HandleError::MemoryLimit(memory_limit)
    } else {
        HandleError::Trap(format!("{error:#}"))
    }
}

fn quoted(name: &str) -> String {
    format!("`{name}`")
}

/// Defines every function of one import as a trap (and its resources as opaque host types), so
/// linking can continue past it. Only used to list unsupported imports; never instantiated.
fn stub_import(
    linker: &mut Linker<RequestState>,
    engine: &Engine,
    component: &Component,
    name: &str,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    let Some(import) = ty.get_import(engine, name) else {
        return Ok(());
    };
    match import.ty {
        ComponentItem::ComponentInstance(instance) => {
            let mut inst = linker.instance(name)?;
            for (export, item) in instance.exports(engine) {
                match item.ty {
                    ComponentItem::ComponentFunc(_) => {
                        inst.func_new(export, |_, _, _, _| wasmtime::bail!("unsupported import"))?;
                    }
                    ComponentItem::Resource(_) => {
                        inst.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?;
                    }
                    _ => {}
                }
            }
        }
        ComponentItem::ComponentFunc(_) => {
            linker
                .root()
                .func_new(name, |_, _, _, _| wasmtime::bail!("unsupported import"))?;
        }
        ComponentItem::Resource(_) => {
            linker
                .root()
                .resource(name, ResourceType::host::<()>(), |_, _| Ok(()))?;
        }
        _ => {}
    }
    Ok(())
}
