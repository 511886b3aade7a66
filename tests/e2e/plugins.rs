//! The first-party plugins in `plugins/`, end to end.

use crate::harness::{Guest, Server, TOKEN};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "whsec_e2e_0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `t=...,v1=...` over `body` at time `t` with `secret`.
fn signature(t: u64, body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(server: &Server, body: &[u8], signature: Option<String>) -> crate::harness::Reply {
    let mut request = server
        .client()
        .post(format!("{}/webhooks/payments", server.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("webhook-signature", signature);
    }
    crate::harness::Reply::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn webhooks_are_verified_stored_once_and_listed() {
    let server = Server::start();
    server.deploy_guest(Guest::Webhooks).await;
    let event =
        json!({ "id": "evt_1", "type": "payment_intent.succeeded", "data": { "amount": 4200 } });
    let body = serde_json::to_vec(&event).unwrap();
    // Until the operator sets the secret, nothing is accepted.
    let reply = deliver(&server, &body, Some(signature(now(), &body, SECRET))).await;
    assert_eq!(reply.code(), "config_missing");
    server
        .send_json(
            Method::PUT,
            "/admin/plugins/webhooks/config",
            json!({ "signing_secret": { "value": SECRET, "secret": true } }),
            Some(TOKEN),
        )
        .await;

    let reply = deliver(&server, &body, Some(signature(now(), &body, SECRET))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["status"], "stored");
    // The gateway retries: same event, stored once.
    let reply = deliver(&server, &body, Some(signature(now(), &body, SECRET))).await;
    assert_eq!(reply.json()["status"], "duplicate");

    // Forgeries and replays.
    let other = json!({ "id": "evt_2", "type": "charge.refunded" });
    let other_body = serde_json::to_vec(&other).unwrap();
    for (why, sig, code) in [
        ("no signature", None, "missing_signature"),
        (
            "wrong secret",
            Some(signature(now(), &other_body, "whsec_wrong")),
            "invalid_signature",
        ),
        (
            "signed another body",
            Some(signature(now(), &body, SECRET)),
            "invalid_signature",
        ),
        (
            "an old capture",
            Some(signature(now() - 3600, &other_body, SECRET)),
            "stale_timestamp",
        ),
        ("garbage", Some("v1=zz".to_string()), "invalid_signature"),
    ] {
        let reply = deliver(&server, &other_body, sig).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(reply.code(), code, "{why}");
    }
    let reply = deliver(
        &server,
        &other_body,
        Some(signature(now(), &other_body, SECRET)),
    )
    .await;
    assert_eq!(reply.json()["status"], "stored");

    // Operators read them in arrival order; anonymous callers cannot.
    let listed = server.get_as("/webhooks/events", TOKEN).await.json();
    let ids: Vec<_> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["evt_1", "evt_2"]);
    assert_eq!(listed["events"][0]["payload"]["data"]["amount"], 4200);
    assert_eq!(listed["events"][0]["source"], "payments");
    let one = server.get_as("/webhooks/events/evt_2", TOKEN).await.json();
    assert_eq!(one["type"], "charge.refunded");
    assert_eq!(
        server.get("/webhooks/events").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get_as("/webhooks/events/evt_9", TOKEN).await.status,
        StatusCode::NOT_FOUND
    );
}

/// What a fake CRM received: (authorization, idempotency key, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>;

/// A fake CRM on 127.0.0.1 answering `statuses` in turn (the last one from then on).
async fn fake_crm(statuses: Vec<u16>) -> (u16, Received) {
    use axum::extract::State;
    use axum::http::HeaderMap;
    let received: Received = Default::default();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = (received.clone(), calls, statuses);
    let app = axum::Router::new()
        .route(
            "/leads",
            axum::routing::post(
                |State((received, calls, statuses)): State<(
                    Received,
                    std::sync::Arc<std::sync::atomic::AtomicUsize>,
                    Vec<u16>,
                )>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    received.lock().unwrap().push((
                        header("authorization"),
                        header("idempotency-key"),
                        serde_json::from_slice(&body).unwrap_or_default(),
                    ));
                    let status = statuses[n.min(statuses.len() - 1)];
                    StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

#[tokio::test]
async fn the_relay_forwards_with_the_secret_key_and_retries_server_errors() {
    let (flaky, flaky_seen) = fake_crm(vec![503, 200]).await;
    let (down, down_seen) = fake_crm(vec![500]).await;
    let (picky, _) = fake_crm(vec![422]).await;
    let server = Server::start();
    let allow = format!(
        "allow = [\"http://127.0.0.1:{flaky}\", \"http://127.0.0.1:{down}\", \"http://127.0.0.1:{picky}\"]"
    );
    let manifest = Guest::Relay
        .manifest()
        .replace("allow = [\"https://api.crm.example\"]", &allow);
    let reply = server
        .deploy("relay", &manifest, &Guest::Relay.component())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let set_target = |port: u16| {
        let server = &server;
        async move {
            let reply = server
                .send_json(
                    Method::PUT,
                    "/admin/plugins/relay/config",
                    json!({
                        "target_url": format!("http://127.0.0.1:{port}/leads"),
                        "api_key": { "value": "crm_key_123", "secret": true },
                    }),
                    Some(TOKEN),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK);
        }
    };
    let lead = json!({ "email": "ann@example.com", "message": "call me" });

    // A 503 first, then 200: delivered on the second attempt, with the key and the same
    // idempotency key both times.
    set_target(flaky).await;
    let reply = server
        .post_json("/relay/submissions", lead.clone(), None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let outcome = reply.json();
    assert_eq!(
        (outcome["delivered"].as_bool(), outcome["attempts"].as_u64()),
        (Some(true), Some(2))
    );
    let seen = flaky_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (auth, idempotency, body) in &seen {
        assert_eq!(auth, "Bearer crm_key_123");
        assert_eq!(idempotency, "relay-1");
        assert_eq!(body, &lead);
    }

    // Always 500: three attempts, then 502 and a recorded failure.
    set_target(down).await;
    let started = std::time::Instant::now();
    let reply = server
        .post_json("/relay/submissions", lead.clone(), None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["attempts"], 3);
    assert_eq!(down_seen.lock().unwrap().len(), 3);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(700),
        "backoff was skipped"
    );

    // A 4xx is final.
    set_target(picky).await;
    let reply = server
        .post_json("/relay/submissions", lead.clone(), None)
        .await;
    assert_eq!(reply.json()["attempts"], 1);
    assert_eq!(reply.json()["status"], 422);

    // A target outside the allow list is denied, not retried.
    let (elsewhere, elsewhere_seen) = fake_crm(vec![200]).await;
    set_target(elsewhere).await;
    let reply = server.post_json("/relay/submissions", lead, None).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["attempts"], 1);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("HttpRequestDenied")
    );
    assert!(elsewhere_seen.lock().unwrap().is_empty());

    let outcomes = server.get_as("/relay/outcomes", TOKEN).await.json();
    let delivered: Vec<_> = outcomes["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["delivered"].as_bool().unwrap())
        .collect();
    assert_eq!(delivered, [true, false, false, false]);
    assert_eq!(
        server.get("/relay/outcomes").await.status,
        StatusCode::UNAUTHORIZED
    );
}
