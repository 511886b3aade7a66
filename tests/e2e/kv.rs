//! Per-plugin key-value storage through the standard `wasi:keyvalue` interfaces, exercised with
//! a component that knows nothing of Plinth (`tests/programs/kv-plain`).

use crate::harness::{Guest, Options, Server, TempDir};
use reqwest::{Method, StatusCode};

/// The kv-plain component deployed under another name and route prefix.
fn renamed_manifest(name: &str) -> String {
    format!(
        "name = \"{name}\"\n[[routes]]\npath = \"/{name}/{{*rest}}\"\n\
         methods = [\"GET\", \"PUT\", \"POST\", \"DELETE\"]\n"
    )
}

#[tokio::test]
async fn plugins_see_only_their_own_buckets_whatever_the_key() {
    let server = Server::start();
    server.deploy_guest(Guest::KvPlain).await;
    // A second plugin whose name has the first one's as a prefix, opening the same buckets.
    let other = "kv-plain-b";
    let reply = server
        .deploy(other, &renamed_manifest(other), &Guest::KvPlain.component())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());

    // Keys with `/`, `..`, NUL, an empty key, and a key that spells another bucket's prefix.
    let keys = [
        "plain",
        "a%2Fb",
        "..%2F..%2Fetc",
        "%2E%2E%2F..",
        "nul%00byte",
        "",
        "default%00k",
    ];
    for (i, key) in keys.iter().enumerate() {
        let path = format!("/kv-plain/default/{key}");
        let value = format!("value {i}").into_bytes();
        let reply = server.request(Method::PUT, &path, None, Some(value)).await;
        assert_eq!(reply.status, StatusCode::OK, "PUT {path}: {}", reply.text());
    }
    for (i, key) in keys.iter().enumerate() {
        let mine = server.get(&format!("/kv-plain/default/{key}")).await;
        assert_eq!(mine.status, StatusCode::OK, "key {key:?}");
        assert_eq!(mine.text(), format!("value {i}"));
        let theirs = server.get(&format!("/{other}/default/{key}")).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "key {key:?} leaked");
        // A bucket whose name is the key's bucket plus a NUL never sees it either.
        let near = server.get(&format!("/kv-plain/default%00/{key}")).await;
        assert_eq!(
            near.status,
            StatusCode::NOT_FOUND,
            "key {key:?} in a near bucket"
        );
    }
    assert_eq!(server.get(&format!("/{other}/default")).await.text(), "");

    // Binary values round-trip exactly.
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let reply = server
        .request(
            Method::PUT,
            "/kv-plain/bin/all-bytes",
            None,
            Some(binary.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(server.get("/kv-plain/bin/all-bytes").await.body, binary);

    let reply = server
        .request(Method::DELETE, "/kv-plain/default/plain", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        server.get("/kv-plain/default/plain").await.status,
        StatusCode::NOT_FOUND
    );

    // Data is durable across a kill.
    let server = server.restart();
    assert_eq!(server.get("/kv-plain/bin/all-bytes").await.body, binary);
    assert_eq!(
        server.get("/kv-plain/default/..%2F..%2Fetc").await.text(),
        "value 2"
    );
}

#[tokio::test]
async fn concurrent_increments_add_up_exactly() {
    let dir = TempDir::new();
    // 200 at once against 16 instances: let them queue as long as a loaded machine needs.
    let options = Options::with_args(&["--queue-timeout", "20s"]);
    let server = Server::start_with(dir.path(), options);
    server.deploy_guest(Guest::KvPlain).await;
    let server = std::sync::Arc::new(server);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                let reply = server
                    .request(Method::POST, "/kv-plain/counters/hits/incr/1", None, None)
                    .await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                reply.text().parse::<u64>().unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<u64>>(),
        "each increment saw its own total"
    );
    assert_eq!(server.get("/kv-plain/counters/hits").await.text(), "200");
    // A value that is not a counter is refused, not reset.
    server
        .request(
            Method::PUT,
            "/kv-plain/counters/name",
            None,
            Some(b"bob".to_vec()),
        )
        .await;
    let reply = server
        .request(Method::POST, "/kv-plain/counters/name/incr/1", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text().starts_with("not_a_counter:"),
        "{}",
        reply.text()
    );
    assert_eq!(server.get("/kv-plain/counters/name").await.text(), "bob");
}

