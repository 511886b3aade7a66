//! API keys for operators and automation: shown once at creation, stored only as an
//! HMAC-SHA-256 of the key under a server secret, each with one role, a name, an optional
//! expiry and a last-used time.

use crate::audit::Actor;
use crate::store::{Op, Space, Store, StoreError, from_json, to_json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Every API key starts with this, so people and secret scanners recognise it.
pub const PREFIX: &str = "plinth_key_";
const SECRET_META_KEY: &str = "api_key_hmac_secret";
/// `last_used` is written at most this often per key, so using a key is not a write per request.
const TOUCH_INTERVAL_MS: u64 = 60_000;

/// What is stored about a key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    /// Public id (for listing and revoking).
    pub id: String,
    /// A label chosen by the admin.
    pub name: String,
    /// The one role the key carries.
    pub role: String,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
    /// Expiry, Unix ms, if any.
    pub expires_at_ms: Option<u64>,
    /// Last successful use, Unix ms (updated at most once a minute).
    pub last_used_at_ms: Option<u64>,
}

/// The keyed hash under which keys are stored.
pub struct KeyHasher {
    secret: Vec<u8>,
}

/// Names API key records in storage errors.
const WHAT: &str = "api key";

impl KeyHasher {
    /// Loads the server's HMAC secret, creating it on first start.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        if let Some(secret) = store.meta(SECRET_META_KEY).await?
            && secret.len() == 32
        {
            return Ok(Self { secret });
        }
        // Several hosts starting on one store keep the first secret written, whoever wrote it.
        let secret = store
            .init_meta(SECRET_META_KEY, rand::random::<[u8; 32]>().to_vec())
            .await?;
        if secret.len() != 32 {
            // An unreadable stored secret (keys made under it cannot be checked anyway).
            let secret = rand::random::<[u8; 32]>().to_vec();
            store.set_meta(SECRET_META_KEY, secret.clone()).await?;
            return Ok(Self { secret });
        }
        Ok(Self { secret })
    }

    /// The digest a key is stored under (hex of its HMAC).
    pub(crate) fn digest(&self, key: &str) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes()).into_bytes()
    }

    /// Creates a key, audited as made `by`; returns the key text (shown once) and its record.
    pub async fn create(
        &self,
        store: &dyn Store,
        name: &str,
        role: &str,
        expires_at_ms: Option<u64>,
        now_ms: u64,
        by: &Actor,
    ) -> Result<(String, ApiKey), StoreError> {
        let key = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        );
        let record = ApiKey {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name: name.into(),
            role: role.into(),
            created_at_ms: now_ms,
            expires_at_ms,
            last_used_at_ms: None,
        };
        let digest = self.digest(&key);
        let audit = by.records(
            "api_key.create",
            &record.id,
            serde_json::json!({ "name": record.name, "role": record.role }),
        );
        store
            .commit(vec![
                Op::Put {
                    space: Space::ApiKeys,
                    key: digest.clone(),
                    value: to_json(WHAT, &record)?,
                },
                Op::Put {
                    space: Space::ApiKeyIds,
                    key: record.id.as_bytes().to_vec(),
                    value: digest,
                },
                audit.op()?,
            ])
            .await?;
        audit.committed();
        Ok((key, record))
    }

    /// Finds a valid (known, unexpired) key; with it, when its last use is older than
    /// `TOUCH_INTERVAL_MS`, the commit that records this use. That commit waits for the disk:
    /// run it apart from the request (e.g. a spawned task) so it does not hold the request up
    /// (it is best effort: a concurrent revoke wins).
    pub async fn check(
        &self,
        store: &dyn Store,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<(ApiKey, Option<Touch>)>, StoreError> {
        let digest = self.digest(key);
        let Some(bytes) = store.get(Space::ApiKeys, &digest).await? else {
            return Ok(None);
        };
        let record: ApiKey = from_json(WHAT, &bytes)?;
        if record.expires_at_ms.is_some_and(|exp| exp <= now_ms) {
            return Ok(None);
        }
        let touch = if record
            .last_used_at_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= TOUCH_INTERVAL_MS)
        {
            let touched = ApiKey {
                last_used_at_ms: Some(now_ms),
                ..record.clone()
            };
            Some(vec![
                Op::Expect {
                    space: Space::ApiKeys,
                    key: digest.clone(),
                    value: Some(bytes),
                },
                Op::Put {
                    space: Space::ApiKeys,
                    key: digest,
                    value: to_json(WHAT, &touched)?,
                },
            ])
        } else {
            None
        };
        Ok(Some((record, touch)))
    }
}

