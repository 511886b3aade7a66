//! Operators' daily work over HTTP: versions and rollback, the audit log, plugin logs (paged
//! and followed), `/metrics`, `/readyz` details, and restarts that load compiled artifacts.

use crate::harness::{Guest, Options, Reply, Server, TOKEN, TempDir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The hello manifest with an extra comment: the same component, a different version.
fn hello_manifest(revision: u32) -> String {
    format!("# revision {revision}\n{}", Guest::Hello.manifest())
}

async fn rollback(server: &Server, plugin: &str, body: Option<Value>) -> Reply {
    let path = format!("/admin/plugins/{plugin}/rollback");
    match body {
        Some(body) => {
            server
                .send_json(Method::POST, &path, body, Some(TOKEN))
                .await
        }
        None => server.admin(Method::POST, &path).await,
    }
}

fn versions(reply: &Reply) -> Vec<(u64, bool)> {
    reply.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn deploys_are_numbered_versions_that_roll_back_and_identical_ones_are_no_ops() {
    let server = Server::start();
    let hello = Guest::Hello.component();
    let first = server.deploy("hello", &hello_manifest(1), &hello).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json()["version"], 1);
    assert_eq!(first.json()["deployed_by"], "admin-token");
    let second = server.deploy("hello", &hello_manifest(2), &hello).await;
    assert_eq!(second.json()["version"], 2);
    assert!(second.json().get("unchanged").is_none());

    // The same bytes and manifest again: nothing changes, and the answer says so.
    let again = server.deploy("hello", &hello_manifest(2), &hello).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["unchanged"], true);
    assert_eq!(again.json()["version"], 2);

    let listed = server
        .admin(Method::GET, "/admin/plugins/hello/versions")
        .await;
    assert_eq!(versions(&listed), [(2, true), (1, false)]);
    assert_eq!(listed.json()["versions"][1]["manifest"], hello_manifest(1));

    // No version given: the one before the active one.
    let back = rollback(&server, "hello", None).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text());
    assert_eq!(back.json()["version"], 1);
    assert_eq!(server.get("/hello/v1").await.status, StatusCode::OK);
    let show = server.admin(Method::GET, "/admin/plugins/hello").await;
    assert_eq!(show.json()["version"], 1);
    // Nothing before version 1; no version 9; a malformed body.
    let none = rollback(&server, "hello", None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(none.code(), "version_not_found");
    let missing = rollback(&server, "hello", Some(json!({ "version": 9 }))).await;
    assert_eq!(missing.code(), "version_not_found");
    let bad = rollback(&server, "hello", Some(json!({ "to": 2 }))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = rollback(&server, "nope", None).await;
    assert_eq!(unknown.code(), "plugin_not_found");

    let forward = rollback(&server, "hello", Some(json!({ "version": 2 }))).await;
    assert_eq!(forward.json()["version"], 2);
    // The active version survives a restart (SIGKILL), as does the history.
    let server = server.restart();
    let show = server.admin(Method::GET, "/admin/plugins/hello").await;
    assert_eq!(show.json()["version"], 2);
    let listed = server
        .admin(Method::GET, "/admin/plugins/hello/versions")
        .await;
    assert_eq!(versions(&listed), [(2, true), (1, false)]);
    // The next deploy is version 3.
    let third = server.deploy("hello", &hello_manifest(3), &hello).await;
    assert_eq!(third.json()["version"], 3);
}

#[tokio::test]
async fn only_the_newest_versions_are_kept() {
    let dir = TempDir::new();
    let options = Options {
        args: vec!["--keep-versions".into(), "2".into()],
        ..Default::default()
    };
    let server = Server::start_with(dir.path(), options);
    let hello = Guest::Hello.component();
    for revision in 1..=4 {
        server
            .deploy("hello", &hello_manifest(revision), &hello)
            .await;
    }
    let listed = server
        .admin(Method::GET, "/admin/plugins/hello/versions")
        .await;
    assert_eq!(versions(&listed), [(4, true), (3, false)]);
    let gone = rollback(&server, "hello", Some(json!({ "version": 2 }))).await;
    assert_eq!(gone.code(), "version_not_found");
}

#[tokio::test]
async fn rolling_back_under_load_fails_no_request() {
    let server = std::sync::Arc::new(Server::start());
    let hello = Guest::Hello.component();
    server.deploy("hello", &hello_manifest(1), &hello).await;
    server.deploy("hello", &hello_manifest(2), &hello).await;
    let stop = Instant::now() + Duration::from_secs(3);
    let mut load = Vec::new();
    for _ in 0..4 {
        let server = server.clone();
        load.push(tokio::spawn(async move {
            let mut served = 0;
            while Instant::now() < stop {
                let reply = server.get("/hello/load").await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                served += 1;
            }
            served
        }));
    }
    let mut rollbacks = 0;
    while Instant::now() < stop {
        let to = if rollbacks % 2 == 0 { 1 } else { 2 };
        let done = rollback(&server, "hello", Some(json!({ "version": to }))).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        rollbacks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut served = 0;
    for task in load {
        served += task.await.unwrap();
    }
    assert!(rollbacks >= 5, "only {rollbacks} rollbacks");
    assert!(served > 0);
}

#[tokio::test]
async fn the_audit_log_records_who_changed_what_from_where() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;
    let config = server
        .send_json(
            Method::PUT,
            "/admin/plugins/hello/config",
            json!({ "api_key": { "value": "s3cret-value", "secret": true } }),
            Some(TOKEN),
        )
        .await;
    assert_eq!(config.status, StatusCode::OK);
    let deleted = server.admin(Method::DELETE, "/admin/plugins/hello").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let audit = server.admin(Method::GET, "/admin/audit").await;
    assert_eq!(audit.status, StatusCode::OK);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(actions, ["plugin.delete", "config.set", "plugin.deploy"]);
    let deploy = &entries[2];
    assert_eq!(deploy["actor"], "admin-token");
    assert_eq!(deploy["address"], "127.0.0.1");
    assert_eq!(deploy["target"], "hello");
    assert_eq!(deploy["details"]["version"], 1);
    assert_eq!(entries[1]["details"]["secrets"], json!(["api_key"]));
    assert!(!audit.text().contains("s3cret-value"));

    // Filters and pages.
    let deploys = server
        .admin(Method::GET, "/admin/audit?action=plugin.deploy")
        .await;
    assert_eq!(deploys.json()["entries"].as_array().unwrap().len(), 1);
    let first = server
        .admin(Method::GET, "/admin/audit?limit=2")
        .await
        .json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = server
        .admin(
            Method::GET,
            &format!("/admin/audit?limit=2&cursor={cursor}"),
        )
        .await
        .json();
    assert_eq!(rest["entries"][0]["action"], "plugin.deploy");
    assert!(rest["next_cursor"].is_null());
    let bad = server.admin(Method::GET, "/admin/audit?cursor=zz").await;
    assert_eq!(bad.code(), "invalid_cursor");
    // The audit log is for admins: anonymous callers get 401.
    assert_eq!(
        server.get("/admin/audit").await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// How many audit entries record `action`.
async fn audited(server: &Server, action: &str) -> usize {
    let page = server
        .admin(Method::GET, &format!("/admin/audit?action={action}"))
        .await
        .json();
    page["entries"].as_array().unwrap().len()
}

#[tokio::test]
async fn changes_racing_each_other_are_made_and_recorded_once() {
    let server = Server::start();
    let hello = Guest::Hello.component();
    for revision in 1..=3 {
        server
            .deploy("hello", &hello_manifest(revision), &hello)
            .await;
    }
    // Eight rollbacks to version 1 at once: one makes the change, the others find it made.
    let rollbacks = (0..8).map(|_| rollback(&server, "hello", Some(json!({ "version": 1 }))));
    let replies = futures::future::join_all(rollbacks).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    let changed = replies
        .iter()
        .filter(|r| r.json()["unchanged"] != true)
        .count();
    assert_eq!(changed, 1);
    assert_eq!(audited(&server, "plugin.rollback").await, 1);

    // Eight deletes of one account at once: one deletes it, the others find it gone.
    let user = server
        .send_json(
            Method::POST,
            "/admin/users",
            json!({ "email": "gone@example.com", "password": "password-1234" }),
            Some(TOKEN),
        )
        .await;
    let path = format!("/admin/users/{}", user.json()["id"].as_str().unwrap());
    let deletes = (0..8).map(|_| server.admin(Method::DELETE, &path));
    let statuses: Vec<StatusCode> = futures::future::join_all(deletes)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    let deleted = statuses
        .iter()
        .filter(|s| **s == StatusCode::NO_CONTENT)
        .count();
    assert_eq!(deleted, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::NO_CONTENT || *s == StatusCode::NOT_FOUND)
    );
    assert_eq!(audited(&server, "user.delete").await, 1);
    // The email is free again, and taken by exactly one new account.
    let again = server
        .send_json(
            Method::POST,
            "/admin/users",
            json!({ "email": "gone@example.com", "password": "password-1234" }),
            Some(TOKEN),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
}

#[tokio::test]
async fn every_account_and_key_change_is_audited_and_a_refused_one_is_not() {
    let server = Server::start();
    let send = |method: Method, path: &str, body: Value| {
        let server = &server;
        let path = path.to_string();
        async move { server.send_json(method, &path, body, Some(TOKEN)).await }
    };
    let user = send(
        Method::POST,
        "/admin/users",
        json!({ "email": "ops@example.com", "password": "password-1234", "roles": ["operator"] }),
    )
    .await;
    assert_eq!(user.status, StatusCode::CREATED, "{}", user.text());
    let id = user.json()["id"].as_str().unwrap().to_string();
    let users = format!("/admin/users/{id}");
    let roles = send(
        Method::PUT,
        &format!("{users}/roles"),
        json!({ "roles": [] }),
    )
    .await;
    assert_eq!(roles.status, StatusCode::OK);
    // The second "enable" changes nothing, and records nothing.
    for step in ["disable", "enable", "enable"] {
        let reply = send(Method::POST, &format!("{users}/{step}"), json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{step}: {}", reply.text());
    }
    let invite = send(Method::POST, "/admin/invites", json!({})).await;
    assert_eq!(invite.status, StatusCode::CREATED);
    let key = send(
        Method::POST,
        "/admin/api-keys",
        json!({ "name": "ci", "role": "operator" }),
    )
    .await;
    assert_eq!(key.status, StatusCode::CREATED);
    let key_id = key.json()["id"].as_str().unwrap().to_string();
    let keys = format!("/admin/api-keys/{key_id}");
    assert_eq!(
        server.admin(Method::DELETE, &keys).await.status,
        StatusCode::NO_CONTENT
    );
    let rotated = server
        .admin(Method::POST, "/admin/signing-keys/rotate")
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_eq!(
        server.admin(Method::DELETE, &users).await.status,
        StatusCode::NO_CONTENT
    );
    // Refused or empty changes write nothing.
    assert_eq!(
        server.admin(Method::DELETE, &keys).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.admin(Method::DELETE, &users).await.status,
        StatusCode::NOT_FOUND
    );
    let bad_role = send(
        Method::PUT,
        "/admin/users/nobody/roles",
        json!({ "roles": ["operator"] }),
    )
    .await;
    assert_eq!(bad_role.status, StatusCode::NOT_FOUND);

    let audit = server
        .admin(Method::GET, "/admin/audit?limit=100")
        .await
        .json();
    let entries = audit["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    let invite_id = invite.json()["id"].as_str().unwrap().to_string();
    let signing = rotated.json()["current"].as_str().unwrap().to_string();
    // Newest first.
    assert_eq!(
        seen,
        [
            ("user.delete", id.as_str()),
            ("signing_key.rotate", signing.as_str()),
            ("api_key.revoke", key_id.as_str()),
            ("api_key.create", key_id.as_str()),
            ("invite.create", invite_id.as_str()),
            ("user.enable", id.as_str()),
            ("user.disable", id.as_str()),
            ("user.roles", id.as_str()),
            ("user.create", id.as_str()),
        ],
        "{audit}"
    );
    assert_eq!(entries[7]["details"]["roles"], json!(["user"]));
    assert_eq!(entries[6]["details"]["disabled"], true);
    assert!(entries.iter().all(|e| e["actor"] == "admin-token"));
}

#[tokio::test]
async fn plugin_output_and_access_lines_reach_the_log_endpoint() {
    let dir = TempDir::new();
    let options = Options {
        env: vec![("RUST_LOG".into(), "info,access=debug".into())],
        ..Default::default()
    };
    let server = Server::start_with(dir.path(), options);
    server.deploy_guest(Guest::PlainHttp).await;
    let reply = server.get("/plain/first").await;
    assert_eq!(reply.status, StatusCode::OK);
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_string();

    let page = server.admin(Method::GET, "/admin/plugins/plain/logs").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let lines = page.json()["lines"].as_array().unwrap().clone();
    let stdout = lines
        .iter()
        .find(|l| l["source"] == "stdout")
        .expect("the plugin's stdout line");
    assert_eq!(stdout["message"], "plain-http served GET /plain/first");
    assert_eq!(stdout["request_id"], request_id.as_str());
    let access = lines
        .iter()
        .find(|l| l["source"] == "access")
        .expect("an access line");
    let message = access["message"].as_str().unwrap();
    assert!(message.contains("GET /plain/first → 200"), "{message}");
    assert!(message.contains("route /plain/{*rest}"), "{message}");
    assert_eq!(access["request_id"], request_id.as_str());
    // The access line reaches the server log too (at debug, target `access`).
    let logged = server.wait_for_log(&["GET /plain/first → 200"]);
    assert!(logged.contains(&request_id), "{logged}");

    // `since` returns only newer lines.
    let since = page.json()["next_since"].as_u64().unwrap();
    server.get("/plain/second").await;
    let newer = server
        .admin(
            Method::GET,
            &format!("/admin/plugins/plain/logs?since={since}"),
        )
        .await
        .json();
    let messages: Vec<&str> = newer["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().all(|m| !m.contains("first")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("second")),
        "{messages:?}"
    );

    let unknown = server.admin(Method::GET, "/admin/plugins/nope/logs").await;
    assert_eq!(unknown.code(), "plugin_not_found");
    assert_eq!(
        server.get("/admin/plugins/plain/logs").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_follower_receives_lines_produced_after_it_started() {
    let server = Server::start();
    server.deploy_guest(Guest::PlainHttp).await;
    let mut stream = server
        .client()
        .get(format!(
            "{}/admin/plugins/plain/logs?follow=true",
            server.base
        ))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    server.get("/plain/followed").await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("plain-http served GET /plain/followed") {
        assert!(Instant::now() < deadline, "no line arrived: {seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("a chunk in time")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("data: {"), "{seen}");
    assert!(seen.contains("id: "), "{seen}");
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Every line is a comment or `name{labels} value`.
fn assert_exposition(text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_requests() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;
    server.deploy_guest(Guest::Trap).await;
    assert_eq!(server.get("/hello/metrics").await.status, StatusCode::OK);
    let before = server.get("/metrics").await;
    assert_eq!(before.status, StatusCode::OK);
    let text = before.text();
    assert_exposition(&text);
    let series = r#"plinth_requests_total{plugin="hello",route="/hello/{name}",status="2xx"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    server.get("/hello/again").await;
    let after = server.get("/metrics").await.text();
    assert_eq!(sample(&after, series), Some(2.0));
    assert_eq!(sample(&after, "plinth_plugins"), Some(2.0));
    assert_eq!(sample(&after, "plinth_deploys_total"), Some(2.0));
    assert!(
        sample(
            &after,
            r#"plinth_instance_memory_peak_bytes{plugin="hello"}"#
        )
        .unwrap()
            > 0.0,
        "{after}"
    );
    assert!(after.contains(
        r#"plinth_request_duration_seconds_count{plugin="hello",route="/hello/{name}"} 2"#
    ));
}

#[tokio::test]
async fn a_restart_loads_compiled_artifacts_instead_of_compiling() {
    let server = Server::start();
    let component = Guest::PlainHttp.component();
    for i in 0..20 {
        let manifest = format!(
            "name = \"p{i}\"\n[[routes]]\npath = \"/p{i}/{{*rest}}\"\nmethods = [\"GET\"]\n"
        );
        let reply = server.deploy(&format!("p{i}"), &manifest, &component).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    server.deploy_guest(Guest::Hello).await;
    let server = server.restart();
    for i in 0..20 {
        let reply = server.get(&format!("/p{i}/x")).await;
        assert_eq!(reply.text(), format!("plain GET /p{i}/x"));
    }
    assert_eq!(server.get("/hello/cached").await.status, StatusCode::OK);
    let metrics = server.get("/metrics").await.text();
    assert_eq!(sample(&metrics, "plinth_components_compiled"), Some(0.0));
    assert_eq!(
        sample(&metrics, "plinth_components_loaded_from_cache"),
        Some(21.0)
    );
    let ready = server.get("/readyz").await.json();
    assert_eq!(ready["plugins"], 21);
    assert_eq!(ready["store"], "open");
    assert_eq!(ready["not_loaded"], json!([]));
}

#[tokio::test]
async fn the_openapi_document_lists_every_operator_route_and_each_exists() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;
    let reply = server.get("/admin/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let document = reply.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    // The operator and auth API as docs/http-api.md describes it: all of it is documented.
    let expected = [
        ("GET", "/admin/plugins"),
        ("GET", "/admin/plugins/{name}"),
        ("PUT", "/admin/plugins/{name}"),
        ("DELETE", "/admin/plugins/{name}"),
        ("GET", "/admin/plugins/{name}/versions"),
        ("POST", "/admin/plugins/{name}/rollback"),
        ("GET", "/admin/plugins/{name}/logs"),
        ("GET", "/admin/plugins/{name}/config"),
        ("PUT", "/admin/plugins/{name}/config"),
        ("PUT", "/admin/plugins/{name}/config/{key}"),
        ("DELETE", "/admin/plugins/{name}/config/{key}"),
        ("GET", "/admin/plugins/{name}/kv"),
        ("GET", "/admin/plugins/{name}/kv/export"),
        ("POST", "/admin/plugins/{name}/kv/import"),
        ("GET", "/admin/audit"),
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("GET", "/admin/users/{id}"),
        ("DELETE", "/admin/users/{id}"),
        ("POST", "/admin/users/{id}/disable"),
        ("POST", "/admin/users/{id}/enable"),
        ("PUT", "/admin/users/{id}/roles"),
        ("POST", "/admin/invites"),
        ("GET", "/admin/api-keys"),
        ("POST", "/admin/api-keys"),
        ("DELETE", "/admin/api-keys/{id}"),
        ("GET", "/admin/signing-keys"),
        ("POST", "/admin/signing-keys/rotate"),
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/setup"),
        ("POST", "/auth/logout"),
        ("GET", "/auth/me"),
        ("POST", "/auth/password"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    ];
    for (method, path) in expected {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    // And everything documented is a real route of the server: never the router's own 404
    // (`not_found`) or 405. Parameters get harmless values.
    for (method, path) in &documented {
        let concrete = path
            .replace("{name}", "hello")
            .replace("{id}", "no-such-id")
            .replace("{key}", "no_such_key");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let reply = server
            .request(method.clone(), &concrete, Some(TOKEN), Some(b"{}".to_vec()))
            .await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if reply.status == StatusCode::NOT_FOUND {
            assert_ne!(reply.code(), "not_found", "{method} {path} is not routed");
        }
        // Every documented operation describes its answers.
        let operation = &paths[path.as_str()][method.as_str().to_lowercase()];
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty())
        );
    }
}
