//! `plinth migrate`: a populated single-host data directory moves to PostgreSQL, where a host
//! serves everything it served (accounts, sessions, API keys, plugins and their versions,
//! config and secrets, key-value data, the audit log), and back to a data directory, every
//! record checked by counts and hashes.

use crate::harness::{Guest, Options, Server, TempDir};
use plinth_host::store::test_database::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::Output;

const EMAIL: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "sk_live_migrated_5e1f";

fn with_admin(args: &[&str]) -> Options {
    Options {
        env: vec![
            ("PLINTH_ADMIN_EMAIL".into(), EMAIL.into()),
            ("PLINTH_ADMIN_PASSWORD".into(), PASSWORD.into()),
        ],
        ..Options::with_args(args)
    }
}

fn migrate(from: &str, to: &str, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["migrate", "--from", from, "--to", to])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running plinth migrate")
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The `inventory sha256:` line of a migration's report.
fn inventory_hash(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("inventory sha256: "))
        .unwrap_or_else(|| panic!("no inventory hash in {stdout}"))
        .to_string()
}

async fn login(server: &Server) -> Value {
    let reply = server
        .post_json(
            "/auth/login",
            json!({ "email": EMAIL, "password": PASSWORD }),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// What a client and an operator see of the installation: the same before and after a move.
async fn observed(server: &Server, access: &str, api_key: &str) -> Value {
    let versions = server
        .admin(Method::GET, "/admin/plugins/kv-plain/versions")
        .await;
    assert_eq!(versions.status, StatusCode::OK, "{}", versions.text());
    let audit = server.get_as("/admin/audit?limit=100", access).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text());
    json!({
        "users": server.get_as("/admin/users", access).await.json()["users"],
        "with_api_key": server.get_as("/admin/plugins", api_key).await.status.as_u16(),
        "versions": versions.json(),
        "audit": audit.json(),
        "config": server.admin(Method::GET, "/admin/plugins/config-reader/config").await.json(),
        "secret_in_plugin": server.get("/config-reader/api_token").await.text(),
        "kv": server.get("/kv-plain/shared/greeting").await.text(),
        "kv_many": server.get("/kv-plain/bulk/key-0399").await.text(),
    })
}

#[tokio::test]
async fn a_data_directory_moves_to_postgres_and_back_with_every_record() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let first = TempDir::new();
    let mut single = Server::start_with(first.path(), with_admin(&[]));
    let session = login(&single).await;
    let access = session["access_token"].as_str().unwrap().to_string();
    let refresh = session["refresh_token"].as_str().unwrap().to_string();
    let created = single
        .send_json(
            Method::POST,
            "/admin/api-keys",
            json!({ "name": "ci", "role": "operator" }),
            Some(&access),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let api_key = created.json()["key"].as_str().unwrap().to_string();
    single.deploy_guest(Guest::KvPlain).await;
    single.deploy_guest(Guest::KvPlain).await;
    single.deploy_guest(Guest::ConfigReader).await;
    for (path, body) in [
        ("config", json!({ "greeting": "hello" })),
        (
            "config/api_token",
            json!({ "value": SECRET, "secret": true }),
        ),
    ] {
        let set = single
            .send_json(
                Method::PUT,
                &format!("/admin/plugins/config-reader/{path}"),
                body,
                Some(crate::harness::TOKEN),
            )
            .await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    }
    let put = |path: String, body: &'static [u8]| {
        let server = &single;
        async move {
            let reply = server
                .request(Method::PUT, &path, None, Some(body.to_vec()))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
    };
    put("/kv-plain/shared/greeting".into(), b"kept across stores").await;
    for i in 0..1200 {
        put(format!("/kv-plain/bulk/key-{i:04}"), b"bulk").await;
    }
    let before = observed(&single, &access, &api_key).await;
    assert_eq!(before["secret_in_plugin"], SECRET);
    assert_eq!(before["kv_many"], "bulk");
    assert!(single.terminate().success());

    // To PostgreSQL: copied and checked.
    let dir = first.path().display().to_string();
    let there = succeeded(&migrate(&dir, &url, &[]));
    assert!(there.contains("verified"), "{there}");
    // Not twice into a database that holds data, and the database is left as it was.
    let again = migrate(&dir, &url, &[]);
    assert!(!again.status.success());
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(
        refusal.contains("already holds data") && refusal.contains("--force"),
        "{refusal}"
    );

    // Back to a data directory: the same records, by the same inventory hash.
    let back = TempDir::new();
    let back_dir = back.path().join("data");
    let returned = succeeded(&migrate(&url, &back_dir.display().to_string(), &[]));
    assert_eq!(inventory_hash(&returned), inventory_hash(&there));

    // A host on PostgreSQL serves what the single host served: the same accounts, the old
    // session and API key, plugins with their versions, config and secrets, data, audit.
    let mut clustered = Server::start_fresh(with_admin(&["--store", &url]));
    assert_eq!(observed(&clustered, &access, &api_key).await, before);
    let rotated = clustered
        .post_json("/auth/refresh", json!({ "refresh_token": refresh }), None)
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    assert!(clustered.terminate().success());

    // And so does a single host on the directory it came back to.
    let home = Server::start_with(back_dir, with_admin(&[]));
    assert_eq!(observed(&home, &access, &api_key).await, before);
    drop(home);
    database.remove().await;
}
