//! Server settings: merged from flags, environment and an optional TOML file (the raw stage),
//! then checked and given defaults (the resolved stage), so `plinth serve` runs with no setup.

use crate::auth::throttle::RateLimit;
use crate::auth::{AuthSettings, PasswordParams, Registration};
use crate::runtime::limits::{DEFAULT_CAPS, DEFAULT_LIMITS, Limits};
use crate::store::{Durability, KvLimits};
use crate::units::ByteSize;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Default listen address: loopback only, so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "plinth-data";
/// Default cap on an uploaded component (the whole multipart body of a deploy).
pub const DEFAULT_MAX_COMPONENT_SIZE: ByteSize = ByteSize(64 * 1024 * 1024);
/// Default largest value a plugin may store under one key.
pub const DEFAULT_KV_MAX_VALUE_SIZE: ByteSize = ByteSize(1024 * 1024);
/// Default per-plugin key-value quota.
pub const DEFAULT_KV_QUOTA: ByteSize = ByteSize(256 * 1024 * 1024);
/// Default cap on requests being served at once across all plugins.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
/// Default number of instance slots the engine reserves (raised to `max_in_flight` if that is
/// higher): in-flight requests plus instances kept idle for reuse.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// Default time a request waits for a busy plugin before 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Versions of each plugin kept for rollback by default.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;
/// Log lines kept per plugin by default (about 200 KiB at typical line lengths).
pub const DEFAULT_LOG_BUFFER_LINES: usize = 1_000;
/// Default time a client has to send a request's headers (and most idle keep-alive time).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default access token lifetime.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Default refresh token lifetime.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `audit_retention`: a year of audit entries.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Errors in the server configuration, naming the offending source and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, pointing at the key.
        message: String,
    },
    /// A value could not be parsed.
    #[error("invalid {key} {value:?}: {reason}")]
    Value {
        /// The setting.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("expected `human` or `json`, got `{other}`")),
        }
    }
}

/// Settings as given, before defaults: each source fills what the ones above it left unset.
/// Precedence: command-line flag, then environment variable (both handled by clap), then file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Where sled keeps its data.
    pub data_dir: Option<PathBuf>,
    /// `human` or `json`.
    pub log_format: Option<LogFormat>,
    /// Largest accepted deploy upload.
    pub max_component_size: Option<ByteSize>,
    /// Who may register: `open`, `closed` or `invite`.
    pub registration: Option<Registration>,
    /// When plugin kv writes return: `durable` (on disk) or `periodic` (flushed every 200 ms).
    pub durability: Option<Durability>,
    /// Largest value a plugin may store under one key.
    pub kv_max_value_size: Option<ByteSize>,
    /// Most bytes one plugin may keep in its key-value store.
    pub kv_quota: Option<ByteSize>,
    /// Default wall-clock deadline of a plugin request, e.g. `10s`.
    pub request_timeout: Option<String>,
    /// Most a manifest may set `timeout` to.
    pub request_timeout_cap: Option<String>,
    /// Default linear memory limit of an instance.
    pub memory_limit: Option<ByteSize>,
    /// Most a manifest may set `memory` to (also sizes the instance pool's slots).
    pub memory_limit_cap: Option<ByteSize>,
    /// Default instances of one plugin at once.
    pub max_concurrency: Option<u32>,
    /// Most a manifest may set `max_concurrency` to.
    pub max_concurrency_cap: Option<u32>,
    /// Default largest request body of a plugin route.
    pub max_request_body: Option<ByteSize>,
    /// Most a manifest may set `max_request_body` to.
    pub max_request_body_cap: Option<ByteSize>,
    /// Default largest response body of a plugin route.
    pub max_response_body: Option<ByteSize>,
    /// Most a manifest may set `max_response_body` to.
    pub max_response_body_cap: Option<ByteSize>,
    /// Plugin requests served at once across all plugins; more get 503 at once.
    pub max_in_flight: Option<u32>,
    /// Plugin instances alive at once (in flight or idle for reuse): sizes the engine's pool.
    pub max_instances: Option<u32>,
    /// How long a request waits for a busy plugin before 503, e.g. `1s`.
    pub queue_timeout: Option<String>,
    /// Time to send a request's headers, and most idle keep-alive time, e.g. `10s`.
    pub header_timeout: Option<String>,
    /// Open connections at once; more are closed at once.
    pub max_connections: Option<usize>,
    /// Which routes may keep plugin instances between requests when a manifest asks.
    pub instance_reuse: Option<crate::runtime::limits::InstanceReuse>,
    /// Addresses (CIDRs or IPs) of reverse proxies whose `X-Forwarded-For` is believed; none
    /// by default.
    pub trusted_proxies: Option<Vec<String>>,
    /// Plugins the operator lets receive operator and admin credentials on their
    /// `forward_authorization` routes; none by default.
    pub forward_privileged_credentials: Option<Vec<String>>,
    /// Versions kept per plugin for rollback (the active one included).
    pub keep_versions: Option<usize>,
    /// A folder of plugins to deploy at start (see `plinth apply`).
    pub apply: Option<PathBuf>,
    /// PEM certificate chain to serve HTTPS with (needs `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM certificates trusted for plugins' outbound HTTPS besides the public web roots.
    pub outbound_ca_cert: Option<PathBuf>,
    /// Lines kept in each plugin's log buffer.
    pub log_buffer_lines: Option<usize>,
    /// Access token lifetime, e.g. `15m`.
    pub access_token_ttl: Option<String>,
    /// Refresh token lifetime, e.g. `30days`.
    pub refresh_token_ttl: Option<String>,
    /// How long audit entries are kept, e.g. `365days` (default).
    pub audit_retention: Option<String>,
    /// argon2id memory cost in KiB.
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations.
    pub argon2_iterations: Option<u32>,
    /// argon2id parallelism.
    pub argon2_parallelism: Option<u32>,
    /// Requests per IP to login/register/refresh/setup per `auth_rate_window` (default 20).
    pub auth_rate_limit: Option<u32>,
    /// The window of `auth_rate_limit`, e.g. `1m` (default).
    pub auth_rate_window: Option<String>,
    /// The admin token (only from the environment: a secret never belongs in a file).
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// First admin account's email (environment only).
    #[serde(skip)]
    pub admin_email: Option<String>,
    /// First admin account's password (environment only).
    #[serde(skip)]
    pub admin_password: Option<String>,
}

