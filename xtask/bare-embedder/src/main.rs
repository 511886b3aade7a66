//! The bench's engine yardstick: a `wasi:http` component served with a fresh instance per
//! request and nothing else (no routing, auth, limits, logs or metrics), on the engine settings
//! that make instantiation cheap: the pooling allocator with linear memories and tables kept
//! resident and restored with `pagemap_scan`, the component-model async runtime off, one
//! current-thread tokio runtime. Plinth's row minus this one is what Plinth adds per request.
//!
//! Usage: `bare-embedder COMPONENT [ADDR]`; prints `listening on http://ADDR` and serves until
//! killed.

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of each memory and table slot kept between instances (Plinth keeps the same).
const KEEP_RESIDENT: usize = 1 << 20;

/// One request's store data: WASI with nothing granted, and wasi:http.
struct Request {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Request {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Request {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

fn engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .concurrency_support(false);
    Engine::new(&config)
}

type Response = hyper::Response<HyperOutgoingBody>;

/// A fresh instance answers `request`; the guest runs in its own task so the body can stream
/// after the head is returned, and the instance goes when that task ends.
async fn handle(
    pre: ProxyPre<Request>,
    request: hyper::Request<hyper::body::Incoming>,
) -> wasmtime::Result<Response> {
    let mut store = Store::new(
        pre.engine(),
        Request {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let guest = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
            .await
    });
    match receiver.await {
        Ok(response) => Ok(response?),
        Err(_) => match guest.await? {
            Ok(()) => Err(wasmtime::format_err!("the guest set no response")),
            Err(e) => Err(e),
        },
    }
}

fn main() -> wasmtime::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| wasmtime::format_err!("usage: bare-embedder COMPONENT [ADDR]"))?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let engine = engine()?;
    let component = Component::from_file(&engine, &path)?;
    let mut linker = Linker::<Request>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("listening on http://{}", listener.local_addr()?);
        loop {
            let (socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            let pre = pre.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let pre = pre.clone();
                    async move {
                        let response = handle(pre, request).await.unwrap_or_else(|e| {
                            eprintln!("error: {e:?}");
                            let mut failed = hyper::Response::new(HyperOutgoingBody::default());
                            *failed.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            failed
                        });
                        Ok::<_, Infallible>(response)
                    }
                });
                // A load generator drops connections mid-request when a run ends.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    })
}
