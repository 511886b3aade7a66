//! Server settings, defined once: [`Settings`] is at the same time the `plinth serve` flags
//! with their environment variables (clap), the keys of the optional TOML file (serde), and the
//! layer merge of the two ([`merge::Merge`]: a flag or variable wins over the file). Defaults
//! live in the constants below and in `DEFAULT_LIMITS`/`DEFAULT_CAPS`; [`Settings::defaults`]
//! shows them, for `--help` and the docs, and [`Settings::resolve`] applies them.

use crate::auth::throttle::RateLimit;
use crate::auth::{AuthSettings, PasswordParams, Registration};
use crate::runtime::limits::{DEFAULT_CAPS, DEFAULT_LIMITS, InstanceReuse, Limits};
use crate::store::{Durability, KvLimits};
use crate::units::{ByteSize, Span};
use clap::ValueEnum;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A setting that cannot be used, naming its source and value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The settings file is not valid TOML or has unknown keys.
    #[error("invalid settings file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, pointing at the key.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid {key} {value:?}: {reason}")]
    Value {
        /// The setting's name as the file spells it.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Every server setting as given, before defaults: each field is a flag with its environment
/// variable and a key of the settings file, all optional. Precedence: flag, then environment
/// variable (both clap's), then file ([`merge::Merge`] fills what is unset).
#[derive(Debug, Default, Clone, Deserialize, clap::Args, merge::Merge)]
#[serde(deny_unknown_fields)]
#[merge(strategy = merge::option::overwrite_none)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port; the log says which)
    #[arg(long, env = "PLINTH_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory of the embedded database
    #[arg(long, env = "PLINTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where state lives: unset, the embedded database in --data-dir (one host); a PostgreSQL
    /// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE) for several hosts sharing it
    #[arg(long, env = "PLINTH_STORE", value_name = "URL", hide_env_values = true)]
    pub store: Option<String>,
    /// Log format on stderr (`RUST_LOG` filters)
    #[arg(long, env = "PLINTH_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Largest component a deploy may upload (413 beyond)
    #[arg(long, env = "PLINTH_MAX_COMPONENT_SIZE", value_name = "SIZE")]
    pub max_component_size: Option<ByteSize>,
    /// Who may create accounts with POST /auth/register
    #[arg(long, env = "PLINTH_REGISTRATION", value_name = "MODE")]
    pub registration: Option<Registration>,
    /// When a plugin's key-value write returns: durable (once on disk, shared flushes) or
    /// periodic (at once; flushed every 200 ms, so a crash may lose the last moments)
    #[arg(long, env = "PLINTH_DURABILITY", value_name = "MODE")]
    pub durability: Option<Durability>,
    /// Largest value a plugin may store under one key
    #[arg(long, env = "PLINTH_KV_MAX_VALUE_SIZE", value_name = "SIZE")]
    pub kv_max_value_size: Option<ByteSize>,
    /// Most bytes (keys + values) one plugin may store
    #[arg(long, env = "PLINTH_KV_QUOTA", value_name = "SIZE")]
    pub kv_quota: Option<ByteSize>,
    /// Deadline of a plugin request; past it the client gets 504
    #[arg(long, env = "PLINTH_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<Span>,
    /// Most a manifest may set `[limits] timeout` to
    #[arg(long, env = "PLINTH_REQUEST_TIMEOUT_CAP", value_name = "DURATION")]
    pub request_timeout_cap: Option<Span>,
    /// Linear memory limit of a plugin instance
    #[arg(long, env = "PLINTH_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<ByteSize>,
    /// Most a manifest may set `[limits] memory` to (also the size of each instance slot)
    #[arg(long, env = "PLINTH_MEMORY_LIMIT_CAP", value_name = "SIZE")]
    pub memory_limit_cap: Option<ByteSize>,
    /// Instances of one plugin at once; more requests wait, then get 503
    #[arg(long, env = "PLINTH_MAX_CONCURRENCY", value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Most a manifest may set `[limits] max_concurrency` to
    #[arg(long, env = "PLINTH_MAX_CONCURRENCY_CAP", value_name = "N")]
    pub max_concurrency_cap: Option<u32>,
    /// Largest request body a plugin route accepts (413 beyond)
    #[arg(long, env = "PLINTH_MAX_REQUEST_BODY", value_name = "SIZE")]
    pub max_request_body: Option<ByteSize>,
    /// Most a manifest may set `[limits] max_request_body` to
    #[arg(long, env = "PLINTH_MAX_REQUEST_BODY_CAP", value_name = "SIZE")]
    pub max_request_body_cap: Option<ByteSize>,
    /// Largest response body a plugin may send (the response is cut off beyond)
    #[arg(long, env = "PLINTH_MAX_RESPONSE_BODY", value_name = "SIZE")]
    pub max_response_body: Option<ByteSize>,
    /// Most a manifest may set `[limits] max_response_body` to
    #[arg(long, env = "PLINTH_MAX_RESPONSE_BODY_CAP", value_name = "SIZE")]
    pub max_response_body_cap: Option<ByteSize>,
    /// Plugin requests served at once across all plugins; more get 503
    #[arg(long, env = "PLINTH_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Plugin instances alive at once, in flight or kept idle for reuse; the engine reserves
    /// address space for each at start (lower it where overcommit is tight); idle ones keep
    /// only the slots beyond --max-in-flight
    #[arg(long, env = "PLINTH_MAX_INSTANCES", value_name = "N")]
    pub max_instances: Option<u32>,
    /// How long a request waits for a busy plugin before 503
    #[arg(long, env = "PLINTH_QUEUE_TIMEOUT", value_name = "DURATION")]
    pub queue_timeout: Option<Span>,
    /// Time a client has to send a request's headers; also the most a keep-alive connection
    /// may sit idle
    #[arg(long, env = "PLINTH_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<Span>,
    /// Open connections at once; more are closed at once
    #[arg(long, env = "PLINTH_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Let plugins whose manifest sets `[limits] instance_reuse = true` keep instances between
    /// requests: off, public (on public routes only) or all. Faster, but a request can see
    /// what an earlier one (maybe another user's) left in the instance
    #[arg(long, env = "PLINTH_INSTANCE_REUSE", value_name = "MODE")]
    pub instance_reuse: Option<InstanceReuse>,
    /// Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client,
    /// for rate limits and the audit log; trust none unless they front Plinth
    #[arg(
        long,
        env = "PLINTH_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Plugins (comma-separated) that may receive operator and admin credentials on their
    /// `forward_authorization` routes
    #[arg(
        long,
        env = "PLINTH_FORWARD_PRIVILEGED_CREDENTIALS",
        value_name = "PLUGINS",
        value_delimiter = ','
    )]
    pub forward_privileged_credentials: Option<Vec<String>>,
    /// Versions kept per plugin for `plinth rollback` (the active one included)
    #[arg(long, env = "PLINTH_KEEP_VERSIONS", value_name = "N")]
    pub keep_versions: Option<usize>,
    /// Deploy the plugins in this folder at start (new or changed ones; like `plinth apply`
    /// without --prune) before reporting ready
    #[arg(long, env = "PLINTH_APPLY", value_name = "DIR")]
    pub apply: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long, env = "PLINTH_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "PLINTH_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates plugins' outbound HTTPS trusts besides the public web roots (an
    /// internal CA)
    #[arg(long, env = "PLINTH_OUTBOUND_CA_CERT", value_name = "FILE")]
    pub outbound_ca_cert: Option<PathBuf>,
    /// Log lines kept per plugin for `plinth logs`
    #[arg(long, env = "PLINTH_LOG_BUFFER_LINES", value_name = "N")]
    pub log_buffer_lines: Option<usize>,
    /// Lifetime of an access token (a JWT)
    #[arg(long, env = "PLINTH_ACCESS_TOKEN_TTL", value_name = "DURATION")]
    pub access_token_ttl: Option<Span>,
    /// Lifetime of a refresh token
    #[arg(long, env = "PLINTH_REFRESH_TOKEN_TTL", value_name = "DURATION")]
    pub refresh_token_ttl: Option<Span>,
    /// How long audit entries are kept (older ones are pruned hourly, with expired refresh
    /// tokens and the login families they leave empty)
    #[arg(long, env = "PLINTH_AUDIT_RETENTION", value_name = "DURATION")]
    pub audit_retention: Option<Span>,
    /// argon2id memory cost of password hashes, in KiB (stored hashes are upgraded at the next
    /// login when raised)
    #[arg(long, env = "PLINTH_ARGON2_MEMORY_KIB", value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations
    #[arg(long, env = "PLINTH_ARGON2_ITERATIONS", value_name = "N")]
    pub argon2_iterations: Option<u32>,
    /// argon2id parallelism
    #[arg(long, env = "PLINTH_ARGON2_PARALLELISM", value_name = "N")]
    pub argon2_parallelism: Option<u32>,
    /// Requests per client address to login, register, refresh and setup per
    /// --auth-rate-window
    #[arg(long, env = "PLINTH_AUTH_RATE_LIMIT", value_name = "N")]
    pub auth_rate_limit: Option<u32>,
    /// The window of --auth-rate-limit
    #[arg(long, env = "PLINTH_AUTH_RATE_WINDOW", value_name = "DURATION")]
    pub auth_rate_window: Option<Span>,
    /// The admin token: only from `PLINTH_ADMIN_TOKEN` (a secret never belongs in a file or
    /// on a command line, where `ps` shows it).
    #[arg(skip)]
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// The first admin account's email (`PLINTH_ADMIN_EMAIL` only).
    #[arg(skip)]
    #[serde(skip)]
    pub admin_email: Option<String>,
    /// The first admin account's password (`PLINTH_ADMIN_PASSWORD` only).
    #[arg(skip)]
    #[serde(skip)]
    pub admin_password: Option<String>,
}

