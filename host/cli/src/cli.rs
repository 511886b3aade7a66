//! The `plinth` command line (clap): today `plinth serve`; operator commands join it here.

use clap::{Args, Parser, Subcommand};
use plinth_host::auth::Registration;
use plinth_host::config::{LogFormat, RawConfig};
use plinth_host::store::Durability;
use plinth_host::units::ByteSize;
use std::path::PathBuf;

/// Plinth: run other people's WebAssembly safely, with auth, storage and operations built in.
///
/// `plinth serve` runs the server; `plinth new` and `plinth dev` are for plugin authors. The
/// other commands talk to a running server over HTTP: point them there with --server (or
/// PLINTH_SERVER) and sign in once with `plinth login` (or pass --token / PLINTH_TOKEN).
#[derive(Debug, Parser)]
#[command(name = "plinth", version, about, long_about)]
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
    /// Sign in to a server and remember the session for the other commands.
    Login {
        /// The account's email (asked for when missing).
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Remember this token (an API key or the admin token) instead of signing in.
        #[arg(long = "with-token", value_name = "TOKEN", conflicts_with_all = ["email", "password_stdin"])]
        with_token: Option<String>,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget the stored session for a server (and end it on the server).
    Logout {
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deploy a plugin: a crate (built for wasm32-wasip2 first) or a .wasm with its plinth.toml.
    Deploy {
        /// A plugin crate's folder, a folder holding plinth.toml and one .wasm, or a .wasm file
        /// [default: the current folder]
        path: Option<PathBuf>,
        /// The manifest, when it is not the plinth.toml beside the crate or .wasm.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List, show and delete deployed plugins, and list their versions.
    Plugins {
        /// What to do.
        #[command(subcommand)]
        command: PluginsCommand,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make an earlier version of a plugin active again (the previous one by default).
    Rollback {
        /// The plugin.
        name: String,
        /// The version to activate (see `plinth plugins versions NAME`).
        #[arg(long, value_name = "VERSION")]
        to: Option<u64>,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a plugin's recent log lines: its output, its log and one line per request.
    Logs {
        /// The plugin.
        name: String,
        /// Keep printing new lines as they come (Ctrl-C to stop).
        #[arg(short, long)]
        follow: bool,
        /// Only lines after this sequence number.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// How many lines (the newest ones).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set, show and remove a plugin's config and secrets.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage accounts (admins only).
    Users {
        /// What to do.
        #[command(subcommand)]
        command: UsersCommand,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage API keys: credentials for scripts and CI (admins only).
    ApiKeys {
        /// What to do.
        #[command(subcommand)]
        command: ApiKeysCommand,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage the server's JWT signing keys (admins only).
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        command: KeysCommand,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a server run exactly the plugins in a folder: deploy new and changed ones (and with
    /// --prune delete the others), printing the plan first.
    Apply {
        /// The folder: one subfolder per plugin, each a crate or a plinth.toml with its .wasm.
        dir: PathBuf,
        /// Also delete deployed plugins the folder does not have (their data and config stay).
        #[arg(long)]
        prune: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// For plugin authors: run a local server on a temporary data directory, build and deploy
    /// the crate in the current folder, and redeploy whenever its sources change.
    Dev {
        /// The plugin crate [default: the current folder]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Where the local server listens.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: String,
    },
    /// Create a plugin crate that builds and deploys as it is.
    New {
        /// The plugin's name: lowercase letters, digits and `-` (also the crate and folder).
        name: String,
        /// What it starts as: http (routes and JSON), kv (storage) or webhook (signed events).
        #[arg(long, value_enum, default_value = "http")]
        template: crate::scaffold::Template,
        /// Where to create it [default: ./NAME]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The plinth-sdk crate to depend on (not on crates.io yet) [default: the SDK of the
        /// checkout this plinth was built from]
        #[arg(long, env = "PLINTH_SDK_PATH", value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
    /// Show who changed what and when: deploys, rollbacks, deletes, config, users, keys.
    Audit {
        /// Only this action, e.g. plugin.deploy.
        #[arg(long)]
        action: Option<String>,
        /// Only changes to this plugin, user id or key id.
        #[arg(long)]
        target: Option<String>,
        /// How many entries (newest first).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The server's connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `plinth plugins ...`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every deployed plugin with its version and routes.
    List,
    /// One plugin in full: routes, limits, grants, missing config, failures.
    Show {
        /// The plugin.
        name: String,
    },
    /// Stop serving a plugin. Its key-value data and config stay unless --purge.
    Delete {
        /// The plugin.
        name: String,
        /// Also delete its key-value data, config and logs.
        #[arg(long)]
        purge: bool,
    },
    /// The kept versions of a plugin, newest first.
    Versions {
        /// The plugin.
        name: String,
    },
}

/// `plinth config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set one key (secrets are never shown again, only masked).
    Set {
        /// The plugin.
        name: String,
        /// The key, e.g. api_base.
        key: String,
        /// The value.
        value: String,
        /// Store it as a secret.
        #[arg(long)]
        secret: bool,
    },
    /// Show a plugin's config (secrets masked), or one key's value.
    Get {
        /// The plugin.
        name: String,
        /// Only this key.
        key: Option<String>,
    },
    /// Remove one key.
    Unset {
        /// The plugin.
        name: String,
        /// The key.
        key: String,
    },
}

/// `plinth users ...`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Every account.
    List,
    /// Create an account (the password is read from standard input, or prompted for).
    Create {
        /// Email.
        email: String,
        /// Extra roles, e.g. --role operator.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Stop an account from signing in or using its tokens.
    Disable {
        /// The user id.
        id: String,
    },
    /// Let a disabled account in again.
    Enable {
        /// The user id.
        id: String,
    },
    /// Replace an account's roles.
    Roles {
        /// The user id.
        id: String,
        /// The roles, e.g. operator admin.
        roles: Vec<String>,
    },
    /// Delete an account.
    Delete {
        /// The user id.
        id: String,
    },
}

/// `plinth api-keys ...`
#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Every API key (never the key itself).
    List,
    /// Create a key; it is shown once.
    Create {
        /// A label, e.g. "ci deploys".
        name: String,
        /// The one role it carries: user, operator or admin.
        #[arg(long)]
        role: String,
        /// Lifetime such as 90d [default: no expiry].
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id.
        id: String,
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
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the Plinth server
    #[arg(
        long,
        global = true,
        env = "PLINTH_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Credential: an access token, an API key or the admin token [default: the session
    /// stored by `plinth login` for this server]
    #[arg(long, global = true, env = "PLINTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (the server's answer) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Plugin instances alive at once, in flight or kept idle for reuse; the engine reserves
    /// address space for each at start (lower it where overcommit is tight); idle ones keep only
    /// the slots beyond --max-in-flight [default: 1000, or --max-in-flight if higher]
    #[arg(long, env = "PLINTH_MAX_INSTANCES", value_name = "N")]
    pub max_instances: Option<u32>,
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
    /// internal CA) [default: none]
    #[arg(long, env = "PLINTH_OUTBOUND_CA_CERT", value_name = "FILE")]
    pub outbound_ca_cert: Option<PathBuf>,
    /// Log lines kept per plugin for `plinth logs` [default: 1000]
    #[arg(long, env = "PLINTH_LOG_BUFFER_LINES", value_name = "N")]
    pub log_buffer_lines: Option<usize>,
    /// Let plugins whose manifest sets `[limits] instance_reuse = true` keep instances between
    /// requests: off, public (on public routes only) or all. Faster, but a request can see
    /// what an earlier one (maybe another user's) left in the instance [default: off]
    #[arg(long, env = "PLINTH_INSTANCE_REUSE", value_name = "MODE")]
    pub instance_reuse: Option<plinth_host::runtime::limits::InstanceReuse>,
    /// Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client,
    /// for rate limits and the audit log; trust none unless they front Plinth
    /// [default: none]
    #[arg(
        long,
        env = "PLINTH_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Plugins (comma-separated) that may receive operator and admin credentials on their
    /// `forward_authorization` routes [default: none]
    #[arg(
        long,
        env = "PLINTH_FORWARD_PRIVILEGED_CREDENTIALS",
        value_name = "PLUGINS",
        value_delimiter = ','
    )]
    pub forward_privileged_credentials: Option<Vec<String>>,
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
            max_instances: self.max_instances,
            queue_timeout: self.queue_timeout.clone(),
            header_timeout: self.header_timeout.clone(),
            max_connections: self.max_connections,
            keep_versions: self.keep_versions,
            apply: self.apply.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            outbound_ca_cert: self.outbound_ca_cert.clone(),
            log_buffer_lines: self.log_buffer_lines,
            instance_reuse: self.instance_reuse,
            trusted_proxies: self.trusted_proxies.clone(),
            forward_privileged_credentials: self.forward_privileged_credentials.clone(),
            admin_token: env_secret("PLINTH_ADMIN_TOKEN"),
            admin_email: env_secret("PLINTH_ADMIN_EMAIL"),
            admin_password: env_secret("PLINTH_ADMIN_PASSWORD"),
            ..RawConfig::default()
        }
    }
}
