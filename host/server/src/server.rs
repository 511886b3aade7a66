//! `plinth serve`: opens the store, settles the admin token, loads plugins, and serves HTTP until
//! SIGTERM or Ctrl-C, letting in-flight requests finish.

use crate::api::{self, AppState, Services};
use crate::apply::Desired;
use crate::auth::Auth;
use crate::registry::Registry;
use crate::runtime::{EngineError, Runtime};
use crate::settings::{ServerSettings, StoreLocation};
use crate::store::{PgStore, SledStore, Store, StoreError};
use std::sync::Arc;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store (the data directory, or the database) could not be opened.
    #[error("cannot open {dir}: {source}")]
    Store {
        /// The data directory, or the database (its URL without the password).
        dir: String,
        /// What the store reported.
        source: StoreError,
    },
    /// The wasm engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Binding or serving the socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A startup task failed.
    #[error("startup failed: {0}")]
    Startup(String),
}

/// The plugins `plinth serve --apply` deploys at start, as the caller reads (and builds) them.
/// Called on a blocking thread once the stored plugins are loaded; an error is logged and
/// nothing is applied.
pub type PluginSource = Box<dyn FnOnce() -> Result<Vec<Desired>, String> + Send>;

/// Runs the server with `config` until a shutdown signal, first deploying what `apply` gives
/// (if anything) that the store does not already run.
pub async fn serve(config: ServerSettings, apply: Option<PluginSource>) -> Result<(), ServeError> {
    let store: Arc<dyn Store> =
        match &config.store {
            StoreLocation::Embedded => Arc::new(
                SledStore::open(&config.data_dir, config.durability)
                    .await
                    .map_err(|source| ServeError::Store {
                        dir: format!("the data directory {}", config.data_dir.display()),
                        source,
                    })?,
            ),
            StoreLocation::Postgres(url) => Arc::new(PgStore::open(url).await.map_err(
                |source| ServeError::Store {
                    dir: config.store.to_string(),
                    source,
                },
            )?),
        };
    let bootstrap = Auth::bootstrap(store.clone(), config.auth.clone())
        .await
        .map_err(|e| ServeError::Startup(format!("setting up auth: {e}")))?;
    if let Some(token) = &bootstrap.generated_token {
        // Printed once on standard output, never to the log stream (standard error, which log
        // shippers collect): only its hash is stored.
        println!(
            "\n  Plinth generated an admin token for this data directory. It is shown only now:\n\n    \
             {token}\n\n  Use it as `Authorization: Bearer <token>` on /admin/ endpoints, or set \
             PLINTH_ADMIN_TOKEN to choose your own.\n"
        );
    }

    let logs = Arc::new(crate::plugin_logs::PluginLogs::new(config.log_buffer_lines));
    let runtime = Arc::new(
        tokio::task::spawn_blocking({
            let store = store.clone();
            let limits = config.kv_limits;
            let pool = config.limits.pool_size();
            let logs = logs.clone();
            let outbound_ca = config.outbound_ca_cert.clone();
            move || -> Result<Runtime, ServeError> {
                let sender = crate::runtime::outgoing_http::Sender::new(outbound_ca.as_deref())
                    .map_err(|e| ServeError::Startup(e.to_string()))?;
                Ok(Runtime::new(store, limits, pool, logs, Arc::new(sender))?)
            }
        })
        .await
        .map_err(|e| ServeError::Startup(e.to_string()))??,
    );
    let registry = Arc::new(Registry::new(
        store.clone(),
        runtime.clone(),
        config.limits,
        config.keep_versions,
        config.forward_privileged_credentials.clone(),
    ));
    let setup_token = bootstrap.setup_token.clone();
    let auth = Arc::new(bootstrap.auth);
    // With a store other hosts share: follow what they change.
    let following = crate::cluster::spawn(store.clone(), registry.clone(), auth.clone());
    let (stopping, stopping_seen) = tokio::sync::watch::channel(false);
    let audit = Arc::new(crate::audit::AuditLog::new(store.clone()));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        config.limits.max_in_flight as usize,
    ));
    let charting = {
        let (in_flight, max) = (in_flight.clone(), config.limits.max_in_flight as usize);
        crate::metrics::history::spawn_sampler(metrics.clone(), move || {
            crate::metrics::history::Gauges {
                instances: (max - in_flight.available_permits()) as u64,
                memory: crate::metrics::history::resident_memory(),
            }
        })
    };
    let state = AppState::new(Services {
        registry: registry.clone(),
        runtime,
        auth,
        max_component_size: config.max_component_size,
        store: store.clone(),
        kv_limits: config.kv_limits,
        in_flight,
        max_in_flight: config.limits.max_in_flight as usize,
        queue_timeout: config.limits.queue_timeout,
        body_timeout: config.front_door.header_timeout,
        audit: audit.clone(),
        metrics,
        logs,
        stopping: stopping_seen,
        started: std::time::Instant::now(),
        secure_cookies: config.tls.is_some(),
    });
    let app = api::router(state.clone(), crate::ui::routes(&state));

    let tls = match &config.tls {
        Some((cert, key)) => Some(
            crate::front_door::tls_acceptor(cert, key)
                .map_err(|e| ServeError::Startup(e.to_string()))?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Bound by tokio (address reuse, a backlog of 1,024), then handed to the serving threads.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .and_then(tokio::net::TcpListener::into_std)
        .map_err(|source| ServeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    tracing::info!(data_dir = %config.data_dir.display(), store = %config.store, "listening on {scheme}://{local}");
    if let Some(token) = &setup_token {
        // Standard output, like the admin token: never the log stream.
        println!(
            "\n  No admin account exists yet. Create one with this one-time setup token:\n\n    \
             curl -X POST {scheme}://{}/auth/setup -H 'content-type: application/json' \\\n      \
             -d '{{\"setup_token\": \"{token}\", \"email\": \"you@example.com\", \"password\": \"...\"}}'\n\n  \
             (or start with PLINTH_ADMIN_EMAIL and PLINTH_ADMIN_PASSWORD set).\n",
            local
        );
    }

    // Listen first so /healthz answers during a long load; /readyz turns 200 when it is done.
    let loader = {
        let registry = registry.clone();
        let shown = config.apply.as_ref().map(|dir| dir.display().to_string());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match registry.load().await {
                Ok(count) => tracing::info!(
                    plugins = count,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "stored plugins loaded"
                ),
                Err(e) => tracing::error!(error = %e, "loading stored plugins failed"),
            }
            if let Some(source) = apply {
                apply_at_start(&registry, source, shown.unwrap_or_default()).await;
            }
            registry.mark_ready();
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
        })
    };

    let signal = async move {
        shutdown_signal().await;
        // Live log streams end now, so they do not hold up the graceful stop.
        let _ = stopping.send(true);
    };
    let pruning = crate::retention::spawn(store.clone(), config.audit_retention);
    let served = crate::front_door::serve(listener, app, config.front_door, tls, signal).await;
    loader.abort();
    pruning.abort();
    charting.abort();
    if let Some(following) = following {
        following.abort();
    }
    served.map_err(|e| ServeError::Startup(format!("serving connections: {e}")))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; finishing in-flight requests"),
        () = terminate => tracing::info!("SIGTERM received; finishing in-flight requests"),
    }
}

