//! Browser sessions of the dashboard (`/_/`): a random token in an HttpOnly cookie, kept in the
//! store only as its SHA-256, naming who signed in (an account at its session generation, or an
//! API key by its digest) with the session's CSRF token.
//!
//! A session is checked on every page against the account or key as it is now, through the
//! same records the API reads: a disabled account, a password change or "log out everywhere"
//! (the account's generation moves on), a revoked or expired key end it at once. Signing out
//! deletes it; otherwise it ends [`WEB_SESSION_TTL`] after sign-in. Separate from the API's
//! bearer tokens: a cookie is never accepted as an `Authorization` credential, nor a bearer
//! token as a cookie.

use super::api_keys::ApiKey;
use super::{Auth, Principal};
use crate::store::{Op, Space, Store, StoreError, from_json, to_json};
use crate::units::now_ms;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a dashboard session lasts from sign-in.
pub const WEB_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Session tokens carry a recognisable prefix (never accepted as a bearer token).
const PREFIX: &str = "plinth_ws_";

/// What a stored session names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Holder {
    /// An account, valid while its session generation is this one.
    User { user_id: String, generation: u64 },
    /// An API key, by the digest it is stored under.
    ApiKey { digest: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    holder: Holder,
    /// The token every state-changing form of this session must carry.
    csrf: String,
    expires_at_ms: u64,
}

/// A signed-in browser: who it is now, and the CSRF token of its forms.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// The account or key, as read for this request.
    pub principal: Principal,
    /// The session's CSRF token.
    pub csrf: String,
}

fn key_of(token: &str) -> Vec<u8> {
    super::sha256(token).to_vec()
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl Auth {
    /// Signs a browser in with an email and password: the same checks, throttles and answers
    /// as `POST /auth/login`. Returns the cookie token and the session.
    pub async fn web_sign_in(
        &self,
        email: &str,
        password: String,
    ) -> Result<(String, WebSession), super::AccountError> {
        let user = self.verify_login(email, password).await?;
        let holder = Holder::User {
            user_id: user.id.clone(),
            generation: user.token_generation,
        };
        Ok(self
            .start_web_session(holder, Principal::User(std::sync::Arc::new(user)))
            .await?)
    }

    /// Signs a browser in with an API key. `None` when the key is unknown, revoked or expired.
    pub async fn web_sign_in_with_key(
        &self,
        key: &str,
    ) -> Result<Option<(String, WebSession)>, StoreError> {
        if !key.starts_with(super::api_keys::PREFIX) {
            return Ok(None);
        }
        let Some((record, _)) = self.api_keys.check(&*self.store, key, now_ms()).await? else {
            return Ok(None);
        };
        let digest = String::from_utf8_lossy(&self.api_keys.digest(key)).into_owned();
        let session = self
            .start_web_session(Holder::ApiKey { digest }, Principal::ApiKey(record))
            .await?;
        Ok(Some(session))
    }

    async fn start_web_session(
        &self,
        holder: Holder,
        principal: Principal,
    ) -> Result<(String, WebSession), StoreError> {
        let token = format!("{PREFIX}{}", random_token());
        let record = Record {
            holder,
            csrf: random_token(),
            expires_at_ms: now_ms() + WEB_SESSION_TTL.as_millis() as u64,
        };
        self.store
            .commit(vec![Op::Put {
                space: Space::WebSessions,
                key: key_of(&token),
                value: to_json("web session", &record)?,
            }])
            .await?;
        Ok((
            token,
            WebSession {
                principal,
                csrf: record.csrf,
            },
        ))
    }

    /// The session a cookie token names, checked against its account or key as they are now;
    /// `None` for an unknown, expired or ended session.
    pub async fn web_session(&self, token: &str) -> Result<Option<WebSession>, StoreError> {
        if !token.starts_with(PREFIX) {
            return Ok(None);
        }
        let store = &*self.store;
        let Some(bytes) = store.get(Space::WebSessions, &key_of(token)).await? else {
            return Ok(None);
        };
        let record: Record = from_json("web session", &bytes)?;
        let now = now_ms();
        if record.expires_at_ms <= now {
            return Ok(None);
        }
        let principal = match &record.holder {
            Holder::User {
                user_id,
                generation,
            } => match self.parsed_accounts.get(store, user_id).await? {
                Some(user) if !user.disabled && user.token_generation == *generation => {
                    Principal::User(user)
                }
                _ => return Ok(None),
            },
            Holder::ApiKey { digest } => {
                match store.get(Space::ApiKeys, digest.as_bytes()).await? {
                    Some(bytes) => {
                        let key: ApiKey = from_json("API key", &bytes)?;
                        if key.expires_at_ms.is_some_and(|exp| exp <= now) {
                            return Ok(None);
                        }
                        Principal::ApiKey(key)
                    }
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(WebSession {
            principal,
            csrf: record.csrf,
        }))
    }

    /// Ends the session a cookie token names (nothing happens for an unknown one).
    pub async fn end_web_session(&self, token: &str) -> Result<(), StoreError> {
        self.store
            .commit(vec![Op::Delete {
                space: Space::WebSessions,
                key: key_of(token),
            }])
            .await?;
        Ok(())
    }
}

/// Deletes expired sessions; returns how many.
pub(crate) async fn prune(store: &dyn Store, now: u64) -> Result<usize, StoreError> {
    let mut pruned = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(Space::WebSessions, b"", after.as_deref(), 500)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let expired: Vec<Op> = page
            .into_iter()
            .filter(|(_, value)| {
                from_json::<Record>("web session", value).map_or(true, |r| r.expires_at_ms <= now)
            })
            .map(|(key, _)| Op::Delete {
                space: Space::WebSessions,
                key,
            })
            .collect();
        pruned += expired.len();
        if !expired.is_empty() {
            store.commit(expired).await?;
        }
    }
    Ok(pruned)
}
