//! User accounts in the store: records by id, a unique index of normalised emails, and the
//! rules for emails and passwords.

use crate::store::{Op, Space, Store, StoreError, from_json, to_json};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Built-in roles. Admins may also assign custom role names.
pub const ROLE_ADMIN: &str = "admin";
/// Operators deploy plugins and read logs.
pub const ROLE_OPERATOR: &str = "operator";
/// Every account has this role.
pub const ROLE_USER: &str = "user";

/// Minimum password length in characters.
const MIN_PASSWORD_CHARS: usize = 8;
/// Maximum password length in bytes (argon2 input stays bounded).
const MAX_PASSWORD_BYTES: usize = 1024;

/// A stored account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    /// Stable random id.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// PHC-format argon2id hash.
    pub password_hash: String,
    /// Roles, always including `user`.
    pub roles: Vec<String>,
    /// A disabled account cannot log in, refresh, or use its access tokens.
    pub disabled: bool,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// The generation of the account's sessions: every access token and login family carries
    /// the generation it was issued in, and only the current one is accepted. A password
    /// change, a logout everywhere, disabling or a lost role moves it on, so "every session"
    /// includes access tokens still within their lifetime. A counter, not a time: no clock
    /// and no second boundary decides what survives.
    #[serde(default)]
    pub token_generation: u64,
}

/// An email or password that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a plausible email address.
    #[error("{0:?} is not a valid email address")]
    InvalidEmail(String),
    /// The password breaks the policy.
    #[error("{0}")]
    WeakPassword(String),
}

/// Lower-cases and trims an email, and checks its shape.
pub fn normalize_email(email: &str) -> Result<String, CredentialError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(CredentialError::InvalidEmail(email))
    }
}