/// `plinth serve --apply DIR`: deploys what the folder holds and the store does not (new
/// plugins, changed components or manifests) before the server reports ready. A plugin that
/// fails to deploy is logged and skipped; the others still deploy.
async fn apply_at_start(registry: &Registry, source: PluginSource, shown: String) {
    let desired = match tokio::task::spawn_blocking(source).await {
        Ok(Ok(desired)) => desired,
        Ok(Err(e)) => {
            tracing::error!(dir = shown, error = %e, "--apply: folder not applied");
            return;
        }
        Err(e) => {
            tracing::error!(dir = shown, error = %e, "--apply: folder not applied");
            return;
        }
    };
    let current = registry
        .active()
        .plugins
        .iter()
        .map(|(name, plugin)| {
            let current = crate::apply::Current {
                version: plugin.record.version,
                sha256: plugin.record.sha256.clone(),
                manifest: plugin.record.manifest.clone(),
            };
            (name.clone(), current)
        })
        .collect();
    let actor = crate::audit::Actor {
        who: "plinth serve --apply".into(),
        address: None,
    };
    for step in crate::apply::plan(&desired, &current, false) {
        tracing::info!(dir = shown, "--apply: {}", step.line());
        let (crate::apply::Step::Add { plugin } | crate::apply::Step::Replace { plugin, .. }) =
            &step
        else {
            continue;
        };
        let Some(wanted) = desired.iter().find(|d| &d.name == plugin) else {
            continue;
        };
        let deployed = registry
            .deploy(
                plugin,
                wanted.manifest.clone(),
                bytes::Bytes::from(wanted.component.clone()),
                &actor,
            )
            .await;
        if let Err(e) = deployed {
            tracing::error!(plugin, error = %e, "--apply: deploy failed");
        }
    }
}