/// Parses `trusted_proxies`: CIDRs (`10.0.0.0/8`) or single addresses (`127.0.0.1`).
fn parse_proxies(entries: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .into_iter()
        .map(|entry| {
            let text = entry.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Value {
                    key: "trusted_proxies",
                    value: entry.clone(),
                    reason: "expected an IP address or a CIDR such as 10.0.0.0/8".into(),
                })
        })
        .collect()
}

fn parse_ttl(
    key: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) if d.as_secs() >= 1 => Ok(d),
            Ok(_) => Err(ConfigError::Value {
                key,
                value: text,
                reason: "must be at least one second".into(),
            }),
            Err(e) => Err(ConfigError::Value {
                key,
                value: text,
                reason: e.to_string(),
            }),
        },
    }
}

impl RawConfig {
    /// Reads a server config file (TOML, same keys as the flags, in snake_case).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Fills every field still unset from `lower`.
    pub fn or(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            log_format: self.log_format.or(lower.log_format),
            max_component_size: self.max_component_size.or(lower.max_component_size),
            registration: self.registration.or(lower.registration),
            durability: self.durability.or(lower.durability),
            kv_max_value_size: self.kv_max_value_size.or(lower.kv_max_value_size),
            kv_quota: self.kv_quota.or(lower.kv_quota),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            request_timeout_cap: self.request_timeout_cap.or(lower.request_timeout_cap),
            memory_limit: self.memory_limit.or(lower.memory_limit),
            memory_limit_cap: self.memory_limit_cap.or(lower.memory_limit_cap),
            max_concurrency: self.max_concurrency.or(lower.max_concurrency),
            max_concurrency_cap: self.max_concurrency_cap.or(lower.max_concurrency_cap),
            max_request_body: self.max_request_body.or(lower.max_request_body),
            max_request_body_cap: self.max_request_body_cap.or(lower.max_request_body_cap),
            max_response_body: self.max_response_body.or(lower.max_response_body),
            max_response_body_cap: self.max_response_body_cap.or(lower.max_response_body_cap),
            max_in_flight: self.max_in_flight.or(lower.max_in_flight),
            max_instances: self.max_instances.or(lower.max_instances),
            queue_timeout: self.queue_timeout.or(lower.queue_timeout),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            keep_versions: self.keep_versions.or(lower.keep_versions),
            apply: self.apply.or(lower.apply),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            outbound_ca_cert: self.outbound_ca_cert.or(lower.outbound_ca_cert),
            log_buffer_lines: self.log_buffer_lines.or(lower.log_buffer_lines),
            instance_reuse: self.instance_reuse.or(lower.instance_reuse),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            forward_privileged_credentials: self
                .forward_privileged_credentials
                .or(lower.forward_privileged_credentials),
            access_token_ttl: self.access_token_ttl.or(lower.access_token_ttl),
            refresh_token_ttl: self.refresh_token_ttl.or(lower.refresh_token_ttl),
            audit_retention: self.audit_retention.or(lower.audit_retention),
            argon2_memory_kib: self.argon2_memory_kib.or(lower.argon2_memory_kib),
            argon2_iterations: self.argon2_iterations.or(lower.argon2_iterations),
            argon2_parallelism: self.argon2_parallelism.or(lower.argon2_parallelism),
            auth_rate_limit: self.auth_rate_limit.or(lower.auth_rate_limit),
            auth_rate_window: self.auth_rate_window.or(lower.auth_rate_window),
            admin_token: self.admin_token.or(lower.admin_token),
            admin_email: self.admin_email.or(lower.admin_email),
            admin_password: self.admin_password.or(lower.admin_password),
        }
    }

    /// Applies defaults and checks values.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::Value {
                key: "listen",
                value: listen_text.clone(),
                reason: e.to_string(),
            })?;
        let admin_token = match self.admin_token {
            Some(t) if t.trim().len() < 16 => {
                return Err(ConfigError::Value {
                    key: "PLINTH_ADMIN_TOKEN",
                    value: "(hidden)".into(),
                    reason: "an admin token must be at least 16 characters".into(),
                });
            }
            Some(t) => Some(t.trim().to_string()),
            None => None,
        };
        let admin_account = match (self.admin_email, self.admin_password) {
            (Some(email), Some(password)) => Some((email, password)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Value {
                    key: "PLINTH_ADMIN_EMAIL/PLINTH_ADMIN_PASSWORD",
                    value: "(hidden)".into(),
                    reason: "set both or neither".into(),
                });
            }
        };
        let caps = Limits {
            memory: self.memory_limit_cap.map_or(DEFAULT_CAPS.memory, |b| b.0),
            timeout: parse_ttl(
                "request_timeout_cap",
                self.request_timeout_cap,
                DEFAULT_CAPS.timeout,
            )?,
            max_concurrency: self
                .max_concurrency_cap
                .unwrap_or(DEFAULT_CAPS.max_concurrency),
            max_request_body: self
                .max_request_body_cap
                .map_or(DEFAULT_CAPS.max_request_body, |b| b.0),
            max_response_body: self
                .max_response_body_cap
                .map_or(DEFAULT_CAPS.max_response_body, |b| b.0),
            instance_reuse: self.instance_reuse.unwrap_or_default(),
        };
        let limit_defaults = Limits {
            memory: self.memory_limit.map_or(DEFAULT_LIMITS.memory, |b| b.0),
            timeout: parse_ttl(
                "request_timeout",
                self.request_timeout,
                DEFAULT_LIMITS.timeout,
            )?,
            max_concurrency: self
                .max_concurrency
                .unwrap_or(DEFAULT_LIMITS.max_concurrency),
            max_request_body: self
                .max_request_body
                .map_or(DEFAULT_LIMITS.max_request_body, |b| b.0),
            max_response_body: self
                .max_response_body
                .map_or(DEFAULT_LIMITS.max_response_body, |b| b.0),
            instance_reuse: DEFAULT_LIMITS.instance_reuse,
        };
        // A default above its cap would make every manifest without [limits] undeployable.
        let limit_defaults = limit_defaults
            .for_manifest(&caps, &Default::default())
            .map_err(|e| ConfigError::Value {
                key: e.name,
                value: e.value,
                reason: e.reason,
            })?;
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1);
        let max_instances = match self.max_instances {
            None => DEFAULT_MAX_INSTANCES.max(max_in_flight),
            Some(n) if n >= max_in_flight => n,
            Some(n) => {
                return Err(ConfigError::Value {
                    key: "max_instances",
                    value: n.to_string(),
                    reason: format!(
                        "below max_in_flight ({max_in_flight}): every request in flight needs \
                         an instance"
                    ),
                });
            }
        };
        let limits = LimitSettings {
            defaults: limit_defaults,
            caps,
            max_in_flight,
            max_instances,
            queue_timeout: parse_ttl("queue_timeout", self.queue_timeout, DEFAULT_QUEUE_TIMEOUT)?,
        };
        let defaults = PasswordParams::default();
        let auth = AuthSettings {
            registration: self.registration.unwrap_or_default(),
            access_ttl: parse_ttl(
                "access_token_ttl",
                self.access_token_ttl,
                DEFAULT_ACCESS_TTL,
            )?,
            refresh_ttl: parse_ttl(
                "refresh_token_ttl",
                self.refresh_token_ttl,
                DEFAULT_REFRESH_TTL,
            )?,
            password_params: PasswordParams {
                memory_kib: self.argon2_memory_kib.unwrap_or(defaults.memory_kib),
                iterations: self.argon2_iterations.unwrap_or(defaults.iterations),
                parallelism: self.argon2_parallelism.unwrap_or(defaults.parallelism),
            },
            admin_token,
            admin_account,
            rate_limit: RateLimit {
                requests: self
                    .auth_rate_limit
                    .unwrap_or(RateLimit::default().requests)
                    .max(1),
                window: parse_ttl(
                    "auth_rate_window",
                    self.auth_rate_window,
                    RateLimit::default().window,
                )?,
            },
        };
        Ok(ServerConfig {
            listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            log_format: self.log_format.unwrap_or_default(),
            max_component_size: self
                .max_component_size
                .unwrap_or(DEFAULT_MAX_COMPONENT_SIZE),
            durability: self.durability.unwrap_or_default(),
            keep_versions: self.keep_versions.unwrap_or(DEFAULT_KEEP_VERSIONS).max(1),
            apply: self.apply,
            outbound_ca_cert: self.outbound_ca_cert,
            audit_retention: parse_ttl(
                "audit_retention",
                self.audit_retention,
                DEFAULT_AUDIT_RETENTION,
            )?,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (cert, _) => {
                    return Err(ConfigError::Value {
                        key: if cert.is_some() {
                            "tls_key"
                        } else {
                            "tls_cert"
                        },
                        value: String::new(),
                        reason: "HTTPS needs both tls_cert and tls_key".into(),
                    });
                }
            },
            log_buffer_lines: self
                .log_buffer_lines
                .unwrap_or(DEFAULT_LOG_BUFFER_LINES)
                .max(1),
            limits,
            front_door: crate::front_door::FrontDoor {
                header_timeout: parse_ttl(
                    "header_timeout",
                    self.header_timeout,
                    DEFAULT_HEADER_TIMEOUT,
                )?,
                max_connections: self
                    .max_connections
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                    .max(1),
                trusted_proxies: parse_proxies(self.trusted_proxies.unwrap_or_default())?.into(),
            },
            forward_privileged_credentials: self
                .forward_privileged_credentials
                .unwrap_or_default()
                .into_iter()
                .collect(),
            kv_limits: KvLimits {
                max_value: self
                    .kv_max_value_size
                    .unwrap_or(DEFAULT_KV_MAX_VALUE_SIZE)
                    .0,
                quota: self.kv_quota.unwrap_or(DEFAULT_KV_QUOTA).0,
            },
            auth,
        })
    }
}

