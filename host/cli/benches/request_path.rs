//! What each stage of a plugin request costs, in process, one stage at a time: route lookup,
//! the auth check of a public and of a JWT-guarded route, the metrics and the access line every
//! request records, and the wasm part (a fresh instance: create, handle, drop; and a reused one).
//! The HTTP rows of `cargo xtask bench` show the whole request; this table splits it.
//!
//! Run by `cargo xtask bench` (`cargo bench -p plinth --bench request_path`), on the components
//! in `PLINTH_GUEST_DIR` (default `target/guests`, built by `cargo xtask build-guests`).
//! `--quick` measures for less time (CI's smoke run); a word that is not a flag keeps only the
//! stages whose name contains it (e.g. `fresh`, to profile one stage). Figures are nanoseconds per operation on
//! one thread: the median of several batches.

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use plinth_host::auth::{Auth, AuthPolicy};
use plinth_host::metrics::Metrics;
use plinth_host::plugin_logs::{Access, Level, PluginLogs, Source};
use plinth_host::router::{Lookup, RouteTable};
use plinth_host::runtime::route::RouteCtx;
use plinth_host::runtime::{InstancePool, PluginCode, RequestContext, Runtime};
use plinth_host::settings::Settings;
use plinth_host::store::{Durability, SledStore, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator of the `plinth` binary, so the figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The benchmark account's password.
const PASSWORD: &str = "a bench password, long enough";

/// Batches per stage; the median is reported.
const BATCHES: usize = 5;

/// Nanoseconds per call, the median of [`BATCHES`] batches of `per_batch` calls, after a
/// tenth of a batch to warm up; `batch(n)` makes `n` calls.
fn time_batches(per_batch: u32, mut batch: impl FnMut(u32) -> Result<()>) -> Result<f64> {
    batch(per_batch / 10)?;
    let mut batches = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let started = Instant::now();
        batch(per_batch)?;
        batches.push(started.elapsed().as_nanos() as f64 / f64::from(per_batch));
    }
    batches.sort_by(f64::total_cmp);
    Ok(batches[BATCHES / 2])
}

/// [`time_batches`] of a synchronous `op`.
fn time_sync(per_batch: u32, mut op: impl FnMut()) -> Result<f64> {
    time_batches(per_batch, |n| {
        (0..n).for_each(|_| op());
        Ok(())
    })
}

/// [`time_batches`] of an async `op`, awaited on the current-thread runtime `rt`.
fn time_async<F: std::future::Future<Output = Result<()>>>(
    rt: &tokio::runtime::Runtime,
    per_batch: u32,
    mut op: impl FnMut() -> F,
) -> Result<f64> {
    time_batches(per_batch, |n| {
        rt.block_on(async {
            for _ in 0..n {
                op().await?;
            }
            Ok(())
        })
    })
}

