//! The front door against slow and oversized clients, over raw TCP: header timeouts really
//! close connections (hyper's timeout needs a timer), idle keep-alive connections are closed,
//! too many headers get 431, long URLs 414, and connections over the cap are refused, while a
//! healthy plugin keeps serving.

use crate::harness::{Guest, Options, Server, TempDir};
use reqwest::StatusCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn server_with(args: &[&str]) -> (TempDir, Server) {
    let dir = TempDir::new();
    let options = Options {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    };
    let server = Server::start_with(dir.path(), options);
    (dir, server)
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Deploys the misbehave component with its deadline set to `timeout`.
async fn deploy_misbehave_with_timeout(server: &Server, timeout: &str) {
    let manifest = Guest::Misbehave
        .manifest()
        .replace("timeout = \"1s\"", &format!("timeout = \"{timeout}\""));
    let reply = server
        .deploy("misbehave", &manifest, &Guest::Misbehave.component())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
}

/// Sends `head` (and no more), then waits (bounded) for the response's status line; returns it
/// and how long it took.
async fn status_line_after(server: &Server, head: &'static [u8]) -> (String, Duration) {
    let addr = server.base.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        stream.write_all(head).unwrap();
        let started = Instant::now();
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        (line, started.elapsed())
    })
    .await
    .unwrap()
}

