//! Records that would otherwise be kept forever are pruned on a timer: expired refresh tokens
//! (spent ones included, once they expire), login families left without a live token, and
//! audit entries older than the audit retention, the shared throttles' spent records, expired
//! dashboard sessions and expired invitations.

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How often the pruning runs (and once shortly after start).
const EVERY: Duration = Duration::from_secs(3600);
/// How long after start the first pruning runs, so start-up is not slowed.
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Prunes `store` every hour until the task is aborted, keeping audit entries for
/// `audit_retention`.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    audit_retention: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_AFTER).await;
        loop {
            if let Err(e) = prune(&*store, audit_retention).await {
                tracing::error!(error = %e, "pruning expired records failed");
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}

/// One pruning pass.
async fn prune(
    store: &dyn Store,
    audit_retention: Duration,
) -> Result<(), crate::store::StoreError> {
    let now = crate::units::now_ms();
    let sessions = crate::auth::sessions::prune(store, now).await?;
    let cut_off = now.saturating_sub(audit_retention.as_millis() as u64);
    let audit = crate::audit::AuditLog::prune(store, cut_off).await?;
    let throttles = crate::auth::prune_throttles(store, now).await?;
    let web_sessions = crate::auth::prune_web_sessions(store, now).await?;
    let invites = crate::auth::prune_invites(store, now).await?;
    if sessions.tokens + sessions.families + audit + throttles + web_sessions + invites > 0 {
        tracing::info!(
            refresh_tokens = sessions.tokens,
            families = sessions.families,
            audit_entries = audit,
            throttle_records = throttles,
            web_sessions,
            invites,
            "pruned expired records"
        );
    }
    Ok(())
}
