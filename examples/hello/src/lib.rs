//! `GET /hello/{name}` → `{"message": "hello, NAME"}`.
//!
//! Teaches: implementing `Plugin`, reading a path parameter, answering with JSON.
//! Build with `cargo xtask build-guests`; deploy `target/guests/hello.wasm` with `plinth.toml`.

use plinth_sdk::{Plugin, Request, Response, Router};

struct Hello;

impl Plugin for Hello {
    fn handle(request: Request) -> Response {
        Router::new().get("/hello/{name}", greet).handle(request)
    }
}

fn greet(request: Request) -> Response {
    let name = request.param("name").unwrap_or("world");
    Response::json(&serde_json::json!({ "message": format!("hello, {name}") }))
}

plinth_sdk::export!(Hello);
