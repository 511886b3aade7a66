//! Who is calling: today the operator's admin token, and the auth policy a route demands.
//!
//! **Boundary:** this is the one auth seam. The API asks [`Auth::admin`] and [`Auth::authorize`]
//! and never looks at tokens itself, so accounts, JWTs and API keys can replace the admin token
//! here without touching the API or the router.
//!
//! **Invariant:** the admin token is never stored or logged; only its SHA-256 is kept, and
//! comparisons are constant-time.

use crate::store::{Store, StoreError};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

const ADMIN_TOKEN_HASH_KEY: &str = "admin_token_sha256";
/// Generated tokens carry a recognisable prefix so secret scanners and people can spot them.
const TOKEN_PREFIX: &str = "plinth_admin_";

/// Why a caller was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` credential was sent.
    #[error("this endpoint needs `Authorization: Bearer <token>`")]
    Missing,
    /// A credential was sent but is not valid.
    #[error("the bearer token is not valid")]
    Invalid,
}

/// Who the caller is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator holding the admin token: has every role.
    Admin,
}

/// What a plugin route demands of its caller, from the manifest's `auth` key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    /// Anyone may call.
    #[default]
    Public,
    /// Any authenticated caller.
    User,
    /// An authenticated caller with this role.
    Role(String),
}

impl FromStr for AuthPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "user" => Ok(Self::User),
            other => match other.strip_prefix("role:") {
                Some(role)
                    if !role.is_empty()
                        && role
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                {
                    Ok(Self::Role(role.to_string()))
                }
                _ => Err(format!(
                    "auth must be \"public\", \"user\" or \"role:NAME\", got {other:?}"
                )),
            },
        }
    }
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::User => f.write_str("user"),
            Self::Role(r) => write!(f, "role:{r}"),
        }
    }
}

/// The credentials the host accepts.
pub struct Auth {
    admin_token_sha256: [u8; 32],
}

/// The outcome of [`Auth::bootstrap`]: the auth state, plus a token generated on this start that
/// must be shown to the operator once.
pub struct Bootstrap {
    /// The auth state to serve with.
    pub auth: Auth,
    /// A newly generated admin token, when neither the environment nor the store had one.
    pub generated_token: Option<String>,
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Extracts the token from an `Authorization` header value of the form `Bearer <token>`.
fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token.trim())
}

impl Auth {
    /// Decides the admin token: `PLINTH_ADMIN_TOKEN` when given; otherwise the one whose hash is
    /// stored; otherwise a new random one, whose hash is stored and which is returned for
    /// printing once. Blocking (it may write to the store).
    pub fn bootstrap(store: &dyn Store, env_token: Option<&str>) -> Result<Bootstrap, StoreError> {
        if let Some(token) = env_token {
            return Ok(Bootstrap {
                auth: Auth {
                    admin_token_sha256: sha256(token),
                },
                generated_token: None,
            });
        }
        if let Some(stored) = store.meta(ADMIN_TOKEN_HASH_KEY)?
            && let Ok(hash) = <[u8; 32]>::try_from(stored.as_slice())
        {
            return Ok(Bootstrap {
                auth: Auth {
                    admin_token_sha256: hash,
                },
                generated_token: None,
            });
        }
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
        let hash = sha256(&token);
        store.set_meta(ADMIN_TOKEN_HASH_KEY, &hash)?;
        Ok(Bootstrap {
            auth: Auth {
                admin_token_sha256: hash,
            },
            generated_token: Some(token),
        })
    }

    /// Authenticates a caller from its `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer(authorization)?;
        if bool::from(sha256(token).ct_eq(&self.admin_token_sha256)) {
            Ok(Principal::Admin)
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// Admits only the operator (the `/admin/*` API).
    pub fn admin(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.authenticate(authorization)
    }

    /// Admits a caller to a plugin route under its policy. `None` means an anonymous caller on
    /// a public route.
    pub fn authorize(
        &self,
        policy: &AuthPolicy,
        authorization: Option<&str>,
    ) -> Result<Option<Principal>, AuthError> {
        match policy {
            AuthPolicy::Public => Ok(None),
            // The admin holds every role; accounts with their own roles arrive with the
            // accounts issue and slot in here.
            AuthPolicy::User | AuthPolicy::Role(_) => self.authenticate(authorization).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: &str) -> Auth {
        Auth {
            admin_token_sha256: sha256(token),
        }
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let a = auth("s3cret-s3cret-s3cret");
        assert_eq!(
            a.admin(Some("Bearer s3cret-s3cret-s3cret")),
            Ok(Principal::Admin)
        );
        assert_eq!(
            a.admin(Some("bearer s3cret-s3cret-s3cret")),
            Ok(Principal::Admin)
        );
        assert_eq!(a.admin(None), Err(AuthError::Missing));
        assert_eq!(a.admin(Some("Bearer wrong")), Err(AuthError::Invalid));
        assert_eq!(
            a.admin(Some("Basic s3cret-s3cret-s3cret")),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.admin(Some("Bearer ")), Err(AuthError::Invalid));
    }

    #[test]
    fn policies_parse_and_guard() {
        assert_eq!("public".parse(), Ok(AuthPolicy::Public));
        assert_eq!(
            "role:billing".parse(),
            Ok(AuthPolicy::Role("billing".into()))
        );
        assert!("role:".parse::<AuthPolicy>().is_err());
        assert!("admin".parse::<AuthPolicy>().is_err());
        let a = auth("s3cret-s3cret-s3cret");
        assert_eq!(a.authorize(&AuthPolicy::Public, None), Ok(None));
        assert_eq!(
            a.authorize(&AuthPolicy::User, None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authorize(&AuthPolicy::User, Some("Bearer s3cret-s3cret-s3cret")),
            Ok(Some(Principal::Admin))
        );
    }
}
