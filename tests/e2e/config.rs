//! Operator-set config and secrets: required keys gate a plugin's routes, values reach the
//! plugin through `wasi:config` on the next request, and secrets never come back out.

use crate::harness::{Guest, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "sk_live_e2e_7f3a9c2d1b";

#[tokio::test]
async fn required_config_gates_routes_and_changes_apply_without_redeploy() {
    let server = Server::start();
    // Config may be set before the plugin exists (secrets first, then deploy).
    let reply = server
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config",
            json!({ "greeting": "hello" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let deployed = server.deploy_guest(Guest::ConfigReader).await;
    assert_eq!(deployed["missing_config"], json!(["api_token"]));
    let reply = server.get("/config-reader/greeting").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "config_missing");
    assert_eq!(
        reply.json()["error"]["details"]["missing"],
        json!(["api_token"])
    );

    let reply = server
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config/api_token",
            json!({ "value": SECRET, "secret": true }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        !reply.text().contains(SECRET),
        "a secret came back: {}",
        reply.text()
    );

    // The very next request sees both values; no redeploy.
    assert_eq!(server.get("/config-reader/greeting").await.text(), "hello");
    assert_eq!(server.get("/config-reader/api_token").await.text(), SECRET);
    let all = server.get("/config-reader").await.json();
    assert_eq!(all, json!({ "api_token": SECRET, "greeting": "hello" }));

    // Operators see the secret masked, the plain value in clear.
    let view = server
        .admin(Method::GET, "/admin/plugins/config-reader/config")
        .await;
    assert_eq!(view.status, StatusCode::OK);
    assert!(!view.text().contains(SECRET), "{}", view.text());
    let view = view.json();
    assert_eq!(view["missing"], json!([]));
    let entries = view["config"].as_array().unwrap();
    let token = entries.iter().find(|e| e["key"] == "api_token").unwrap();
    assert_eq!(token["secret"], true);
    assert_eq!(token["value"], "********");
    let greeting = entries.iter().find(|e| e["key"] == "greeting").unwrap();
    assert_eq!(greeting["value"], "hello");

    // A changed value applies at once; removing a required key closes the routes again.
    server
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config",
            json!({ "greeting": "bonjour" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(
        server.get("/config-reader/greeting").await.text(),
        "bonjour"
    );
    let reply = server
        .admin(
            Method::DELETE,
            "/admin/plugins/config-reader/config/greeting",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/config-reader/x").await.code(),
        "config_missing"
    );
    let reply = server
        .admin(
            Method::DELETE,
            "/admin/plugins/config-reader/config/greeting",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "config_key_not_found");

    // Config survives a restart; the secret is in no log line.
    let server = server.restart();
    assert_eq!(
        server.get("/config-reader/api_token").await.code(),
        "config_missing"
    );
    server
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config",
            json!({ "greeting": "hi" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(server.get("/config-reader/api_token").await.text(), SECRET);
    let logs = server.logs().join("\n");
    assert!(logs.contains("plugin config changed"), "{logs}");
    assert!(
        !logs.contains(SECRET),
        "the secret reached the log:\n{logs}"
    );
}

#[tokio::test]
async fn bad_config_requests_are_refused_clearly() {
    let server = Server::start();
    let put = |path: &'static str, body: serde_json::Value| {
        let server = &server;
        async move {
            server
                .send_json(Method::PUT, path, body, Some(crate::harness::TOKEN))
                .await
        }
    };
    let reply = put(
        "/admin/plugins/config-reader/config",
        json!({ "bad key": "x" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_config");
    let reply = put("/admin/plugins/Not_A_Name/config", json!({ "k": "x" })).await;
    assert_eq!(reply.code(), "invalid_config");
    let reply = put("/admin/plugins/config-reader/config", json!({})).await;
    assert_eq!(reply.code(), "invalid_body");
    let reply = put(
        "/admin/plugins/config-reader/config",
        json!({ "k": "x".repeat(64 * 1024 + 1) }),
    )
    .await;
    assert_eq!(reply.code(), "invalid_config");
    let reply = put("/admin/plugins/config-reader/config", json!({ "k": 5 })).await;
    assert_eq!(reply.code(), "invalid_body");
    // Nothing was stored by any of them.
    let view = server
        .admin(Method::GET, "/admin/plugins/config-reader/config")
        .await
        .json();
    assert_eq!(view["config"], json!([]));
    // Without credentials: 401.
    let reply = server
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config",
            json!({ "k": "x" }),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_value_declared_secret_stays_masked_after_the_declaration_goes() {
    let server = Server::start();
    server.deploy_guest(Guest::ConfigReader).await;
    let set_plain = |value: &'static str| {
        server.send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config",
            json!({ "greeting": "hi", "api_token": value }),
            Some(crate::harness::TOKEN),
        )
    };
    // Set without `secret`: the manifest's declaration masks it.
    assert_eq!(set_plain(SECRET).await.status, StatusCode::OK);
    let masked = || async {
        let view = server
            .admin(Method::GET, "/admin/plugins/config-reader/config")
            .await;
        assert_eq!(view.status, StatusCode::OK);
        assert!(!view.text().contains(SECRET), "{}", view.text());
    };
    masked().await;
    // A redeploy whose manifest no longer declares it secret...
    let manifest = Guest::ConfigReader
        .manifest()
        .replace(
            "secrets = [\"api_token\"]",
            "keys = [\"greeting\", \"api_token\"]",
        )
        .replace("keys = [\"greeting\"]\n", "");
    let reply = server
        .deploy("config-reader", &manifest, &Guest::ConfigReader.component())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    masked().await;
    // ...a plain write over it...
    assert_eq!(set_plain(SECRET).await.status, StatusCode::OK);
    masked().await;
    // ...and a delete of the plugin (its config stays) leave the value masked.
    let deleted = server
        .admin(Method::DELETE, "/admin/plugins/config-reader")
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.text());
    masked().await;
    // The plugin itself still reads the value.
    let reply = server
        .deploy("config-reader", &manifest, &Guest::ConfigReader.component())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    assert_eq!(server.get("/config-reader/api_token").await.text(), SECRET);
}
