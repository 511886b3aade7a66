//! Accounts and sessions against the real binary: register, login, refresh rotation and reuse
//! detection, logout, password change, role guards, forged tokens, identity in plugins.

use crate::harness::{Guest, Options, Server, TempDir};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

fn with_admin_account() -> Options {
    Options {
        env: vec![
            ("PLINTH_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("PLINTH_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ],
        ..Default::default()
    }
}

async fn register(server: &Server, email: &str, password: &str) -> crate::harness::Reply {
    server
        .post_json(
            "/auth/register",
            json!({ "email": email, "password": password }),
            None,
        )
        .await
}

async fn login(server: &Server, email: &str, password: &str) -> crate::harness::Reply {
    server
        .post_json(
            "/auth/login",
            json!({ "email": email, "password": password }),
            None,
        )
        .await
}

/// Registers and logs in; returns (access token, refresh token).
pub(crate) async fn signed_in(server: &Server, email: &str) -> (String, String) {
    must_register(server, email).await;
    let session = login(server, email, "password-1234").await.json();
    (
        session["access_token"].as_str().unwrap().to_string(),
        session["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// Registers with the tests' usual password, asserting success.
async fn must_register(server: &Server, email: &str) {
    let reply = register(server, email, "password-1234").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
}

/// `POST /auth/password` from `current` to `new_password` with `access`.
async fn change_password(
    server: &Server,
    access: &str,
    current: &str,
    new_password: &str,
) -> crate::harness::Reply {
    server
        .post_json(
            "/auth/password",
            json!({ "current_password": current, "new_password": new_password }),
            Some(access),
        )
        .await
}

async fn refresh(server: &Server, token: &str) -> crate::harness::Reply {
    server
        .post_json("/auth/refresh", json!({ "refresh_token": token }), None)
        .await
}

#[tokio::test]
async fn register_login_call_refresh_logout() {
    let server = Server::start();
    server.deploy_guest(Guest::WhoAmI).await;

    let reply = register(&server, "  Ann@Example.com ", "password-1234").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let user = reply.json();
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["roles"], json!(["user"]));
    assert!(user.get("password_hash").is_none());

    let session = login(&server, "ANN@example.com", "password-1234").await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.text());
    let session = session.json();
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 900);
    let access = session["access_token"].as_str().unwrap();
    let refresh_token = session["refresh_token"].as_str().unwrap();
    assert!(refresh_token.starts_with("plinth_rt_"));

    // A user route: anonymous is refused, the signed-in caller gets in and is identified.
    let anonymous = server.get("/whoami").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.code(), "unauthenticated");
    let me = server.get_as("/whoami", access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    let me = me.json();
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["saw_authorization_header"], false);
    assert_eq!(server.get_as("/auth/me", access).await.json(), user);

    // Refresh rotates: a new pair, and the new access token works.
    let rotated = refresh(&server, refresh_token).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let rotated = rotated.json();
    let new_refresh = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh_token);
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(
        server.get_as("/whoami", new_access).await.status,
        StatusCode::OK
    );

    // Logout ends the session: the refresh token no longer works.
    let out = server
        .post_json(
            "/auth/logout",
            json!({ "refresh_token": new_refresh }),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = refresh(&server, new_refresh).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.code(), "invalid_refresh_token");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let server = Server::start();
    let (_, first) = signed_in(&server, "bob@example.com").await;
    let second = refresh(&server, &first).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // The thief replays the first token: refused, and the family is revoked...
    assert_eq!(
        refresh(&server, &first).await.status,
        StatusCode::UNAUTHORIZED
    );
    // ...so the legitimate holder's current token stops working too.
    let reply = refresh(&server, &second).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "invalid_refresh_token");
    // A fresh login still works.
    assert_eq!(
        login(&server, "bob@example.com", "password-1234")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_registrations_and_logins_are_clear_and_indistinguishable() {
    let server = Server::start();
    must_register(&server, "carol@example.com").await;
    let cases = [
        (
            "not-an-email",
            "password-1234",
            StatusCode::BAD_REQUEST,
            "invalid_email",
        ),
        (
            "dave@example.com",
            "short",
            StatusCode::BAD_REQUEST,
            "weak_password",
        ),
        (
            "CAROL@example.com",
            "password-1234",
            StatusCode::CONFLICT,
            "email_taken",
        ),
    ];
    for (email, password, status, code) in cases {
        let reply = register(&server, email, password).await;
        assert_eq!(reply.status, status, "{email}");
        assert_eq!(reply.code(), code);
    }
    let long = "x".repeat(1025);
    assert_eq!(
        register(&server, "eve@example.com", &long).await.code(),
        "weak_password"
    );
    let malformed = server
        .post_json("/auth/register", json!({ "email": 1 }), None)
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.code(), "invalid_body");

    let unknown = login(&server, "nobody@example.com", "password-1234").await;
    let wrong = login(&server, "carol@example.com", "password-12345").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(unknown.code(), "invalid_credentials");
}

