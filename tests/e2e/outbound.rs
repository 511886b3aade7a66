//! Outbound HTTP: a plugin reaches only what its manifest allows, checked on the authority the
//! request really goes to, with private addresses reachable only through an IP entry or one
//! marked `private = true`. The third parties are fake servers this test runs on 127.0.0.1.

use crate::harness::{Guest, Server};
use axum::routing::get;
use reqwest::StatusCode;

/// A fake third party on 127.0.0.1; `/redirect` points at `redirect_to`.
async fn third_party(redirect_to: Option<String>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/hello", get(|| async { "third party says hi" }))
        .route(
            "/redirect",
            get(move || {
                let to = redirect_to.clone().unwrap_or_default();
                async move { (StatusCode::FOUND, [("location", to)], "") }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn deploy_allowing(server: &Server, allow: &[String]) {
    let list: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    deploy_allow_list(server, &list.join(", ")).await;
}

/// Deploys the outbound component with `allow = [entries]`, written as TOML.
async fn deploy_allow_list(server: &Server, entries: &str) {
    let manifest = format!(
        "{}\n[outbound]\nallow = [{entries}]\n",
        Guest::Outbound.manifest()
    );
    let reply = server
        .deploy("outbound", &manifest, &Guest::Outbound.component())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
}

async fn fetch(server: &Server, url: &str) -> String {
    fetch_with(server, url, "").await
}

/// `fetch` with more query parameters (`&follow=1`).
async fn fetch_with(server: &Server, url: &str, extra: &str) -> String {
    let encoded: String = url
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let reply = server.get(&format!("/outbound?url={encoded}{extra}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.text()
}

#[tokio::test]
async fn only_allowlisted_origins_are_reachable() {
    let other = third_party(None).await;
    let allowed = third_party(Some(format!("http://127.0.0.1:{other}/hello"))).await;
    let server = Server::start();
    deploy_allowing(&server, &[format!("http://127.0.0.1:{allowed}")]).await;

    let ok = fetch(&server, &format!("http://127.0.0.1:{allowed}/hello")).await;
    assert_eq!(ok, "status 200\nthird party says hi");
    server.wait_for_log(&["outbound request", "plugin=\"outbound\"", "status=200"]);

    for (url, why) in [
        (format!("http://127.0.0.1:{other}/hello"), "another port"),
        (
            format!("https://127.0.0.1:{allowed}/hello"),
            "another scheme",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "cloud metadata",
        ),
        (
            format!("http://2130706433:{allowed}/hello"),
            "an IP in another spelling",
        ),
        (format!("http://0x7f.1:{allowed}/hello"), "an IP in hex"),
        (
            format!("http://localhost:{allowed}/hello"),
            "a name for the allowed IP",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{allowed}/hello"),
            "an IPv4-mapped IPv6",
        ),
        ("http://example.com/".to_string(), "a host not listed"),
    ] {
        let answer = fetch(&server, &url).await;
        assert_eq!(answer, "error ErrorCode::HttpRequestDenied", "{why}: {url}");
    }
    server.wait_for_log(&["outbound request denied", "169.254.169.254"]);

    // The host never follows a redirect; a plugin that does is checked again on the next hop.
    let redirect = format!("http://127.0.0.1:{allowed}/redirect");
    assert!(fetch(&server, &redirect).await.starts_with("status 302"));
    let followed = fetch_with(&server, &redirect, "&follow=1").await;
    assert_eq!(followed, "error ErrorCode::HttpRequestDenied");
}

#[tokio::test]
async fn a_name_reaches_a_private_address_only_when_the_entry_says_so() {
    let port = third_party(None).await;
    let server = Server::start();
    // `localhost` resolves to loopback: a name granted for the public internet stays public,
    // exact entry or not.
    deploy_allowing(&server, &[format!("http://localhost:{port}")]).await;
    let answer = fetch(&server, &format!("http://localhost:{port}/hello")).await;
    assert_eq!(answer, "error ErrorCode::HttpRequestDenied");
    server.wait_for_log(&["outbound request denied", "not public"]);
    // Marked private by the operator, it is reached, at the address that was checked.
    deploy_allow_list(
        &server,
        &format!("{{ origin = \"http://localhost:{port}\", private = true }}"),
    )
    .await;
    let answer = fetch(&server, &format!("http://localhost:{port}/hello")).await;
    assert_eq!(answer, "status 200\nthird party says hi");
    let shown = server
        .admin(reqwest::Method::GET, "/admin/plugins/outbound")
        .await
        .json();
    assert_eq!(
        shown["outbound"],
        serde_json::json!([format!("http://localhost:{port} (private)")])
    );
    // Without any [outbound] table nothing is reachable.
    let reply = server
        .deploy(
            "outbound",
            &Guest::Outbound.manifest(),
            &Guest::Outbound.component(),
        )
        .await;
    assert!(reply.status.is_success());
    let answer = fetch(&server, &format!("http://localhost:{port}/hello")).await;
    assert_eq!(answer, "error ErrorCode::HttpRequestDenied");
}

/// A fake third party speaking HTTPS on 127.0.0.1 with a certificate for `localhost` signed by
/// its own CA; returns its port and the CA's PEM.
async fn tls_third_party() -> (u16, String) {
    use tokio_rustls::rustls;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/hello", get(|| async { "secure third party" }));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test]
async fn https_goes_to_the_vetted_address_and_checks_the_certificate() {
    let (port, ca) = tls_third_party().await;
    let dir = crate::harness::TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let server = Server::start_with(
        dir.path().join("data"),
        crate::harness::Options::with_args(&["--outbound-ca-cert", ca_file.to_str().unwrap()]),
    );
    deploy_allow_list(
        &server,
        &format!("{{ origin = \"https://localhost:{port}\", private = true }}"),
    )
    .await;
    // Resolved once, connected to the vetted 127.0.0.1, certificate checked for `localhost`.
    let answer = fetch(&server, &format!("https://localhost:{port}/hello")).await;
    assert_eq!(answer, "status 200\nsecure third party");
    // A server whose certificate does not chain to a trusted root is refused.
    let plain = Server::start();
    deploy_allow_list(
        &plain,
        &format!("{{ origin = \"https://localhost:{port}\", private = true }}"),
    )
    .await;
    let answer = fetch(&plain, &format!("https://localhost:{port}/hello")).await;
    assert_eq!(answer, "error ErrorCode::TlsCertificateError");
}

#[tokio::test]
async fn bad_allow_entries_are_refused_at_deploy() {
    let server = Server::start();
    for bad in [
        "api.example.com",
        "ftp://x.com",
        "https://x.com/path",
        "https://a.*.com",
    ] {
        let manifest = format!(
            "{}\n[outbound]\nallow = [\"{bad}\"]\n",
            Guest::Outbound.manifest()
        );
        let reply = server
            .deploy("outbound", &manifest, &Guest::Outbound.component())
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.code(), "invalid_manifest", "{bad}");
    }
}
