//! A plugin attacking the host's own resources through its imports (`tests/programs/hostile`):
//! key-value batches, log floods, outbound floods, and components shaped to take more than one
//! instance slot. Each attack fails with the interface's own error or at deploy, the server's
//! memory stays small, and other plugins keep serving.

use crate::harness::{Guest, Options, Server, TOKEN};
use reqwest::{Method, StatusCode};
use std::time::Duration;

/// What the server may hold at once in these tests: the kernel kills it past this where a
/// memory cgroup can be made, and each test checks its peak stays under [`MEMORY_PEAK`].
const MEMORY_LIMIT: u64 = 1 << 30;
const MEMORY_PEAK: u64 = 768 << 20;

async fn hostile_server() -> Server {
    let server = Server::start_fresh(Options {
        memory_limit: Some(MEMORY_LIMIT),
        ..Options::default()
    });
    server.deploy_guest(Guest::Hostile).await;
    server.deploy_guest(Guest::Hello).await;
    server
}

async fn answer(server: &Server, path: &str) -> String {
    let reply = server.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    reply.text()
}

#[tokio::test]
async fn key_value_batches_are_bounded_and_the_server_stays_small() {
    let mut server = hostile_server().await;
    // One 1 MiB value asked for 5,000 times: over the key cap, refused before any read.
    let many = answer(&server, "/hostile/get-many/5000").await;
    assert!(many.starts_with("error batch_too_large"), "{many}");
    // 1,000 times is within the key cap but 1 GiB of values: refused at the byte budget.
    let big = answer(&server, "/hostile/get-many/1000").await;
    assert!(big.starts_with("error batch_too_large"), "{big}");
    assert_eq!(answer(&server, "/hostile/get-many/8").await, "ok 8");
    for op in ["set-many", "delete-many"] {
        let over = answer(&server, &format!("/hostile/{op}/1001")).await;
        assert!(over.starts_with("error batch_too_large"), "{op}: {over}");
        assert_eq!(
            answer(&server, &format!("/hostile/{op}/1000")).await,
            "ok 1000"
        );
    }
    // The host never held the gigabyte the guest asked for, not even for a moment.
    assert!(server.is_running(), "the server was killed");
    let peak = server.peak_memory_bytes();
    eprintln!("server memory peak: {} MiB", peak >> 20);
    assert!(
        peak < MEMORY_PEAK,
        "server memory peaked at {} MiB",
        peak >> 20
    );
    assert_eq!(server.get("/hello/after").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_list_whose_entries_alias_the_same_guest_bytes_is_not_copied_once_per_entry() {
    let mut server = hostile_server().await;
    // 1 MiB of guest memory named 1,000 times: lifting it would take 1 GiB of host memory
    // before the host function (and its batch caps) ever ran. The hostcall fuel stops the copy
    // early and the guest is ended.
    let reply = server.get("/hostile/aliased-set-many/1000").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert_eq!(reply.code(), "plugin_failed");
    // A small aliased list is lifted as usual (and refused by the batch's own byte cap only
    // when over it).
    assert_eq!(answer(&server, "/hostile/aliased-set-many/2").await, "ok 2");
    assert!(server.is_running(), "the server was killed");
    let peak = server.peak_memory_bytes();
    eprintln!("server memory peak: {} MiB", peak >> 20);
    assert!(
        peak < MEMORY_PEAK,
        "server memory peaked at {} MiB",
        peak >> 20
    );
    assert_eq!(server.get("/hello/after").await.status, StatusCode::OK);
}

#[tokio::test]
async fn plugin_log_lines_are_cut_escaped_and_rate_limited_in_the_server_log() {
    let server = hostile_server().await;
    assert_eq!(answer(&server, "/hostile/log/500").await, "ok 500");
    // A new second: the count of lines kept out is reported, and a 1 MiB line is cut.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(answer(&server, "/hostile/log/1").await, "ok 1");
    server.wait_for_log(&["plugin log lines kept out of the server log", "hostile"]);
    server.wait_for_log(&["yyyy", "[cut]"]);
    let logs = server.logs();
    let forged: Vec<_> = logs.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(!forged.is_empty());
    for line in &forged {
        // The plugin's newline is escaped: its "second line" stays inside its own.
        assert!(line.contains("line ") && line.contains("\\n"), "{line}");
    }
    assert!(
        forged.len() <= 200,
        "{} plugin lines in one second",
        forged.len()
    );
    let longest = logs.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 8 << 10, "a server log line of {longest} bytes");
    // The plugin's own buffer still has its newest lines.
    let page = server
        .get_as("/admin/plugins/hostile/logs?limit=5", TOKEN)
        .await
        .json();
    assert_eq!(page["lines"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn an_instance_cannot_flood_outbound_calls() {
    // A third party that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let server = Server::start();
    let manifest = format!(
        "{}\n[outbound]\nallow = [\"http://127.0.0.1:{port}\"]\n",
        Guest::Hostile.manifest()
    );
    let reply = server
        .deploy("hostile", &manifest, &Guest::Hostile.component())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    server.deploy_guest(Guest::Hello).await;
    let url = format!("http://127.0.0.1:{port}/");
    let flood = answer(&server, &format!("/hostile/outbound/50?url={url}")).await;
    assert_eq!(flood, "ok accepted 8 refused 42");
    assert_eq!(server.get("/hello/after").await.status, StatusCode::OK);
    drop(silent);
}

#[tokio::test]
async fn a_component_with_more_memories_than_an_instance_slot_holds_is_refused() {
    let server = Server::start();
    // Two core modules with a memory each: counted one by one, each memory would get the whole
    // limit and the component two slots of the pool.
    let component = wat::parse_str(
        r#"(component
            (core module $a (memory (export "m") 1))
            (core module $b (memory (export "m") 1))
            (core instance (instantiate $a))
            (core instance (instantiate $b)))"#,
    )
    .unwrap();
    let reply = server
        .deploy(
            "twomem",
            "name = \"twomem\"\n[[routes]]\npath = \"/twomem\"\nmethods = [\"GET\"]\n",
            &component,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.code(), "component_over_limits");
    assert!(reply.text().contains("memories"), "{}", reply.text());
    let listed = server.admin(Method::GET, "/admin/plugins").await.json();
    assert!(!listed.to_string().contains("twomem"));
}

#[tokio::test]
async fn a_catch_all_route_never_gets_the_hosts_paths() {
    let server = Server::start();
    // The misbehave component under a route that matches every path.
    let manifest = Guest::Misbehave
        .manifest()
        .replace("/misbehave/{*rest}", "/{*rest}");
    let reply = server
        .deploy("misbehave", &manifest, &Guest::Misbehave.component())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    assert_eq!(answer(&server, "/anything/else").await, "ok");
    for path in ["/admin/unknown", "/auth/unknown", "/_/dashboard", "/admin"] {
        let reply = server.get(path).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text()
        );
        assert_eq!(reply.code(), "not_found", "{path}");
    }
}
