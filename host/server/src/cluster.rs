//! Keeping a host in step with the others that share its store (PostgreSQL). What another host
//! changes and this one keeps in memory (the active plugins and their routes, plugin config,
//! the signing keys) is reread when the store announces the change, and on a timer besides,
//! so an announcement lost while the store's connection was down heals by itself. Everything
//! else (accounts, API keys, sessions, plugin data) is read from the store on every use.

use crate::auth::Auth;
use crate::registry::Registry;
use crate::store::{Change, Space, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// How often everything is reread even when nothing was announced.
const RECONCILE_EVERY: Duration = Duration::from_secs(15);

/// What is to be reread.
#[derive(Debug, Default)]
struct Stale {
    plugins: bool,
    config: bool,
    signing_keys: bool,
}

impl Stale {
    fn add(&mut self, change: Change) {
        match change {
            Change::Plugins => self.plugins = true,
            Change::Space(Space::PluginConfig) => self.config = true,
            Change::Space(Space::SigningKeys) => self.signing_keys = true,
            Change::Space(_) => {}
            Change::Resync => {
                *self = Stale {
                    plugins: true,
                    config: true,
                    signing_keys: true,
                }
            }
        }
    }

    async fn reread(self, registry: &Registry, auth: &Auth) {
        // Config first: a plugin deployed elsewhere may need config set there just before.
        if self.config
            && let Err(e) = registry.reload_config().await
        {
            tracing::warn!(error = %e, "rereading plugin config failed");
        }
        if self.plugins
            && let Err(e) = registry.reconcile().await
        {
            tracing::warn!(error = %e, "rereading the deployed plugins failed");
        }
        if self.signing_keys
            && let Err(e) = auth.reload_signing_keys().await
        {
            tracing::warn!(error = %e, "rereading the signing keys failed");
        }
    }
}

/// Follows `store`'s announcements until the task is aborted; `None` for a store only this
/// process uses (nothing to follow).
pub(crate) fn spawn(
    store: &dyn Store,
    registry: Arc<Registry>,
    auth: Arc<Auth>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut changes = store.changes()?;
    Some(tokio::spawn(async move {
        let mut timer = tokio::time::interval(RECONCILE_EVERY);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once; the start-up load covers it.
        timer.tick().await;
        loop {
            let mut stale = Stale::default();
            tokio::select! {
                heard = changes.recv() => match heard {
                    Ok(change) => stale.add(change),
                    Err(RecvError::Lagged(_)) => stale.add(Change::Resync),
                    Err(RecvError::Closed) => return,
                },
                _ = timer.tick() => stale.add(Change::Resync),
            }
            // A burst (a deploy and its config) is reread once.
            loop {
                match changes.try_recv() {
                    Ok(change) => stale.add(change),
                    Err(TryRecvError::Lagged(_)) => stale.add(Change::Resync),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            stale.reread(&registry, &auth).await;
        }
    }))
}
