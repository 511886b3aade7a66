//! Refresh tokens: opaque, long-lived, stored only as SHA-256 digests, rotated on every use.
//!
//! Each login starts a *family*; every refresh replaces the token with a new one of the same
//! family. Presenting a token that was already rotated means it leaked (or was stolen), so the
//! whole family is revoked: both the thief's and the owner's next refresh fail.

use super::accounts::{self, User};
use crate::store::{Op, Space, Store, StoreError, from_json, to_json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Refresh tokens carry a recognisable prefix.
const PREFIX: &str = "plinth_rt_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct TokenRecord {
    family: String,
    user_id: String,
    expires_at_ms: u64,
    /// Set when the token has been exchanged; presenting it again is reuse.
    rotated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct FamilyRecord {
    user_id: String,
    revoked: bool,
    /// The account's session generation when the family started: a family of an earlier
    /// generation than the account's is over (absent before generations existed: 0).
    #[serde(default)]
    generation: u64,
    /// When its newest token expires; the family is pruned after it (0: unknown, families
    /// from before this was kept are pruned when no live token names them).
    #[serde(default)]
    expires_at_ms: u64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Valid: here is the user and the replacement token.
    Rotated {
        /// Whose token it was.
        user_id: String,
        /// The new refresh token (the old one is now spent).
        token: String,
    },
    /// Unknown, expired, revoked, or reused (in which case its family is now revoked).
    Refused,
}

fn digest(token: &str) -> Vec<u8> {
    super::sha256(token).to_vec()
}

fn new_token() -> String {
    format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    to_json("session", value)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    from_json("session", bytes)
}

fn user_family_key(user_id: &str, family: &str) -> Vec<u8> {
    format!("{user_id}/{family}").into_bytes()
}

/// Starts a new family for `user_id`, of the account's session `generation`, and returns its
/// first token.
pub async fn start(
    store: &dyn Store,
    user_id: &str,
    generation: u64,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<String, StoreError> {
    let family = hex::encode(rand::random::<[u8; 16]>());
    let token = new_token();
    let record = TokenRecord {
        family: family.clone(),
        user_id: user_id.into(),
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        rotated: false,
    };
    store
        .commit(vec![
            Op::Put {
                space: Space::Families,
                key: family.clone().into_bytes(),
                value: encode(&FamilyRecord {
                    user_id: user_id.into(),
                    revoked: false,
                    generation,
                    expires_at_ms: record.expires_at_ms,
                })?,
            },
            Op::Put {
                space: Space::UserFamilies,
                key: user_family_key(user_id, &family),
                value: Vec::new(),
            },
            Op::Put {
                space: Space::RefreshTokens,
                key: digest(&token),
                value: encode(&record)?,
            },
        ])
        .await?;
    Ok(token)
}

async fn revoke_family(store: &dyn Store, family: &str) -> Result<(), StoreError> {
    if let Some(bytes) = store.get(Space::Families, family.as_bytes()).await? {
        let mut record: FamilyRecord = decode(&bytes)?;
        record.revoked = true;
        store
            .commit(vec![Op::Put {
                space: Space::Families,
                key: family.as_bytes().to_vec(),
                value: encode(&record)?,
            }])
            .await?;
    }
    Ok(())
}

/// Exchanges a refresh token for a new one of the same family. The token's account is read
/// here, and `user_ok(account, family generation)` says whether it may still hold that session
/// (exists, is enabled, and is still in that generation). `user_ok` is called at most once,
/// and only for a live token that is neither spent nor expired; it takes the account, so a
/// caller can answer with the very record that was checked.
pub async fn rotate(
    store: &dyn Store,
    token: &str,
    ttl_ms: u64,
    now_ms: u64,
    user_ok: impl FnOnce(Option<User>, u64) -> bool,
) -> Result<Refreshed, StoreError> {
    let key = digest(token);
    let Some(bytes) = store.get(Space::RefreshTokens, &key).await? else {
        return Ok(Refreshed::Refused);
    };
    let record: TokenRecord = decode(&bytes)?;
    let family_bytes = store.get(Space::Families, record.family.as_bytes()).await?;
    let family: Option<FamilyRecord> = family_bytes.as_deref().map(decode).transpose()?;
    let Some(family) = family.filter(|f| !f.revoked) else {
        return Ok(Refreshed::Refused);
    };
    if record.rotated {
        tracing::warn!(
            user_id = record.user_id,
            "refresh token reused; revoking its family"
        );
        revoke_family(store, &record.family).await?;
        return Ok(Refreshed::Refused);
    }
    if record.expires_at_ms <= now_ms {
        return Ok(Refreshed::Refused);
    }
    let account = accounts::get(store, &record.user_id).await?;
    if !user_ok(account, family.generation) {
        return Ok(Refreshed::Refused);
    }
    let next = new_token();
    let spent = TokenRecord {
        rotated: true,
        ..record.clone()
    };
    let fresh = TokenRecord {
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        rotated: false,
        ..record.clone()
    };
    let applied = store
        .commit(vec![
            // Two concurrent refreshes with one token: only one wins; the other is reuse.
            Op::Expect {
                space: Space::RefreshTokens,
                key: key.clone(),
                value: Some(bytes),
            },
            // A family revoked meanwhile (a reuse of another of its tokens) stays revoked.
            Op::Expect {
                space: Space::Families,
                key: record.family.clone().into_bytes(),
                value: family_bytes,
            },
            Op::Put {
                space: Space::RefreshTokens,
                key,
                value: encode(&spent)?,
            },
            Op::Put {
                space: Space::RefreshTokens,
                key: digest(&next),
                value: encode(&fresh)?,
            },
            // The family lives as long as its newest token.
            Op::Put {
                space: Space::Families,
                key: record.family.clone().into_bytes(),
                value: encode(&FamilyRecord {
                    expires_at_ms: fresh.expires_at_ms,
                    ..family
                })?,
            },
        ])
        .await?;
    if !applied {
        revoke_family(store, &record.family).await?;
        return Ok(Refreshed::Refused);
    }
    Ok(Refreshed::Rotated {
        user_id: record.user_id,
        token: next,
    })
}

/// Revokes the family of `token` (logout). Unknown tokens are ignored.
pub async fn end(store: &dyn Store, token: &str) -> Result<(), StoreError> {
    if let Some(bytes) = store.get(Space::RefreshTokens, &digest(token)).await? {
        let record: TokenRecord = decode(&bytes)?;
        revoke_family(store, &record.family).await?;
    }
    Ok(())
}

/// Revokes every family of a user (password change, disable, delete).
pub async fn end_all(store: &dyn Store, user_id: &str) -> Result<(), StoreError> {
    let prefix = format!("{user_id}/").into_bytes();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::UserFamilies, &prefix, after.as_deref(), 256)
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, _) in &page {
            let family = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            revoke_family(store, &family).await?;
        }
    }
}

