//! Access tokens: EdDSA (Ed25519) JWTs with `kid`, `iss`, `aud`, `sub`, `exp`, `nbf`, `iat`.
//!
//! One algorithm is pinned; the header's `alg` must be EdDSA and its `kid` one of our keys.
//! `jku`, `x5u` and `jwk` headers are never looked at, let alone fetched. Signing keys are
//! generated on first start and kept in the store; old keys keep verifying after a rotation.

use crate::store::{Entries, Op, Space, Store, StoreError, from_json, to_json};
use crate::units::now_secs;

/// Names signing-key records in storage errors.
const WHAT: &str = "signing key";
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Issuer and audience of every token this server signs and accepts.
pub const ISSUER: &str = "plinth";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "plinth";
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// The `typ` claim of access tokens; refresh tokens are opaque and never JWTs.
const ACCESS: &str = "access";

/// The claims of an access token. Typed fields reject claims of the wrong JSON type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Token kind: always `access`.
    pub typ: String,
    /// The account's session generation when the token was issued (absent in tokens issued
    /// before generations existed: 0).
    #[serde(default)]
    pub generation: u64,
}

/// A stored signing key.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// Hex Ed25519 seed. Lives only in the store (which holds the data it protects anyway).
    seed: String,
    created_at: u64,
    /// When a newer key replaced it; it keeps verifying until tokens it signed have expired.
    #[serde(default)]
    retired_at: Option<u64>,
}

struct Key {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The raw public key (what an attacker could know).
    #[cfg(test)]
    public: Vec<u8>,
}

struct KeyRing {
    current: String,
    keys: HashMap<String, Key>,
}

/// Signs and verifies access tokens.
pub struct Tokens {
    ring: RwLock<KeyRing>,
    access_ttl: Duration,
    /// Tokens whose signature and claims were checked, so a client's next request with the
    /// same token skips the Ed25519 check (the costly part of a guarded request). Keyed by the
    /// signature segment (short, and unforgeable), and a hit must match the whole token text.
    /// An entry is trusted only while its `exp` (plus leeway) is ahead and its key still
    /// verifies; at most [`VERIFIED_CACHE`] entries.
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

/// Most tokens remembered as verified (a few MiB at most).
const VERIFIED_CACHE: usize = 10_000;

/// What a verified token said.
struct Verified {
    token: Box<str>,
    sub: String,
    exp: u64,
    generation: u64,
    kid: String,
}

/// What a valid access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The user id (`sub`).
    pub user_id: String,
    /// The account's session generation it was issued in.
    pub generation: u64,
}

fn key_from_seed(seed: &[u8; 32]) -> Result<Key, StoreError> {
    let signing = SigningKey::from_bytes(seed);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| StoreError::corrupt(WHAT, e))?;
    Ok(Key {
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding: DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
        #[cfg(test)]
        public: signing.verifying_key().as_bytes().to_vec(),
    })
}

fn new_stored_key() -> StoredKey {
    StoredKey {
        kid: hex::encode(rand::random::<[u8; 8]>()),
        seed: hex::encode(rand::random::<[u8; 32]>()),
        created_at: now_secs(),
        retired_at: None,
    }
}

fn encode_stored(stored: &StoredKey) -> Result<Vec<u8>, StoreError> {
    to_json(WHAT, stored)
}

/// Every stored signing key, by key id.
async fn stored_keys(store: &dyn Store) -> Result<Entries, StoreError> {
    store.scan(Space::SigningKeys, b"", None, usize::MAX).await
}

fn decode_stored(bytes: &[u8]) -> Result<(StoredKey, Key), StoreError> {
    let stored: StoredKey = from_json(WHAT, bytes)?;
    let seed = hex::decode(&stored.seed)
        .ok()
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| StoreError::corrupt(WHAT, "the seed is not 32 hex bytes"))?;
    let key = key_from_seed(&seed)?;
    Ok((stored, key))
}