#[tokio::test]
async fn changing_the_password_ends_every_session() {
    let server = Server::start();
    let (access, refresh_token) = signed_in(&server, "fay@example.com").await;
    let wrong = change_password(&server, &access, "nope-nope-nope", "new-password-99").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let changed = change_password(&server, &access, "password-1234", "new-password-99").await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text());
    assert_eq!(
        refresh(&server, &refresh_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&server, "fay@example.com", "password-1234")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&server, "fay@example.com", "new-password-99")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn roles_guard_routes_and_the_admin_api() {
    let dir = TempDir::new();
    let server = Server::start_with(dir.path(), with_admin_account());
    server.deploy_guest(Guest::WhoAmI).await;
    let (user_access, _) = signed_in(&server, "gil@example.com").await;

    // A plain user: in on `user` routes, 403 on `role:staff`, 403 on the admin API.
    assert_eq!(
        server.get_as("/whoami", &user_access).await.status,
        StatusCode::OK
    );
    let staff = server.get_as("/whoami/staff", &user_access).await;
    assert_eq!(staff.status, StatusCode::FORBIDDEN);
    assert_eq!(staff.code(), "forbidden");
    assert_eq!(staff.json()["error"]["details"]["required_role"], "staff");
    let admin_api = server.get_as("/admin/plugins", &user_access).await;
    assert_eq!(admin_api.status, StatusCode::FORBIDDEN);

    // The admin account created from the environment holds every role.
    let session = login(&server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.text());
    let admin_access = session.json()["access_token"].as_str().unwrap().to_string();
    let staff = server.get_as("/whoami/staff", &admin_access).await;
    assert_eq!(staff.status, StatusCode::OK);
    assert_eq!(staff.json()["roles"], json!(["user", "admin"]));
    assert_eq!(
        server.get_as("/admin/plugins", &admin_access).await.status,
        StatusCode::OK
    );
}

fn split(token: &str) -> (Value, Value, String) {
    let mut parts = token.split('.');
    let header = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, claims, parts.next().unwrap().to_string())
}

