//! The operator API: deploy, replace, list, show, delete, and every way a deploy is refused.

use crate::harness::{Guest, Server, TOKEN};
use reqwest::{Method, StatusCode};

const HELLO_V2_MANIFEST: &str = r#"
name = "hello"
[[routes]]
path = "/hello/{name}"
methods = ["GET", "HEAD"]
"#;

#[tokio::test]
async fn deploy_call_replace_list_show_delete() {
    let server = Server::start();
    let hello = Guest::Hello;
    let first = server
        .deploy(hello.name(), &hello.manifest(), &hello.component())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let info = first.json();
    assert_eq!(info["name"], "hello");
    assert_eq!(info["routes"][0]["path"], "/hello/{name}");
    assert_eq!(info["routes"][0]["methods"][0], "GET");
    assert_eq!(info["size"], hello.component().len());
    assert_eq!(info["sha256"].as_str().unwrap().len(), 64);
    assert!(info["deployed_at"].as_str().unwrap().ends_with('Z'));

    let reply = server.get("/hello/world").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        serde_json::json!({ "message": "hello, world" })
    );

    let replaced = server
        .deploy("hello", HELLO_V2_MANIFEST, &hello.component())
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());
    assert_eq!(replaced.json()["routes"][0]["methods"][1], "HEAD");

    let list = server.admin(Method::GET, "/admin/plugins").await;
    assert_eq!(list.status, StatusCode::OK);
    let plugins = list.json()["plugins"].as_array().unwrap().clone();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0]["name"], "hello");

    let show = server.admin(Method::GET, "/admin/plugins/hello").await;
    assert_eq!(show.status, StatusCode::OK);
    assert_eq!(show.json()["sha256"], info["sha256"]);

    let deleted = server.admin(Method::DELETE, "/admin/plugins/hello").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = server.get("/hello/world").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "not_found");
    let again = server.admin(Method::DELETE, "/admin/plugins/hello").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "plugin_not_found");
    let show = server.admin(Method::GET, "/admin/plugins/hello").await;
    assert_eq!(show.code(), "plugin_not_found");
}

/// A component importing interfaces no host provides, written in the component text format.
fn component_with_unknown_imports() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (import "acme:missing/thing@1.0.0" (instance (export "ping" (func))))
            (import "legacy-hook" (func))
        )"#,
    )
    .unwrap()
}

#[tokio::test]
async fn bad_deploys_are_refused_with_distinct_codes_and_change_nothing() {
    let server = Server::start();
    let before = server.deploy_guest(Guest::Hello).await;
    let hello = Guest::Hello;
    let manifest = hello.manifest();
    let component = hello.component();
    let core_module = wat::parse_str("(module)").unwrap();
    let clash = "name = \"copycat\"\n[[routes]]\npath = \"/hello/{who}\"\n";
    let reserved = "name = \"hello\"\n[[routes]]\npath = \"/admin/steal\"\n";
    let bad_manifest = "name = \"hello\"\n[[routes]]\npath = \"/x\"\nmethods = [\"FETCH\"]\n";

    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "hello",
            manifest.clone(),
            b"definitely not wasm".to_vec(),
            "not_wasm",
        ),
        ("hello", manifest.clone(), core_module, "not_a_component"),
        (
            "hello",
            manifest.clone(),
            b"\0asm\x0d\0\x01\0garbage".to_vec(),
            "invalid_component",
        ),
        (
            "hello",
            manifest.clone(),
            component_with_unknown_imports(),
            "unsupported_imports",
        ),
        (
            "hello",
            bad_manifest.into(),
            component.clone(),
            "invalid_manifest",
        ),
        (
            "hello",
            "name = ".into(),
            component.clone(),
            "invalid_manifest",
        ),
        ("copycat", clash.into(), component.clone(), "route_conflict"),
        (
            "hello",
            reserved.into(),
            component.clone(),
            "reserved_route",
        ),
        (
            "other",
            manifest.clone(),
            component.clone(),
            "name_mismatch",
        ),
        (
            "Bad_Name",
            manifest.clone(),
            component.clone(),
            "invalid_name",
        ),
    ];
    for (name, manifest, bytes, code) in cases {
        let reply = server.deploy(name, &manifest, &bytes).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{code}: {}",
            reply.text()
        );
        assert_eq!(reply.code(), code, "{}", reply.text());
        assert!(
            !reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }

    // The unsupported imports are all listed, and the clash names the other plugin.
    let reply = server
        .deploy("hello", &manifest, &component_with_unknown_imports())
        .await;
    let listed = reply.json()["error"]["details"]["imports"].clone();
    assert_eq!(
        listed,
        serde_json::json!(["acme:missing/thing@1.0.0", "legacy-hook"])
    );
    let reply = server.deploy("copycat", clash, &component).await;
    assert_eq!(
        reply.json()["error"]["details"]["conflicts_with"]["plugin"],
        "hello"
    );
    assert_eq!(
        reply.json()["error"]["details"]["conflicts_with"]["route"],
        "/hello/{name}"
    );

    // A malformed upload is refused too.
    let no_component = reqwest::multipart::Form::new().text("manifest", manifest.clone());
    let reply = server
        .client()
        .put(format!("{}/admin/plugins/hello", server.base))
        .bearer_auth(TOKEN)
        .multipart(no_component)
        .send()
        .await
        .unwrap();
    let reply = crate::harness::Reply::read(reply).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_upload");

    // Nothing changed: the original version still serves, and it is the only plugin.
    let show = server.admin(Method::GET, "/admin/plugins/hello").await;
    assert_eq!(show.json(), before);
    let list = server.admin(Method::GET, "/admin/plugins").await;
    assert_eq!(list.json()["plugins"].as_array().unwrap().len(), 1);
    assert_eq!(
        server.get("/hello/still").await.json()["message"],
        "hello, still"
    );
}

