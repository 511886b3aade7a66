//! Durability under `kill -9`: 8 clients write through a plugin while the host is killed at a
//! random moment; then the host is killed again at a random moment of its restart. Every write
//! that was acknowledged (a 200 after the plugin's `set`) must be there once the host is up
//! again, the store must open every time, and each plugin's usage counter must equal what its
//! entries use.
//!
//! CI runs `PLINTH_CRASH_ROUNDS` (default 20) rounds of each; a longer soak is
//! `PLINTH_CRASH_ROUNDS=500 cargo test -p plinth --test e2e crash -- --nocapture`.

use crate::harness::{Guest, Options, Server, TempDir, command};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WRITERS: usize = 8;

fn rounds() -> usize {
    std::env::var("PLINTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Keys the export of `kv-plain` holds in `bucket`. Also checks that the plugin's usage
/// counter equals what its entries really use (a crash must not leave it wrong).
pub(crate) async fn stored_keys(server: &Server, bucket: &str) -> BTreeSet<String> {
    let export = server
        .admin(reqwest::Method::GET, "/admin/plugins/kv-plain/kv/export")
        .await;
    assert_eq!(export.status, StatusCode::OK);
    let entries: Vec<serde_json::Value> = export
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let used: usize = entries
        .iter()
        .map(|e| {
            let value = STANDARD
                .decode(e["value_base64"].as_str().unwrap())
                .unwrap();
            // Bucket, key and value, plus what every entry costs the quota.
            e["bucket"].as_str().unwrap().len()
                + e["key"].as_str().unwrap().len()
                + value.len()
                + 64
        })
        .sum();
    let page = server
        .admin(reqwest::Method::GET, "/admin/plugins/kv-plain/kv?limit=1")
        .await
        .json();
    assert_eq!(page["usage_bytes"], used as u64, "usage counter drifted");
    entries
        .iter()
        .filter(|entry| entry["bucket"] == bucket)
        .map(|entry| entry["key"].as_str().unwrap().to_string())
        .collect()
}

/// Writes distinct keys until the server goes away; returns the acknowledged ones.
pub(crate) async fn write_until_killed(base: String, writer: usize, round: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for seq in 0.. {
        let key = format!("r{round}-w{writer}-{seq}");
        let sent = client
            .put(format!("{base}/kv-plain/crash/{key}"))
            .body(key.clone())
            .send()
            .await;
        match sent {
            Ok(reply) if reply.status() == StatusCode::OK => acked.push(key),
            Ok(reply) => panic!("write {key} refused: {}", reply.status()),
            Err(_) => break, // killed
        }
    }
    acked
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_during_writes_and_during_restart() {
    let dir = TempDir::new();
    let mut rng = rand::rng();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut restarts_killed = 0;
    let mut rounds_with_writes = 0;
    for round in 0..rounds() {
        // The store must open every time, whatever the last kill interrupted.
        let server = Server::start_with(dir.path(), Options::default());
        if round == 0 {
            server.deploy_guest(Guest::KvPlain).await;
        }
        let stored = stored_keys(&server, "crash").await;
        let expected = acked.lock().unwrap().clone();
        let lost: Vec<_> = expected.difference(&stored).take(5).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost after kill -9, e.g. {lost:?}"
        );

        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_until_killed(server.base.clone(), w, round)))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        drop(server); // SIGKILL while the writers are mid-flight
        let mut written = 0;
        for writer in writers {
            let keys = writer.await.unwrap();
            written += keys.len();
            acked.lock().unwrap().extend(keys);
        }
        if written > 0 {
            rounds_with_writes += 1;
        }

        // Kill again at a random moment of the restart (store recovery, plugin loading).
        let mut child = command(&dir.path(), &Options::default()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        if child.try_wait().unwrap().is_none() {
            restarts_killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    // A final start checks the last round.
    let server = Server::start_with(dir.path(), Options::default());
    let stored = stored_keys(&server, "crash").await;
    let expected = acked.lock().unwrap().clone();
    assert!(
        expected.is_subset(&stored),
        "acknowledged writes lost in the last round"
    );
    assert!(restarts_killed > 0, "no restart was interrupted");
    // An early kill on a loaded machine may land before any write; most rounds have some.
    assert!(
        rounds_with_writes * 2 > rounds(),
        "too few rounds wrote anything"
    );
    let quarantined = std::fs::read_dir(dir.path().join("quarantine")).map_or(0, |d| d.count());
    eprintln!(
        "{} rounds: {} acknowledged writes, all present; {restarts_killed} restarts killed; \
         {quarantined} partial snapshots quarantined",
        rounds(),
        expected.len()
    );
}
