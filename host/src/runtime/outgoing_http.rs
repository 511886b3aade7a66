//! Policy for `wasi:http/outgoing-handler`: which outbound requests a plugin may make.
//!
//! Until manifests can name allowed origins, every outbound request is denied with the standard
//! `HTTP-request-denied` error, and the operator sees a log line naming the plugin and target.

use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound policy of one instance.
pub struct OutboundPolicy {
    plugin: Arc<str>,
}

impl OutboundPolicy {
    /// The policy for `plugin`: deny everything.
    pub fn deny_all(plugin: Arc<str>) -> Self {
        Self { plugin }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        tracing::warn!(
            plugin = &*self.plugin,
            uri = %request.uri(),
            "outbound request denied: this plugin may not reach any host"
        );
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