impl Tokens {
    /// Tokens signed with one new key that lives only in memory (tests and fuzzing).
    pub fn ephemeral(access_ttl: Duration) -> Result<Self, String> {
        let stored = new_stored_key();
        let seed: [u8; 32] = hex::decode(&stored.seed)
            .ok()
            .and_then(|seed| seed.try_into().ok())
            .ok_or("a new key's seed is not 32 bytes")?;
        let key = key_from_seed(&seed).map_err(|e| e.to_string())?;
        Ok(Tokens {
            ring: RwLock::new(KeyRing {
                current: stored.kid.clone(),
                keys: HashMap::from([(stored.kid, key)]),
            }),
            access_ttl,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Loads the signing keys, creating the first one on a fresh store and dropping retired
    /// keys whose tokens have all expired.
    pub async fn load(store: &dyn Store, access_ttl: Duration) -> Result<Self, StoreError> {
        let tokens = Self {
            ring: RwLock::new(KeyRing {
                current: String::new(),
                keys: HashMap::new(),
            }),
            access_ttl,
            verified: Mutex::new(HashMap::new()),
        };
        if store
            .scan(Space::SigningKeys, b"", None, 1)
            .await?
            .is_empty()
        {
            let stored = new_stored_key();
            store
                .commit(vec![Op::Put {
                    space: Space::SigningKeys,
                    key: stored.kid.clone().into_bytes(),
                    value: encode_stored(&stored)?,
                }])
                .await?;
        }
        tokens.reload(store).await?;
        Ok(tokens)
    }

    /// Rebuilds the key ring from the store, deleting keys retired for longer than a token
    /// lives. The store is read (and pruned) first; only then is the ring locked, to swap the
    /// new one in whole, so no lock is held across an await and no reader sees half a ring.
    pub(super) async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let horizon = self.access_ttl.as_secs() + LEEWAY_SECS;
        let mut keys = HashMap::new();
        let mut newest: Option<(u64, String)> = None;
        for (id, bytes) in stored_keys(store).await? {
            let (stored, key) = decode_stored(&bytes)?;
            if stored.retired_at.is_some_and(|t| t + horizon < now_secs()) {
                store
                    .commit(vec![Op::Delete {
                        space: Space::SigningKeys,
                        key: id,
                    }])
                    .await?;
                continue;
            }
            if stored.retired_at.is_none()
                && newest.as_ref().is_none_or(|(t, _)| stored.created_at >= *t)
            {
                newest = Some((stored.created_at, stored.kid.clone()));
            }
            keys.insert(stored.kid, key);
        }
        let current = newest.map(|(_, kid)| kid).unwrap_or_default();
        let mut ring = self
            .ring
            .write()
            .map_err(|_| StoreError::corrupt(WHAT, "key ring lock poisoned"))?;
        *ring = KeyRing { current, keys };
        Ok(())
    }

    /// Adds a new signing key and makes it current; the previous key keeps verifying until the
    /// tokens it signed have expired. Audited when an operator asked (`by`). Returns the new
    /// key id.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        by: Option<&crate::audit::Actor>,
    ) -> Result<String, StoreError> {
        let mut ops = Vec::new();
        for (id, bytes) in stored_keys(store).await? {
            let (mut stored, _) = decode_stored(&bytes)?;
            if stored.retired_at.is_none() {
                stored.retired_at = Some(now_secs());
                ops.push(Op::Put {
                    space: Space::SigningKeys,
                    key: id,
                    value: encode_stored(&stored)?,
                });
            }
        }
        let fresh = new_stored_key();
        ops.push(Op::Put {
            space: Space::SigningKeys,
            key: fresh.kid.clone().into_bytes(),
            value: encode_stored(&fresh)?,
        });
        let audit =
            by.map(|by| by.records("signing_key.rotate", &fresh.kid, serde_json::json!({})));
        if let Some(entry) = &audit {
            ops.push(entry.op()?);
        }
        store.commit(ops).await?;
        if let Some(entry) = audit {
            entry.committed();
        }
        self.reload(store).await?;
        Ok(fresh.kid)
    }

    /// The key ids that currently verify, the signing one first.
    pub fn key_ids(&self) -> Vec<String> {
        let Ok(ring) = self.ring.read() else {
            return Vec::new();
        };
        let mut ids: Vec<String> = ring
            .keys
            .keys()
            .filter(|k| **k != ring.current)
            .cloned()
            .collect();
        ids.sort();
        ids.insert(0, ring.current.clone());
        ids
    }

    /// How long access tokens live.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Signs an access token for `user_id`, of session generation `generation`, with the
    /// current key.
    pub fn issue(&self, user_id: &str, generation: u64) -> Result<String, String> {
        let ring = self
            .ring
            .read()
            .map_err(|_| "key ring poisoned".to_string())?;
        let key = ring
            .keys
            .get(&ring.current)
            .ok_or("no current signing key")?;
        let iat = now_secs();
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id.into(),
            exp: iat + self.access_ttl.as_secs(),
            nbf: iat,
            iat,
            typ: ACCESS.into(),
            generation,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(ring.current.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| e.to_string())
    }

    /// Verifies an access token; returns whose it is and when it was issued. Any flaw gives
    /// `None`.
    pub fn verify(&self, token: &str) -> Option<AccessToken> {
        let (_, signature) = token.rsplit_once('.')?;
        {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = verified.get(signature)
                && *hit.token == *token
                && now_secs() <= hit.exp + LEEWAY_SECS
                && self
                    .ring
                    .read()
                    .is_ok_and(|ring| ring.keys.contains_key(&hit.kid))
            {
                return Some(AccessToken {
                    user_id: hit.sub.clone(),
                    generation: hit.generation,
                });
            }
        }
        let (sub, exp, generation, kid) = self.verify_signed(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CACHE {
            let now = now_secs();
            verified.retain(|_, v| now <= v.exp + LEEWAY_SECS);
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
        }
        verified.insert(
            signature.into(),
            Verified {
                token: token.into(),
                sub: sub.clone(),
                exp,
                generation,
                kid,
            },
        );
        Some(AccessToken {
            user_id: sub,
            generation,
        })
    }

    /// The full check: header, key, signature and claims. Returns subject, expiry, session
    /// generation and key id.
    fn verify_signed(&self, token: &str) -> Option<(String, u64, u64, String)> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::EdDSA {
            return None;
        }
        let kid = header.kid?;
        let ring = self.ring.read().ok()?;
        let key = ring.keys.get(&kid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation).ok()?;
        let claims = data.claims;
        (claims.typ == ACCESS).then_some((claims.sub, claims.exp, claims.generation, kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SledStore};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn tokens() -> Tokens {
        Tokens::ephemeral(Duration::from_secs(900)).unwrap()
    }

    #[test]
    fn a_remembered_token_stops_verifying_when_it_expires_or_its_key_goes() {
        let tokens = tokens();
        let token = tokens.issue("user-1", 0).unwrap();
        assert_eq!(
            tokens.verify(&token).map(|t| t.user_id).as_deref(),
            Some("user-1")
        );
        // Served from the cache the second time.
        assert_eq!(
            tokens.verify(&token).map(|t| t.user_id).as_deref(),
            Some("user-1")
        );
        assert_eq!(tokens.verified.lock().unwrap().len(), 1);
        // Another token carrying the same signature gets the full check, not the cached answer.
        let (header, mut claims) = parts(&token);
        claims["sub"] = "user-2".into();
        assert_eq!(tokens.verify(&reencode(&token, header, claims)), None);
        // An expired entry is not trusted (and the token itself fails the full check).
        let signature = token.rsplit_once('.').unwrap().1;
        tokens
            .verified
            .lock()
            .unwrap()
            .get_mut(signature)
            .unwrap()
            .exp = 0;
        assert_eq!(
            tokens.verify(&token).map(|t| t.user_id).as_deref(),
            Some("user-1")
        );
        // Once its key no longer verifies, neither does a remembered token.
        tokens.ring.write().unwrap().keys.clear();
        assert_eq!(tokens.verify(&token), None);
        // A tampered token is never served from the cache of the genuine one.
        let mut forged = token.clone();
        forged.push('x');
        assert_eq!(tokens.verify(&forged), None);
    }

    fn reencode(token: &str, header: serde_json::Value, claims: serde_json::Value) -> String {
        let signature = token.rsplit('.').next().unwrap();
        format!(
            "{}.{}.{signature}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    fn parts(token: &str) -> (serde_json::Value, serde_json::Value) {
        let mut it = token.split('.');
        let h = B64.decode(it.next().unwrap()).unwrap();
        let c = B64.decode(it.next().unwrap()).unwrap();
        (
            serde_json::from_slice(&h).unwrap(),
            serde_json::from_slice(&c).unwrap(),
        )
    }

    #[test]
    fn issued_tokens_verify_and_forgeries_do_not() {
        let t = tokens();
        let token = t.issue("user-1", 0).unwrap();
        assert_eq!(
            t.verify(&token).map(|t| t.user_id).as_deref(),
            Some("user-1")
        );
        let (header, claims) = parts(&token);
        assert_eq!(header["alg"], "EdDSA");
        assert!(header["kid"].is_string());

        // alg: none, unsigned.
        let mut none = header.clone();
        none["alg"] = "none".into();
        let unsigned = format!(
            "{}.{}.",
            B64.encode(none.to_string()),
            B64.encode(claims.to_string())
        );
        assert_eq!(t.verify(&unsigned), None);
        // Tampered payload.
        let mut other = claims.clone();
        other["sub"] = "admin".into();
        assert_eq!(t.verify(&reencode(&token, header.clone(), other)), None);
        // Wrong JSON type for exp.
        let mut stringly = claims.clone();
        stringly["exp"] = "99999999999".into();
        assert_eq!(t.verify(&reencode(&token, header.clone(), stringly)), None);
        // Unknown kid.
        let mut unknown = header.clone();
        unknown["kid"] = "nope".into();
        assert_eq!(t.verify(&reencode(&token, unknown, claims.clone())), None);
        // Another server's key.
        let foreign = tokens().issue("user-1", 0).unwrap();
        assert_eq!(t.verify(&foreign), None);
        // HS256 "signed" with public material.
        let mut hs = header.clone();
        hs["alg"] = "HS256".into();
        assert_eq!(t.verify(&reencode(&token, hs, claims)), None);
        // HS256 correctly signed with the public key as the HMAC secret (algorithm confusion).
        let public = {
            let ring = t.ring.read().unwrap();
            let key = ring.keys.get(&ring.current).unwrap();
            key.public.clone()
        };
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = header["kid"].as_str().map(str::to_string);
        let parsed: AccessClaims = serde_json::from_value(parts(&token).1).unwrap();
        let confused =
            jsonwebtoken::encode(&hs_header, &parsed, &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(t.verify(&confused), None);
        assert_eq!(t.verify("garbage"), None);
    }

    #[tokio::test]
    async fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let dir = std::env::temp_dir().join(format!("plinth-tokens-{}", rand::random::<u64>()));
        let store = SledStore::open(&dir, Durability::Durable).await.unwrap();
        let ttl = Duration::from_secs(900);
        let t = Tokens::load(&store, ttl).await.unwrap();
        let old = t.issue("u", 0).unwrap();
        let first = t.key_ids()[0].clone();
        let kid = t.rotate(&store, None).await.unwrap();
        assert_ne!(kid, first);
        assert_eq!(t.key_ids(), vec![kid.clone(), first.clone()]);
        assert_eq!(t.verify(&old).map(|t| t.user_id).as_deref(), Some("u"));
        let new = t.issue("u", 0).unwrap();
        assert_eq!(parts(&new).0["kid"], kid.as_str());
        // A restart sees the same keys, with the new one current.
        let reloaded = Tokens::load(&store, ttl).await.unwrap();
        assert_eq!(reloaded.key_ids(), vec![kid, first]);
        assert_eq!(
            reloaded.verify(&old).map(|t| t.user_id).as_deref(),
            Some("u")
        );
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expired_tokens_are_refused() {
        let mut t = tokens();
        t.access_ttl = Duration::from_secs(0);
        // exp = now; with the leeway it is still valid, so forge an older exp and re-sign.
        let ring = t.ring.read().unwrap();
        let key = ring.keys.get(&ring.current).unwrap();
        let old = now_secs() - 3600;
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "u".into(),
            exp: old,
            nbf: old - 10,
            iat: old - 10,
            typ: ACCESS.into(),
            generation: 0,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(ring.current.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        drop(ring);
        assert_eq!(t.verify(&token), None);
        // Not yet valid.
        let future = now_secs() + 3600;
        let ring = t.ring.read().unwrap();
        let key = ring.keys.get(&ring.current).unwrap();
        let claims = AccessClaims {
            exp: future + 60,
            nbf: future,
            iat: future,
            ..claims
        };
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        drop(ring);
        assert_eq!(t.verify(&token), None);
    }
}
