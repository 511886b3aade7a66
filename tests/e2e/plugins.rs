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
