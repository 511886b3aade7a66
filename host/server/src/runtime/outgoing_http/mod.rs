//! Policy for `wasi:http/outgoing-handler`: a plugin reaches only the origins its manifest's
//! `[outbound] allow` names, and never, through a name, a private address.
//!
//! The rule, checked on every request (each hop of a redirect is a new request: the host never
//! follows redirects itself):
//! 1. The request's scheme, host and port must match an allowed origin (`https://api.example.com`,
//!    `https://*.example.com:8443`; the port defaults to the scheme's). The host is compared as
//!    written in the URI the request is sent to, so a `Host` header changes nothing, and an IP
//!    in an odd encoding (`2130706433`, `0x7f.1`) matches only an entry written exactly so.
//! 2. The host is resolved once (`sender`), and if any address is not public (`addresses`:
//!    loopback, private, link-local including 169.254.169.254, shared, NAT64, 6to4, ...), the
//!    request is denied unless the entry grants it: an entry that is an IP literal
//!    (`http://10.0.0.5:8080`), or one marked `{ origin = "...", private = true }`. A name
//!    granted for the public internet stays public whatever its DNS says later.
//! 3. The connection goes to the addresses just vetted, for HTTP and HTTPS alike (TLS checks
//!    the certificate against the name), so a second DNS answer cannot swap them.
//!
//! A denial is the standard `HTTP-request-denied` error to the plugin and a log line for the
//! operator. Every request gets connect and response timeouts (and the plugin's own deadline
//! still bounds it); each outcome is logged with plugin, host, status and duration.

mod addresses;
mod sender;

pub use addresses::is_public;
pub use sender::{Sender, SetupError};

use super::limits::MAX_OUTBOUND_PER_INSTANCE;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Longest time to connect to a third party.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the response head, and between body chunks.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundScheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl OutboundScheme {
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// An allowed host: exactly this name (or IP), or any subdomain of a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (lowercase).
    Exact(String),
    /// Any host ending in `.suffix` (from `*.suffix`), not the suffix itself.
    Subdomains(String),
}

/// One `[outbound] allow` entry: scheme, host and port, and whether a name may resolve to a
/// non-public address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundOrigin {
    /// `https` (default) or `http`.
    pub scheme: OutboundScheme,
    /// An exact host name or IP, or `*.example.com` for its subdomains.
    pub host: HostPattern,
    /// Port (the scheme's default when not written).
    pub port: u16,
    /// `private = true`: the operator grants addresses that are not public (an internal
    /// service by name). An IP literal entry grants its own address without it.
    pub private: bool,
}

impl OutboundOrigin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed; no path, user or query).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("outbound origin {text:?}: {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("write it as scheme://host[:port]"))?;
        let scheme = match scheme {
            "http" => OutboundScheme::Http,
            "https" => OutboundScheme::Https,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "only scheme, host and port are allowed (no path, query or user)",
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("invalid port"))?;
        let port = port.unwrap_or(scheme.default_port());
        let host = host.to_ascii_lowercase();
        let pattern = match host.strip_prefix("*.") {
            Some(suffix) if valid_name(suffix) && suffix.contains('.') => {
                HostPattern::Subdomains(suffix.to_string())
            }
            Some(_) => {
                return Err(bad(
                    "a wildcard is `*.` followed by a domain such as example.com",
                ));
            }
            None if host.parse::<IpAddr>().is_ok() || valid_name(&host) => HostPattern::Exact(host),
            None => return Err(bad("invalid host")),
        };
        Ok(Self {
            scheme,
            host: pattern,
            port,
            private: false,
        })
    }

    /// Whether a target this entry matches may be at a non-public address.
    fn grants_private(&self) -> bool {
        self.private
            || matches!(&self.host, HostPattern::Exact(host) if host.parse::<IpAddr>().is_ok())
    }

    fn matches(&self, target: &Target) -> bool {
        self.scheme == target.scheme
            && self.port == target.port
            && match &self.host {
                HostPattern::Exact(host) => *host == target.host,
                HostPattern::Subdomains(suffix) => target
                    .host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            }
    }
}