/// One request to the hello plugin through `Runtime::handle`, its body read to the end.
async fn serve_hello(
    runtime: &Runtime,
    code: &PluginCode,
    limits: plinth_host::runtime::limits::Limits,
    reuse: Option<Arc<InstancePool>>,
) -> Result<()> {
    // The headers every request reaches a plugin with: the client's Host and the request id
    // the front door adds.
    let request = http::Request::get("http://localhost/hello/bench")
        .header(http::header::HOST, "localhost")
        .header("x-request-id", "5f0c9a7e2b1d4c3a8e6f0b9d2c4a1e7f")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let context = RequestContext {
        route: RouteCtx {
            pattern: "/hello/{name}".into(),
            params: vec![("name".into(), "bench".into())],
        },
        ..RequestContext::default()
    };
    let response = runtime
        .handle(
            code,
            Arc::from("hello"),
            context,
            request,
            limits,
            reuse,
            (),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_bytes();
    anyhow::ensure!(
        body.as_ref() == br#"{"message":"hello, bench"}"#,
        "unexpected body {body:?}"
    );
    Ok(())
}

/// One request to a plain `wasi:http` component through `Runtime::handle`, its body read.
async fn serve_plain(
    runtime: &Runtime,
    code: &PluginCode,
    limits: plinth_host::runtime::limits::Limits,
) -> Result<()> {
    let request = http::Request::get("http://localhost/plain/bench")
        .header(http::header::HOST, "localhost")
        .header("x-request-id", "5f0c9a7e2b1d4c3a8e6f0b9d2c4a1e7f")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = runtime
        .handle(
            code,
            Arc::from("plain"),
            RequestContext::default(),
            request,
            limits,
            None,
            (),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = response.into_body().collect().await;
    anyhow::ensure!(body.is_ok(), "the plain component's body failed");
    Ok(())
}

/// The engine alone: the same component on an engine configured as Plinth's, in a store
/// holding only WASI and wasi:http (no limiter, fuel, deadline timer, log or host interfaces),
/// the guest run in its own task as `Runtime::handle` does. The difference between this stage
/// and the one through `Runtime::handle` is what Plinth's per-request setup costs in process.
mod bare {
    use anyhow::Result;
    use http_body_util::BodyExt;
    use wasmtime::component::{Component, Linker, ResourceTable};
    use wasmtime::{Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
    use wasmtime_wasi_http::p2::bindings::ProxyPre;
    use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
    use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

    pub(crate) struct State {
        wasi: WasiCtx,
        http: WasiHttpCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    impl WasiHttpView for State {
        fn http(&mut self) -> WasiHttpCtxView<'_> {
            WasiHttpCtxView {
                ctx: &mut self.http,
                table: &mut self.table,
                hooks: Default::default(),
            }
        }
    }

    /// The component pre-linked for WASI and wasi:http only.
    pub(crate) fn prepare(engine: &Engine, bytes: &[u8]) -> Result<ProxyPre<State>> {
        let component =
            Component::from_binary(engine, bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut linker = Linker::<State>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ProxyPre::new(pre).map_err(|e| anyhow::anyhow!("{e:?}"))
    }

    /// One request on a fresh instance, its body read.
    pub(crate) async fn serve(pre: &ProxyPre<State>) -> Result<()> {
        let mut store = Store::new(
            pre.engine(),
            State {
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        // The engine interrupts at epochs (Plinth's ticker advances them); this store has no
        // deadline to meet.
        store.set_epoch_deadline(u64::MAX / 2);
        let request = http::Request::get("http://localhost/plain/bench")
            .header(http::header::HOST, "localhost")
            .body(
                http_body_util::Empty::<bytes::Bytes>::new()
                    .map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
            )?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let pre = pre.clone();
        let guest = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        });
        let response = receiver.await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let body = response.into_body().collect().await;
        anyhow::ensure!(body.is_ok(), "the bare instance's body failed");
        guest.await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }
}

fn guest_dir() -> PathBuf {
    std::env::var_os("PLINTH_GUEST_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guests"),
        PathBuf::from,
    )
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    // Calls per batch for the cheap stages and for the wasm ones.
    let (cheap, wasm) = if quick {
        (2_000, 200)
    } else {
        (200_000, 5_000)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let data = tempdir()?;
    let raw = Settings {
        data_dir: Some(data.0.clone()),
        admin_email: Some("bench@example.com".into()),
        admin_password: Some(PASSWORD.into()),
        ..Settings::default()
    };
    let config = raw.resolve()?;
    let store: Arc<dyn Store> =
        Arc::new(rt.block_on(SledStore::open(&data.0, Durability::Durable))?);
    let auth = rt
        .block_on(Auth::bootstrap(store.clone(), config.auth.clone()))?
        .auth;
    let session = rt.block_on(auth.login("bench@example.com", PASSWORD.into()))?;
    let bearer = format!("Bearer {}", session.access_token);

    let mut routes = RouteTable::default();
    routes.add("hello", "/hello/{name}", [(http::Method::GET, ())])?;
    let get = http::Method::GET;
    let metrics = Metrics::new();
    // Found once per route, as dispatch does at a route's first request.
    let route_metrics = metrics.route("hello", "/hello/{name}");
    let logs = Arc::new(PluginLogs::new(config.log_buffer_lines));
    let runtime = Runtime::new(
        store.clone(),
        config.kv_limits,
        config.limits.pool_size(),
        logs.clone(),
        Arc::new(plinth_host::runtime::outgoing_http::Sender::new(None)?),
    )?;
    let wasm_path = guest_dir().join("hello.wasm");
    let component = std::fs::read(&wasm_path).with_context(|| {
        format!(
            "reading {} (run cargo xtask build-guests)",
            wasm_path.display()
        )
    })?;
    let code = runtime.compile(&component)?;
    let plain_bytes = std::fs::read(guest_dir().join("plain_http.wasm"))
        .context("reading plain_http.wasm (run cargo xtask build-guests)")?;
    let plain = runtime.compile(&plain_bytes)?;
    let bare_engine = wasmtime::Engine::new(&plinth_host::runtime::limits::engine_config(
        config.limits.pool_size(),
    ))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let bare_plain = bare::prepare(&bare_engine, &plain_bytes)?;
    let limits = config.limits.defaults;
    let pool = Arc::new(runtime.instance_pool(1));

    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let mut rows: Vec<(&str, f64)> = Vec::new();
    // Runs a stage unless a filter word leaves it out.
    macro_rules! stage {
        ($name:expr, $time:expr $(,)?) => {
            let name: &str = $name;
            if only.as_deref().is_none_or(|word| name.contains(word)) {
                rows.push((name, $time));
            }
        };
    }
    stage!(
        "route lookup (`RouteTable::lookup`, one path parameter)",
        time_sync(cheap, || {
            let found = routes.lookup(&get, "/hello/bench");
            assert!(matches!(found, Lookup::Found { .. }));
        })?,
    );
    stage!(
        "auth check, public route without a credential",
        time_async(&rt, cheap, || async {
            assert!(matches!(
                auth.authorize(&AuthPolicy::Public, None).await,
                Ok(None)
            ));
            Ok(())
        })?,
    );
    stage!(
        "auth check, user route with a JWT (remembered token, account read from the store)",
        time_async(&rt, cheap, || async {
            assert!(matches!(
                auth.authorize(&AuthPolicy::User, Some(&bearer)).await,
                Ok(Some(_))
            ));
            Ok(())
        })?,
    );
    stage!(
        "metrics (request counter + latency histogram)",
        time_sync(cheap, || {
            route_metrics.record(200, Duration::from_micros(30));
        })?,
    );
    stage!(
        "access line into the plugin's log",
        time_sync(cheap, || {
            let access = Access {
                method: http::Method::GET,
                path: "/hello/bench".into(),
                status: 200,
                elapsed: Duration::from_micros(30),
                route: "/hello/{name}".into(),
                user: None,
            };
            logs.push(
                "hello",
                Source::Access,
                Level::Info,
                access,
                Some("0123456789abcdef"),
            );
        })?,
    );
    stage!(
        "hello, fresh instance (create, handle, read the body, drop)",
        time_async(&rt, wasm, || serve_hello(&runtime, &code, limits, None))?,
    );
    stage!(
        "plain wasi:http, fresh instance through Runtime::handle",
        time_async(&rt, wasm, || serve_plain(&runtime, &plain, limits))?,
    );
    stage!(
        "plain wasi:http, fresh instance on the bare engine (WASI and wasi:http only)",
        time_async(&rt, wasm, || bare::serve(&bare_plain))?,
    );
    let reuse = plinth_host::runtime::limits::Limits {
        instance_reuse: plinth_host::runtime::limits::InstanceReuse::Public,
        ..limits
    };
    stage!(
        "hello, reused instance (handle, read the body)",
        time_async(&rt, wasm, || {
            serve_hello(&runtime, &code, reuse, Some(pool.clone()))
        })?,
    );

    println!("| stage (in process, one thread) | ns per request |");
    println!("| --- | ---: |");
    for (stage, ns) in rows {
        println!("| {stage} | {ns:.0} |");
    }
    if quick {
        println!("\n(--quick: a smoke run; these figures say little about speed)");
    }
    Ok(())
}

/// A scratch data directory, removed on drop.
struct TempDir(PathBuf);

fn tempdir() -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("plinth-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
