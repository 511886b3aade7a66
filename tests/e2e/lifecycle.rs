//! The server's life: restarts, the generated admin token, configuration sources, shutdown.

use crate::harness::{Guest, Options, Server, TempDir};
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[tokio::test]
async fn plugins_serve_again_after_a_restart_without_re_upload() {
    let server = Server::start();
    let hello = server.deploy_guest(Guest::Hello).await;
    server.deploy_guest(Guest::PlainHttp).await;
    // SIGKILL: the deploy was acknowledged, so it must be on disk.
    let server = server.restart();
    assert_eq!(
        server.get("/hello/again").await.json()["message"],
        "hello, again"
    );
    assert_eq!(server.get("/plain/x").await.text(), "plain GET /plain/x");
    let show = server.admin(Method::GET, "/admin/plugins/hello").await;
    assert_eq!(show.json(), hello);
    // A delete is durable too.
    let deleted = server.admin(Method::DELETE, "/admin/plugins/plain").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let server = server.restart();
    assert_eq!(server.get("/plain/x").await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/hello/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_admin_token_is_generated_once_and_only_its_hash_kept() {
    let temp = TempDir::new();
    let dir = temp.path();
    let options = Options {
        no_env_token: true,
        ..Default::default()
    };
    let server = Server::start_with(dir.clone(), options.clone());
    // On standard output only, never in the log stream.
    let line = server.wait_for_printed("plinth_admin_");
    assert!(!server.logs().iter().any(|l| l.contains("plinth_admin_")));
    let token = line
        .split_whitespace()
        .find(|w| w.starts_with("plinth_admin_"))
        .unwrap()
        .to_string();
    let ok = server
        .request(Method::GET, "/admin/plugins", Some(&token), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    drop(server);

    // The token is not stored in clear anywhere in the data directory.
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} contains the token",
            entry.display()
        );
    }

    // A restart keeps the same token and prints none.
    let server = Server::start_with(dir.clone(), options);
    let ok = server
        .request(Method::GET, "/admin/plugins", Some(&token), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(!server.logs().iter().any(|l| l.contains("plinth_admin_")));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn settings_come_from_the_environment_and_logs_can_be_json() {
    let temp = TempDir::new();
    let dir = temp.path();
    let server = Server::start_with(
        dir.clone(),
        Options {
            settings_in_env: true,
            args: vec!["--log-format".into(), "json".into()],
            ..Default::default()
        },
    );
    server.deploy_guest(Guest::Hello).await;
    // The data went where PLINTH_DATA_DIR said.
    assert!(dir.join("db").exists() || dir.join("conf").exists());
    let line = server.wait_for_log(&["plugin deployed"]);
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("log line is JSON");
    assert_eq!(parsed["fields"]["plugin"], "hello");
}

#[tokio::test]
async fn a_config_file_is_read_and_flags_win_over_it() {
    let temp = TempDir::new();
    let dir = temp.path();
    let file = dir.join("server.toml");
    // The file asks for a port the flag overrides, and a tiny upload limit that stays in force.
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\nmax_component_size = \"1KiB\"\n",
    )
    .unwrap();
    let server = Server::start_with(
        dir.join("data"),
        Options {
            args: vec!["--config".into(), file.display().to_string()],
            ..Default::default()
        },
    );
    let reply = server
        .deploy("hello", &Guest::Hello.manifest(), &Guest::Hello.component())
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut server = Server::start();
    server.deploy_guest(Guest::PlainHttp).await;
    let request = {
        let client = server.client().clone();
        let url = format!("{}/plain/sleep/700", server.base);
        tokio::spawn(async move {
            let resp = client.get(url).send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        drop(server);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "plinth exited with {status}");
    let (code, body) = request.await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, "slept 700");
}