#[tokio::test]
async fn a_component_without_the_http_export_is_refused() {
    let server = Server::start();
    let reply = server
        .deploy(
            "hello",
            &Guest::Hello.manifest(),
            &wat::parse_str("(component)").unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "missing_export");
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;
    for token in [None, Some("wrong-token-wrong-token")] {
        for (method, path) in [
            (Method::GET, "/admin/plugins"),
            (Method::GET, "/admin/plugins/hello"),
            (Method::DELETE, "/admin/plugins/hello"),
        ] {
            let reply = server.request(method.clone(), path, token, None).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            let expected = if token.is_some() {
                "invalid_token"
            } else {
                "unauthenticated"
            };
            assert_eq!(reply.code(), expected);
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        }
        let hello = Guest::Hello;
        let reply = server
            .deploy_with_token("hello", &hello.manifest(), &hello.component(), token)
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Still deployed: the refused DELETEs changed nothing.
    assert_eq!(server.get("/hello/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn ten_concurrent_deploys_of_different_plugins_all_land() {
    let server = Server::start();
    let component = Guest::PlainHttp.component();
    let deploys = (0..10).map(|i| {
        let manifest = format!("name = \"p{i}\"\n[[routes]]\npath = \"/p{i}/{{*rest}}\"\n");
        let server = &server;
        let component = &component;
        async move { server.deploy(&format!("p{i}"), &manifest, component).await }
    });
    for reply in futures::future::join_all(deploys).await {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
    let list = server.admin(Method::GET, "/admin/plugins").await;
    assert_eq!(list.json()["plugins"].as_array().unwrap().len(), 10);
    for i in 0..10 {
        let reply = server.get(&format!("/p{i}/check")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("plain GET /p{i}/check"));
    }
}

#[tokio::test]
async fn requests_in_flight_during_a_replace_all_succeed() {
    let server = Server::start();
    let plain = Guest::PlainHttp;
    // Room for every request below at once (the default is 16 instances per plugin).
    let roomy = format!("{}\n[limits]\nmax_concurrency = 64\n", plain.manifest());
    let first = server.deploy("plain", &roomy, &plain.component()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    // 60 requests that each stay in the plugin for 300 ms.
    let in_flight = tokio::spawn({
        let client = server.client().clone();
        let base = server.base.clone();
        async move {
            let requests = (0..60).map(|_| {
                let client = client.clone();
                let url = format!("{base}/plain/sleep/300");
                async move {
                    let resp = client.get(url).send().await.unwrap();
                    (resp.status(), resp.text().await.unwrap())
                }
            });
            futures::future::join_all(requests).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let manifest = roomy.replace("[\"GET\", \"POST\"]", "[\"GET\", \"POST\", \"PUT\"]");
    let replaced = server.deploy("plain", &manifest, &plain.component()).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());
    for (status, body) in in_flight.await.unwrap() {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "slept 300");
    }
    // And the new version is the one serving now.
    let put = server.request(Method::PUT, "/plain/x", None, None).await;
    assert_eq!(put.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_uploads_get_413() {
    let dir = crate::harness::TempDir::new();
    let server = Server::start_with(
        dir.path(),
        crate::harness::Options {
            args: vec!["--max-component-size".into(), "100KiB".into()],
            ..Default::default()
        },
    );
    let big = vec![0u8; 300 * 1024];
    let reply = server.deploy("hello", &Guest::Hello.manifest(), &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "payload_too_large");
}

#[tokio::test]
async fn uploads_compile_at_most_one_per_core_at_a_time() {
    let server = Server::start();
    let guests = [
        Guest::Hello,
        Guest::Counter,
        Guest::Todo,
        Guest::Shortener,
        Guest::Webhooks,
        Guest::Misbehave,
        Guest::WhoAmI,
        Guest::KvPlain,
        Guest::PlainHttp,
        Guest::Hostile,
    ];
    // Ten different components uploaded at once (more than CI's cores, so an uncapped server
    // would overlap more of them than it has cores).
    let deploys = guests.map(|guest| server.deploy_guest(guest));
    futures::future::join_all(deploys).await;
    // Each compile is logged when it starts (with its permit) and when it is done (before
    // giving the permit back), so the log shows how many ran at once.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (mut running, mut most, mut done) = (0usize, 0usize, 0usize);
    for line in server.logs() {
        if line.contains("loading or compiling the component") {
            running += 1;
            most = most.max(running);
        } else if line.contains("component ready") {
            running -= 1;
            done += 1;
        }
    }
    assert_eq!(done, guests.len());
    assert!(most <= cores, "{most} compiles at once on {cores} cores");
}