/// The sandbox limits in force: per-plugin defaults, the caps manifests may raise them to, and
/// the host-wide admission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// What a plugin gets when its manifest says nothing.
    pub defaults: Limits,
    /// The most a manifest may ask for.
    pub caps: Limits,
    /// Plugin requests served at once across all plugins (503 `overloaded` beyond).
    pub max_in_flight: u32,
    /// Instances alive at once, in flight or idle for reuse: the size of the engine's pool.
    pub max_instances: u32,
    /// How long a request waits for a busy plugin before 503 `plugin_busy`.
    pub queue_timeout: Duration,
}

impl LimitSettings {
    /// How the engine's instance pool is sized: one slot per instance allowed at once, each as
    /// large as the biggest memory a manifest may ask for; the slots requests in flight cannot
    /// need are those idle reused instances may keep.
    pub fn pool_size(&self) -> crate::runtime::limits::PoolSize {
        crate::runtime::limits::PoolSize {
            instances: self.max_instances,
            idle: self.max_instances.saturating_sub(self.max_in_flight),
            max_memory: self.caps.memory,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            defaults: DEFAULT_LIMITS,
            caps: DEFAULT_CAPS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_instances: DEFAULT_MAX_INSTANCES,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// Settings in force, every field resolved.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port; the chosen one is logged).
    pub listen: SocketAddr,
    /// Where sled keeps its data.
    pub data_dir: PathBuf,
    /// How logs are written.
    pub log_format: LogFormat,
    /// Largest accepted deploy upload.
    pub max_component_size: ByteSize,
    /// When plugin kv writes return.
    pub durability: Durability,
    /// Versions kept per plugin (at least 1: the active one).
    pub keep_versions: usize,
    /// A folder of plugins deployed at start, before the server reports ready.
    pub apply: Option<PathBuf>,
    /// Certificate chain and key files: serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Extra roots for plugins' outbound HTTPS (an operator's internal CA).
    pub outbound_ca_cert: Option<PathBuf>,
    /// How long audit entries are kept before they are pruned.
    pub audit_retention: Duration,
    /// Lines kept in each plugin's log buffer.
    pub log_buffer_lines: usize,
    /// Sandbox limits of plugin requests.
    pub limits: LimitSettings,
    /// Connection-level limits and the proxies trusted to name the client.
    pub front_door: crate::front_door::FrontDoor,
    /// Plugins granted operator and admin credentials on `forward_authorization` routes.
    pub forward_privileged_credentials: std::collections::BTreeSet<String>,
    /// Value size limit and quota of every plugin's key-value store.
    pub kv_limits: KvLimits,
    /// Accounts, tokens and the admin token.
    pub auth: AuthSettings,
}

impl fmt::Debug for ServerConfig {
    // Hand-written so secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("log_format", &self.log_format)
            .field("max_component_size", &self.max_component_size)
            .field("durability", &self.durability)
            .field("keep_versions", &self.keep_versions)
            .field("apply", &self.apply)
            .field("tls", &self.tls)
            .field("outbound_ca_cert", &self.outbound_ca_cert)
            .field("audit_retention", &self.audit_retention)
            .field("log_buffer_lines", &self.log_buffer_lines)
            .field("limits", &self.limits)
            .field("front_door", &self.front_door)
            .field(
                "forward_privileged_credentials",
                &self.forward_privileged_credentials,
            )
            .field("kv_limits", &self.kv_limits)
            .field("auth", &self.auth)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let flags = RawConfig {
            listen: Some("127.0.0.1:9999".into()),
            ..RawConfig::default()
        };
        let file: RawConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\ndata_dir = \"/srv/plinth\"").unwrap();
        let cfg = flags.or(file).resolve().unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/plinth"));
        assert_eq!(cfg.max_component_size, DEFAULT_MAX_COMPONENT_SIZE);
    }