/// The commit that records a key's use (see [`KeyHasher::check`]).
pub type Touch = Vec<Op>;

/// Every key's record, by id.
pub async fn list(store: &dyn Store) -> Result<Vec<ApiKey>, StoreError> {
    let mut out = Vec::new();
    let ids = store.scan(Space::ApiKeyIds, b"", None, usize::MAX).await?;
    for (_, digest) in ids {
        if let Some(bytes) = store.get(Space::ApiKeys, &digest).await? {
            out.push(from_json(WHAT, &bytes)?);
        }
    }
    Ok(out)
}

/// Revokes a key by id, audited as done `by`. Returns whether it existed.
pub async fn revoke(store: &dyn Store, id: &str, by: &Actor) -> Result<bool, StoreError> {
    let Some(digest) = store.get(Space::ApiKeyIds, id.as_bytes()).await? else {
        return Ok(false);
    };
    let audit = by.records("api_key.revoke", id, serde_json::json!({}));
    // Only if the key is still there: two revokes of one key record one revocation.
    let revoked = store
        .commit(vec![
            Op::Expect {
                space: Space::ApiKeyIds,
                key: id.as_bytes().to_vec(),
                value: Some(digest.clone()),
            },
            Op::Delete {
                space: Space::ApiKeys,
                key: digest,
            },
            Op::Delete {
                space: Space::ApiKeyIds,
                key: id.as_bytes().to_vec(),
            },
            audit.op()?,
        ])
        .await?;
    if revoked {
        audit.committed();
    }
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SledStore};

    #[tokio::test]
    async fn keys_are_checked_expire_and_revoke_and_never_stored_in_clear() {
        let dir = std::env::temp_dir().join(format!("plinth-keys-{}", rand::random::<u64>()));
        let store = SledStore::open(&dir, Durability::Durable).await.unwrap();
        let hasher = KeyHasher::load(&store).await.unwrap();
        let by = Actor {
            who: "admin-token".into(),
            address: None,
        };
        let (key, record) = hasher
            .create(&store, "ci", "operator", None, 1, &by)
            .await
            .unwrap();
        assert!(key.starts_with(PREFIX));
        let (checked, touch) = hasher.check(&store, &key, 2).await.unwrap().unwrap();
        assert_eq!(checked.id, record.id);
        // Its first use is recorded; the next within the interval writes nothing.
        assert!(store.commit(touch.unwrap()).await.unwrap());
        let second = hasher.check(&store, &key, 3).await.unwrap();
        assert!(second.unwrap().1.is_none());
        let wrong = hasher.check(&store, "plinth_key_wrong", 2).await.unwrap();
        assert_eq!(wrong, None);
        let (short, _) = hasher
            .create(&store, "tmp", "user", Some(10), 1, &by)
            .await
            .unwrap();
        assert!(hasher.check(&store, &short, 5).await.unwrap().is_some());
        assert_eq!(hasher.check(&store, &short, 10).await.unwrap(), None);
        assert_eq!(list(&store).await.unwrap().len(), 2);
        assert!(revoke(&store, &record.id, &by).await.unwrap());
        assert_eq!(hasher.check(&store, &key, 4).await.unwrap(), None);
        assert!(!revoke(&store, &record.id, &by).await.unwrap());
        // Each change was stored with its audit entry; the second revoke changed nothing.
        let actions: Vec<String> = store
            .scan(Space::Audit, b"", None, 10)
            .await
            .unwrap()
            .iter()
            .map(|(_, v)| from_json::<serde_json::Value>("entry", v).unwrap()["action"].to_string())
            .collect();
        assert_eq!(
            actions,
            [
                "\"api_key.revoke\"",
                "\"api_key.create\"",
                "\"api_key.create\""
            ]
        );
        // The same secret is reloaded, so surviving keys still verify after a restart.
        drop(hasher);
        let again = KeyHasher::load(&store).await.unwrap();
        assert!(again.check(&store, &short, 5).await.unwrap().is_some());
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