/// What one [`prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Expired refresh tokens (spent or not: an expired one is refused either way).
    pub tokens: usize,
    /// Families no live token belongs to any more (ended by expiry or revoked and expired).
    pub families: usize,
}

/// Deletes refresh tokens that expired before `now_ms` and the families whose newest token
/// has expired, page by page. A spent token is kept until it expires, so its reuse is still
/// caught. A login or refresh during the pass is safe: a family's expiry is written in the
/// same commit as its newest token.
pub async fn prune(store: &dyn Store, now_ms: u64) -> Result<Pruned, StoreError> {
    let mut pruned = Pruned::default();
    let mut live = std::collections::HashSet::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::RefreshTokens, b"", after.as_deref(), 512)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let mut expired = Vec::new();
        for (key, bytes) in &page {
            let record: TokenRecord = decode(bytes)?;
            if record.expires_at_ms <= now_ms {
                expired.push(Op::Delete {
                    space: Space::RefreshTokens,
                    key: key.clone(),
                });
            } else {
                live.insert(record.family);
            }
        }
        pruned.tokens += expired.len();
        if !expired.is_empty() {
            store.commit(expired).await?;
        }
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::Families, b"", after.as_deref(), 512)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let mut ended = Vec::new();
        for (key, bytes) in &page {
            let family = String::from_utf8_lossy(key).into_owned();
            let record: FamilyRecord = decode(bytes)?;
            // A family knows when its newest token expires; one from before that was kept is
            // over when no live token names it.
            let over = if record.expires_at_ms > 0 {
                record.expires_at_ms <= now_ms
            } else {
                !live.contains(&family)
            };
            if !over {
                continue;
            }
            ended.push(Op::Delete {
                space: Space::Families,
                key: key.clone(),
            });
            ended.push(Op::Delete {
                space: Space::UserFamilies,
                key: user_family_key(&record.user_id, &family),
            });
        }
        pruned.families += ended.len() / 2;
        if !ended.is_empty() {
            store.commit(ended).await?;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SledStore};

    async fn store() -> (SledStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("plinth-sessions-{}", rand::random::<u64>()));
        let store = SledStore::open(&dir, Durability::Durable).await.unwrap();
        (store, dir)
    }

    fn rotated(r: Refreshed) -> String {
        match r {
            Refreshed::Rotated { token, .. } => token,
            Refreshed::Refused => panic!("refused"),
        }
    }

    #[tokio::test]
    async fn rotation_reuse_logout_and_revoke_all() {
        let (s, dir) = store().await;
        let ok = |_: Option<User>, _: u64| true;
        let t1 = start(&s, "u1", 0, 1000, 0).await.unwrap();
        assert!(t1.starts_with(PREFIX));
        let t2 = rotated(rotate(&s, &t1, 1000, 1, ok).await.unwrap());
        let t3 = rotated(rotate(&s, &t2, 1000, 2, ok).await.unwrap());
        // Reusing t1 revokes the family: t3 stops working too.
        assert_eq!(
            rotate(&s, &t1, 1000, 3, ok).await.unwrap(),
            Refreshed::Refused
        );
        assert_eq!(
            rotate(&s, &t3, 1000, 4, ok).await.unwrap(),
            Refreshed::Refused
        );

        // Expiry and disabled users.
        let t = start(&s, "u1", 0, 10, 0).await.unwrap();
        assert_eq!(
            rotate(&s, &t, 10, 10, ok).await.unwrap(),
            Refreshed::Refused
        );
        let t = start(&s, "u1", 0, 10, 0).await.unwrap();
        assert_eq!(
            rotate(&s, &t, 10, 1, |_, _| false).await.unwrap(),
            Refreshed::Refused
        );

        // A family of an earlier session generation than the account's is over.
        let stale = start(&s, "u1", 0, 1000, 0).await.unwrap();
        assert_eq!(
            rotate(&s, &stale, 1000, 1, |_, generation| generation == 1)
                .await
                .unwrap(),
            Refreshed::Refused
        );

        // Logout ends one family; end_all ends every family of the user, and only theirs.
        let a = start(&s, "u1", 0, 1000, 0).await.unwrap();
        let b = start(&s, "u1", 0, 1000, 0).await.unwrap();
        let other = start(&s, "u2", 0, 1000, 0).await.unwrap();
        end(&s, &a).await.unwrap();
        assert_eq!(
            rotate(&s, &a, 1000, 1, ok).await.unwrap(),
            Refreshed::Refused
        );
        let b = rotated(rotate(&s, &b, 1000, 1, ok).await.unwrap());
        end_all(&s, "u1").await.unwrap();
        assert_eq!(
            rotate(&s, &b, 1000, 2, ok).await.unwrap(),
            Refreshed::Refused
        );
        rotated(rotate(&s, &other, 1000, 2, ok).await.unwrap());
        assert_eq!(
            rotate(&s, "plinth_rt_unknown", 1000, 2, ok).await.unwrap(),
            Refreshed::Refused
        );
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_check_is_handed_the_token_s_account() {
        let (s, dir) = store().await;
        let user = User::new("a@b.io".into(), "h".into(), &[], 0);
        assert!(accounts::insert(&s, &user, Vec::new()).await.unwrap());
        let t = start(&s, &user.id, 0, 1000, 0).await.unwrap();
        let mut seen = None;
        let refreshed = rotate(&s, &t, 1000, 1, |account, generation| {
            seen = account.map(|u| (u.id, generation));
            true
        })
        .await
        .unwrap();
        rotated(refreshed);
        assert_eq!(seen, Some((user.id, 0)));
        // A token whose account is gone is handed `None`.
        let orphan = start(&s, "gone", 0, 1000, 0).await.unwrap();
        let refreshed = rotate(&s, &orphan, 1000, 1, |account, _| account.is_some()).await;
        assert_eq!(refreshed.unwrap(), Refreshed::Refused);
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn count(s: &SledStore, space: Space) -> usize {
        s.scan(space, b"", None, 100).await.unwrap().len()
    }

    #[tokio::test]
    async fn expired_tokens_and_the_families_they_leave_empty_are_pruned() {
        let (s, dir) = store().await;
        let ok = |_: Option<User>, _: u64| true;
        // A family rotated once (a spent token and a live one), and a short one that expires.
        let first = start(&s, "u1", 0, 1000, 0).await.unwrap();
        let second = rotated(rotate(&s, &first, 1000, 10, ok).await.unwrap());
        let short = start(&s, "u2", 0, 100, 0).await.unwrap();
        let tokens = count(&s, Space::RefreshTokens).await;
        let families = count(&s, Space::Families).await;
        assert_eq!((tokens, families), (3, 2));
        // At 500 only the short family's token has expired: it goes, with its family.
        let pruned = prune(&s, 500).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                tokens: 1,
                families: 1
            }
        );
        assert_eq!(count(&s, Space::UserFamilies).await, 1);
        // The spent token is still there, so its reuse is still caught (and revokes).
        assert_eq!(
            rotate(&s, &first, 1000, 600, ok).await.unwrap(),
            Refreshed::Refused
        );
        assert_eq!(
            rotate(&s, &second, 1000, 601, ok).await.unwrap(),
            Refreshed::Refused
        );
        // Once everything expired, nothing is left.
        prune(&s, 5000).await.unwrap();
        for space in [Space::RefreshTokens, Space::Families, Space::UserFamilies] {
            assert_eq!(count(&s, space).await, 0, "{}", space.name());
        }
        drop((s, short));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
