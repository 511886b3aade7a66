//! `plinth dev`: a local server on a temporary data directory, the crate in the current folder
//! built and deployed to it, and again whenever its sources change.

use super::build::{build_crate, plugin_files};
use super::deploy::{deployed_text, upload};
use super::{Api, ClientError};
use crate::cli::ClientArgs;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Quiet time after a change before rebuilding, so one save of several files builds once.
const SETTLE: Duration = Duration::from_millis(300);

/// The server child and its data directory, both gone when dropped.
struct DevServer {
    child: Child,
    data_dir: PathBuf,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn local(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(format!("{what}: {e}"))
}

/// Starts `plinth serve` on `listen` with a fresh data directory and `token` as admin token.
fn start_server(listen: &str, token: &str) -> Result<DevServer, ClientError> {
    let data_dir = std::env::temp_dir().join(format!("plinth-dev-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&data_dir).map_err(|e| local("creating the data dir", e))?;
    let exe = std::env::current_exe().map_err(|e| local("finding the plinth binary", e))?;
    let child = Command::new(exe)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(&data_dir)
        .env("PLINTH_ADMIN_TOKEN", token)
        // The plugin's own output and failures; the host's routine lines stay quiet.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,plugin=debug".into()),
        )
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| local("starting the server", e))?;
    Ok(DevServer { child, data_dir })
}

async fn wait_ready(api: &mut Api, server: &mut DevServer) -> Result<(), ClientError> {
    for _ in 0..600 {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(ClientError::Local(format!(
                "the server exited with {status} (is {} in use?)",
                api.server()
            )));
        }
        if api.get("/readyz").await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClientError::Local("the server did not become ready".into()))
}

/// Builds and deploys the crate; prints the outcome (a failed build is printed, not fatal).
async fn build_and_deploy(api: &mut Api, dir: &Path) {
    let crate_dir = dir.to_path_buf();
    let built = tokio::task::spawn_blocking(move || build_crate(&crate_dir)).await;
    let wasm = match built {
        Ok(Ok(wasm)) => wasm,
        Ok(Err(e)) => return eprintln!("plinth dev: {e}; fix it and save again"),
        Err(e) => return eprintln!("plinth dev: {e}"),
    };
    let deployed = async {
        let files = plugin_files(&wasm, Some(&dir.join("plinth.toml")))?;
        let component =
            std::fs::read(&files.wasm).map_err(|e| local("reading the component", e))?;
        upload(api, &files.name, &files.manifest, &component).await
    }
    .await;
    match deployed {
        Ok(answer) => match super::typed(&answer) {
            Ok(deployed) => println!("{}", deployed_text(&deployed)),
            Err(e) => eprintln!("{e}"),
        },
        Err(e) => eprintln!("plinth dev: {e}; fix it and save again"),
    }
}

/// Runs `plinth dev` in `dir` until Ctrl-C.
pub(super) async fn dev(dir: &Path, listen: &str) -> Result<(), ClientError> {
    if !dir.join("Cargo.toml").is_file() || !dir.join("plinth.toml").is_file() {
        return Err(ClientError::Local(format!(
            "{} is not a plugin crate (it needs Cargo.toml and plinth.toml; `plinth new NAME` makes one)",
            dir.display()
        )));
    }
    let token = format!("plinth-dev-{:032x}", rand::random::<u128>());
    let mut server = start_server(listen, &token)?;
    let base = format!("http://{listen}");
    let mut api = Api::new(&ClientArgs {
        server: base.clone(),
        token: Some(token.clone()),
        json: false,
    })?;
    wait_ready(&mut api, &mut server).await?;
    println!("plinth dev: serving on {base} (admin token {token}); Ctrl-C stops");

    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changed.send(());
        }
    })
    .map_err(|e| local("watching the sources", e))?;
    // Only sources and manifests: watching the whole folder would see the build's own output.
    for watched in ["src", "Cargo.toml", "plinth.toml", "wit"] {
        let path = dir.join(watched);
        if path.exists() {
            watcher
                .watch(&path, RecursiveMode::Recursive)
                .map_err(|e| local(&format!("watching {}", path.display()), e))?;
        }
    }

    build_and_deploy(&mut api, dir).await;
    let stop = plinth_host::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            change = changes.recv() => {
                if change.is_none() {
                    break;
                }
                // Let a burst of saves settle, then build once.
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, changes.recv()).await {}
                println!("plinth dev: sources changed; rebuilding");
                build_and_deploy(&mut api, dir).await;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(ClientError::Local(format!(
                "the server exited with {status}"
            )));
        }
    }
    drop(watcher);
    drop(server);
    println!("plinth dev: stopped");
    Ok(())
}
