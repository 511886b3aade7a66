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
async fn signed_in(server: &Server, email: &str) -> (String, String) {
    let reply = register(server, email, "password-1234").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let session = login(server, email, "password-1234").await.json();
    (
        session["access_token"].as_str().unwrap().to_string(),
        session["refresh_token"].as_str().unwrap().to_string(),
    )
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
    assert_eq!(
        register(&server, "carol@example.com", "password-1234")
            .await
            .status,
        StatusCode::CREATED
    );
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
    let wrong = server
        .post_json(
            "/auth/password",
            json!({ "current_password": "nope-nope-nope", "new_password": "new-password-99" }),
            Some(&access),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let changed = server
        .post_json(
            "/auth/password",
            json!({ "current_password": "password-1234", "new_password": "new-password-99" }),
            Some(&access),
        )
        .await;
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
    let (access, _) = signed_in(&server, "hal@example.com").await;
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
    let plain = Guest::PlainHttp;
    let manifest = format!(
        "{}\n[[routes]]\npath = \"/forwarded/{{*rest}}\"\nforward_authorization = true\n",
        plain.manifest()
    );
    let deployed = server.deploy("plain", &manifest, &plain.component()).await;
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());

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
