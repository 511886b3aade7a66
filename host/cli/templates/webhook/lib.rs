//! __NAME__: receives signed webhooks and keeps each event once.
//!
//! `POST /__NAME__/webhook` with a JSON event `{"id": "...", ...}` and the header
//! `Webhook-Signature: <hex HMAC-SHA256 of the raw body, keyed with the secret signing_secret>`.
//! A bad signature gets 401; a redelivered id gets 200 `duplicate` and changes nothing.
//! `GET /__NAME__/events/{id}` (role `operator`) shows a stored event.
//! Set the secret with `plinth config set __NAME__ signing_secret VALUE --secret`.

use hmac::{Hmac, Mac};
use plinth_sdk::kv::Bucket;
use plinth_sdk::{Plugin, Request, Response, Router, config, log};
use serde_json::{Value, json};
use sha2::Sha256;

struct App;

impl Plugin for App {
    fn handle(request: Request) -> Response {
        Router::new()
            .post("/__NAME__/webhook", receive)
            .get("/__NAME__/events/{id}", show)
            .handle(request)
    }
}

fn signature_ok(request: &Request) -> bool {
    let Ok(Some(secret)) = config::get("signing_secret") else {
        return false;
    };
    let Some(given) = request
        .header("webhook-signature")
        .and_then(|hex| hex::decode(hex.trim()).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(request.body());
    // verify_slice compares in constant time.
    mac.verify_slice(&given).is_ok()
}

fn receive(request: Request) -> Response {
    if !signature_ok(&request) {
        return Response::error(401, "bad_signature", "the Webhook-Signature does not match");
    }
    let event: Value = match request.json() {
        Ok(event) => event,
        Err(error) => return error,
    };
    let Some(id) = event["id"].as_str() else {
        return Response::error(400, "missing_id", "the event needs a string `id`");
    };
    let stored = Bucket::open("events").and_then(|bucket| {
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        // Claims the id only if it is new: a redelivery changes nothing.
        bucket.compare_and_swap(&format!("event/{id}"), None, &bytes)
    });
    match stored {
        Ok(true) => {
            log::info(format!("stored event {id}"));
            Response::json(&json!({ "status": "stored", "id": id }))
        }
        Ok(false) => Response::json(&json!({ "status": "duplicate", "id": id })),
        Err(e) => e.into(),
    }
}

fn show(request: Request) -> Response {
    let id = request.param("id").unwrap_or_default();
    match Bucket::open("events").and_then(|b| b.get::<Value>(&format!("event/{id}"))) {
        Ok(Some(event)) => Response::json(&event),
        Ok(None) => Response::error(404, "not_found", "no such event"),
        Err(e) => e.into(),
    }
}

plinth_sdk::export!(App);
