//! Named counters: `POST /counters/{name}?by=N` adds N (default 1) atomically and answers the
//! new value, `GET /counters/{name}` reads one, `GET /counters` lists them all.
//!
//! Teaches: the plugin's key-value store, atomic `increment` (no lost updates however many
//! requests race), reading a counter back as JSON, and listing keys by prefix.
//! Build with `cargo xtask build-guests`; deploy `target/guests/counter.wasm` with `plinth.toml`.

use plinth_sdk::kv::Bucket;
use plinth_sdk::{Plugin, Request, Response, Router};
use serde_json::json;

struct Counter;

impl Plugin for Counter {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/counters", list)
            .get("/counters/{name}", read)
            .post("/counters/{name}", add)
            .handle(request)
    }
}

/// Counters live under `counter/NAME` in the `default` bucket.
fn key(name: &str) -> String {
    format!("counter/{name}")
}

fn add(request: Request) -> Response {
    let name = request.param("name").unwrap_or_default();
    let by = match query_param(&request, "by").map(str::parse::<u64>) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Response::error(400, "invalid_by", "`by` must be a whole number"),
    };
    let result = Bucket::open("default").and_then(|b| b.increment(&key(name), by));
    match result {
        Ok(value) => Response::json(&json!({ "name": name, "value": value })),
        Err(e) => e.into(),
    }
}

fn read(request: Request) -> Response {
    let name = request.param("name").unwrap_or_default();
    // An increment stores the count as a decimal number, so it reads back as JSON.
    let result = Bucket::open("default").and_then(|b| b.get::<u64>(&key(name)));
    match result {
        Ok(value) => Response::json(&json!({ "name": name, "value": value.unwrap_or(0) })),
        Err(e) => e.into(),
    }
}

fn list(_: Request) -> Response {
    let listed = || -> Result<Vec<serde_json::Value>, plinth_sdk::kv::Error> {
        let bucket = Bucket::open("default")?;
        let mut counters = Vec::new();
        for stored in bucket.keys("counter/") {
            let stored = stored?;
            let value = bucket.get::<u64>(&stored)?.unwrap_or(0);
            let name = stored.trim_start_matches("counter/");
            counters.push(json!({ "name": name, "value": value }));
        }
        Ok(counters)
    };
    match listed() {
        Ok(counters) => Response::json(&json!({ "counters": counters })),
        Err(e) => e.into(),
    }
}

fn query_param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

plinth_sdk::export!(Counter);
