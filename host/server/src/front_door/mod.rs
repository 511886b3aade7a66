//! The front door: accepts TCP connections and speaks HTTP with hyper under hard limits, before
//! any request reaches the API. Slow or oversized clients are cut off here.
//!
//! - A connection must send a request's headers within the header timeout, and an idle
//!   keep-alive connection is closed after it too (hyper's timer is set, without which its
//!   header timeout does nothing). `progress` closes a connection, HTTP/1 or HTTP/2, that has
//!   no request in flight and starts none within the header timeout (its first bytes
//!   included), or whose client stops reading a response for as long.
//! - HTTP/2 connections are pinged when quiet and closed when a ping goes unanswered.
//! - At most 100 headers and 16 KiB of request head (431), URLs up to 8 KiB (414).
//! - At most `max_connections` open connections; beyond it new ones are closed at once.
//! - Every request carries an `x-request-id` (the client's, if it is a sane token, else a new
//!   one): plugins see it, the response returns it, and every log line of the request has it.
//! - With a certificate and key, connections speak TLS (rustls; HTTP/2 or HTTP/1.1 by ALPN),
//!   and the handshake must finish within the header timeout.
//! - SIGTERM or Ctrl-C stops accepting and lets open requests finish.
//!
//! Connections are served by one thread per core, each with a current-thread tokio runtime
//! accepting from the same listener (whichever thread is free takes a new connection). A
//! connection, its requests and their guests stay on the thread that accepted it: no hand-off
//! between threads on the way, the cheapest scheduling tokio offers (a multi-thread runtime
//! cost ~5 µs more CPU per plugin request here, see docs/performance.md). A guest yields at every epoch tick and its thread polls its sockets before it runs
//! again, so a busy guest shares its thread with the other connections.

mod progress;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tracing::Instrument;

/// Most headers in one request (hyper answers 431 beyond).
pub(crate) const MAX_HEADERS: usize = 100;
/// Most bytes of request line plus headers (431 beyond).
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest URL (414 beyond).
pub(crate) const MAX_URL_BYTES: usize = 8 * 1024;
/// Requests one HTTP/2 connection may have open at once.
const MAX_STREAMS: u32 = 100;
/// The request id header.
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The client's request id when it is 1-128 visible ASCII characters, else a new random one.
fn request_id(headers: &http::HeaderMap) -> http::HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// 128 random bits as 32 lowercase hex digits (encoded in place: this runs on every request).
fn new_request_id() -> http::HeaderValue {
    let mut digits = [0u8; 32];
    hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut digits)
        .ok()
        .and_then(|()| http::HeaderValue::from_bytes(&digits).ok())
        .unwrap_or_else(|| http::HeaderValue::from_static("unknown"))
}

/// The front door's settings.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    /// Time to receive a request's headers, and most idle time between keep-alive requests.
    pub header_timeout: Duration,
    /// Open connections at once.
    pub max_connections: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

/// The address a request comes from: the peer, or behind a trusted proxy the client it
/// names. Only `X-Forwarded-For` is read, every line of it, from the right: each trusted proxy
/// appends the address it received from, so the rightmost address that is not a trusted proxy
/// is the client (what a client wrote itself is further left and never reached). `Forwarded`
/// and `X-Real-IP` are ignored: proxies commonly pass a client's own through unchanged.
fn client_addr(
    headers: &http::HeaderMap,
    peer: std::net::SocketAddr,
    trusted: &[ipnet::IpNet],
) -> std::net::SocketAddr {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|net| net.contains(&ip));
    // An IPv4 proxy reaching a dual-stack listener arrives as `::ffff:a.b.c.d`.
    let mut client = peer.ip().to_canonical();
    if !is_trusted(client) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("").split(','))
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        // A malformed entry was written by the client (every trusted proxy writes addresses):
        // the last trusted hop is as far as we know.
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    std::net::SocketAddr::new(client, peer.port())
}

/// Marks a request a trusted proxy says came to it over HTTPS, so the dashboard's session
/// cookie is Secure behind a proxy that terminates TLS. Only such requests carry it: the
/// request path of every other one pays nothing for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForwardedHttps;