    #[test]
    fn storage_settings_have_defaults_and_parse() {
        let cfg = RawConfig::default().resolve().unwrap();
        assert_eq!(cfg.durability, Durability::Durable);
        assert_eq!(cfg.kv_limits.max_value, 1 << 20);
        assert_eq!(cfg.kv_limits.quota, 256 << 20);
        let file: RawConfig =
            toml::from_str("durability = \"periodic\"\nkv_quota = \"1GiB\"").unwrap();
        let cfg = file.resolve().unwrap();
        assert_eq!(cfg.durability, Durability::Periodic);
        assert_eq!(cfg.kv_limits.quota, 1 << 30);
        assert!(toml::from_str::<RawConfig>("durability = \"sometimes\"").is_err());
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_rejected() {
        assert!(toml::from_str::<RawConfig>("lisen = \"x\"").is_err());
        let bad = RawConfig {
            listen: Some("nowhere".into()),
            ..RawConfig::default()
        };
        assert!(matches!(
            bad.resolve(),
            Err(ConfigError::Value { key: "listen", .. })
        ));
        let short = RawConfig {
            admin_token: Some("short".into()),
            ..RawConfig::default()
        };
        assert!(short.resolve().is_err());
    }

    #[test]
    fn the_instance_pool_covers_every_request_in_flight() {
        let cfg = RawConfig::default().resolve().unwrap();
        assert_eq!(cfg.limits.max_instances, DEFAULT_MAX_INSTANCES);
        assert_eq!(cfg.limits.pool_size().max_memory, cfg.limits.caps.memory);
        // Unset, it grows with max_in_flight rather than refusing a busy server's settings.
        let busy: RawConfig = toml::from_str("max_in_flight = 4000").unwrap();
        assert_eq!(busy.resolve().unwrap().limits.max_instances, 4000);
        let small: RawConfig = toml::from_str("max_in_flight = 8\nmax_instances = 8").unwrap();
        let small = small.resolve().unwrap().limits.pool_size();
        assert_eq!((small.instances, small.idle), (8, 0));
        let spare: RawConfig = toml::from_str("max_in_flight = 8\nmax_instances = 10").unwrap();
        assert_eq!(spare.resolve().unwrap().limits.pool_size().idle, 2);
        let too_small: RawConfig = toml::from_str("max_in_flight = 8\nmax_instances = 4").unwrap();
        assert!(matches!(
            too_small.resolve(),
            Err(ConfigError::Value {
                key: "max_instances",
                ..
            })
        ));
    }
}
