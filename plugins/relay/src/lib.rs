//! Forwards submissions (a website form, an order) to a third-party API, the way a CRM sync
//! does, and records what happened.
//!
//! - `POST /relay/submissions` with a JSON body: forwarded as `POST {target_url}` with
//!   `Authorization: Bearer {api_key}` (both operator config; the key is a secret). A 5xx
//!   answer or a failed connection is retried up to 3 attempts with exponential backoff (250 ms,
//!   then 500 ms); a 4xx is final. Answers 202 with the outcome, or 502 when every attempt
//!   failed. Each outcome (id, attempts, final status or error) is kept.
//! - `GET /relay/outcomes?limit=&cursor=` (role `operator`): outcomes, oldest first.
//!
//! The third party must be in the manifest's `[outbound] allow`; nothing else is reachable.

use plinth_sdk::kv::Bucket;
use plinth_sdk::outbound::{self, OutgoingRequest};
use plinth_sdk::{Method, Plugin, Request, Response, Router, config};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

struct Relay;

impl Plugin for Relay {
    fn handle(request: Request) -> Response {
        Router::new()
            .post("/relay/submissions", |r| submit(&r).unwrap_or_else(|e| e))
            .get("/relay/outcomes", |r| outcomes(&r).unwrap_or_else(|e| e))
            .handle(request)
    }
}

const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Outcome {
    id: u64,
    delivered: bool,
    attempts: u32,
    /// The third party's last status, if it answered.
    status: Option<u16>,
    /// The last failure, if any.
    error: Option<String>,
}

fn required(key: &str) -> Result<String, Response> {
    config::get(key)
        .ok()
        .flatten()
        .ok_or_else(|| Response::error(503, "config_missing", &format!("{key} is not set")))
}

fn submit(request: &Request) -> Result<Response, Response> {
    let submission: Value = request.json()?;
    let target = required("target_url")?;
    let key = required("api_key")?;
    let bucket = Bucket::open("relay")?;
    let id = bucket.increment("seq", 1)?;
    let mut outcome = Outcome {
        id,
        delivered: false,
        attempts: 0,
        status: None,
        error: None,
    };
    let mut backoff = FIRST_BACKOFF;
    while outcome.attempts < ATTEMPTS {
        if outcome.attempts > 0 {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
        outcome.attempts += 1;
        let sent = outbound::send(
            OutgoingRequest::new(Method::Post, &target)
                .with_header("authorization", &format!("Bearer {key}"))
                .with_header("idempotency-key", &format!("relay-{id}"))
                .with_json(&submission)
                .with_timeout(ATTEMPT_TIMEOUT),
        );
        match sent {
            Ok(response) => {
                outcome.status = Some(response.status());
                outcome.error = None;
                if response.status() < 500 {
                    outcome.delivered = (200..300).contains(&response.status());
                    break;
                }
            }
            // A denied destination will not change on retry.
            Err(e) if e.code == "HttpRequestDenied" => {
                outcome.error = Some(e.to_string());
                break;
            }
            Err(e) => outcome.error = Some(e.to_string()),
        }
    }
    bucket.set(&format!("outcome/{id:020}"), &outcome)?;
    let status = if outcome.delivered { 202 } else { 502 };
    Ok(Response::json(&outcome).with_status(status))
}

fn query_param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn outcomes(request: &Request) -> Result<Response, Response> {
    let limit = query_param(request, "limit")
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(50)
        .clamp(1, 500);
    let bucket = Bucket::open("relay")?;
    let page = bucket.keys_page("outcome/", query_param(request, "cursor"), limit)?;
    let mut list = Vec::new();
    for key in &page.keys {
        if let Some(outcome) = bucket.get::<Outcome>(key)? {
            list.push(outcome);
        }
    }
    Ok(Response::json(&json!({ "outcomes": list, "cursor": page.cursor })))
}

plinth_sdk::export!(Relay);