fn join(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let server = Server::start();
    server.deploy_guest(Guest::WhoAmI).await;
    let (access, refresh_token) = signed_in(&server, "hal@example.com").await;
    let (header, claims, signature) = split(&access);
    assert_eq!(header["alg"], "EdDSA");

    let mut none = header.clone();
    none["alg"] = "none".into();
    let mut tampered = claims.clone();
    tampered["sub"] = "someone-else".into();
    let mut unknown_kid = header.clone();
    unknown_kid["kid"] = "0000000000000000".into();
    let mut hs256 = header.clone();
    hs256["alg"] = "HS256".into();
    let mut stringly = claims.clone();
    stringly["exp"] = Value::String(stringly["exp"].to_string());
    let mut jku = header.clone();
    jku["jku"] = "http://127.0.0.1:1/keys".into();

    // A token from another server (its own keys).
    let other = Server::start();
    let (foreign, _) = signed_in(&other, "hal@example.com").await;

    let forgeries = [
        join(&none, &claims, ""),
        join(&header, &tampered, &signature),
        join(&unknown_kid, &claims, &signature),
        join(&hs256, &claims, &signature),
        join(&header, &stringly, &signature),
        join(&jku, &claims, &signature),
        foreign,
        "not.a.jwt".to_string(),
        // A refresh token is never an access token.
        refresh_token.clone(),
    ];
    for forged in forgeries {
        let reply = server.get_as("/whoami", &forged).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{forged}");
        assert_eq!(reply.code(), "invalid_token");
        assert_eq!(
            server.get_as("/auth/me", &forged).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The genuine token still works.
    assert_eq!(
        server.get_as("/whoami", &access).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn closed_registration_is_refused() {
    let dir = TempDir::new();
    let server = Server::start_with(
        dir.path(),
        Options {
            args: vec!["--registration".into(), "closed".into()],
            ..with_admin_account()
        },
    );
    let reply = register(&server, "ivy@example.com", "password-1234").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "registration_closed");
    assert_eq!(
        login(&server, ADMIN_EMAIL, ADMIN_PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn credentials_never_reach_the_plugin_unless_the_route_opts_in() {
    let server = Server::start();
    let (access, _) = signed_in(&server, "jo@example.com").await;
    deploy_forwarding_plain(&server).await;
    let stripped = server.get_as("/plain/headers", &access).await.text();
    assert!(
        !stripped.to_lowercase().contains("authorization"),
        "{stripped}"
    );
    let forwarded = server.get_as("/forwarded/headers", &access).await.text();
    assert!(
        forwarded.contains(&format!("authorization: Bearer {access}")),
        "{forwarded}"
    );
}

#[tokio::test]
async fn sessions_and_signing_keys_survive_a_restart() {
    let server = Server::start();
    server.deploy_guest(Guest::WhoAmI).await;
    let (access, refresh_token) = signed_in(&server, "kim@example.com").await;
    let server = server.restart();
    assert_eq!(
        server.get_as("/whoami", &access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(&server, &refresh_token).await.status,
        StatusCode::OK
    );
    // The admin API still accepts the break-glass token.
    assert_eq!(
        server.admin(Method::GET, "/admin/plugins").await.status,
        StatusCode::OK
    );
}

/// Logs the environment-configured admin in; returns its access token.
async fn admin_access(server: &Server) -> String {
    let session = login(server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.text());
    session.json()["access_token"].as_str().unwrap().to_string()
}

/// A server with the first admin account and `examples/whoami` deployed; the admin's access
/// token. Keep the directory until the server is dropped.
async fn whoami_with_an_admin() -> (TempDir, Server, String) {
    let dir = TempDir::new();
    let server = Server::start_with(dir.path(), with_admin_account());
    server.deploy_guest(Guest::WhoAmI).await;
    let admin = admin_access(&server).await;
    (dir, server, admin)
}

async fn admin_post(
    server: &Server,
    path: &str,
    body: Value,
    token: &str,
) -> crate::harness::Reply {
    server.post_json(path, body, Some(token)).await
}

#[tokio::test]
async fn admins_manage_users_and_disabling_cuts_access_at_once() {
    let (_dir, server, admin) = whoami_with_an_admin().await;
    let (user_access, user_refresh) = signed_in(&server, "lee@example.com").await;
    let user_id = server.get_as("/auth/me", &user_access).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Create with roles; list pages through everyone.
    let created = admin_post(
        &server,
        "/admin/users",
        json!({ "email": "ops@example.com", "password": "password-1234", "roles": ["operator", "staff"] }),
        &admin,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(
        created.json()["roles"],
        json!(["user", "operator", "staff"])
    );
    let first = server.get_as("/admin/users?limit=2", &admin).await.json();
    assert_eq!(first["users"].as_array().unwrap().len(), 2);
    let cursor = first["next"].as_str().unwrap();
    let second = server
        .get_as(&format!("/admin/users?limit=2&after={cursor}"), &admin)
        .await
        .json();
    assert_eq!(second["users"].as_array().unwrap().len(), 1);
    assert!(second["next"].is_null());

    // Operators deploy plugins but do not manage users.
    let ops = login(&server, "ops@example.com", "password-1234")
        .await
        .json();
    let ops_access = ops["access_token"].as_str().unwrap();
    assert_eq!(
        server.get_as("/admin/plugins", ops_access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get_as("/admin/users", ops_access).await.status,
        StatusCode::FORBIDDEN
    );

    // Roles change at once: staff route opens for lee.
    assert_eq!(
        server.get_as("/whoami/staff", &user_access).await.status,
        StatusCode::FORBIDDEN
    );
    let roles = server
        .send_json(
            Method::PUT,
            &format!("/admin/users/{user_id}/roles"),
            json!({ "roles": ["staff"] }),
            Some(&admin),
        )
        .await;
    assert_eq!(roles.status, StatusCode::OK);
    assert_eq!(
        server.get_as("/whoami/staff", &user_access).await.status,
        StatusCode::OK
    );
    let bad_role = server
        .send_json(
            Method::PUT,
            &format!("/admin/users/{user_id}/roles"),
            json!({ "roles": ["no spaces allowed"] }),
            Some(&admin),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);

    // Disabling cuts off the access token and the refresh token at once.
    let disabled = admin_post(
        &server,
        &format!("/admin/users/{user_id}/disable"),
        json!({}),
        &admin,
    )
    .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text());
    assert_eq!(disabled.json()["disabled"], true);
    assert_eq!(
        server.get_as("/whoami", &user_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&server, &user_refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The right password of a disabled account gets the answer a wrong one gets.
    let refused = login(&server, "lee@example.com", "password-1234").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.code(), "invalid_credentials");

    // Enabling lets them log in again; deleting removes them for good.
    let enabled = admin_post(
        &server,
        &format!("/admin/users/{user_id}/enable"),
        json!({}),
        &admin,
    )
    .await;
    assert_eq!(enabled.status, StatusCode::OK);
    // Re-enabling does not bring back the tokens it had before.
    assert_eq!(
        server.get_as("/whoami", &user_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = login(&server, "lee@example.com", "password-1234").await;
    assert_eq!(again.status, StatusCode::OK);
    let again_access = again.json()["access_token"].as_str().unwrap().to_string();
    let deleted = server
        .request(
            Method::DELETE,
            &format!("/admin/users/{user_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get_as("/whoami", &again_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    let gone = server
        .get_as(&format!("/admin/users/{user_id}"), &admin)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "user_not_found");
    // The email is free again.
    must_register(&server, "lee@example.com").await;

    // Admins cannot lock themselves out.
    let me = server.get_as("/auth/me", &admin).await.json();
    let own = admin_post(
        &server,
        &format!("/admin/users/{}/disable", me["id"].as_str().unwrap()),
        json!({}),
        &admin,
    )
    .await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST);
    assert_eq!(own.code(), "cannot_modify_self");
}

#[tokio::test]
async fn api_keys_work_are_stored_hashed_and_revoke_at_once() {
    let dir = TempDir::new();
    let server = Server::start_with(dir.path(), with_admin_account());
    let admin = admin_access(&server).await;
    let created = admin_post(
        &server,
        "/admin/api-keys",
        json!({ "name": "ci deploys", "role": "operator", "expires_in": "30d" }),
        &admin,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let key = body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("plinth_key_"));
    assert_eq!(body["role"], "operator");
    assert!(body["expires_at"].is_string());
    let id = body["id"].as_str().unwrap().to_string();

    // The key deploys (operator) but cannot manage users (admin).
    let hello = Guest::Hello;
    let deployed = server
        .deploy_with_token("hello", &hello.manifest(), &hello.component(), Some(&key))
        .await;
    assert_eq!(deployed.status, StatusCode::CREATED);
    assert_eq!(
        server.get_as("/admin/users", &key).await.status,
        StatusCode::FORBIDDEN
    );

    // Listed without the key, with its last use recorded.
    let listed = server.get_as("/admin/api-keys", &admin).await.json();
    let entry = &listed["api_keys"][0];
    assert_eq!(entry["id"], id.as_str());
    assert!(entry.get("key").is_none());
    assert!(entry["last_used_at"].is_string());

    // Revoked: refused at once.
    let revoked = server
        .request(
            Method::DELETE,
            &format!("/admin/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = server.get_as("/admin/plugins", &key).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let again = server
        .request(
            Method::DELETE,
            &format!("/admin/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(again.code(), "api_key_not_found");

    // Neither the key nor a refresh token is anywhere in the data directory in clear.
    let session = login(&server, ADMIN_EMAIL, ADMIN_PASSWORD).await.json();
    let refresh_token = session["refresh_token"].as_str().unwrap().to_string();
    drop(server);
    assert_secret_absent(&dir.path(), &[&key, &refresh_token, ADMIN_PASSWORD]);
}

fn assert_secret_absent(dir: &std::path::Path, secrets: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_secret_absent(&path, secrets);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} contains a secret in clear",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_and_signs_new_ones_with_the_new_key() {
    let dir = TempDir::new();
    let server = Server::start_with(dir.path(), with_admin_account());
    server.deploy_guest(Guest::WhoAmI).await;
    let (old_access, _) = signed_in(&server, "max@example.com").await;
    let old_kid = split(&old_access).0["kid"].as_str().unwrap().to_string();

    // `plinth keys rotate`, the CLI, against the running server.
    let admin = admin_access(&server).await;
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(["keys", "rotate", "--server", &base])
            .env("PLINTH_TOKEN", &admin)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(printed.contains(&old_kid), "{printed}");

    assert_eq!(
        server.get_as("/whoami", &old_access).await.status,
        StatusCode::OK
    );
    let new_access = login(&server, "max@example.com", "password-1234")
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let new_kid = split(&new_access).0["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    assert!(
        printed.contains(&format!("signing key: {new_kid}")),
        "{printed}"
    );
    assert_eq!(
        server.get_as("/whoami", &new_access).await.status,
        StatusCode::OK
    );

    // A non-admin cannot rotate.
    let user = login(&server, "max@example.com", "password-1234")
        .await
        .json();
    let refused = server
        .post_json(
            "/admin/signing-keys/rotate",
            json!({}),
            user["access_token"].as_str(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn credential_endpoints_are_rate_limited_per_ip_and_recover() {
    let dir = TempDir::new();
    let config = dir.path().join("server.toml");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(&config, "auth_rate_limit = 5\nauth_rate_window = \"2s\"\n").unwrap();
    let server = Server::start_with(
        dir.path().join("data"),
        Options {
            args: vec!["--config".into(), config.display().to_string()],
            ..Default::default()
        },
    );
    // Registration is throttled too; spend one slot on it.
    must_register(&server, "ned@example.com").await;
    let mut limited = 0;
    for _ in 0..50 {
        let reply = login(&server, "ned@example.com", "wrong-password").await;
        match reply.status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(reply.code(), "rate_limited");
                let retry: u64 = reply.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&retry), "{retry}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!(limited >= 44, "only {limited} of 50 were limited");
    // After the window, the right password works.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(
        login(&server, "ned@example.com", "password-1234")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn repeated_failures_slow_an_account_down_without_locking_it_out() {
    let server = Server::start();
    must_register(&server, "oli@example.com").await;
    for _ in 0..10 {
        let reply = login(&server, "oli@example.com", "wrong-password").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits a moment...
    let slowed = login(&server, "oli@example.com", "password-1234").await;
    assert_eq!(slowed.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(slowed.code(), "account_throttled");
    // ...but only a moment.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        login(&server, "oli@example.com", "password-1234")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_setup_token_creates_the_first_admin_once() {
    let dir = TempDir::new();
    let server = Server::start_with(dir.path(), Options::default());
    let line = server.wait_for_printed("plinth_setup_");
    assert!(!server.logs().iter().any(|l| l.contains("plinth_setup_")));
    let token: String = line
        .split("plinth_setup_")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let token = format!("plinth_setup_{token}");
    let wrong = server
        .post_json(
            "/auth/setup",
            json!({ "setup_token": "plinth_setup_nope", "email": "boss@example.com", "password": "password-1234" }),
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.code(), "invalid_setup_token");
    let body =
        json!({ "setup_token": token, "email": "boss@example.com", "password": "password-1234" });
    let created = server.post_json("/auth/setup", body.clone(), None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["roles"], json!(["user", "admin"]));
    let again = server.post_json("/auth/setup", body, None).await;
    assert_eq!(again.code(), "invalid_setup_token");
    let boss = login(&server, "boss@example.com", "password-1234")
        .await
        .json();
    let access = boss["access_token"].as_str().unwrap();
    assert_eq!(
        server.get_as("/admin/users", access).await.status,
        StatusCode::OK
    );
    // The setup is in the audit log, once, by the setup token.
    let audit = server
        .get_as("/admin/audit?action=auth.setup", access)
        .await
        .json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "setup-token");
    assert_eq!(entries[0]["target"], created.json()["id"]);
}

#[tokio::test]
async fn invite_only_registration_needs_a_valid_single_use_invitation() {
    let dir = TempDir::new();
    let server = Server::start_with(
        dir.path(),
        Options {
            args: vec!["--registration".into(), "invite".into()],
            ..with_admin_account()
        },
    );
    let admin = admin_access(&server).await;
    let body = |email: &str, invite: Option<&str>| {
        let mut b = json!({ "email": email, "password": "password-1234" });
        if let Some(code) = invite {
            b["invite"] = code.into();
        }
        b
    };
    let none = server
        .post_json("/auth/register", body("pat@example.com", None), None)
        .await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    assert_eq!(none.code(), "invite_required");

    let open = admin_post(&server, "/admin/invites", json!({}), &admin).await;
    assert_eq!(open.status, StatusCode::CREATED, "{}", open.text());
    let code = open.json()["invite"].as_str().unwrap().to_string();
    assert!(code.starts_with("plinth_inv_"));
    let bogus = server
        .post_json(
            "/auth/register",
            body("pat@example.com", Some("plinth_inv_bogus")),
            None,
        )
        .await;
    assert_eq!(bogus.code(), "invalid_invite");
    let used = server
        .post_json("/auth/register", body("pat@example.com", Some(&code)), None)
        .await;
    assert_eq!(used.status, StatusCode::CREATED, "{}", used.text());
    // Single use.
    let again = server
        .post_json(
            "/auth/register",
            body("quin@example.com", Some(&code)),
            None,
        )
        .await;
    assert_eq!(again.code(), "invalid_invite");

    // An invitation bound to an email works only for that email.
    let bound = admin_post(
        &server,
        "/admin/invites",
        json!({ "email": "Rae@Example.com" }),
        &admin,
    )
    .await;
    let bound_code = bound.json()["invite"].as_str().unwrap().to_string();
    let wrong = server
        .post_json(
            "/auth/register",
            body("sam@example.com", Some(&bound_code)),
            None,
        )
        .await;
    assert_eq!(wrong.code(), "invalid_invite");
    let right = server
        .post_json(
            "/auth/register",
            body("rae@example.com", Some(&bound_code)),
            None,
        )
        .await;
    assert_eq!(right.status, StatusCode::CREATED);
    assert_eq!(
        login(&server, "rae@example.com", "password-1234")
            .await
            .status,
        StatusCode::OK
    );

    // The invitations still usable are listed without their codes; a revoked one no longer
    // works.
    let pending = admin_post(&server, "/admin/invites", json!({}), &admin).await;
    let pending_code = pending.json()["invite"].as_str().unwrap().to_string();
    let pending_id = pending.json()["id"].as_str().unwrap().to_string();
    let listed = server.get_as("/admin/invites", &admin).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let invites = listed.json()["invites"].as_array().unwrap().clone();
    assert_eq!(
        invites.len(),
        1,
        "the used ones are gone: {}",
        listed.text()
    );
    assert_eq!(invites[0]["id"], pending_id.as_str());
    assert!(!listed.text().contains(&pending_code));
    let path = format!("/admin/invites/{pending_id}");
    let revoked = server
        .request(Method::DELETE, &path, Some(&admin), None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let again = server
        .request(Method::DELETE, &path, Some(&admin), None)
        .await;
    assert_eq!(again.code(), "invite_not_found");
    let refused = server
        .post_json(
            "/auth/register",
            body("tam@example.com", Some(&pending_code)),
            None,
        )
        .await;
    assert_eq!(refused.code(), "invalid_invite");
}

/// `/whoami` with `access`: 200 or 401.
async fn whoami_status(server: &Server, access: &str) -> StatusCode {
    server.get_as("/whoami", access).await.status
}

fn access_of(reply: &crate::harness::Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn access_tokens_end_with_every_session_they_belong_to() {
    let (_dir, server, admin) = whoami_with_an_admin().await;
    let (first, _) = signed_in(&server, "kim@example.com").await;
    assert_eq!(whoami_status(&server, &first).await, StatusCode::OK);

    // A password change ends the access token it was made with; a new login, even in the same
    // second, works at once.
    let changed = change_password(&server, &first, "password-1234", "new-password-99").await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text());
    assert_eq!(
        whoami_status(&server, &first).await,
        StatusCode::UNAUTHORIZED
    );
    let session = login(&server, "kim@example.com", "new-password-99").await;
    let second = access_of(&session);
    assert_eq!(whoami_status(&server, &second).await, StatusCode::OK);

    // Logout everywhere: refresh and access tokens alike.
    let refresh_token = session.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = server
        .request(Method::POST, "/auth/logout-everywhere", Some(&second), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text());
    assert_eq!(
        whoami_status(&server, &second).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&server, &refresh_token).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Gaining a role keeps the session; losing one ends it.
    let third = access_of(&login(&server, "kim@example.com", "new-password-99").await);
    let id = server.get_as("/auth/me", &third).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let roles = format!("/admin/users/{id}/roles");
    let gained = server
        .send_json(
            Method::PUT,
            &roles,
            json!({ "roles": ["operator"] }),
            Some(&admin),
        )
        .await;
    assert_eq!(gained.status, StatusCode::OK, "{}", gained.text());
    assert_eq!(whoami_status(&server, &third).await, StatusCode::OK);
    let lost = server
        .send_json(Method::PUT, &roles, json!({ "roles": [] }), Some(&admin))
        .await;
    assert_eq!(lost.status, StatusCode::OK, "{}", lost.text());
    assert_eq!(
        whoami_status(&server, &third).await,
        StatusCode::UNAUTHORIZED
    );
    let fourth = access_of(&login(&server, "kim@example.com", "new-password-99").await);
    assert_eq!(whoami_status(&server, &fourth).await, StatusCode::OK);
}

#[tokio::test]
async fn password_guesses_are_counted_before_they_are_checked_and_the_password_endpoint_is_throttled()
 {
    let server = Server::start();
    must_register(&server, "max@example.com").await;
    // 12 guesses at once: at most the 10 free failures are checked, the rest wait.
    let guesses: Vec<_> = (0..12)
        .map(|_| login(&server, "max@example.com", "wrong-password"))
        .collect();
    let replies = futures::future::join_all(guesses).await;
    let checked = replies
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + throttled, 12);
    assert!(checked <= 10, "{checked} guesses were checked");

    // A stolen access token is no oracle: wrong current passwords slow the account down too
    // (on a server of its own, so the per-IP limit does not answer first).
    let server = Server::start();
    let (access, _) = signed_in(&server, "ida@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let reply = change_password(&server, &access, "guess-guess-1", "new-password-99").await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses[..10], [StatusCode::UNAUTHORIZED; 10]);
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
}

/// Deploys the plain-http component with a `forward_authorization` route under `/forwarded/`.
async fn deploy_forwarding_plain(server: &Server) {
    let plain = Guest::PlainHttp;
    let manifest = format!(
        "{}\n[[routes]]\npath = \"/forwarded/{{*rest}}\"\nforward_authorization = true\n",
        plain.manifest()
    );
    let deployed = server.deploy("plain", &manifest, &plain.component()).await;
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
}

#[tokio::test]
async fn operator_and_admin_credentials_reach_a_plugin_only_where_the_operator_granted_it() {
    let server = Server::start();
    deploy_forwarding_plain(&server).await;
    let (access, _) = signed_in(&server, "jo@example.com").await;
    // An ordinary account's token is forwarded where the route asks...
    let forwarded = server.get_as("/forwarded/headers", &access).await.text();
    assert!(forwarded.contains(&format!("authorization: Bearer {access}")));
    // ...the admin token is not, and the operator sees why in the plugin's details.
    let admin = server
        .get_as("/forwarded/headers", crate::harness::TOKEN)
        .await
        .text();
    assert!(!admin.to_lowercase().contains("authorization"), "{admin}");
    let info = server
        .admin(Method::GET, "/admin/plugins/plain")
        .await
        .json();
    assert_eq!(info["forward_privileged_credentials"], false);
    let forwarding = info["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/forwarded/{*rest}")
        .unwrap();
    assert_eq!(forwarding["forward_authorization"], true);

    // With the operator's grant, the admin token reaches that plugin too.
    let dir = TempDir::new();
    let granted = Server::start_with(
        dir.path(),
        Options::with_args(&["--forward-privileged-credentials", "plain"]),
    );
    deploy_forwarding_plain(&granted).await;
    let admin = granted
        .get_as("/forwarded/headers", crate::harness::TOKEN)
        .await
        .text();
    assert!(
        admin.contains(&format!("authorization: Bearer {}", crate::harness::TOKEN)),
        "{admin}"
    );
    let info = granted
        .admin(Method::GET, "/admin/plugins/plain")
        .await
        .json();
    assert_eq!(info["forward_privileged_credentials"], true);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_rate_limit() {
    let dir = TempDir::new();
    let config = dir.path().join("server.toml");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        &config,
        "auth_rate_limit = 3\nauth_rate_window = \"1m\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .unwrap();
    let server = Server::start_with(
        dir.path().join("data"),
        Options::with_args(&["--config", &config.display().to_string()]),
    );
    let attempt = |client: &'static str| {
        server
            .client()
            .post(format!("{}/auth/login", server.base))
            .header("x-forwarded-for", client)
            .json(&json!({ "email": "nobody@example.com", "password": "wrong-password" }))
            .send()
    };
    // Client A spends its three requests...
    for _ in 0..3 {
        assert_eq!(
            attempt("198.51.100.1").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = attempt("198.51.100.1").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...and client B, behind the same proxy, still has its own.
    assert_eq!(
        attempt("198.51.100.2").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // IPv6 clients are bucketed by /64: a new address in the same /64 is the same client.
    for _ in 0..3 {
        attempt("2001:db8:5:6::1").await.unwrap();
    }
    let same_64 = attempt("2001:db8:5:6::99").await.unwrap();
    assert_eq!(same_64.status(), StatusCode::TOO_MANY_REQUESTS);
}
