//! The break-glass admin token: `PLINTH_ADMIN_TOKEN`, or one generated on the first start of a
//! data directory that has none, printed once.
//!
//! **Invariant:** the token is never stored or logged; only its SHA-256 is kept, and comparisons
//! are constant-time.

use super::sha256;
use crate::store::{Store, StoreError};
use subtle::ConstantTimeEq;

const ADMIN_TOKEN_HASH_KEY: &str = "admin_token_sha256";
/// Generated tokens carry a recognisable prefix so secret scanners and people can spot them.
const TOKEN_PREFIX: &str = "plinth_admin_";

/// The admin token's digest.
pub(super) struct AdminToken {
    sha256: [u8; 32],
}

impl AdminToken {
    /// Decides the admin token: `env_token` when given; otherwise the one whose hash is stored;
    /// otherwise a new random one, whose hash is stored and which is returned for printing once.
    pub(super) async fn bootstrap(
        store: &dyn Store,
        env_token: Option<&str>,
    ) -> Result<(Self, Option<String>), StoreError> {
        if let Some(token) = env_token {
            return Ok((Self::from_token(token), None));
        }
        if let Some(stored) = store.meta(ADMIN_TOKEN_HASH_KEY).await?
            && let Ok(sha256) = <[u8; 32]>::try_from(stored.as_slice())
        {
            return Ok((Self { sha256 }, None));
        }
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
        let digest = sha256(&token);
        // Another host starting on the same store may have stored its token first: that one
        // holds (and that host printed it).
        let stored = store
            .init_meta(ADMIN_TOKEN_HASH_KEY, digest.to_vec())
            .await?;
        match <[u8; 32]>::try_from(stored.as_slice()) {
            Ok(sha256) if sha256 == digest => Ok((Self { sha256 }, Some(token))),
            Ok(sha256) => Ok((Self { sha256 }, None)),
            Err(_) => {
                // An unreadable stored hash (not 32 bytes) is replaced.
                store
                    .set_meta(ADMIN_TOKEN_HASH_KEY, digest.to_vec())
                    .await?;
                Ok((Self { sha256: digest }, Some(token)))
            }
        }
    }

    /// The digest of a known token.
    pub(super) fn from_token(token: &str) -> Self {
        Self {
            sha256: sha256(token),
        }
    }

    /// Whether `token` is the admin token (constant-time).
    pub(super) fn matches(&self, token: &str) -> bool {
        bool::from(sha256(token).ct_eq(&self.sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_token() {
        let t = AdminToken::from_token("s3cret-s3cret-s3cret");
        assert!(t.matches("s3cret-s3cret-s3cret"));
        assert!(!t.matches("s3cret-s3cret-s3creT"));
        assert!(!t.matches(""));
    }
}
