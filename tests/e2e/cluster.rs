//! Several hosts on one PostgreSQL (`--store postgres://...`): what one host stores, every
//! host serves. Runs whenever a test server is configured (`cargo xtask test` always does).

use crate::harness::{Guest, Options, Server};
use plinth_host::store::test_database::TestDatabase;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn hosts_on_one_database_serve_the_same_plugins_and_data() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let options = || Options::with_args(&["--store", &url]);
    let a = Server::start_fresh(options());
    a.deploy_guest(Guest::KvPlain).await;
    let put = a
        .request(
            Method::PUT,
            "/kv-plain/shared/greeting",
            None,
            Some(b"from a".to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());

    // A second host with its own (empty) data directory loads the plugin from the database
    // and reads what the first one wrote.
    let b = Server::start_fresh(options());
    let read = b.get("/kv-plain/shared/greeting").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    assert_eq!(read.text(), "from a");
    let put = b
        .request(
            Method::PUT,
            "/kv-plain/shared/greeting",
            None,
            Some(b"from b".to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    assert_eq!(a.get("/kv-plain/shared/greeting").await.text(), "from b");
    let versions = b
        .admin(Method::GET, "/admin/plugins/kv-plain/versions")
        .await;
    assert_eq!(versions.status, StatusCode::OK, "{}", versions.text());
    assert!(
        versions.text().contains("\"version\":1"),
        "{}",
        versions.text()
    );
    drop((a, b));
    database.remove().await;
}

/// Polls `check` until it holds, for at most 10 s (a change normally arrives within
/// milliseconds; the bound only keeps a broken build from hanging), and says how long it took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: not seen within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Whether `host` serves the plugin's route under `prefix` (a PUT the plugin answers 200; the
/// host answers 404 for a path no route matches).
async fn served(host: &Server, prefix: &str) -> bool {
    let reply = host
        .request(
            Method::PUT,
            &format!("/{prefix}/k"),
            None,
            Some(b"v".to_vec()),
        )
        .await;
    reply.status == StatusCode::OK
}

/// The kv-plain component under a manifest whose one route starts with `prefix`.
fn manifest_at(prefix: &str) -> String {
    format!(
        "name = \"moving\"\n[[routes]]\npath = \"/{prefix}/{{*rest}}\"\nmethods = [\"GET\", \"PUT\"]\n"
    )
}

#[tokio::test]
async fn a_change_on_one_host_reaches_every_other_host() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let options = || Options::with_args(&["--store", &url]);
    let (a, b, c) = (
        Server::start_fresh(options()),
        Server::start_fresh(options()),
        Server::start_fresh(options()),
    );
    let component = Guest::KvPlain.component();
    // A deploy on A serves on B and C.
    let deployed = a.deploy("moving", &manifest_at("one"), &component).await;
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    for host in [&b, &c] {
        let took = eventually("the deploy", || served(host, "one")).await;
        eprintln!("deploy seen after {took:?}");
    }
    // Version 2 on A moves the route; a rollback on B moves it back on A.
    let deployed = a.deploy("moving", &manifest_at("two"), &component).await;
    assert_eq!(deployed.status, StatusCode::OK, "{}", deployed.text());
    eventually("version 2 on B", || served(&b, "two")).await;
    let rolled = b
        .admin(Method::POST, "/admin/plugins/moving/rollback")
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", rolled.text());
    let took = eventually("the rollback on A", || async {
        served(&a, "one").await && !served(&a, "two").await
    })
    .await;
    eprintln!("rollback seen after {took:?}");

    // Config set on A reaches the plugin on C.
    let set = a
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config",
            serde_json::json!({ "greeting": "from a", "api_token": "t" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    c.deploy_guest(Guest::ConfigReader).await;
    let changed = b
        .send_json(
            Method::PUT,
            "/admin/plugins/config-reader/config/greeting",
            serde_json::json!({ "value": "from b" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    for host in [&a, &c] {
        eventually("the config change", || async {
            host.get("/config-reader/greeting").await.text() == "from b"
        })
        .await;
    }

    // A signing key rotated on C verifies on A.
    let rotated = c.admin(Method::POST, "/admin/signing-keys/rotate").await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let newest = rotated.json()["current"].clone();
    assert!(newest.is_string(), "{}", rotated.text());
    eventually("the new signing key on A", || async {
        a.admin(Method::GET, "/admin/signing-keys").await.json()["current"] == newest
    })
    .await;

    // An API key made on B works on C; revoked on A, it is refused on C at once.
    let created = b
        .send_json(
            Method::POST,
            "/admin/api-keys",
            serde_json::json!({ "name": "ci", "role": "operator" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let key = created.json()["key"].as_str().unwrap().to_string();
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.get_as("/admin/plugins", &key).await.status,
        StatusCode::OK
    );
    let revoked = a
        .admin(Method::DELETE, &format!("/admin/api-keys/{id}"))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text());
    // Keys are read from the database on every use: refused at once, not eventually.
    let refused = c.get_as("/admin/plugins", &key).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );

    // A delete on C stops A and B serving it.
    let deleted = c.admin(Method::DELETE, "/admin/plugins/moving").await;
    assert!(deleted.status.is_success(), "{}", deleted.text());
    for host in [&a, &b] {
        eventually("the delete", || async { !served(host, "one").await }).await;
    }
    drop((a, b, c));
    database.remove().await;
}

#[tokio::test]
async fn a_host_that_loses_its_database_says_so_and_recovers_by_itself() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let host = Server::start_fresh(Options::with_args(&["--store", &database.url()]));
    host.deploy_guest(Guest::KvPlain).await;
    for i in 0..20 {
        let put = host
            .request(
                Method::PUT,
                &format!("/kv-plain/kept/k{i}"),
                None,
                Some(format!("v{i}").into_bytes()),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    }

    database.set_reachable(false).await;
    eventually("/readyz saying not ready", || async {
        host.get("/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let ready = host.get("/readyz").await;
    assert_eq!(ready.code(), "store_unavailable", "{}", ready.text());
    // A write is refused with a clear, retryable error (the plugin's own 500 carries the
    // store's failure; an admin read answers 503 itself).
    let listed = host
        .admin(Method::GET, "/admin/plugins/kv-plain/kv?limit=5")
        .await;
    assert_eq!(
        listed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        listed.text()
    );
    assert_eq!(listed.code(), "store_unavailable");
    assert_eq!(
        listed
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    // Plugins that need no storage keep serving meanwhile.
    assert_eq!(host.get("/healthz").await.status, StatusCode::OK);

    database.set_reachable(true).await;
    eventually("/readyz ready again", || async {
        host.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    for i in 0..20 {
        let read = host.get(&format!("/kv-plain/kept/k{i}")).await;
        assert_eq!(
            read.text(),
            format!("v{i}"),
            "an acknowledged write was lost"
        );
    }
    let put = host
        .request(
            Method::PUT,
            "/kv-plain/kept/after",
            None,
            Some(b"ok".to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    drop(host);
    database.remove().await;
}

#[tokio::test]
async fn killing_one_host_under_write_load_loses_no_acknowledged_write_and_the_others_serve_on() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let options = || Options::with_args(&["--store", &url]);
    let survivor = Server::start_fresh(options());
    survivor.deploy_guest(Guest::KvPlain).await;
    let mut acked = std::collections::BTreeSet::new();
    let mut acked_by_the_killed = 0;
    for round in 0..5 {
        let victim = Server::start_fresh(options());
        // Writers on the host about to die write until it does; writers on the other host
        // write throughout, and every one of their writes must succeed.
        let dying: Vec<_> = (0..4)
            .map(|w| {
                let base = victim.base.clone();
                tokio::spawn(crate::crash::write_until_killed(base, w, round))
            })
            .collect();
        let living: Vec<_> = (0..4)
            .map(|w| {
                let base = survivor.base.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut keys = Vec::new();
                    for seq in 0..40 {
                        let key = format!("r{round}-s{w}-{seq}");
                        let reply = client
                            .put(format!("{base}/kv-plain/crash/{key}"))
                            .body(key.clone())
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(reply.status(), StatusCode::OK, "{key} on the survivor");
                        keys.push(key);
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    keys
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(100 + 50 * round as u64)).await;
        drop(victim); // SIGKILL while its writers are mid-flight
        for writer in dying {
            let keys = writer.await.unwrap();
            acked_by_the_killed += keys.len();
            acked.extend(keys);
        }
        for writer in living {
            acked.extend(writer.await.unwrap());
        }
        let stored = crate::crash::stored_keys(&survivor, "crash").await;
        let lost: Vec<_> = acked.difference(&stored).take(5).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost: {lost:?}"
        );
    }
    assert!(
        acked_by_the_killed > 0,
        "the killed hosts never took a write"
    );
    eprintln!("{acked_by_the_killed} writes acknowledged by hosts then killed, none lost");
    drop(survivor);
    database.remove().await;
}

#[tokio::test]
async fn an_account_disabled_on_one_host_is_refused_on_another_at_once() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let options = || Options::with_args(&["--store", &url]);
    let (a, b) = (
        Server::start_fresh(options()),
        Server::start_fresh(options()),
    );
    a.deploy_guest(Guest::WhoAmI).await;
    eventually("the plugin on B", || async {
        b.get("/whoami").await.status != StatusCode::NOT_FOUND
    })
    .await;
    let (access, _) = crate::auth::signed_in(&a, "moved@example.com").await;
    // B reads the account (and keeps it: a guarded request on B costs no database read while
    // nothing changes).
    for _ in 0..3 {
        assert_eq!(b.get_as("/whoami", &access).await.status, StatusCode::OK);
    }
    let users = a.admin(Method::GET, "/admin/users").await.json();
    let id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "moved@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let disabled = a
        .send_json(
            Method::POST,
            &format!("/admin/users/{id}/disable"),
            serde_json::json!({}),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text());
    let took = eventually("the disable on B", || async {
        b.get_as("/whoami", &access).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    eprintln!("disable seen on B after {took:?}");
    drop((a, b));
    database.remove().await;
}

#[tokio::test]
async fn guesses_spread_over_hosts_are_throttled_as_on_one() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let options = || Options::with_args(&["--store", &url, "--auth-rate-limit", "1000"]);
    let (a, b) = (
        Server::start_fresh(options()),
        Server::start_fresh(options()),
    );
    crate::auth::signed_in(&a, "target@example.com").await;
    let guess = |host: &Server| {
        let host = host.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{host}/auth/login"))
                .json(&serde_json::json!({
                    "email": "target@example.com",
                    "password": "not the password",
                }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Ten wrong guesses, alternating hosts: each host alone has seen five.
    for i in 0..10 {
        let host = if i % 2 == 0 { &a } else { &b };
        assert_eq!(guess(host).await, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // The account is now slowed down on both.
    assert_eq!(guess(&a).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(guess(&b).await, StatusCode::TOO_MANY_REQUESTS);
    drop((a, b));
    database.remove().await;

    // The per-address limit counts every host's requests too (a database of its own: the
    // guesses above used this address's allowance there).
    let database = TestDatabase::create().await.unwrap();
    let url = database.url();
    let options = || Options::with_args(&["--store", &url, "--auth-rate-limit", "4"]);
    let (a, b) = (
        Server::start_fresh(options()),
        Server::start_fresh(options()),
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        let host = if i % 2 == 0 { &a } else { &b };
        let reply = host
            .post_json(
                "/auth/login",
                serde_json::json!({ "email": "nobody@example.com", "password": "x" }),
                None,
            )
            .await;
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        2,
        "four requests from one address in all, whichever host: {statuses:?}"
    );
    drop((a, b));
    database.remove().await;
}

/// Writes unique keys to `base` until `stop`, as fast as answers come; returns the keys
/// acknowledged (200), and how many writes were refused and how many acknowledged after
/// `recovered` was set.
async fn write_through_outage(
    base: String,
    writer: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    recovered: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<String>, usize, usize) {
    use std::sync::atomic::Ordering;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let (mut acked, mut refused, mut after) = (Vec::new(), 0, 0);
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{writer}-{seq}");
        seq += 1;
        let reply = client
            .put(format!("{base}/kv-plain/restart/{key}"))
            .body(key.clone())
            .send()
            .await
            .expect("the host stays up while its database restarts");
        let status = reply.status();
        if status == StatusCode::OK {
            acked.push(key);
            after += usize::from(recovered.load(Ordering::Relaxed));
        } else {
            // The store's failure as the plugin passes it on (kv-plain answers the host's
            // message with a 400) or as the host reports it: out of reach (retryable), or a
            // commit cut off by the restart (its outcome unknown: never retried blindly).
            let text = reply.text().await.unwrap_or_default();
            assert!(
                text.starts_with("store_unavailable:")
                    || (text.starts_with("storage_failed:") && text.contains("outcome is unknown"))
                    || status.is_server_error(),
                "{status}: {text}"
            );
            refused += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    (acked, refused, after)
}

#[tokio::test]
async fn restarting_postgres_under_write_load_loses_no_acknowledged_write_and_needs_no_host_restart()
 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // A server of this test's own: stopping the shared one would fail every other test.
    let postgres = match plinth_test_postgres::TestPostgres::start_private() {
        Ok(Some(postgres)) => Arc::new(postgres),
        Ok(None) => {
            assert!(
                std::env::var_os("PLINTH_TEST_REQUIRE_POSTGRES").is_none(),
                "PLINTH_TEST_REQUIRE_POSTGRES is set but PostgreSQL is not installed"
            );
            return;
        }
        Err(e) => panic!("starting a PostgreSQL server: {e:#}"),
    };
    let url = postgres.create_database("plinth").unwrap();
    let options = || Options::with_args(&["--store", &url]);
    let hosts = [
        Server::start_fresh(options()),
        Server::start_fresh(options()),
    ];
    hosts[0].deploy_guest(Guest::KvPlain).await;
    eventually("the deploy on the other host", || {
        served(&hosts[1], "kv-plain")
    })
    .await;

    let (stop, recovered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let base = hosts[w % 2].base.clone();
            tokio::spawn(write_through_outage(
                base,
                w,
                stop.clone(),
                recovered.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // The database goes away (as `pg_ctl restart` does, with a pause in the middle).
    let server = postgres.clone();
    tokio::task::spawn_blocking(move || server.stop_server())
        .await
        .unwrap()
        .unwrap();
    for host in &hosts {
        eventually("/readyz saying not ready", || async {
            host.get("/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
        assert_eq!(host.get("/readyz").await.code(), "store_unavailable");
        let listed = host
            .admin(Method::GET, "/admin/plugins/kv-plain/kv?limit=5")
            .await;
        assert_eq!(
            listed.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            listed.text()
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let server = postgres.clone();
    tokio::task::spawn_blocking(move || server.start_server())
        .await
        .unwrap()
        .unwrap();

    // Both hosts come back by themselves and take writes again.
    for host in &hosts {
        eventually("/readyz ready again", || async {
            host.get("/readyz").await.status == StatusCode::OK
        })
        .await;
    }
    recovered.store(true, Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut refused, mut after) = (std::collections::BTreeSet::new(), 0, 0);
    for writer in writers {
        let (keys, r, a) = writer.await.unwrap();
        acked.extend(keys);
        refused += r;
        after += a;
    }
    assert!(
        refused > 0,
        "no write was refused while the database was down"
    );
    assert!(
        after > 0,
        "no write was acknowledged after the database came back"
    );
    for host in &hosts {
        let stored = crate::crash::stored_keys(host, "restart").await;
        let lost: Vec<_> = acked.difference(&stored).take(5).collect();
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    }
    eprintln!(
        "{} writes acknowledged ({after} after the restart), {refused} refused while the \
         database was down, none lost",
        acked.len()
    );
}
