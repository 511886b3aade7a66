//! The `plinth` binary: the server (`plinth serve`, from the `plinth-host` library) and the
//! operator's commands (deploy, apply, dev, new, accounts, ...). Parses the command line, sets up
//! logging, runs the command.

mod cli;
mod client;
mod folder;
mod migrate;
mod scaffold;

use crate::cli::{Cli, Command};
use anyhow::Context;
use clap::FromArgMatches;
use plinth_host::settings::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: every request allocates and frees many small objects
/// (wasmtime's store and instance bookkeeping, hyper and WASI resources).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(&cli::command().get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(args) => {
            let config = args.settings()?.resolve()?;
            init_logging(config.log_format);
            tracing::debug!(?config, "configuration");
            // Current-thread: this runtime serves connections on one core and the server starts
            // a thread with its own runtime for each other core (see `front_door`).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            // The folder is read and built here: the server never runs a build.
            let apply = config.apply.clone().map(|dir| {
                Box::new(move || folder::desired(&dir).map_err(|e| e.to_string()))
                    as plinth_host::server::PluginSource
            });
            runtime.block_on(plinth_host::server::serve(config, apply))?;
            Ok(())
        }
        Command::New {
            name,
            template,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(&name));
            let sdk = sdk_path.unwrap_or_else(crate::scaffold::default_sdk_path);
            match crate::scaffold::create(&name, template, &dir, &sdk) {
                Ok(files) => {
                    for file in files {
                        println!("created {}", file.display());
                    }
                    println!(
                        "\nnext:\n  plinth deploy {}     # build and upload (a server must be running)\n  \
                         cd {} && plinth dev   # or: a local server that redeploys on every change",
                        dir.display(),
                        dir.display()
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Migrate { from, to, force } => {
            init_logging(LogFormat::Human);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            if let Err(e) = runtime.block_on(crate::migrate::run(&from, &to, force)) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
        command => {
            // Client commands: one line on failure, non-zero exit.
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            if let Err(e) = runtime.block_on(crate::client::run(command)) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
