//! Receives webhooks the way payment gateways send them, and keeps each event exactly once.
//!
//! - `POST /webhooks/{source}` with a JSON event `{"id": "...", "type": "...", ...}` and the
//!   header `Webhook-Signature` (or `Stripe-Signature`): `t=UNIX_SECONDS,v1=HEX[,v1=HEX]`, where
//!   each `v1` is the hex HMAC-SHA256 of `"{t}.{raw body}"` keyed with the operator's secret
//!   `signing_secret` (the scheme Stripe documents). Accepted only if a signature matches and
//!   `t` is within `tolerance_seconds` (config, default 300) of now, so a captured request
//!   cannot be replayed later. The event is stored once: a redelivery with the same id answers
//!   200 `duplicate` and changes nothing (compare-and-swap on the id).
//! - `GET /webhooks/events?limit=N&cursor=C` (role `operator`): events in arrival order.
//! - `GET /webhooks/events/{id}` (role `operator`): one event.

use hmac::{Hmac, Mac};
use plinth_sdk::kv::Bucket;
use plinth_sdk::{Plugin, Request, Response, Router, config};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

struct Webhooks;

impl Plugin for Webhooks {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/webhooks/events", |r| list(&r).unwrap_or_else(|e| e))
            .get("/webhooks/events/{id}", |r| show(&r).unwrap_or_else(|e| e))
            .post("/webhooks/{source}", |r| receive(&r).unwrap_or_else(|e| e))
            .handle(request)
    }
}

const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

#[derive(Serialize, Deserialize)]
struct StoredEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    source: String,
    received_at: u64,
    payload: Value,
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unauthorized(code: &str, message: &str) -> Response {
    Response::error(401, code, message)
}

/// Checks `header` (`t=...,v1=...`) against the body; returns the timestamp.
fn verify(header: &str, body: &[u8], secret: &str, tolerance: u64) -> Result<u64, Response> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", sig)) => signatures.push(sig.to_string()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(unauthorized("invalid_signature", "the signature has no timestamp"));
    };
    let matched = signatures.iter().any(|sig| {
        let Ok(expected) = hex::decode(sig) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&expected).is_ok() // constant-time comparison
    });
    if !matched {
        return Err(unauthorized(
            "invalid_signature",
            "no signature matches the payload",
        ));
    }
    if now_seconds().abs_diff(timestamp) > tolerance {
        return Err(unauthorized(
            "stale_timestamp",
            "the signature's timestamp is outside the tolerance; a replay is refused",
        ));
    }
    Ok(timestamp)
}

fn receive(request: &Request) -> Result<Response, Response> {
    let source = request.param("source").unwrap_or_default().to_string();
    let Some(header) = request
        .header("webhook-signature")
        .or_else(|| request.header("stripe-signature"))
    else {
        return Err(unauthorized(
            "missing_signature",
            "send a Webhook-Signature header",
        ));
    };
    // The manifest requires the secret, so the host only routes here once it is set.
    let secret = config::get("signing_secret")
        .ok()
        .flatten()
        .ok_or_else(|| Response::error(503, "config_missing", "signing_secret is not set"))?;
    let tolerance = config::get("tolerance_seconds")
        .ok()
        .flatten()
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_TOLERANCE_SECONDS);
    verify(header, request.body(), &secret, tolerance)?;
    let payload: Value = request.json()?;
    let (Some(id), Some(kind)) = (payload["id"].as_str(), payload["type"].as_str()) else {
        return Err(Response::error(
            400,
            "invalid_event",
            "an event needs string fields `id` and `type`",
        ));
    };
    if id.is_empty() || id.len() > 200 {
        return Err(Response::error(400, "invalid_event", "`id` must be 1-200 characters"));
    }
    let event = StoredEvent {
        id: id.to_string(),
        kind: kind.to_string(),
        source,
        received_at: now_seconds(),
        payload: payload.clone(),
    };
    let bucket = Bucket::open("events")?;
    let bytes = serde_json::to_vec(&event)
        .map_err(|e| Response::error(500, "json", &e.to_string()))?;
    // Exactly once: only the first delivery of an id claims its key.
    if !bucket.compare_and_swap(&format!("event/{id}"), None, &bytes)? {
        return Ok(Response::json(&json!({ "status": "duplicate", "id": id })));
    }
    let seq = bucket.increment("seq", 1)?;
    bucket.set_bytes(&format!("order/{seq:020}"), id.as_bytes())?;
    Ok(Response::json(&json!({ "status": "stored", "id": id })))
}

fn query_param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn list(request: &Request) -> Result<Response, Response> {
    let limit = query_param(request, "limit")
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(50)
        .clamp(1, 500);
    let cursor = query_param(request, "cursor");
    let bucket = Bucket::open("events")?;
    let page = bucket.keys_page("order/", cursor, limit)?;
    let mut events = Vec::with_capacity(page.keys.len());
    for key in &page.keys {
        let Some(id) = bucket.get_bytes(key)? else {
            continue;
        };
        let id = String::from_utf8_lossy(&id);
        if let Some(event) = bucket.get::<StoredEvent>(&format!("event/{id}"))? {
            events.push(event);
        }
    }
    Ok(Response::json(&json!({ "events": events, "cursor": page.cursor })))
}

fn show(request: &Request) -> Result<Response, Response> {
    let id = request.param("id").unwrap_or_default();
    match Bucket::open("events")?.get::<StoredEvent>(&format!("event/{id}"))? {
        Some(event) => Ok(Response::json(&event)),
        None => Err(Response::error(404, "event_not_found", &format!("no event {id:?}"))),
    }
}

plinth_sdk::export!(Webhooks);
