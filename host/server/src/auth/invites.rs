//! Single-use invitations for `registration = "invite"`: created by admins, shown once, stored
//! only as SHA-256 digests, optionally bound to one email, consumed atomically with the
//! account they create.

use crate::store::{Op, Space, Store, StoreError, from_json, to_json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Every invitation code starts with this.
pub(super) const PREFIX: &str = "plinth_inv_";

/// What is stored about an invitation (never the code).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Invite {
    /// Public id.
    pub id: String,
    /// The only email that may use it, if bound.
    pub email: Option<String>,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
    /// Expiry, Unix ms.
    pub expires_at_ms: u64,
}

/// A valid invitation found by its code, with what is needed to consume it atomically.
pub(super) struct Found {
    /// The invitation.
    pub invite: Invite,
    /// Ops that consume it; they fail the whole commit if it was used meanwhile.
    pub consume: Vec<Op>,
}

fn digest(code: &str) -> Vec<u8> {
    super::sha256(code).to_vec()
}

/// Names invitation records in storage errors.
const WHAT: &str = "invitation";

/// Creates an invitation, audited as made `by`; returns the code (shown once) and its record.
pub(super) async fn create(
    store: &dyn Store,
    email: Option<String>,
    ttl_ms: u64,
    now_ms: u64,
    by: &crate::audit::Actor,
) -> Result<(String, Invite), StoreError> {
    let code = format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
    );
    let invite = Invite {
        id: hex::encode(rand::random::<[u8; 8]>()),
        email,
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    };
    let audit = by.records(
        "invite.create",
        &invite.id,
        serde_json::json!({
            "email": invite.email,
            "expires_at": crate::units::rfc3339(invite.expires_at_ms),
        }),
    );
    store
        .commit(vec![
            Op::Put {
                space: Space::Invites,
                key: digest(&code),
                value: to_json(WHAT, &invite)?,
            },
            audit.op()?,
        ])
        .await?;
    audit.committed();
    Ok((code, invite))
}

/// The ops that delete the invitation stored at `key`, only if it still holds `bytes`: a use
/// and a revocation racing each other cannot both happen.
fn take(key: Vec<u8>, bytes: Vec<u8>) -> [Op; 2] {
    [
        Op::Expect {
            space: Space::Invites,
            key: key.clone(),
            value: Some(bytes),
        },
        Op::Delete {
            space: Space::Invites,
            key,
        },
    ]
}

/// Invitations read per page of a scan.
const SCAN_PAGE: usize = 500;

/// Every stored invitation (expired ones until pruned) with the key it is stored under, in
/// key order (the digests', so no order a caller can steer).
async fn all(store: &dyn Store) -> Result<Vec<(Vec<u8>, Vec<u8>, Invite)>, StoreError> {
    let mut found = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::Invites, b"", after.as_deref(), SCAN_PAGE)
            .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        let full = page.len() == SCAN_PAGE;
        for (key, bytes) in page {
            let invite = from_json(WHAT, &bytes)?;
            found.push((key, bytes, invite));
        }
        if !full {
            break;
        }
    }
    Ok(found)
}

/// The invitations that can still be used, soonest to expire first.
pub(super) async fn pending(store: &dyn Store, now_ms: u64) -> Result<Vec<Invite>, StoreError> {
    let mut pending: Vec<Invite> = all(store)
        .await?
        .into_iter()
        .map(|(_, _, invite)| invite)
        .filter(|invite| invite.expires_at_ms > now_ms)
        .collect();
    pending.sort_by(|a, b| (a.expires_at_ms, &a.id).cmp(&(b.expires_at_ms, &b.id)));
    Ok(pending)
}

/// Revokes the invitation with public id `id`, audited as done `by`. Returns whether there was
/// one: an invitation used meanwhile is not revoked (nor recorded as such).
pub(super) async fn revoke(
    store: &dyn Store,
    id: &str,
    by: &crate::audit::Actor,
) -> Result<bool, StoreError> {
    let Some((key, bytes, _)) = all(store)
        .await?
        .into_iter()
        .find(|(_, _, invite)| invite.id == id)
    else {
        return Ok(false);
    };
    let audit = by.records("invite.revoke", id, serde_json::json!({}));
    let mut ops = take(key, bytes).to_vec();
    ops.push(audit.op()?);
    let revoked = store.commit(ops).await?;
    if revoked {
        audit.committed();
    }
    Ok(revoked)
}

/// Deletes the invitations that expired by `now_ms`; returns how many.
pub(crate) async fn prune(store: &dyn Store, now_ms: u64) -> Result<usize, StoreError> {
    let expired: Vec<Op> = all(store)
        .await?
        .into_iter()
        .filter(|(_, _, invite)| invite.expires_at_ms <= now_ms)
        .map(|(key, _, _)| Op::Delete {
            space: Space::Invites,
            key,
        })
        .collect();
    let count = expired.len();
    for chunk in expired.chunks(SCAN_PAGE) {
        store.commit(chunk.to_vec()).await?;
    }
    Ok(count)
}

/// Finds an unexpired invitation by its code.
pub(super) async fn find(
    store: &dyn Store,
    code: &str,
    now_ms: u64,
) -> Result<Option<Found>, StoreError> {
    let key = digest(code);
    let Some(bytes) = store.get(Space::Invites, &key).await? else {
        return Ok(None);
    };
    let invite: Invite = from_json(WHAT, &bytes)?;
    if invite.expires_at_ms <= now_ms {
        return Ok(None);
    }
    Ok(Some(Found {
        invite,
        consume: take(key, bytes).to_vec(),
    }))
}
