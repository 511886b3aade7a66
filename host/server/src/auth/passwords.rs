//! Password hashing with argon2id on a bounded blocking pool.
//!
//! A hash takes tens of milliseconds of CPU by design. Hashing runs on tokio's blocking threads
//! behind a semaphore sized to the CPU count, so a login flood queues here instead of starving
//! request handling; a caller that waits too long gets `Busy`.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a hash may wait for a free slot before the request is answered 503.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// argon2id cost parameters. Defaults are OWASP's: m = 19456 KiB, t = 2, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// argon2id iterations (time cost).
    pub iterations: u32,
    /// argon2id lanes (parallelism).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Too many hashes queued.
    #[error("the server is busy verifying passwords; try again")]
    Busy,
    /// The parameters or a stored hash are unusable (a configuration or data problem).
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verified {
    /// The password matched.
    pub ok: bool,
    /// The stored hash uses weaker parameters than configured: rehash now.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords.
pub(super) struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// Verified against when the account does not exist, so that path does the same work.
    dummy_hash: String,
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(params: Params, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| HashError::Internal(e.to_string()))?;
    argon2(params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
}

impl Passwords {
    /// A hasher with `params`. Blocking: computes the dummy hash once.
    pub(super) fn new(params: PasswordParams) -> Result<Self, HashError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError::Internal(format!("invalid argon2 parameters: {e}")))?;
        let dummy_hash = hash_blocking(params.clone(), b"plinth-dummy-password")?;
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(slots)),
            dummy_hash,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(QUEUE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let result = job();
            drop(permit);
            result
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// Hashes a password with the configured parameters (PHC string format).
    pub(super) async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move || hash_blocking(params, password.as_bytes()))
            .await?
    }

    /// Verifies `password` against `stored`, or against a dummy hash when there is no account,
    /// so both paths cost the same.
    pub(super) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, HashError> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let wanted = self.params.clone();
        self.run(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|e| HashError::Internal(e.to_string()))?;
            // The stored hash carries its own parameters; verification uses them.
            let ok = argon2(Params::default())
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            let needs_rehash = match Params::try_from(&parsed) {
                Ok(p) => {
                    p.m_cost() < wanted.m_cost()
                        || p.t_cost() < wanted.t_cost()
                        || p.p_cost() < wanted.p_cost()
                }
                Err(_) => true,
            };
            Ok(Verified {
                ok: ok && exists,
                needs_rehash,
            })
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordParams {
        PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_carry_their_parameters() {
        let weak = Passwords::new(cheap()).unwrap();
        let hash = weak.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let v = weak
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        let v = weak
            .verify("wrong horse".into(), Some(hash.clone()))
            .await
            .unwrap();
        assert!(!v.ok);
        // No account: never ok, even with the dummy's own password.
        let v = weak
            .verify("plinth-dummy-password".into(), None)
            .await
            .unwrap();
        assert!(!v.ok);
        // Raising the configured cost flags old hashes for an upgrade.
        let stronger = Passwords::new(PasswordParams {
            memory_kib: 128,
            ..cheap()
        })
        .unwrap();
        let v = stronger
            .verify("correct horse".into(), Some(hash))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
    }
}