/// Checks the password policy: at least 8 characters, at most 1 KiB.
pub fn check_password(password: &str) -> Result<(), CredentialError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CredentialError::WeakPassword(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(CredentialError::WeakPassword(format!(
            "a password may be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

impl User {
    /// A new enabled account with the `user` role plus `extra_roles`.
    pub fn new(email: String, password_hash: String, extra_roles: &[&str], now_ms: u64) -> Self {
        let mut roles = vec![ROLE_USER.to_string()];
        for role in extra_roles {
            if !roles.iter().any(|r| r == role) {
                roles.push(role.to_string());
            }
        }
        Self {
            id: hex::encode(rand::random::<[u8; 16]>()),
            email,
            password_hash,
            roles,
            disabled: false,
            created_at_ms: now_ms,
            token_generation: 0,
        }
    }

    /// Whether the account holds `role`; admins hold every role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role || r == ROLE_ADMIN)
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        to_json("user", self)
    }
}

/// Reads a user by id.
pub async fn get(store: &dyn Store, id: &str) -> Result<Option<User>, StoreError> {
    store
        .get(Space::Users, id.as_bytes())
        .await?
        .map(|bytes| from_json("user", &bytes))
        .transpose()
}

/// Accounts as last parsed, by id, each with the stored bytes it was parsed from. A guarded
/// request still reads the account from the store (so disabling, deleting or changing it
/// takes effect at once) but skips parsing a record that has not changed.
#[derive(Default)]
pub struct ParsedAccounts {
    seen: Mutex<HashMap<String, Parsed>>,
}

/// An account and the stored bytes it was parsed from.
struct Parsed {
    stored: Vec<u8>,
    user: Arc<User>,
}

/// Most accounts kept parsed (a few MiB at most); past it the map starts over.
const PARSED_ACCOUNTS: usize = 10_000;

impl ParsedAccounts {
    /// Reads a user by id, as [`get`] does.
    pub async fn get(&self, store: &dyn Store, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        let Some(bytes) = store.get(Space::Users, id.as_bytes()).await? else {
            return Ok(None);
        };
        // Locked only once the read is done: the guard never lives across an await.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parsed) = seen.get(id)
            && parsed.stored == bytes
        {
            return Ok(Some(parsed.user.clone()));
        }
        let user: Arc<User> = Arc::new(from_json("user", &bytes)?);
        if seen.len() >= PARSED_ACCOUNTS {
            seen.clear();
        }
        seen.insert(
            id.to_string(),
            Parsed {
                stored: bytes,
                user: user.clone(),
            },
        );
        Ok(Some(user))
    }
}

/// Reads a user by normalised email.
pub async fn by_email(store: &dyn Store, email: &str) -> Result<Option<User>, StoreError> {
    match store.get(Space::Emails, email.as_bytes()).await? {
        Some(id) => get(store, &String::from_utf8_lossy(&id)).await,
        None => Ok(None),
    }
}

/// Stores a new account, applying `extra` ops in the same atomic commit. Returns `false` when
/// the email is already taken or an `extra` precondition fails.
pub async fn insert(store: &dyn Store, user: &User, extra: Vec<Op>) -> Result<bool, StoreError> {
    let mut ops = vec![
        Op::Expect {
            space: Space::Emails,
            key: user.email.as_bytes().to_vec(),
            value: None,
        },
        Op::Put {
            space: Space::Emails,
            key: user.email.as_bytes().to_vec(),
            value: user.id.as_bytes().to_vec(),
        },
        Op::Put {
            space: Space::Users,
            key: user.id.as_bytes().to_vec(),
            value: user.encode()?,
        },
    ];
    ops.extend(extra);
    store.commit(ops).await
}

/// Replaces an account record if it still equals `previous` (no lost updates), applying `extra`
/// ops (its audit entry) in the same commit.
pub async fn update(
    store: &dyn Store,
    previous: &User,
    next: &User,
    extra: Vec<Op>,
) -> Result<bool, StoreError> {
    let mut ops = vec![
        Op::Expect {
            space: Space::Users,
            key: previous.id.as_bytes().to_vec(),
            value: Some(previous.encode()?),
        },
        Op::Put {
            space: Space::Users,
            key: next.id.as_bytes().to_vec(),
            value: next.encode()?,
        },
    ];
    ops.extend(extra);
    store.commit(ops).await
}

/// Whether any account exists.
pub async fn any(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(!store.scan(Space::Users, b"", None, 1).await?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM "),
            Ok("ann@example.com".into())
        );
        for bad in [
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "a b@x.io",
            "a@b@c.io",
            "a@.io",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password("ééééééé").is_err());
        assert!(check_password(&"x".repeat(1025)).is_err());
        assert!(check_password(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn roles() {
        let u = User::new("a@b.io".into(), "h".into(), &["billing", "user"], 0);
        assert_eq!(u.roles, vec!["user", "billing"]);
        assert!(u.has_role("billing"));
        assert!(!u.has_role("admin"));
        let admin = User::new("c@d.io".into(), "h".into(), &[ROLE_ADMIN], 0);
        assert!(admin.has_role("anything"));
    }

    #[tokio::test]
    async fn a_parsed_account_is_reused_only_while_its_stored_record_is_unchanged() {
        let dir = std::env::temp_dir().join(format!("plinth-accounts-{}", rand::random::<u64>()));
        let store = crate::store::SledStore::open(&dir, crate::store::Durability::Durable)
            .await
            .unwrap();
        let parsed = ParsedAccounts::default();
        let user = User::new("a@b.io".into(), "h".into(), &[], 0);
        assert!(insert(&store, &user, Vec::new()).await.unwrap());

        let first = parsed.get(&store, &user.id).await.unwrap().unwrap();
        let again = parsed.get(&store, &user.id).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged record is not parsed again"
        );

        // Disabling (or any change) is seen by the very next read.
        let disabled = User {
            disabled: true,
            roles: vec![ROLE_USER.into(), ROLE_OPERATOR.into()],
            ..user.clone()
        };
        assert!(update(&store, &user, &disabled, Vec::new()).await.unwrap());
        let now = parsed.get(&store, &user.id).await.unwrap().unwrap();
        assert_eq!(*now, disabled);

        // A deleted account is gone at once, whatever was parsed before.
        store
            .commit(vec![Op::Delete {
                space: Space::Users,
                key: user.id.as_bytes().to_vec(),
            }])
            .await
            .unwrap();
        assert_eq!(parsed.get(&store, &user.id).await.unwrap(), None);
        assert_eq!(parsed.get(&store, "no-such-id").await.unwrap(), None);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