/// Parses `trusted_proxies`: CIDRs (`10.0.0.0/8`) or single addresses (`127.0.0.1`).
fn parse_proxies(entries: Vec<String>) -> Result<Vec<ipnet::IpNet>, SettingsError> {
    entries
        .into_iter()
        .map(|entry| {
            let text = entry.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| SettingsError::Value {
                    key: "trusted_proxies",
                    value: entry.clone(),
                    reason: "expected an IP address or a CIDR such as 10.0.0.0/8".into(),
                })
        })
        .collect()
}

/// A duration setting, or its default; durations under a second are refused (a typo such as
/// `10ms` for `10s` would make every request time out).
fn at_least_a_second(
    key: &'static str,
    value: Option<Span>,
    default: Duration,
) -> Result<Duration, SettingsError> {
    match value {
        None => Ok(default),
        Some(span) if span.0.as_secs() >= 1 => Ok(span.0),
        Some(span) => Err(SettingsError::Value {
            key,
            value: span.to_string(),
            reason: "must be at least one second".into(),
        }),
    }
}

/// The name a flag, variable or file gives an enum value.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

impl Settings {
    /// Reads a settings file (TOML, the flags' names in snake_case).
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// These settings, with what they leave unset taken from `lower` (a file under flags).
    pub fn over(mut self, lower: Settings) -> Settings {
        merge::Merge::merge(&mut self, lower);
        self
    }

