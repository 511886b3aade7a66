//! Serving plugin routes: matching, params, errors, traps, guards, and a plain wasi:http component.

use crate::harness::{Guest, Reply, Server, TOKEN};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn unknown_paths_get_404_and_wrong_methods_405_json() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;

    let reply = server.get("/nothing/here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    let reply = server.request(Method::POST, "/hello/x", None, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET");

    // Host routes answer wrong methods in the same JSON shape.
    let reply = server.request(Method::POST, "/healthz", None, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "method_not_allowed");
    // Unknown admin paths are JSON 404s, not plugin territory.
    let reply = server.admin(Method::GET, "/admin/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
}

#[tokio::test]
async fn path_params_reach_the_plugin_decoded() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;
    let reply = server.get("/hello/w%C3%B6rld%20two").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["message"], "hello, wörld two");
    // HEAD is answered by the GET route, without a body.
    let head = server.request(Method::HEAD, "/hello/x", None, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn a_trapping_plugin_fails_only_its_own_request() {
    let server = Server::start();
    server.deploy_guest(Guest::Trap).await;
    server.deploy_guest(Guest::Hello).await;
    for _ in 0..3 {
        let reply = server.get("/trap/panic").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.code(), "plugin_failed");
        // The next request to the same plugin works: the trapped instance was thrown away.
        let ok = server.get("/trap/ok").await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.text(), "still fine");
        assert_eq!(server.get("/hello/x").await.status, StatusCode::OK);
    }
    // The guest's panic message reaches the operator's log, tagged with the plugin.
    server.wait_for_log(&["this plugin panics on purpose", "trap"]);
}

#[tokio::test]
async fn an_sdk_response_keeps_its_status_and_headers_and_loses_only_forbidden_ones() {
    let server = Server::start();
    server.deploy_guest(Guest::Trap).await;
    let reply = server.get("/trap/headers").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.text(), "accepted");
    assert_eq!(reply.headers["x-before"], "1");
    assert_eq!(reply.headers["x-after"], "2");
    assert_eq!(reply.headers["content-length"], "8");
    assert!(
        !reply.headers.contains_key("upgrade"),
        "{:?}",
        reply.headers
    );
}

#[tokio::test]
async fn an_sdk_plugin_reads_headers_and_bodies_when_it_asks() {
    let server = Server::start();
    server.deploy_guest(Guest::Trap).await;
    let echo = |method: Method, body: Option<&'static str>| {
        let mut request = server
            .client()
            .request(method, format!("{}/trap/echo", server.base))
            .header("x-probe", "p-1");
        if let Some(body) = body {
            request = request.body(body);
        }
        async move { Reply::read(request.send().await.expect("request failed")).await }
    };
    // A POST body is read before the handler runs; the header when the handler asks.
    let reply = echo(Method::POST, Some("posted text")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], "posted text");
    assert_eq!(seen["probe"], "p-1");
    // A GET body is read only when the handler asks, and is still all there.
    let seen = echo(Method::GET, Some("a GET body")).await.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["body"], "a GET body");
    assert_eq!(seen["probe"], "p-1");
    // A GET without a body reads as empty; the headers are this request's own.
    let seen = echo(Method::GET, None).await.json();
    assert_eq!(seen["body"], "");
    assert_eq!(seen["probe"], "p-1");
    assert!(seen["headers"].as_u64().unwrap() >= 2, "{seen}");
}

#[tokio::test]
async fn a_plain_wasi_http_component_serves_unchanged() {
    let server = Server::start();
    server.deploy_guest(Guest::PlainHttp).await;

    let reply = server.get("/plain/some/path?x=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "plain GET /plain/some/path?x=1");

    // Bodies stream both ways: 1 MiB in, the same 1 MiB out.
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let reply = server
        .request(Method::POST, "/plain/echo", None, Some(body.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "echoed body differs");
    // An empty body (content-length: 0) reaches the plugin as an empty stream.
    let reply = server
        .request(Method::POST, "/plain/echo", None, Some(Vec::new()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty(), "{} bytes echoed", reply.body.len());

    // stdout lands in the host log, tagged with the plugin's name.
    let line = server.wait_for_log(&["plain-http served GET /plain/some/path?x=1"]);
    assert!(line.contains("plain"), "{line}");
    assert!(line.contains("stdout"), "{line}");
}

#[tokio::test]
async fn guarded_routes_need_credentials_and_hide_them_from_the_plugin() {
    let server = Server::start();
    let plain = Guest::PlainHttp;
    let manifest = format!("{}auth = \"user\"\n", plain.manifest());
    let reply = server.deploy("plain", &manifest, &plain.component()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json()["routes"][0]["auth"], "user");

    let anonymous = server.get("/plain/x").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.code(), "unauthenticated");
    let wrong = server
        .request(Method::GET, "/plain/x", Some("not-the-token-at-all"), None)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.code(), "invalid_token");
    let admitted = server
        .request(Method::GET, "/plain/x", Some(TOKEN), None)
        .await;
    assert_eq!(admitted.status, StatusCode::OK);
}
