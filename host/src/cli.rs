//! The `plinth` command line (clap): today `plinth serve`; operator commands join it here.

use crate::auth::Registration;
use crate::config::{ByteSize, LogFormat, RawConfig};
use crate::store::Durability;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Plinth: run other people's WebAssembly safely, with auth, storage and operations built in.
#[derive(Debug, Parser)]
#[command(name = "plinth", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: plugin routes plus the /admin/ API, data kept in --data-dir.
    Serve(Box<ServeArgs>),
    /// Manage the server's JWT signing keys (talks to a running server as an admin).
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        command: KeysCommand,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `plinth keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key and sign with it from now on; tokens signed by older keys keep
    /// working until they expire.
    Rotate,
    /// Show which keys sign and verify tokens.
    List,
}

/// How the CLI reaches a server.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the Plinth server
    #[arg(
        long,
        global = true,
        env = "PLINTH_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Admin credential: an admin account's access token, an admin API key, or the admin token
    #[arg(long, global = true, env = "PLINTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Flags of `plinth serve`. Each also reads an environment variable; a flag wins over its
/// variable, and both win over the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; port 0 picks a free port]
    #[arg(long, env = "PLINTH_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the embedded database [default: ./plinth-data]
    #[arg(long, env = "PLINTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server config file (TOML with the same keys in snake_case, e.g. `listen = "0.0.0.0:80"`)
    #[arg(long, env = "PLINTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr: human or json [default: human]
    #[arg(long, env = "PLINTH_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Largest component a deploy may upload, e.g. 64MiB [default: 64MiB]
    #[arg(long, env = "PLINTH_MAX_COMPONENT_SIZE", value_name = "SIZE")]
    pub max_component_size: Option<ByteSize>,
    /// Who may create accounts with POST /auth/register: open, closed or invite [default: open]
    #[arg(long, env = "PLINTH_REGISTRATION", value_name = "MODE")]
    pub registration: Option<Registration>,
    /// When a plugin's key-value write returns: durable (once on disk, shared flushes) or
    /// periodic (at once; flushed every 200 ms, so a crash may lose the last moments)
    /// [default: durable]
    #[arg(long, env = "PLINTH_DURABILITY", value_name = "MODE")]
    pub durability: Option<Durability>,
    /// Largest value a plugin may store under one key [default: 1MiB]
    #[arg(long, env = "PLINTH_KV_MAX_VALUE_SIZE", value_name = "SIZE")]
    pub kv_max_value_size: Option<ByteSize>,
    /// Most bytes (keys + values) one plugin may store [default: 256MiB]
    #[arg(long, env = "PLINTH_KV_QUOTA", value_name = "SIZE")]
    pub kv_quota: Option<ByteSize>,
    /// Deadline of a plugin request, e.g. 10s; over it the client gets 504 [default: 10s]
    #[arg(long, env = "PLINTH_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Linear memory limit of a plugin instance [default: 64MiB]
    #[arg(long, env = "PLINTH_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<ByteSize>,
    /// Instances of one plugin at once; more requests wait, then get 503 [default: 16]
    #[arg(long, env = "PLINTH_MAX_CONCURRENCY", value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Largest request body a plugin route accepts (413 beyond) [default: 10MiB]
    #[arg(long, env = "PLINTH_MAX_REQUEST_BODY", value_name = "SIZE")]
    pub max_request_body: Option<ByteSize>,
    /// Plugin requests served at once across all plugins; more get 503 [default: 256]
    #[arg(long, env = "PLINTH_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// How long a request waits for a busy plugin before 503 [default: 1s]
    #[arg(long, env = "PLINTH_QUEUE_TIMEOUT", value_name = "DURATION")]
    pub queue_timeout: Option<String>,
    /// Time a client has to send a request's headers; also the most a keep-alive connection
    /// may sit idle [default: 10s]
    #[arg(long, env = "PLINTH_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Open connections at once; more are closed at once [default: 1024]
    #[arg(long, env = "PLINTH_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Versions kept per plugin for `plinth rollback` [default: 10]
    #[arg(long, env = "PLINTH_KEEP_VERSIONS", value_name = "N")]
    pub keep_versions: Option<usize>,
    /// Log lines kept per plugin for `plinth logs` [default: 1000]
    #[arg(long, env = "PLINTH_LOG_BUFFER_LINES", value_name = "N")]
    pub log_buffer_lines: Option<usize>,
}

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ServeArgs {
    /// The settings given on the command line and in the environment (the file comes after).
    pub fn raw(&self) -> RawConfig {
        RawConfig {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format,
            max_component_size: self.max_component_size,
            registration: self.registration,
            durability: self.durability,
            kv_max_value_size: self.kv_max_value_size,
            kv_quota: self.kv_quota,
            request_timeout: self.request_timeout.clone(),
            memory_limit: self.memory_limit,
            max_concurrency: self.max_concurrency,
            max_request_body: self.max_request_body,
            max_in_flight: self.max_in_flight,
            queue_timeout: self.queue_timeout.clone(),
            header_timeout: self.header_timeout.clone(),
            max_connections: self.max_connections,
            keep_versions: self.keep_versions,
            log_buffer_lines: self.log_buffer_lines,
            admin_token: env_secret("PLINTH_ADMIN_TOKEN"),
            admin_email: env_secret("PLINTH_ADMIN_EMAIL"),
            admin_password: env_secret("PLINTH_ADMIN_PASSWORD"),
            ..RawConfig::default()
        }
    }
}