impl fmt::Display for OutboundOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            OutboundScheme::Http => "http",
            OutboundScheme::Https => "https",
        };
        match &self.host {
            HostPattern::Exact(host) => write!(f, "{scheme}://{host}:{}", self.port),
            HostPattern::Subdomains(suffix) => write!(f, "{scheme}://*.{suffix}:{}", self.port),
        }?;
        if self.private {
            f.write_str(" (private)")?;
        }
        Ok(())
    }
}

/// An allow entry as written: `"https://api.example.com"`, or a table
/// `{ origin = "http://billing.internal:8080", private = true }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "an origin such as \"https://api.example.com\", or a table { origin = \"...\", private = true }"
)]
enum AllowEntry {
    Origin(String),
    Table(AllowTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowTable {
    origin: String,
    #[serde(default)]
    private: bool,
}

impl<'de> Deserialize<'de> for OutboundOrigin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (text, private) = match AllowEntry::deserialize(d)? {
            AllowEntry::Origin(text) => (text, false),
            AllowEntry::Table(table) => (table.origin, table.private),
        };
        let origin = Self::parse(&text).map_err(serde::de::Error::custom)?;
        Ok(Self { private, ..origin })
    }
}

/// A manifest's `[outbound]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    /// The origins the plugin may call.
    #[serde(default)]
    pub allow: Vec<OutboundOrigin>,
}

fn valid_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Splits `host[:port]` (IPv6 in brackets); `None` when the port is not a number.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), Some(port.parse().ok()?))),
        None => Some((authority.to_string(), None)),
    }
}

/// Where a request would go.
struct Target {
    scheme: OutboundScheme,
    host: String,
    port: u16,
}

impl Target {
    fn of(uri: &http::Uri) -> Option<Self> {
        let scheme = match uri.scheme_str()? {
            "http" => OutboundScheme::Http,
            "https" => OutboundScheme::Https,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        Some(Self {
            scheme,
            port: authority.port_u16().unwrap_or(scheme.default_port()),
            host,
        })
    }
}

/// The outbound policy of one instance.
pub struct OutboundPolicy {
    plugin: Arc<str>,
    allow: Arc<[OutboundOrigin]>,
    sender: Arc<Sender>,
    /// Calls this instance may still start: each holds a task, a socket and a lookup, so an
    /// instance firing requests in a loop without waiting gets `connection-limit-reached`
    /// beyond [`MAX_OUTBOUND_PER_INSTANCE`] instead of exhausting the host's descriptors. A
    /// plugin has at most `max_concurrency` instances, so it has at most that many times this.
    calls: Arc<tokio::sync::Semaphore>,
}

impl OutboundPolicy {
    /// The policy for `plugin`, allowing `allow`, sending through `sender`.
    pub fn new(plugin: Arc<str>, allow: Arc<[OutboundOrigin]>, sender: Arc<Sender>) -> Self {
        Self {
            plugin,
            allow,
            sender,
            calls: Arc::new(tokio::sync::Semaphore::new(MAX_OUTBOUND_PER_INSTANCE)),
        }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

fn deny(plugin: &str, uri: &http::Uri, reason: &str) -> Error {
    tracing::warn!(plugin, %uri, reason, "outbound request denied");
    Error::HttpRequestDenied
}

/// Checks a request against the policy; on success, where it goes and the addresses to connect
/// to (every one of them vetted).
async fn vet(
    plugin: &str,
    allow: &[OutboundOrigin],
    sender: &Sender,
    uri: &http::Uri,
) -> Result<(Target, Vec<SocketAddr>), Error> {
    let target = Target::of(uri).ok_or_else(|| deny(plugin, uri, "no usable scheme and host"))?;
    let Some(rule) = allow.iter().find(|o| o.matches(&target)) else {
        return Err(deny(
            plugin,
            uri,
            "not in the plugin's [outbound] allow list",
        ));
    };
    let addrs = sender.resolve(&target.host).await?;
    if !rule.grants_private() && addrs.iter().any(|ip| !is_public(*ip)) {
        return Err(deny(
            plugin,
            uri,
            "resolves to an address that is not public; only an IP entry or one marked \
             private = true may reach one",
        ));
    }
    if addrs.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    let addrs = addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, target.port))
        .collect();
    Ok((target, addrs))
}

/// The guest's timeouts, never longer than the host's.
fn clamp(options: Option<RequestOptions>) -> RequestOptions {
    let options = options.unwrap_or_default();
    let cap = |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |a| a.min(max)));
    RequestOptions {
        connect_timeout: cap(options.connect_timeout, CONNECT_TIMEOUT),
        first_byte_timeout: cap(options.first_byte_timeout, RESPONSE_TIMEOUT),
        between_bytes_timeout: cap(options.between_bytes_timeout, RESPONSE_TIMEOUT),
    }
}

