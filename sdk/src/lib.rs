//! Write Plinth plugins in plain Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export!`]. It receives a typed
//! [`Request`] (method, path, headers, body, the route the host matched and its path parameters)
//! and returns a [`Response`]. It keeps state in [`kv`] buckets, reads operator-set settings
//! with [`config`], calls third parties with [`outbound`], and writes to its [`log`]. No WASI
//! plumbing appears in plugin code.
//!
//! ```ignore
//! use plinth_sdk::{Plugin, Request, Response, Router};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn handle(request: Request) -> Response {
//!         Router::new()
//!             .get("/hello/{name}", |req| {
//!                 let name = req.param("name").unwrap_or("world");
//!                 Response::json(&serde_json::json!({ "message": format!("hello, {name}") }))
//!             })
//!             .handle(request)
//!     }
//! }
//!
//! plinth_sdk::export!(Hello);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` plus the plugin's
//! `plinth.toml` is what you deploy.
#![deny(missing_docs)]

pub mod config;
pub mod kv;
pub mod log;
pub mod outbound;
mod request;
mod response;
mod router;
mod wasi_http;

pub use request::{Method, Request, User};
pub use response::Response;
pub use router::Router;

/// The generated WIT bindings (wit-bindgen). Not part of the API: use the types above.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plinth:host/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plinth_world",
        default_bindings_module: "plinth_sdk::bindings",
        generate_all,
    });
}

/// What a plugin implements: one request in, one response out.
pub trait Plugin {
    /// Handles one request. Each request runs in a fresh instance, so nothing stored in
    /// globals survives to the next one: keep state in the host's storage.
    fn handle(request: Request) -> Response;
}

/// Support for [`export!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::wasi::http::incoming_handler::{
        Guest, IncomingRequest, ResponseOutparam,
    };

    /// Converts the wasi:http request, runs the plugin, and sends its response.
    pub fn serve<P: crate::Plugin>(incoming: IncomingRequest, out: ResponseOutparam) {
        let response = crate::wasi_http::serve(incoming, P::handle);
        crate::wasi_http::send_response(response, out);
    }
}

/// Exports a [`Plugin`] type as the component's `wasi:http/incoming-handler`.
///
/// Use it once per plugin crate, at the top level: `plinth_sdk::export!(MyPlugin);`
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __PlinthExport;

        impl $crate::__private::Guest for __PlinthExport {
            fn handle(
                request: $crate::__private::IncomingRequest,
                out: $crate::__private::ResponseOutparam,
            ) {
                $crate::__private::serve::<$plugin>(request, out)
            }
        }

        $crate::bindings::__export_plinth_world!(__PlinthExport);
    };
}