/// Reads until the server closes the connection (or the read timeout); returns what came.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_header_timeout() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    server.deploy_guest(Guest::Hello).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // A header line every 300 ms, never finishing the head.
    let trickled = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut slow = TcpStream::connect(&addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = slow.write_all(b"GET /hello/slow HTTP/1.1\r\nHost: localhost\r\n");
        let mut buf = [0u8; 1024];
        loop {
            if slow.write_all(b"X-Trickle: 1\r\n").is_err() {
                return started.elapsed();
            }
            if let Ok(0) = slow.read(&mut buf) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "slowloris never cut off"
            );
        }
    });
    // Meanwhile the plugin keeps answering.
    for _ in 0..10 {
        assert_eq!(server.get("/hello/x").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trickled = trickled.await.unwrap();
    assert!(
        trickled >= Duration::from_millis(900) && trickled < Duration::from_secs(3),
        "slowloris closed after {trickled:?}"
    );
    eprintln!("slowloris connection closed after {trickled:?}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    server.deploy_guest(Guest::Hello).await;
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /hello/idle HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let text = read_to_close(&mut stream);
    let closed_after = started.elapsed();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        closed_after < Duration::from_secs(3),
        "an idle keep-alive connection stayed open for {closed_after:?}"
    );
    eprintln!("idle keep-alive connection closed after {closed_after:?}");
}

#[tokio::test]
async fn oversized_heads_and_urls_are_refused() {
    let server = Server::start();
    server.deploy_guest(Guest::Hello).await;
    let mut stream = connect(&server);
    let mut request = String::from("GET /hello/x HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..101 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let text = read_to_close(&mut stream);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    let mut stream = connect(&server);
    let big = format!(
        "GET /hello/x HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let _ = stream.write_all(big.as_bytes());
    let text = read_to_close(&mut stream);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    let long = format!("/hello/{}", "a".repeat(9 * 1024));
    let reply = server.get(&long).await;
    assert_eq!(reply.status, StatusCode::URI_TOO_LONG);
    assert_eq!(reply.code(), "uri_too_long");
    // 100 headers are fine.
    let mut stream = connect(&server);
    let mut request =
        String::from("GET /hello/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for i in 0..98 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    assert!(read_to_close(&mut stream).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let (_dir, server) = server_with(&["--max-connections", "2", "--header-timeout", "5s"]);
    // Two kept-alive connections that have each been served hold both slots. (The harness's
    // readiness probe may still hold a slot for a moment on a loaded machine: retry until
    // both are served.)
    let held = |server: &Server| {
        let mut stream = connect(server);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        let served = stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200");
        served.then_some(stream)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_a, _b) = loop {
        if let (Some(a), Some(b)) = (held(&server), held(&server)) {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "two connections were never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut c = connect(&server);
    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let started = Instant::now();
    let text = read_to_close(&mut c);
    assert_eq!(text, "", "the third connection was served");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(_a);
    drop(_b);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_stalled_request_body_ends_with_408() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    // A plugin deadline well past the body timeout, so the stall is what ends the request.
    deploy_misbehave_with_timeout(&server, "8s").await;
    let (status_line, took) = status_line_after(
        &server,
        b"POST /misbehave/body HTTP/1.1\r\nHost: localhost\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
}

#[tokio::test]
async fn a_host_route_body_that_never_comes_ends_with_408() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    // `POST /auth/logout` needs no credential: anyone can declare a body and stall.
    let (status_line, took) = status_line_after(
        &server,
        b"POST /auth/logout HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line:?}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
}

#[tokio::test]
async fn connections_that_never_start_a_request_are_closed_at_the_header_timeout() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    server.deploy_guest(Guest::Hello).await;
    // The HTTP/2 connection preface and an empty SETTINGS frame: a valid connection that
    // never opens a stream.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let openings: Vec<(&str, Vec<u8>)> = vec![
        ("silent", Vec::new()),
        // Half the preface: enough that HTTP/1 and HTTP/2 cannot be told apart yet.
        ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n".to_vec()),
        ("an idle HTTP/2 connection", h2),
    ];
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut waits = Vec::new();
    for (what, opening) in openings {
        let addr = addr.clone();
        waits.push(tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = Instant::now();
            stream.write_all(&opening).unwrap();
            let mut sink = Vec::new();
            let closed = match stream.read_to_end(&mut sink) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            (what, closed, started.elapsed())
        }));
    }
    // Meanwhile hello answers.
    assert_eq!(server.get("/hello/x").await.status, StatusCode::OK);
    for wait in waits {
        let (what, closed, took) = wait.await.unwrap();
        assert!(closed, "{what}: still open after {took:?}");
        // Before HTTP/2's ping timeout (1 s + 1 s) could close the idle one.
        assert!(
            took < Duration::from_millis(1800),
            "{what}: closed after {took:?}"
        );
    }
}

#[tokio::test]
async fn an_http2_client_that_never_takes_the_response_is_cut_off() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    server.deploy_guest(Guest::Hello).await;
    let tcp = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    // A stream window of zero, never raised: the server can send the head but no body byte,
    // and no socket write ever blocks. The client answers pings, as h2 does by itself.
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get("http://localhost/hello/stall")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let started = Instant::now();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(8), driver).await;
    assert!(
        closed.is_ok(),
        "the stalled HTTP/2 connection is still open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    // Hello still answers everyone else.
    assert_eq!(server.get("/hello/x").await.status, StatusCode::OK);
}

/// `plinth_active_instances` from `/metrics`: plugin requests in flight.
async fn active_instances(server: &Server) -> u64 {
    let text = server.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("plinth_active_instances "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no plinth_active_instances in:\n{text}"))
}

#[tokio::test]
async fn a_client_that_stops_reading_a_response_is_cut_off() {
    let (_dir, server) = server_with(&["--header-timeout", "1s"]);
    // A plugin deadline far past the stall, so only the front door can end the request.
    deploy_misbehave_with_timeout(&server, "30s").await;
    // Ask for 512 MiB and read none of it: the server's writes stall once the socket buffers
    // are full.
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /misbehave/big/512 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        active_instances(&server).await,
        1,
        "the request is streaming"
    );
    // The connection is closed after the write timeout, and with it the plugin's request
    // ends, long before its own 30 s deadline.
    while active_instances(&server).await > 0 {
        assert!(
            Instant::now() < deadline,
            "a client that reads nothing still holds the plugin"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stream);
}

#[tokio::test]
async fn every_request_carries_a_request_id_to_the_plugin_the_client_and_the_log() {
    let server = Server::start();
    server.deploy_guest(Guest::PlainHttp).await;
    server.deploy_guest(Guest::Trap).await;
    let generated = server.get("/healthz").await;
    let id = generated.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let send = |path: &'static str, id: &'static str| {
        server
            .client()
            .get(format!("{}{path}", server.base))
            .header("x-request-id", id)
            .send()
    };
    let reply = send("/plain/headers", "abc-123").await.unwrap();
    assert_eq!(reply.headers()["x-request-id"], "abc-123");
    let seen = reply.text().await.unwrap();
    assert!(seen.contains("x-request-id: abc-123"), "{seen}");
    // Not a sane token: replaced, not passed on.
    let reply = send("/plain/headers", "has spaces in it").await.unwrap();
    assert_ne!(reply.headers()["x-request-id"], "has spaces in it");
    let reply = send("/trap/panic", "trap-req-7").await.unwrap();
    assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.headers()["x-request-id"], "trap-req-7");
    server.wait_for_log(&["plugin request failed", "trap-req-7"]);
}

/// A `plinth serve` over HTTPS with a fresh self-signed certificate for `localhost`, and a
/// client that trusts it (HTTP/2 when the server offers it, as browsers do).
pub(crate) struct HttpsServer {
    pub(crate) dir: crate::harness::TempDir,
    pub(crate) cert: std::path::PathBuf,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    child: std::process::Child,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HttpsServer {
    pub(crate) async fn start(env: &[(&str, &str)]) -> HttpsServer {
        use std::io::BufRead;
        let dir = crate::harness::TempDir::new();
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let data = dir.path().join("data");
        let options = crate::harness::Options {
            args: vec![
                "--tls-cert".into(),
                cert.to_str().unwrap().into(),
                "--tls-key".into(),
                key.to_str().unwrap().into(),
            ],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let mut child = crate::harness::command(&data, &options)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on https://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = found.send(addr);
                }
            }
        });
        let addr: std::net::SocketAddr = addr
            .recv_timeout(Duration::from_secs(60))
            .expect("plinth listens on https")
            .parse()
            .unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
            )
            .resolve("localhost", addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", addr.port());
        let server = HttpsServer {
            dir,
            cert,
            addr,
            base,
            client,
            child,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match server
                .client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
            {
                Ok(reply) if reply.status() == StatusCode::OK => break,
                _ if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("never ready over HTTPS: {other:?}"),
            }
        }
        server
    }
}

#[tokio::test]
async fn https_serves_with_a_self_signed_certificate() {
    let server = HttpsServer::start(&[]).await;
    let (client, base, cert, dir, addr) = (
        &server.client,
        &server.base,
        &server.cert,
        &server.dir,
        server.addr,
    );
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(health.headers().contains_key("x-request-id"));
    // The CLI reaches it too, trusting the certificate through PLINTH_CA_CERT.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["plugins", "list", "--json", "--server", base])
        .env("PLINTH_TOKEN", crate::harness::TOKEN)
        .env("PLINTH_CA_CERT", cert)
        .env("PLINTH_CREDENTIALS", dir.path().join("credentials.json"))
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // Without the CA the certificate is refused, in one line.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["plugins", "list", "--server", base])
        .env("PLINTH_TOKEN", crate::harness::TOKEN)
        .env_remove("PLINTH_CA_CERT")
        .env("PLINTH_CREDENTIALS", dir.path().join("credentials.json"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}