impl WasiHttpHooks for OutboundPolicy {
    /// The default list, checked directly: the trait's default builds an `Arc` closure on every
    /// call, and every header of every request and response is checked.
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let plugin = self.plugin.clone();
        let allow = self.allow.clone();
        // Held until the call's connection is done with, not just its response head.
        let Ok(call) = self.calls.clone().try_acquire_owned() else {
            tracing::warn!(
                plugin = &*plugin,
                limit = MAX_OUTBOUND_PER_INSTANCE,
                "outbound request refused: too many in flight from one instance"
            );
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        let sender = self.sender.clone();
        Box::new(async move {
            let started = Instant::now();
            let uri = request.uri().clone();
            let (target, addrs) = vet(&plugin, &allow, &sender, &uri).await?;
            let result = sender
                .send(request, target.scheme, &target.host, &addrs, clamp(options))
                .await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match &result {
                Ok((response, _)) => tracing::info!(
                    plugin = &*plugin,
                    host = target.host,
                    port = target.port,
                    status = response.status().as_u16(),
                    elapsed_ms,
                    "outbound request"
                ),
                Err(e) => tracing::warn!(
                    plugin = &*plugin,
                    host = target.host,
                    port = target.port,
                    error = %e,
                    elapsed_ms,
                    "outbound request failed"
                ),
            }
            let (response, io) = result?;
            let io = async move {
                let _call = call;
                io.await
            };
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::of(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn origins_parse_and_match_scheme_host_and_port() {
        let exact = OutboundOrigin::parse("https://API.Example.com").unwrap();
        assert!(exact.matches(&target("https://api.example.com/v1/charges")));
        assert!(exact.matches(&target("https://api.example.com:443/")));
        assert!(!exact.matches(&target("http://api.example.com/")));
        assert!(!exact.matches(&target("https://api.example.com:8443/")));
        assert!(!exact.matches(&target("https://api.example.com.evil.net/")));
        let wild = OutboundOrigin::parse("https://*.example.com:8443/").unwrap();
        assert!(wild.matches(&target("https://a.example.com:8443/")));
        assert!(wild.matches(&target("https://a.b.example.com:8443/")));
        assert!(!wild.matches(&target("https://example.com:8443/")));
        assert!(!wild.matches(&target("https://badexample.com:8443/")));
        let ip = OutboundOrigin::parse("http://127.0.0.1:9000").unwrap();
        assert!(ip.matches(&target("http://127.0.0.1:9000/x")));
        assert!(!ip.matches(&target("http://2130706433:9000/x")));
        assert!(!ip.matches(&target("http://0x7f.1:9000/x")));
        let v6 = OutboundOrigin::parse("http://[::1]:9000").unwrap();
        assert!(v6.matches(&target("http://[::1]:9000/")));
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://*.com",
            "https://a.*.com",
            "https://x.com:99999",
            "https://",
        ] {
            assert!(OutboundOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_grants_private_addresses_only_as_an_ip_or_when_marked() {
        let spec: OutboundSpec = toml::from_str(
            r#"allow = [
                "http://billing.internal:8080",
                "http://10.0.0.5:8080",
                { origin = "http://localhost:9000", private = true },
            ]"#,
        )
        .unwrap();
        let grants: Vec<bool> = spec
            .allow
            .iter()
            .map(OutboundOrigin::grants_private)
            .collect();
        assert_eq!(grants, [false, true, true]);
        assert_eq!(spec.allow[2].to_string(), "http://localhost:9000 (private)");
        assert!(
            toml::from_str::<OutboundSpec>(r#"allow = [{ origin = "http://x.io", colour = 1 }]"#)
                .is_err()
        );
        assert!(toml::from_str::<OutboundSpec>(r#"allow = [{ private = true }]"#).is_err());
    }
}
