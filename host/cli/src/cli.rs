//! The `plinth` command line (clap): today `plinth serve`; operator commands join it here.

use clap::CommandFactory;
use clap::{Args, Parser, Subcommand};
use plinth_host::settings::{Settings, SettingsError};
use std::path::PathBuf;

/// Plinth: run other people's WebAssembly safely, with auth, storage and operations built in.
///
/// `plinth serve` runs the server; `plinth new` and `plinth dev` are for plugin authors. The
/// other commands talk to a running server over HTTP: point them there with --server (or
/// PLINTH_SERVER) and sign in once with `plinth login` (or pass --token / PLINTH_TOKEN).
#[derive(Debug, Parser)]
#[command(name = "plinth", version, about, long_about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Move every record of an installation to another store and check the copy: a data
    /// directory to PostgreSQL (`--to postgres://...`) when one host is no longer enough, or
    /// back. Stop the hosts that use either store first.
    Migrate {
        /// The store to copy: a data directory or a postgres:// URL.
        #[arg(long, value_name = "DIR|URL")]
        from: String,
        /// Where to copy it: a data directory (created when missing) or a postgres:// URL.
        #[arg(long, value_name = "DIR|URL")]
        to: String,
        /// Copy into a target that already holds data: the source's records replace those with
        /// the same keys, and its plugins (versions and key-value data) those of the same names.
        #[arg(long)]
        force: bool,
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
pub(crate) enum PluginsCommand {
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
pub(crate) enum ConfigCommand {
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
pub(crate) enum UsersCommand {
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
pub(crate) enum ApiKeysCommand {
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
pub(crate) enum KeysCommand {
    /// Add a new signing key and sign with it from now on; tokens signed by older keys keep
    /// working until they expire.
    Rotate,
    /// Show which keys sign and verify tokens.
    List,
}

/// How the CLI reaches a server.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
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
pub(crate) struct ServeArgs {
    /// Settings file (TOML with the flags' names in snake_case, e.g. `listen = "0.0.0.0:80"`);
    /// flags and environment variables win over it
    #[arg(long, env = "PLINTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Every server setting.
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    /// The settings in force: flags and environment, then the file, then the secrets only the
    /// environment may give.
    pub(crate) fn settings(&self) -> Result<Settings, SettingsError> {
        let settings = match &self.config {
            Some(path) => self.settings.clone().over(Settings::from_file(path)?),
            None => self.settings.clone(),
        };
        Ok(settings.with_secrets_from_env())
    }
}

/// The command line, with each server setting's default in its `--help` line, taken from the
/// constants the server applies.
pub(crate) fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", |mut serve| {
        for (id, default) in Settings::defaults() {
            serve = serve.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            });
        }
        serve
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings table of docs/operating.md, as the flags define it.
    fn settings_table() -> String {
        let defaults: std::collections::BTreeMap<_, _> = Settings::defaults().into_iter().collect();
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("a serve command");
        let mut table = String::from(
            "| flag | environment | default | what it sets |\n| --- | --- | --- | --- |\n",
        );
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let value = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map(|name| format!(" {name}"))
                .unwrap_or_default();
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            let default = defaults
                .get(arg.get_id().as_str())
                .map_or("none".to_string(), |d| format!("`{d}`"));
            let help = arg
                .get_help()
                .map(ToString::to_string)
                .unwrap_or_default()
                .replace('|', "\\|");
            table.push_str(&format!(
                "| `--{long}{value}` | `{env}` | {default} | {help} |\n"
            ));
        }
        table
    }

    #[test]
    fn the_command_line_is_well_formed_and_shows_every_default() {
        command().debug_assert();
        let mut serve = command();
        let help = serve
            .find_subcommand_mut("serve")
            .expect("a serve command")
            .render_long_help()
            .to_string();
        for (id, default) in Settings::defaults() {
            let flag = format!("--{} <", id.replace('_', "-"));
            let at = help
                .find(&flag)
                .unwrap_or_else(|| panic!("{flag} is not in --help"));
            let line_end = help[at..].find("[env:").map_or(help.len(), |i| at + i);
            assert!(
                help[at..line_end].contains(&format!("[default: {default}]")),
                "{flag} does not show its default {default}"
            );
        }
    }

    #[test]
    fn the_docs_list_every_setting_with_its_default() {
        const START: &str = "<!-- settings table: generated from the flags; a test checks it -->\n";
        const END: &str = "<!-- end of settings table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operating.md");
        let docs = std::fs::read_to_string(path).expect("docs/operating.md");
        let start = docs.find(START).expect("the settings table's start marker") + START.len();
        let end = docs.find(END).expect("the settings table's end marker");
        let expected = settings_table();
        assert!(
            docs[start..end] == expected,
            "docs/operating.md's settings table is out of date; it should be:\n\n{expected}"
        );
    }
}