/// Whether a trusted proxy says the client spoke HTTPS to it: the peer must be trusted, and
/// the rightmost `X-Forwarded-Proto` value (the one the nearest proxy wrote; a client's own is
/// further left) must be `https`.
fn forwarded_https(
    headers: &http::HeaderMap,
    peer: std::net::SocketAddr,
    trusted: &[ipnet::IpNet],
) -> bool {
    let peer = peer.ip().to_canonical();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return false;
    }
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|line| line.to_str().ok())
        .and_then(|line| line.rsplit(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Why the TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub(crate) struct TlsError(String);

/// A TLS acceptor for the PEM certificate chain and private key at `cert` and `key`, offering
/// HTTP/2 and HTTP/1.1 through ALPN.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading the certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("reading the private key {}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError(format!("the certificate and key do not fit together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How many threads serve connections: one per core this process may run on.
fn serving_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// waits for open connections. The calling runtime serves too, so it should be a
/// current-thread one; the other cores get a thread and a runtime each.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    settings: FrontDoor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let connections = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Set once every thread has drained its connections: until then each thread keeps its
    // runtime running, so work its requests left behind (a change finishing for a client that
    // went away) is not cut off before the others are done.
    let (drained, all_drained) = tokio::sync::watch::channel(false);
    let mut others = Vec::new();
    for index in 1..serving_threads() {
        let listener = listener.try_clone()?;
        let (app, settings, tls) = (app.clone(), settings.clone(), tls.clone());
        let (connections, mut stopped) = (connections.clone(), stopped.clone());
        let mut all_drained = all_drained.clone();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("plinth-serve-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stop = async move {
                                let _ = stopped.wait_for(|stop| *stop).await;
                            };
                            accept(listener, app, settings, tls, connections, stop).await;
                        }
                        Err(e) => tracing::error!(error = %e, "a serving thread cannot listen"),
                    }
                    let _ = done.send(());
                    let _ = all_drained.wait_for(|drained| *drained).await;
                });
            })?;
        others.push(finished);
    }
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stop_all = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    accept(listener, app, settings, tls, connections, stop_all).await;
    for finished in others {
        // Each thread says so once its own connections are done.
        let _ = finished.await;
    }
    let _ = drained.send(true);
    Ok(())
}

