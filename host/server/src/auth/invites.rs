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
        consume: vec![
            Op::Expect {
                space: Space::Invites,
                key: key.clone(),
                value: Some(bytes),
            },
            Op::Delete {
                space: Space::Invites,
                key,
            },
        ],
    }))
}
