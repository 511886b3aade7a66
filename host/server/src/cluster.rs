//! Keeping a host in step with the others that share its store (PostgreSQL). What another host
//! changes and this one keeps in memory (the active plugins and their routes, plugin config,
//! the signing keys) is reread when the store announces the change. A timer checks besides
//! that no announcement was missed (the store counts them: one read when none was), so one lost
//! while the store's connection was down heals by itself. Everything else (accounts, API keys,
//! sessions, plugin data) is read from the store on every use.

use crate::auth::Auth;
use crate::registry::Registry;
use crate::store::{Change, Space, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// How often the host checks that it missed no announcement.
const CHECK_EVERY: Duration = Duration::from_secs(15);

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

    /// Rereads what is stale; whether it was all of it, and all went well.
    async fn reread(self, registry: &Registry, auth: &Auth) -> bool {
        let mut all_read = self.plugins && self.config && self.signing_keys;
        // Config first: a plugin deployed elsewhere may need config set there just before.
        if self.config
            && let Err(e) = registry.reload_config().await
        {
            tracing::warn!(error = %e, "rereading plugin config failed");
            all_read = false;
        }
        if self.plugins
            && let Err(e) = registry.reconcile().await
        {
            tracing::warn!(error = %e, "rereading the deployed plugins failed");
            all_read = false;
        }
        if self.signing_keys
            && let Err(e) = auth.reload_signing_keys().await
        {
            tracing::warn!(error = %e, "rereading the signing keys failed");
            all_read = false;
        }
        all_read
    }
}

/// Follows `store`'s announcements until the task is aborted; `None` for a store only this
/// process uses (nothing to follow).
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    auth: Arc<Auth>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut changes = store.changes()?;
    Some(tokio::spawn(async move {
        let mut timer = tokio::time::interval(CHECK_EVERY);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once; the start-up load covers it.
        timer.tick().await;
        // The announcement count when everything was last reread.
        let mut reread_at: Option<u64> = None;
        loop {
            let mut stale = Stale::default();
            tokio::select! {
                heard = changes.recv() => match heard {
                    Ok(change) => stale.add(change),
                    Err(RecvError::Lagged(_)) => stale.add(Change::Resync),
                    Err(RecvError::Closed) => return,
                },
                _ = timer.tick() => {
                    let now = store.announced().await.ok().flatten();
                    if now.is_some() && now == reread_at {
                        continue;
                    }
                    stale.add(Change::Resync);
                }
            }
            // A burst (a deploy and its config) is reread once.
            loop {
                match changes.try_recv() {
                    Ok(change) => stale.add(change),
                    Err(TryRecvError::Lagged(_)) => stale.add(Change::Resync),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            // Read before rereading: a change committed meanwhile counts after it, so the next
            // check sees it.
            let now = store.announced().await.ok().flatten();
            if stale.reread(&registry, &auth).await {
                reread_at = now;
            }
        }
    }))
}
