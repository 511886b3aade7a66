//! The storage examples (`examples/counter`, `examples/todo`, `examples/shortener`) doing what
//! the README promises, through the SDK's `kv` module.

use crate::auth::signed_in;
use crate::harness::{Guest, Options, Server, TempDir};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn counter_adds_atomically_and_lists() {
    let dir = TempDir::new();
    let options = Options::with_args(&["--queue-timeout", "20s"]);
    let server = Arc::new(Server::start_with(dir.path(), options));
    server.deploy_guest(Guest::Counter).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                let reply = server
                    .request(Method::POST, "/counters/visits", None, None)
                    .await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let reply = server
        .request(Method::POST, "/counters/visits?by=10", None, None)
        .await;
    assert_eq!(reply.json(), json!({ "name": "visits", "value": 60 }));
    assert_eq!(server.get("/counters/other").await.json()["value"], 0);
    server
        .request(Method::POST, "/counters/other", None, None)
        .await;
    assert_eq!(
        server.get("/counters").await.json(),
        json!({ "counters": [
            { "name": "other", "value": 1 },
            { "name": "visits", "value": 60 },
        ]})
    );
    let reply = server
        .request(Method::POST, "/counters/visits?by=lots", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn todo_lists_belong_to_their_user() {
    let server = Server::start();
    server.deploy_guest(Guest::Todo).await;
    let (alice, _) = signed_in(&server, "alice@example.com").await;
    let (bob, _) = signed_in(&server, "bob@example.com").await;
    let post = |token: String, title: &'static str| {
        let server = &server;
        async move {
            server
                .send_json(
                    Method::POST,
                    "/todos",
                    json!({ "title": title }),
                    Some(&token),
                )
                .await
        }
    };
    let first = post(alice.clone(), "buy milk").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(
        first.json(),
        json!({ "id": 1, "title": "buy milk", "done": false })
    );
    post(alice.clone(), "call mum").await;
    let bobs = post(bob.clone(), "bob's only item").await.json();
    assert_eq!(bobs["id"], 1, "ids count per user");

    let list = server.get_as("/todos", &alice).await.json();
    let titles: Vec<_> = list["todos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, ["buy milk", "call mum"]);
    // Bob's item 1 is not Alice's item 1.
    assert_eq!(
        server.get_as("/todos/1", &bob).await.json()["title"],
        "bob's only item"
    );

    let reply = server
        .send_json(
            Method::PUT,
            "/todos/1",
            json!({ "done": true }),
            Some(&alice),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({ "id": 1, "title": "buy milk", "done": true })
    );
    let reply = server
        .send_json(
            Method::PUT,
            "/todos/9",
            json!({ "done": true }),
            Some(&alice),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = server
        .send_json(
            Method::POST,
            "/todos",
            json!({ "title": "  " }),
            Some(&alice),
        )
        .await;
    assert_eq!(reply.code(), "invalid_title");
    let reply = server
        .request(Method::DELETE, "/todos/1", Some(&alice), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get_as("/todos/1", &alice).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get_as("/todos/1", &bob).await.status, StatusCode::OK);
    // Anonymous callers never reach the plugin.
    assert_eq!(server.get("/todos").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn exactly_one_of_many_racing_writers_claims_a_slug() {
    let server = Arc::new(Server::start());
    server.deploy_guest(Guest::Shortener).await;
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let url = format!("https://example.com/{i}");
                let body = json!({ "url": url, "slug": "race" });
                let reply = server.post_json("/links", body, None).await;
                (reply.status, url)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (status, url) = racer.await.unwrap();
        match status {
            StatusCode::CREATED => winners.push(url),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one writer wins the compare-and-swap"
    );
    let link = server.get("/links/race").await.json();
    assert_eq!(
        link["url"],
        winners[0].as_str(),
        "the winner's value is the stored one"
    );

    // Redirects count hits; generated slugs work too.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let reply = no_redirects
        .get(format!("{}/s/race", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::FOUND);
    assert_eq!(reply.headers()["location"], winners[0].as_str());
    assert_eq!(server.get("/links/race").await.json()["hits"], 1);
    let created = server
        .post_json("/links", json!({ "url": "https://example.org" }), None)
        .await
        .json();
    let slug = created["slug"].as_str().unwrap();
    assert_eq!(created["short_url"], format!("/s/{slug}"));
    assert_eq!(
        server.get(&format!("/links/{slug}")).await.json()["url"],
        "https://example.org"
    );
    let reply = server
        .post_json("/links", json!({ "url": "ftp://nope" }), None)
        .await;
    assert_eq!(reply.code(), "invalid_url");
}