#[tokio::test]
async fn listing_pages_visit_each_of_ten_thousand_keys_once_in_order() {
    let server = Server::start();
    server.deploy_guest(Guest::KvPlain).await;
    let reply = server
        .request(Method::PUT, "/kv-plain/big?many=10000&size=8", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listed = server.get("/kv-plain/big").await.text();
    let keys: Vec<&str> = listed.lines().collect();
    let mut expected: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    expected.sort();
    assert_eq!(keys.len(), 10_000);
    assert_eq!(keys, expected, "every key once, in byte order");
}

#[tokio::test]
async fn writes_over_the_limits_fail_clearly_and_change_nothing() {
    let dir = TempDir::new();
    let options = Options::with_args(&["--kv-quota", "3200", "--kv-max-value-size", "100"]);
    let server = Server::start_with(dir.path(), options);
    server.deploy_guest(Guest::KvPlain).await;

    let reply = server
        .request(Method::PUT, "/kv-plain/b/big", None, Some(vec![b'x'; 101]))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text().starts_with("value_too_large:"),
        "{}",
        reply.text()
    );
    assert_eq!(
        server.get("/kv-plain/b/big").await.status,
        StatusCode::NOT_FOUND
    );

    // 30 entries of ~103 bytes (~167 with the 64 bytes each entry costs) are over the quota:
    // the whole batch is refused.
    let reply = server
        .request(Method::PUT, "/kv-plain/b?many=30&size=100", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text().starts_with("quota_exceeded:"),
        "{}",
        reply.text()
    );
    assert_eq!(
        server.get("/kv-plain/b").await.text(),
        "",
        "nothing was written"
    );

    // Within the quota it works (18 entries of 167-168 bytes, then one of 173), and the quota
    // counts what is stored now, not what was tried.
    let reply = server
        .request(Method::PUT, "/kv-plain/b?many=18&size=100", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = server
        .request(
            Method::PUT,
            "/kv-plain/b/one-more",
            None,
            Some(vec![b'x'; 100]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = server
        .request(
            Method::PUT,
            "/kv-plain/b/too-many",
            None,
            Some(vec![b'x'; 100]),
        )
        .await;
    assert!(
        reply.text().starts_with("quota_exceeded:"),
        "{}",
        reply.text()
    );
    // Deleting frees space, and the usage survives a restart (it is stored, not recounted).
    for i in 0..3 {
        server
            .request(Method::DELETE, &format!("/kv-plain/b/k{i}"), None, None)
            .await;
    }
    let server = server.restart();
    let reply = server
        .request(
            Method::PUT,
            "/kv-plain/b/too-many",
            None,
            Some(vec![b'x'; 100]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn operators_browse_export_purge_and_import_plugin_data() {
    let server = Server::start();
    server.deploy_guest(Guest::KvPlain).await;
    let binary: Vec<u8> = (0..=255u8).collect();
    server
        .request(Method::PUT, "/kv-plain/b1?many=25&size=3", None, None)
        .await;
    server
        .request(Method::PUT, "/kv-plain/b2/bin", None, Some(binary.clone()))
        .await;
    server
        .request(
            Method::PUT,
            "/kv-plain/b2/text",
            None,
            Some(b"hello".to_vec()),
        )
        .await;

    // Browse one bucket by prefix, page by page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/admin/plugins/kv-plain/kv?bucket=b1&prefix=k1&limit=4".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.admin(Method::GET, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        for entry in page["entries"].as_array().unwrap() {
            assert_eq!(entry["value"], "vvv");
            seen.push(entry["key"].as_str().unwrap().to_string());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..25)
        .map(|i| format!("k{i}"))
        .filter(|k| k.starts_with("k1"))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    // Across buckets: binary values come as base64 only, text also as text.
    let all = server
        .admin(Method::GET, "/admin/plugins/kv-plain/kv?prefix=&limit=1000")
        .await
        .json();
    assert_eq!(all["entries"].as_array().unwrap().len(), 27);
    let bin = &all["entries"][25];
    assert_eq!(
        (bin["bucket"].as_str(), bin["key"].as_str()),
        (Some("b2"), Some("bin"))
    );
    assert!(bin.get("value").is_none());
    let usage = all["usage_bytes"].as_u64().unwrap();
    assert!(usage > 256, "{usage}");
    let reply = server
        .admin(Method::GET, "/admin/plugins/kv-plain/kv?cursor=garbage")
        .await;
    assert_eq!(reply.code(), "invalid_cursor");

    let export = server
        .admin(Method::GET, "/admin/plugins/kv-plain/kv/export")
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers["content-type"], "application/x-ndjson");
    assert_eq!(export.text().lines().count(), 27);

    // Deleting keeps the data unless purged: a redeploy finds it.
    assert_eq!(
        server
            .admin(Method::DELETE, "/admin/plugins/kv-plain")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    server.deploy_guest(Guest::KvPlain).await;
    assert_eq!(server.get("/kv-plain/b2/bin").await.body, binary);
    let reply = server
        .admin(Method::DELETE, "/admin/plugins/kv-plain?purge=true")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    server.deploy_guest(Guest::KvPlain).await;
    assert_eq!(
        server.get("/kv-plain/b2/bin").await.status,
        StatusCode::NOT_FOUND
    );
    let empty = server
        .admin(Method::GET, "/admin/plugins/kv-plain/kv")
        .await
        .json();
    assert_eq!(empty["entries"], serde_json::json!([]));
    assert_eq!(empty["usage_bytes"], 0);

    // A bad line refuses the whole import.
    let mut broken = export.body.clone();
    broken.extend_from_slice(b"{\"bucket\":\"b\",\"key\":\"k\",\"value_base64\":\"***\"}\n");
    let reply = server
        .request(
            Method::POST,
            "/admin/plugins/kv-plain/kv/import",
            Some(crate::harness::TOKEN),
            Some(broken),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_import");
    assert_eq!(reply.json()["error"]["details"]["line"], 28);
    assert_eq!(server.get("/kv-plain/b1").await.text(), "");

    // The export restores everything, byte for byte.
    let reply = server
        .request(
            Method::POST,
            "/admin/plugins/kv-plain/kv/import",
            Some(crate::harness::TOKEN),
            Some(export.body.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["imported"], 27);
    assert_eq!(reply.json()["usage_bytes"], usage);
    assert_eq!(server.get("/kv-plain/b2/bin").await.body, binary);
    assert_eq!(server.get("/kv-plain/b2/text").await.text(), "hello");
    assert_eq!(server.get("/kv-plain/b1").await.text().lines().count(), 25);
    let again = server
        .admin(Method::GET, "/admin/plugins/kv-plain/kv/export")
        .await;
    assert_eq!(again.body, export.body);
    // The import is in the audit log, with what it wrote.
    let audit = server
        .admin(Method::GET, "/admin/audit?action=kv.import")
        .await
        .json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["target"], "kv-plain");
    assert_eq!(entries[0]["details"]["entries"], 27);
}

/// A request for one entry of `kv-plain`'s data through the admin API, with extra headers.
async fn entry(
    server: &Server,
    method: Method,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> crate::harness::Reply {
    let mut request = server
        .client()
        .request(
            method,
            format!(
                "{}/admin/plugins/kv-plain/kv/entry?bucket=b&key={key}",
                server.base
            ),
        )
        .bearer_auth(crate::harness::TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_vec());
    }
    crate::harness::Reply::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn an_operator_reads_writes_and_deletes_one_entry_against_its_tag() {
    let server = Server::start();
    server.deploy_guest(Guest::KvPlain).await;
    server
        .request(
            Method::PUT,
            "/kv-plain/b/k",
            None,
            Some(b"from the plugin".to_vec()),
        )
        .await;

    let read = entry(&server, Method::GET, "k", &[], None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, b"from the plugin");
    assert_eq!(read.headers["content-type"], "application/octet-stream");
    let tag = read.headers["etag"].to_str().unwrap().to_string();

    // Written against the tag read: the plugin sees the new bytes.
    let written = entry(
        &server,
        Method::PUT,
        "k",
        &[("if-match", &tag)],
        Some(b"\x00edited"),
    )
    .await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.text());
    assert_eq!(server.get("/kv-plain/b/k").await.body, b"\x00edited");
    let new_tag = format!("\"{}\"", written.json()["tag"].as_str().unwrap());
    assert_ne!(new_tag, tag);
    // The old tag no longer matches: nothing is written.
    let stale = entry(
        &server,
        Method::PUT,
        "k",
        &[("if-match", &tag)],
        Some(b"lost"),
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.code(), "kv_value_changed");
    assert_eq!(server.get("/kv-plain/b/k").await.body, b"\x00edited");
    // `If-Match: *` replaces only what exists; a create never replaces.
    let absent = entry(
        &server,
        Method::PUT,
        "nothing-here",
        &[("if-match", "*")],
        Some(b"x"),
    )
    .await;
    assert_eq!(absent.code(), "kv_value_changed");
    // A create never replaces.
    let create = entry(
        &server,
        Method::PUT,
        "k",
        &[("if-none-match", "*")],
        Some(b"x"),
    )
    .await;
    assert_eq!(create.code(), "kv_value_changed");
    let create = entry(
        &server,
        Method::PUT,
        "fresh",
        &[("if-none-match", "*")],
        Some(b"x"),
    )
    .await;
    assert_eq!(create.status, StatusCode::OK, "{}", create.text());
    // Limits hold as for the plugin's own writes.
    let long_key = "k".repeat(2000);
    let refused = entry(&server, Method::PUT, &long_key, &[], Some(b"x")).await;
    assert_eq!(refused.code(), "invalid_key");

    let deleted = entry(&server, Method::DELETE, "k", &[], None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/kv-plain/b/k").await.status,
        StatusCode::NOT_FOUND
    );
    let again = entry(&server, Method::DELETE, "k", &[], None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "kv_entry_not_found");
    let missing = entry(&server, Method::GET, "k", &[], None).await;
    assert_eq!(missing.code(), "kv_entry_not_found");

    // Each change is audited by bucket and key, never with its value.
    let audit = server
        .admin(Method::GET, "/admin/audit?target=kv-plain")
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["kv.delete", "kv.set", "kv.set", "plugin.deploy"],
        "{audit}"
    );
    assert_eq!(audit["entries"][2]["details"]["key"], "k");
    assert!(!audit.to_string().contains("edited"), "{audit}");
}

#[tokio::test]
async fn a_purge_after_a_plain_delete_removes_the_data_and_no_write_in_flight_outlives_it() {
    let server = std::sync::Arc::new(Server::start());
    server.deploy_guest(Guest::Hostile).await;
    let usage = |server: std::sync::Arc<Server>| async move {
        let page = server.admin(Method::GET, "/admin/plugins/hostile/kv").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        page.json()["usage_bytes"].as_u64().unwrap()
    };
    // A request that writes after 800 ms, and a delete with purge while it waits.
    let writer = {
        let server = server.clone();
        tokio::spawn(async move { server.get("/hostile/slow-write/800").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let purged = server
        .admin(Method::DELETE, "/admin/plugins/hostile?purge=true")
        .await;
    assert_eq!(purged.status, StatusCode::NO_CONTENT, "{}", purged.text());
    // The purge waited for the request, whose write, coming after the delete, was refused:
    // nothing came back after the purge.
    let late = writer.await.unwrap().text();
    assert!(late.contains("plugin_removed"), "{late}");
    assert_eq!(usage(server.clone()).await, 0);

    // A plain delete keeps the data; a later `?purge=true` still removes it.
    server.deploy_guest(Guest::Hostile).await;
    assert_eq!(
        server.get("/hostile/slow-write/1").await.text(),
        "ok written"
    );
    let deleted = server.admin(Method::DELETE, "/admin/plugins/hostile").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(usage(server.clone()).await > 0);
    let purged = server
        .admin(Method::DELETE, "/admin/plugins/hostile?purge=true")
        .await;
    assert_eq!(purged.status, StatusCode::NO_CONTENT, "{}", purged.text());
    assert_eq!(usage(server.clone()).await, 0);
    // Nothing left: a purge of nothing is a 404.
    let again = server
        .admin(Method::DELETE, "/admin/plugins/hostile?purge=true")
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // Each delete is recorded with its delete, each finished purge with its last step; the
    // refused purge recorded nothing.
    let audit = server
        .admin(Method::GET, "/admin/audit?target=hostile")
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "plugin.purge",
            "plugin.delete",
            "plugin.deploy",
            "plugin.purge",
            "plugin.delete",
            "plugin.deploy"
        ],
        "{audit}"
    );
}

#[tokio::test]
async fn a_listing_of_large_values_is_cut_into_pages_of_bounded_size() {
    let server = Server::start();
    server.deploy_guest(Guest::KvPlain).await;
    for i in 0..10 {
        let stored = server
            .request(
                Method::PUT,
                &format!("/kv-plain/b/k{i}"),
                None,
                Some(vec![b'v'; 1_000_000]),
            )
            .await;
        assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    }
    // However many entries are asked for, a page stops at about 8 MiB of values, and the
    // cursor carries on from there.
    for filter in ["bucket=b&", ""] {
        let mut sizes = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/admin/plugins/kv-plain/kv?{filter}limit=1000{cursor}");
            let page = server.admin(Method::GET, &path).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text());
            let page = page.json();
            sizes.push(page["entries"].as_array().unwrap().len());
            match page["cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(sizes, [9, 1], "{filter}");
    }
}