    /// With the secrets that come only from the environment: `PLINTH_ADMIN_TOKEN`,
    /// `PLINTH_ADMIN_EMAIL` and `PLINTH_ADMIN_PASSWORD` (empty counts as unset).
    pub fn with_secrets_from_env(self) -> Self {
        let secret = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            admin_token: secret("PLINTH_ADMIN_TOKEN"),
            admin_email: secret("PLINTH_ADMIN_EMAIL"),
            admin_password: secret("PLINTH_ADMIN_PASSWORD"),
            ..self
        }
    }

    /// What each setting is when nothing sets it, by field name (the flag is the name in
    /// kebab-case), as `--help` and the docs show it. Settings with no default (files, lists)
    /// are absent. [`Settings::resolve`] applies the same constants.
    pub fn defaults() -> Vec<(&'static str, String)> {
        let passwords = PasswordParams::default();
        let rate = RateLimit::default();
        let span = |d: Duration| Span(d).to_string();
        vec![
            ("listen", DEFAULT_LISTEN.to_string()),
            ("data_dir", DEFAULT_DATA_DIR.to_string()),
            ("log_format", value_name(LogFormat::default())),
            ("max_component_size", DEFAULT_MAX_COMPONENT_SIZE.to_string()),
            ("registration", value_name(Registration::default())),
            ("durability", value_name(Durability::default())),
            ("kv_max_value_size", DEFAULT_KV_MAX_VALUE_SIZE.to_string()),
            ("kv_quota", DEFAULT_KV_QUOTA.to_string()),
            ("request_timeout", span(DEFAULT_LIMITS.timeout)),
            ("request_timeout_cap", span(DEFAULT_CAPS.timeout)),
            ("memory_limit", ByteSize(DEFAULT_LIMITS.memory).to_string()),
            (
                "memory_limit_cap",
                ByteSize(DEFAULT_CAPS.memory).to_string(),
            ),
            (
                "max_concurrency",
                DEFAULT_LIMITS.max_concurrency.to_string(),
            ),
            (
                "max_concurrency_cap",
                DEFAULT_CAPS.max_concurrency.to_string(),
            ),
            (
                "max_request_body",
                ByteSize(DEFAULT_LIMITS.max_request_body).to_string(),
            ),
            (
                "max_request_body_cap",
                ByteSize(DEFAULT_CAPS.max_request_body).to_string(),
            ),
            (
                "max_response_body",
                ByteSize(DEFAULT_LIMITS.max_response_body).to_string(),
            ),
            (
                "max_response_body_cap",
                ByteSize(DEFAULT_CAPS.max_response_body).to_string(),
            ),
            ("max_in_flight", DEFAULT_MAX_IN_FLIGHT.to_string()),
            (
                "max_instances",
                format!("{DEFAULT_MAX_INSTANCES}, or --max-in-flight if higher"),
            ),
            ("queue_timeout", span(DEFAULT_QUEUE_TIMEOUT)),
            ("header_timeout", span(DEFAULT_HEADER_TIMEOUT)),
            ("max_connections", DEFAULT_MAX_CONNECTIONS.to_string()),
            ("instance_reuse", value_name(InstanceReuse::default())),
            ("keep_versions", DEFAULT_KEEP_VERSIONS.to_string()),
            ("log_buffer_lines", DEFAULT_LOG_BUFFER_LINES.to_string()),
            ("access_token_ttl", span(DEFAULT_ACCESS_TTL)),
            ("refresh_token_ttl", span(DEFAULT_REFRESH_TTL)),
            ("audit_retention", span(DEFAULT_AUDIT_RETENTION)),
            ("argon2_memory_kib", passwords.memory_kib.to_string()),
            ("argon2_iterations", passwords.iterations.to_string()),
            ("argon2_parallelism", passwords.parallelism.to_string()),
            ("auth_rate_limit", rate.requests.to_string()),
            ("auth_rate_window", span(rate.window)),
        ]
    }

    /// Applies defaults and checks values.
    pub fn resolve(self) -> Result<ServerSettings, SettingsError> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|e| SettingsError::Value {
                key: "listen",
                value: listen_text.clone(),
                reason: e.to_string(),
            })?;
        let admin_token = match self.admin_token {
            Some(t) if t.trim().len() < 16 => {
                return Err(SettingsError::Value {
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
                return Err(SettingsError::Value {
                    key: "PLINTH_ADMIN_EMAIL/PLINTH_ADMIN_PASSWORD",
                    value: "(hidden)".into(),
                    reason: "set both or neither".into(),
                });
            }
        };
        let caps = Limits {
            memory: self.memory_limit_cap.map_or(DEFAULT_CAPS.memory, |b| b.0),
            timeout: at_least_a_second(
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
            timeout: at_least_a_second(
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
            .map_err(|e| SettingsError::Value {
                key: e.name,
                value: e.value,
                reason: e.reason,
            })?;
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1);
        let max_instances = match self.max_instances {
            None => DEFAULT_MAX_INSTANCES.max(max_in_flight),
            Some(n) if n >= max_in_flight => n,
            Some(n) => {
                return Err(SettingsError::Value {
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
            queue_timeout: at_least_a_second(
                "queue_timeout",
                self.queue_timeout,
                DEFAULT_QUEUE_TIMEOUT,
            )?,
        };
        let defaults = PasswordParams::default();
        let auth = AuthSettings {
            registration: self.registration.unwrap_or_default(),
            access_ttl: at_least_a_second(
                "access_token_ttl",
                self.access_token_ttl,
                DEFAULT_ACCESS_TTL,
            )?,
            refresh_ttl: at_least_a_second(
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
                window: at_least_a_second(
                    "auth_rate_window",
                    self.auth_rate_window,
                    RateLimit::default().window,
                )?,
            },
        };
        Ok(ServerSettings {
            listen,
            store: StoreLocation::parse(self.store)?,
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
            audit_retention: at_least_a_second(
                "audit_retention",
                self.audit_retention,
                DEFAULT_AUDIT_RETENTION,
            )?,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (cert, _) => {
                    return Err(SettingsError::Value {
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
                header_timeout: at_least_a_second(
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

/// Where the host's state lives (`--store`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled in the data directory: one host.
    Embedded,
    /// A PostgreSQL database that several hosts share, by its URL (which may hold a password:
    /// shown only through [`fmt::Display`], which leaves it out).
    Postgres(String),
}

impl StoreLocation {
    fn parse(value: Option<String>) -> Result<Self, SettingsError> {
        match value.as_deref().map(str::trim) {
            None | Some("") => Ok(StoreLocation::Embedded),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres(url.to_string()))
            }
            Some(other) => Err(SettingsError::Value {
                key: "store",
                value: StoreLocation::Postgres(other.to_string()).to_string(),
                reason: "expected a postgres:// URL (or nothing, for the embedded database)".into(),
            }),
        }
    }
}

impl fmt::Display for StoreLocation {
    /// The location without its password or query parameters (which may carry one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Embedded => f.write_str("the embedded database"),
            StoreLocation::Postgres(url) => {
                // A password may hold any character, so the user is what precedes the last
                // `@` up to its first `:`, and only the part after that `@` is shown.
                let Some((scheme, rest)) = url.split_once("://") else {
                    return f.write_str("a PostgreSQL database (its location hidden)");
                };
                let (user, place) = match rest.rsplit_once('@') {
                    Some((userinfo, place)) => {
                        let user = userinfo.split(':').next().unwrap_or_default();
                        (format!("{user}@"), place)
                    }
                    None => (String::new(), rest),
                };
                let place = place.split('?').next().unwrap_or_default();
                write!(f, "{scheme}://{user}{place}")
            }
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Settings in force, every field resolved.
#[derive(Clone)]
pub struct ServerSettings {
    /// Address to listen on (port 0 picks a free port; the chosen one is logged).
    pub listen: SocketAddr,
    /// Where state lives: the data directory, or a shared PostgreSQL.
    pub store: StoreLocation,
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

impl fmt::Debug for ServerSettings {
    // Hand-written so secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("store", &self.store)
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
        let flags = Settings {
            listen: Some("127.0.0.1:9999".into()),
            ..Settings::default()
        };
        let file: Settings =
            toml::from_str("listen = \"127.0.0.1:1\"\ndata_dir = \"/srv/plinth\"").unwrap();
        let cfg = flags.over(file).resolve().unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/plinth"));
        assert_eq!(cfg.max_component_size, DEFAULT_MAX_COMPONENT_SIZE);
    }

    #[test]
    fn every_setting_is_a_flag_a_variable_and_a_file_key_and_shows_its_default() {
        use clap::Args;
        let command = Settings::augment_args(clap::Command::new("serve"));
        let defaults: std::collections::BTreeMap<_, _> = Settings::defaults().into_iter().collect();
        // Settings that are off or empty unless given: no default to show.
        let optional = [
            "store",
            "apply",
            "tls_cert",
            "tls_key",
            "outbound_ca_cert",
            "trusted_proxies",
            "forward_privileged_credentials",
        ];
        let mut flags = 0;
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            flags += 1;
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()));
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(env, format!("PLINTH_{}", id.to_uppercase()), "{id}");
            assert!(
                defaults.contains_key(id) != optional.contains(&id),
                "{id}: give it a default in Settings::defaults or list it as optional"
            );
            // The file takes the same name (an unknown key would be refused).
            let file = format!("{id} = []");
            if let Err(e) = toml::from_str::<Settings>(&file) {
                assert!(!e.to_string().contains("unknown field"), "{id}: {e}");
            }
        }
        assert_eq!(flags, defaults.len() + optional.len());
        // What `defaults` shows is what `resolve` applies.
        let resolved = Settings::default().resolve().unwrap();
        assert_eq!(
            defaults["kv_quota"],
            ByteSize(resolved.kv_limits.quota).to_string()
        );
        assert_eq!(
            defaults["request_timeout"],
            Span(resolved.limits.defaults.timeout).to_string()
        );
        assert_eq!(defaults["audit_retention"], "365days");
        assert_eq!(defaults["listen"], resolved.listen.to_string());
    }

    #[test]
    fn storage_settings_have_defaults_and_parse() {
        let cfg = Settings::default().resolve().unwrap();
        assert_eq!(cfg.durability, Durability::Durable);
        assert_eq!(cfg.kv_limits.max_value, 1 << 20);
        assert_eq!(cfg.kv_limits.quota, 256 << 20);
        let file: Settings =
            toml::from_str("durability = \"periodic\"\nkv_quota = \"1GiB\"").unwrap();
        let cfg = file.resolve().unwrap();
        assert_eq!(cfg.durability, Durability::Periodic);
        assert_eq!(cfg.kv_limits.quota, 1 << 30);
        assert!(toml::from_str::<Settings>("durability = \"sometimes\"").is_err());
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err());
        let bad = Settings {
            listen: Some("nowhere".into()),
            ..Settings::default()
        };
        assert!(matches!(
            bad.resolve(),
            Err(SettingsError::Value { key: "listen", .. })
        ));
        let short = Settings {
            admin_token: Some("short".into()),
            ..Settings::default()
        };
        assert!(short.resolve().is_err());
    }

    #[test]
    fn the_instance_pool_covers_every_request_in_flight() {
        let cfg = Settings::default().resolve().unwrap();
        assert_eq!(cfg.limits.max_instances, DEFAULT_MAX_INSTANCES);
        assert_eq!(cfg.limits.pool_size().max_memory, cfg.limits.caps.memory);
        // Unset, it grows with max_in_flight rather than refusing a busy server's settings.
        let busy: Settings = toml::from_str("max_in_flight = 4000").unwrap();
        assert_eq!(busy.resolve().unwrap().limits.max_instances, 4000);
        let small: Settings = toml::from_str("max_in_flight = 8\nmax_instances = 8").unwrap();
        let small = small.resolve().unwrap().limits.pool_size();
        assert_eq!((small.instances, small.idle), (8, 0));
        let spare: Settings = toml::from_str("max_in_flight = 8\nmax_instances = 10").unwrap();
        assert_eq!(spare.resolve().unwrap().limits.pool_size().idle, 2);
        let too_small: Settings = toml::from_str("max_in_flight = 8\nmax_instances = 4").unwrap();
        assert!(matches!(
            too_small.resolve(),
            Err(SettingsError::Value {
                key: "max_instances",
                ..
            })
        ));
    }

    #[test]
    fn the_store_is_embedded_unless_a_postgres_url_is_given_and_its_password_never_shows() {
        let location = |value: Option<&str>| StoreLocation::parse(value.map(String::from));
        assert_eq!(location(None).unwrap(), StoreLocation::Embedded);
        assert_eq!(location(Some(" ")).unwrap(), StoreLocation::Embedded);
        let url =
            "postgres://plinth:s3cret@db.internal:5432/plinth?sslmode=require&password=s3cret";
        let given = location(Some(url)).unwrap();
        assert_eq!(given, StoreLocation::Postgres(url.into()));
        assert_eq!(
            given.to_string(),
            "postgres://plinth@db.internal:5432/plinth"
        );
        assert!(!format!("{given:?}").contains("s3cret"));
        let err = location(Some("mysql://root:s3cret@db/x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("postgres://") && !err.contains("s3cret"),
            "{err}"
        );
    }
}
