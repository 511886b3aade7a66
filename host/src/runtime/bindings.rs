//! Host bindings for the `plinth:host` interfaces (the `host-imports` world). The standard WASI
//! interfaces come from `wasmtime-wasi` and `wasmtime-wasi-http`, which ship their own bindings.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plinth:host/host-imports",
});
