//! Host bindings for the `plinth:host` interfaces and `wasi:keyvalue` (the `host-imports`
//! world). The other standard WASI interfaces come from `wasmtime-wasi`, `wasmtime-wasi-http` and
//! `wasmtime-wasi-config`, which ship their own bindings.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plinth:host/host-imports",
    imports: {
        // Writes wait for the group commit; a bad resource handle traps.
        "wasi:keyvalue/store": async | trappable,
        "wasi:keyvalue/atomics": async | trappable,
        "wasi:keyvalue/batch": async | trappable,
        "plinth:host/kv": async | trappable,
    },
    with: {
        "wasi:keyvalue/store.bucket": Bucket,
    },
});

/// The host side of a `wasi:keyvalue` bucket resource: the name the plugin passed to `open`
/// (every bucket is within the plugin's own data; see `runtime::keyvalue`).
#[expect(unreachable_pub, reason = "bindgen re-exports it with `pub use`")]
pub struct Bucket {
    pub(crate) name: String,
}
