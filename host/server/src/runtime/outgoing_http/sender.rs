//! Sends a vetted outbound request: names resolved once, on a DNS thread of its own, and the
//! connection made to exactly the addresses the policy checked, for HTTPS too (the certificate
//! is checked against the name, the socket goes to the vetted address), so a second DNS answer
//! can never send a plugin somewhere else.

use super::OutboundScheme;
use crate::side_thread::SideThread;
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Longest DNS lookup.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses of one name tried in turn before the call fails.
const MAX_ATTEMPTS: usize = 4;

/// Why the outbound machinery could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("outbound calls: {0}")]
pub struct SetupError(String);

/// The resolver and TLS settings every instance's outbound calls share.
pub struct Sender {
    resolver: TokioResolver,
    /// Where lookups run: the resolver keeps its connections to the name servers in tasks of
    /// the runtime that first used them (see [`SideThread`]).
    dns: SideThread,
    tls: TlsConnector,
}

/// Aborts a task when dropped: a lookup whose caller gave up (its deadline, a dropped
/// request) does not keep running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Sender {
    /// A sender trusting the public web PKI roots (what `wasmtime serve` trusts), plus the PEM
    /// certificates in `extra_roots` (an operator's internal CA). Reads `/etc/resolv.conf` and
    /// `/etc/hosts` once; without a usable `resolv.conf`, only the hosts file answers.
    pub fn new(extra_roots: Option<&std::path::Path>) -> Result<Self, SetupError> {
        let mut builder = TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no usable /etc/resolv.conf: outbound names resolve from /etc/hosts only");
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![]),
                TokioRuntimeProvider::default(),
            )
        });
        // Both families (an IPv6-only host needs the AAAA answers); `resolve` puts IPv4 first,
        // so a name with both reaches what listens on IPv4, as most local services do.
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build().map_err(|e| SetupError(e.to_string()))?;
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_roots {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| SetupError(format!("reading {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(SetupError(format!(
                    "{} holds no usable PEM certificate",
                    path.display()
                )));
            }
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| SetupError(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Self {
            resolver,
            dns: SideThread::start("plinth-dns")
                .map_err(|e| SetupError(format!("starting the DNS thread: {e}")))?,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The addresses of `host`: itself if it is an IP literal, else its DNS answers.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, Error> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // As written, so search domains apply as they do for the system resolver (a cluster's
        // short service names); every answer is vetted all the same.
        let resolver = self.resolver.clone();
        let name = host.to_string();
        let mut lookup = AbortOnDrop(
            self.dns
                .runtime()
                .spawn(async move { resolver.lookup_ip(name).await }),
        );
        match tokio::time::timeout(DNS_TIMEOUT, &mut lookup.0).await {
            Err(_) => Err(Error::DnsTimeout),
            Ok(Err(join)) => {
                tracing::warn!(host, error = %join, "outbound lookup task failed");
                Err(Error::DestinationNotFound)
            }
            Ok(Ok(found)) => Self::answers(host, found),
        }
    }

    /// The addresses a finished lookup found, IPv4 first.
    fn answers(
        host: &str,
        found: Result<hickory_resolver::lookup_ip::LookupIp, hickory_resolver::net::NetError>,
    ) -> Result<Vec<IpAddr>, Error> {
        match found {
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                Err(Error::DestinationNotFound)
            }
            Err(e) => {
                tracing::debug!(host, error = %e, "outbound lookup failed");
                Err(Error::DestinationNotFound)
            }
            Ok(found) => {
                let mut addrs: Vec<IpAddr> = found.iter().collect();
                addrs.sort_by_key(|ip| ip.is_ipv6());
                Ok(addrs)
            }
        }
    }

    /// Sends `request` to `host` at one of `addrs` (already vetted), over TLS for HTTPS.
    pub async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        scheme: OutboundScheme,
        host: &str,
        addrs: &[SocketAddr],
        options: RequestOptions,
    ) -> Result<SentResponse, Error> {
        let connect_timeout = options.connect_timeout.unwrap_or(Duration::from_secs(5));
        let first_byte = options
            .first_byte_timeout
            .unwrap_or(Duration::from_secs(30));
        let between_bytes = options
            .between_bytes_timeout
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_nanos(1)); // tokio's interval refuses zero
        let tcp = connect(addrs, connect_timeout).await?;
        // Only the path goes on the wire: the authority is for proxies, and wasmtime has set
        // the Host header from it already.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        *request.uri_mut() = path;
        match scheme {
            OutboundScheme::Http => {
                exchange(tcp, request, connect_timeout, first_byte, between_bytes).await
            }
            OutboundScheme::Https => {
                let name = ServerName::try_from(host.to_string())?;
                let tls = tokio::time::timeout(connect_timeout, self.tls.connect(name, tcp))
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?
                    .map_err(tls_error)?;
                exchange(tls, request, connect_timeout, first_byte, between_bytes).await
            }
        }
    }
}

/// A response head, and the future that drives its connection until the body is done.
pub(super) type SentResponse = (
    http::Response<WasiBody>,
    Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
);

/// Connects to the first of `addrs` that answers.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::DestinationNotFound;
    for addr in addrs.iter().take(MAX_ATTEMPTS) {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// A certificate problem as the standard error code, other TLS failures as a protocol error.
fn tls_error(e: std::io::Error) -> Error {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
    if certificate {
        Error::TlsCertificateError
    } else {
        Error::Tls(e)
    }
}

/// One HTTP/1.1 exchange on `stream`.
async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
    handshake_timeout: Duration,
    first_byte: Duration,
    between_bytes: Duration,
) -> Result<SentResponse, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = tokio::time::timeout(
        handshake_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let mut connection = Box::pin(connection);
    let mut finished: Option<Result<(), hyper::Error>> = None;
    // The connection must be driven while the response head is awaited.
    let response = tokio::time::timeout(first_byte, async {
        let sent = sender.send_request(request);
        tokio::pin!(sent);
        loop {
            tokio::select! {
                response = &mut sent => break response,
                done = &mut connection, if finished.is_none() => finished = Some(done),
            }
        }
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;
    let io = async move {
        let done = match finished {
            Some(done) => done,
            None => connection.await,
        };
        done.map_err(|e| {
            if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }
        })
    };
    let response = response.map(|body| {
        BetweenBytes {
            body,
            idle: between_bytes,
            timer: Box::pin(tokio::time::sleep(between_bytes)),
        }
        .boxed_unsync()
    });
    Ok((response, Box::pin(io)))
}

/// A response body that fails when the third party sends nothing for `idle`.
struct BetweenBytes {
    body: hyper::body::Incoming,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for BetweenBytes {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lookups run on the sender's own DNS thread, so they answer from any serving thread's
    /// runtime, also once the runtime that made the first lookup is gone.
    #[test]
    fn names_resolve_from_any_runtime_even_after_the_first_one_stopped() {
        let sender = Sender::new(None).unwrap();
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let addrs = runtime.block_on(sender.resolve("localhost")).unwrap();
            assert!(addrs.iter().all(|ip| ip.is_loopback()), "{addrs:?}");
            assert!(!addrs.is_empty());
        }
    }
}