/// One serving thread's accept loop: serves connections from `listener` until `shutdown`
/// resolves, then waits for the ones it accepted. `connections` is shared by every thread.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    settings: FrontDoor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<tokio::sync::Semaphore>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.header_timeout))
        .keep_alive_timeout(settings.header_timeout)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection refused: at the open-connection limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = progress::Connection::new();
        let stream = progress::Watched::new(
            stream,
            connection.clone(),
            settings.header_timeout,
            settings.header_timeout,
        );
        let trusted = settings.trusted_proxies.clone();
        let service = app
            .clone()
            .map_request(move |mut request: axum::extract::Request| {
                // Handlers, rate limits and the audit log see the client, not the proxy.
                let client = client_addr(request.headers(), remote, &trusted);
                if forwarded_https(request.headers(), remote, &trusted) {
                    request.extensions_mut().insert(ForwardedHttps);
                }
                request.extensions_mut().insert(ConnectInfo(client));
                request
            });
        let service = tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let service = service.clone();
            let in_flight = connection.begin();
            let mut request = request;
            let id = request_id(request.headers());
            request.headers_mut().insert(REQUEST_ID, id.clone());
            // Fields by `Display`: the log formatter writes them at span creation, on every
            // request, and `Debug` escapes a string char by char. Neither value holds a space
            // or a control character (`request_id` checks the id, and hyper the path).
            let span = tracing::info_span!(
                "request",
                request_id = %id.to_str().unwrap_or_default(),
                method = %request.method(),
                path = %request.uri().path(),
            );
            async move {
                let uri = request.uri();
                let url_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
                    + uri.authority().map_or(0, |a| a.as_str().len());
                let mut response = if url_len > MAX_URL_BYTES {
                    uri_too_long()
                } else {
                    service.oneshot(request.map(axum::body::Body::new)).await?
                };
                response.headers_mut().insert(REQUEST_ID, id);
                let response = response.map(|body| progress::TrackedBody::new(body, in_flight));
                Ok::<_, std::convert::Infallible>(response)
            }
            .instrument(span)
        });
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = settings.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let served =
                match tls {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                    Some(acceptor) => {
                        // The handshake gets the header timeout too: a silent client is cut off.
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%remote, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn uri_too_long() -> axum::response::Response {
    let body = serde_json::json!({ "error": {
        "code": "uri_too_long",
        "message": format!("the URL is longer than {MAX_URL_BYTES} bytes"),
    }});
    (http::StatusCode::URI_TOO_LONG, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_proxy_says_the_client_spoke_https() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let proxy: std::net::SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let outsider: std::net::SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let headers = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-proto", value.parse().unwrap());
            }
            headers
        };
        assert!(forwarded_https(&headers(&["https"]), proxy, &trusted));
        assert!(forwarded_https(&headers(&["HTTPS"]), proxy, &trusted));
        assert!(!forwarded_https(&headers(&["https"]), outsider, &trusted));
        assert!(!forwarded_https(&headers(&["https"]), proxy, &[]));
        assert!(!forwarded_https(&headers(&["http"]), proxy, &trusted));
        assert!(!forwarded_https(&headers(&[]), proxy, &trusted));
        // The nearest proxy's word counts, not what the client put further left.
        assert!(!forwarded_https(
            &headers(&["https, http"]),
            proxy,
            &trusted
        ));
        assert!(!forwarded_https(
            &headers(&["https", "http"]),
            proxy,
            &trusted
        ));
        assert!(forwarded_https(&headers(&["http, https"]), proxy, &trusted));
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let peer: std::net::SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("198.51.100.7, 10.0.0.2"),
        );
        // Nothing trusted by default: the header is the client's own words.
        assert_eq!(client_addr(&headers, peer, &[]), peer);
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        assert_eq!(
            client_addr(&headers, peer, &trusted).ip(),
            "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
        );
        // A peer outside the trusted ranges cannot name anyone else.
        let outsider: std::net::SocketAddr = "203.0.113.9:4000".parse().unwrap();
        assert_eq!(client_addr(&headers, outsider, &trusted), outsider);
        let ip = |addr: std::net::SocketAddr| addr.ip().to_string();
        // Every line counts: a proxy adding a second line is not fooled by the client's first.
        let mut two = http::HeaderMap::new();
        two.append("x-forwarded-for", http::HeaderValue::from_static("6.6.6.6"));
        two.append(
            "x-forwarded-for",
            http::HeaderValue::from_static("198.51.100.7"),
        );
        assert_eq!(ip(client_addr(&two, peer, &trusted)), "198.51.100.7");
        // A client's own Forwarded header, or garbage, names nobody.
        let mut forged = http::HeaderMap::new();
        forged.insert("forwarded", http::HeaderValue::from_static("for=6.6.6.6"));
        forged.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("x, 198.51.100.7"),
        );
        assert_eq!(ip(client_addr(&forged, peer, &trusted)), "198.51.100.7");
        let mut garbage = http::HeaderMap::new();
        garbage.insert("x-forwarded-for", http::HeaderValue::from_static("x"));
        assert_eq!(client_addr(&garbage, peer, &trusted), peer);
        // An IPv4 proxy seen through an IPv6 listener is still the trusted proxy.
        let mapped: std::net::SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
        assert_eq!(ip(client_addr(&headers, mapped, &trusted)), "198.51.100.7");
    }

    #[test]
    fn a_new_request_id_is_32_lowercase_hex_digits_and_never_repeats() {
        let first = new_request_id();
        let second = new_request_id();
        for id in [&first, &second] {
            assert_eq!(id.len(), 32, "{id:?}");
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
                "{id:?}"
            );
        }
        assert_ne!(first, second);
    }

    #[test]
    fn a_sane_client_request_id_is_kept_and_any_other_replaced() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("has space"));
        assert_eq!(request_id(&headers).len(), 32);
        headers.insert(
            REQUEST_ID,
            http::HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&headers).len(), 32);
    }
}
