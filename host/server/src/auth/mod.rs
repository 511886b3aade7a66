//! Who is calling, and what they may do: accounts (argon2id), access JWTs (EdDSA), rotating
//! refresh tokens, roles, the break-glass admin token, and the auth policy a route demands.
//!
//! **Boundary:** this is the one auth seam. The API asks [`Auth`] and never looks at tokens or
//! password hashes itself.
//!
//! **Invariant:** no secret is stored or logged in clear: passwords as argon2id hashes, refresh
//! tokens and the admin token as SHA-256 digests.

pub mod accounts;
mod admin_token;
pub mod api_keys;
mod invites;
pub mod manage;
mod passwords;
pub mod sessions;
mod shared_throttle;
pub mod throttle;
pub mod tokens;
pub(crate) mod web_cookie;
mod web_sessions;
pub(crate) use invites::prune as prune_invites;
pub(crate) use shared_throttle::prune as prune_throttles;
pub(crate) use web_sessions::prune as prune_web_sessions;
pub use web_sessions::{WEB_SESSION_TTL, WebSession};

pub use accounts::{CredentialError, User};
pub use passwords::PasswordParams;

use crate::audit::Actor;
use crate::store::{Op, Store, StoreError};
use crate::units::{now_ms, rfc3339};
pub use accounts::{ROLE_ADMIN, ROLE_OPERATOR};
use admin_token::AdminToken;
use api_keys::{ApiKey, KeyHasher};
use passwords::{HashError, Passwords};
use serde::{Deserialize, Serialize};
use sessions::Refreshed;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use throttle::{RateLimit, Throttle};
use tokens::Tokens;

/// Why a caller was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` credential was sent.
    #[error("this endpoint needs `Authorization: Bearer <token>`")]
    Missing,
    /// A credential was sent but is not valid (or its account is disabled or gone).
    #[error("the bearer token is not valid")]
    Invalid,
    /// The caller is authenticated but lacks the role.
    #[error("this needs the role `{0}`")]
    Forbidden(String),
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The email or password breaks the rules.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// Another account has this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email or wrong password (deliberately indistinguishable).
    #[error("the email or password is wrong")]
    BadCredentials,
    /// Registration is closed on this server.
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// The refresh token is unknown, expired, revoked or was already used.
    #[error("the refresh token is not valid; log in again")]
    InvalidRefreshToken,
    /// The caller is the admin token, not an account.
    #[error("this needs a user account, not the admin token or an API key")]
    NotAnAccount,
    /// No account has this id.
    #[error("no user with id {0:?}")]
    UserNotFound(String),
    /// The setup token is wrong, already used, or an account exists already.
    #[error("the setup token is not valid (it works once, and only before any account exists)")]
    InvalidSetupToken,
    /// Registration needs an invitation on this server.
    #[error("registration on this server needs an invitation (`invite` in the request)")]
    InviteRequired,
    /// The invitation is unknown, used, expired, or bound to another email.
    #[error("the invitation is not valid")]
    InvalidInvite,
    /// An API key's name is empty or too long.
    #[error("`name` must be 1-200 characters")]
    InvalidKeyName,
    /// No pending invitation has this id.
    #[error("no pending invitation with id {0:?}")]
    InviteNotFound(String),
    /// No API key has this id.
    #[error("no API key with id {0:?}")]
    ApiKeyNotFound(String),
    /// A role name is not valid.
    #[error("invalid role {0:?}: use 1-64 letters, digits, `-` or `_`")]
    InvalidRole(String),
    /// An admin tried to disable, delete or demote their own account.
    #[error("you cannot disable, delete or remove the admin role from your own account")]
    SelfModification,
    /// Too many credential requests from this address.
    #[error("too many requests from this address; retry in {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Too many failed logins for this account; it is slowed down for a while.
    #[error("too many failed logins for this account; retry in {retry_after} s")]
    AccountThrottled {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Password hashing is saturated.
    #[error("the server is busy; try again")]
    Busy,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<HashError> for AccountError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => AccountError::Busy,
            HashError::Internal(m) => AccountError::Internal(m),
        }
    }
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

/// Checks a role name: letters, digits, `-` and `_`, 1–64 characters.
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl FromStr for AuthPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "user" => Ok(Self::User),
            other => match other.strip_prefix("role:") {
                Some(role) if valid_role(role) => Ok(Self::Role(role.to_string())),
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

/// Who the caller is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in account (its current record, read on every request).
    User(Arc<User>),
    /// An API key, with its one role.
    ApiKey(ApiKey),
    /// The holder of the break-glass admin token: has every role, but is not an account.
    AdminToken,
}

impl Principal {
    /// The caller as the audit log names them, with the address they called from.
    pub fn actor(&self, address: Option<std::net::SocketAddr>) -> Actor {
        let who = match self {
            Principal::User(user) => format!("user:{} ({})", user.id, user.email),
            Principal::ApiKey(key) => format!("api-key:{} ({})", key.id, key.name),
            Principal::AdminToken => "admin-token".to_string(),
        };
        Actor {
            who,
            address: address.map(|a| a.ip().to_string()),
        }
    }

    /// Whether the caller holds `role` (admins hold every role).
    pub fn has_role(&self, role: &str) -> bool {
        match self {
            Principal::User(user) => user.has_role(role),
            Principal::ApiKey(key) => key.role == role || key.role == ROLE_ADMIN,
            Principal::AdminToken => true,
        }
    }
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may `POST /auth/register`.
    #[default]
    Open,
    /// Only admins create accounts.
    Closed,
    /// Registration needs an invitation code from an admin.
    Invite,
}

/// Auth settings from the server config.
#[derive(Clone)]
pub struct AuthSettings {
    /// Who may register.
    pub registration: Registration,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// argon2id cost.
    pub password_params: PasswordParams,
    /// Break-glass token from `PLINTH_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// First admin account, from `PLINTH_ADMIN_EMAIL` / `PLINTH_ADMIN_PASSWORD`.
    pub admin_account: Option<(String, String)>,
    /// Per-IP limit on the credential endpoints.
    pub rate_limit: RateLimit,
}

impl fmt::Debug for AuthSettings {
    // Hand-written so secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("registration", &self.registration)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("password_params", &self.password_params)
            .field("rate_limit", &self.rate_limit)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "(set)"))
            .field(
                "admin_account",
                &self.admin_account.as_ref().map(|(email, _)| email),
            )
            .finish()
    }
}

/// An account as its owner and admins see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserInfo {
    /// The account's id (32 hex digits), as `/admin/users/{id}` takes it.
    pub id: String,
    /// The sign-in email, normalised (trimmed, lower case).
    pub email: String,
    /// Every role it holds; `user` always, `operator` and `admin` as granted.
    pub roles: Vec<String>,
    /// Disabled?
    pub disabled: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<&User> for UserInfo {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.clone(),
            email: user.email.clone(),
            roles: user.roles.clone(),
            disabled: user.disabled,
            created_at: rfc3339(user.created_at_ms),
        }
    }
}

/// An API key as admins see it (never the key itself, except once at creation).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    /// The key's id (not the key), as `/admin/api-keys/{id}` takes it.
    pub id: String,
    /// The label given at creation, e.g. `ci deploys`.
    pub name: String,
    /// The one role the key carries: `user`, `operator` or `admin`.
    pub role: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<String>,
    /// Last use (RFC 3339, updated at most once a minute), if any.
    pub last_used_at: Option<String>,
}

impl From<&ApiKey> for ApiKeyInfo {
    fn from(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            role: key.role.clone(),
            created_at: rfc3339(key.created_at_ms),
            expires_at: key.expires_at_ms.map(rfc3339),
            last_used_at: key.last_used_at_ms.map(rfc3339),
        }
    }
}

/// A newly created API key: the key text appears here and nowhere else, ever.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewApiKey {
    /// The key, to be sent as `Authorization: Bearer <key>`.
    pub key: String,
    /// Everything else about the key, as listings show it.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
}

/// A newly created invitation: the code appears here and nowhere else, ever.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewInvite {
    /// The code to pass as `invite` to `POST /auth/register`.
    pub invite: String,
    /// The invitation's id, for listing and revoking it (not the code).
    pub id: String,
    /// The only email that may use it, if bound.
    pub email: Option<String>,
    /// Expiry (RFC 3339).
    pub expires_at: String,
}

/// Longest API key name, in bytes.
const MAX_KEY_NAME: usize = 200;

/// A pending invitation as listings show it (never its code).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InviteInfo {
    /// The invitation's id, as `DELETE /admin/invites/{id}` takes it.
    pub id: String,
    /// The only email that may use it, if bound.
    pub email: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
}

/// What login and refresh return.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    /// The access JWT.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The opaque refresh token (single use).
    pub refresh_token: String,
    /// The account signed in.
    pub user: UserInfo,
}

/// What [`Auth::bootstrap`] produced.
pub struct Bootstrap {
    /// The auth state to serve with.
    pub auth: Auth,
    /// A newly generated admin token to show the operator once.
    pub generated_token: Option<String>,
    /// A one-time setup token for `POST /auth/setup`, to show the operator once.
    pub setup_token: Option<String>,
}

const SETUP_TOKEN_KEY: &str = "setup_token_sha256";

/// The SHA-256 of a token: how every unkeyed secret (admin, setup, refresh, invitation) is
/// stored and looked up.
fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// Accounts, sessions and credentials.
pub struct Auth {
    store: Arc<dyn Store>,
    admin_token: AdminToken,
    api_keys: Arc<KeyHasher>,
    passwords: Passwords,
    tokens: Arc<Tokens>,
    /// The accounts behind access tokens, parsed once per stored version.
    parsed_accounts: accounts::ParsedAccounts,
    throttle: Throttle,
    /// The throttles' cluster-wide count, where other hosts share the store.
    shared: Option<shared_throttle::SharedThrottle>,
    /// Held through a `POST /auth/setup`, so two cannot both spend the one setup token.
    setup: tokio::sync::Mutex<()>,
    settings: AuthSettings,
}

/// The session generation after `current` ends: every access token and login family of the
/// earlier generations is refused from now on.
fn next_generation(current: u64) -> u64 {
    current.wrapping_add(1)
}

/// Extracts the token from an `Authorization` header value of the form `Bearer <token>`.
pub(crate) fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token.trim())
}

impl Auth {
    /// Loads or creates everything auth needs: the admin token, the signing keys, and (on a
    /// store without accounts) the first admin account from the settings.
    pub async fn bootstrap(
        store: Arc<dyn Store>,
        settings: AuthSettings,
    ) -> Result<Bootstrap, AccountError> {
        let (admin_token, generated_token) =
            AdminToken::bootstrap(&*store, settings.admin_token.as_deref()).await?;
        let tokens = Arc::new(Tokens::load(&*store, settings.access_ttl).await?);
        // CPU work (it computes the dummy hash), so on the blocking pool.
        let params = settings.password_params;
        let passwords = tokio::task::spawn_blocking(move || Passwords::new(params))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))??;
        let api_keys = Arc::new(KeyHasher::load(&*store).await?);
        // Where other hosts share the store, they share the throttles' counts too.
        let shared = store
            .changes()
            .is_some()
            .then(|| shared_throttle::SharedThrottle::new(store.clone(), settings.rate_limit));
        let auth = Auth {
            store,
            admin_token,
            api_keys,
            passwords,
            tokens,
            parsed_accounts: accounts::ParsedAccounts::default(),
            throttle: Throttle::new(settings.rate_limit),
            shared,
            setup: tokio::sync::Mutex::new(()),
            settings,
        };
        let mut setup_token = None;
        if let Some((email, password)) = auth.settings.admin_account.clone() {
            if !accounts::any(&*auth.store).await? {
                let user = auth.create_user(&email, password, &[ROLE_ADMIN]).await?;
                tracing::info!(email = user.email, "created the first admin account");
            }
        } else if auth.store.was_empty_at_open() {
            // No admin account configured on a fresh data dir: hand out a one-time token that
            // `POST /auth/setup` exchanges for the first admin account.
            // Hosts starting together on one empty store: the first token stored holds, and
            // only the host that stored it prints it.
            let token = format!("plinth_setup_{}", hex::encode(rand::random::<[u8; 24]>()));
            let digest = sha256(&token).to_vec();
            if auth
                .store
                .init_meta(SETUP_TOKEN_KEY, digest.clone())
                .await?
                == digest
            {
                setup_token = Some(token);
            }
        }
        Ok(Bootstrap {
            auth,
            generated_token,
            setup_token,
        })
    }

    /// Authenticates a caller from its `Authorization` header value: an API key, an access
    /// JWT of an enabled account, or the admin token.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer(authorization)?;
        let store = &*self.store;
        if token.starts_with(api_keys::PREFIX) {
            return match self.api_keys.check(store, token, now_ms()).await {
                Ok(Some((key, touch))) => {
                    if let Some(ops) = touch {
                        self.record_key_use(ops);
                    }
                    Ok(Principal::ApiKey(key))
                }
                Ok(None) => Err(AuthError::Invalid),
                Err(e) => {
                    tracing::error!(error = %e, "reading an API key failed");
                    Err(AuthError::Invalid)
                }
            };
        }
        if let Some(access) = self.tokens.verify(token) {
            // Read the account on every request: disabling or deleting it, changing its roles,
            // or ending its sessions takes effect at once rather than when the token expires.
            return match self.parsed_accounts.get(store, &access.user_id).await {
                Ok(Some(user)) if !user.disabled && access.generation == user.token_generation => {
                    Ok(Principal::User(user))
                }
                Ok(_) => Err(AuthError::Invalid),
                Err(e) => {
                    tracing::error!(error = %e, "reading an account failed");
                    Err(AuthError::Invalid)
                }
            };
        }
        if self.admin_token.matches(token) {
            return Ok(Principal::AdminToken);
        }
        Err(AuthError::Invalid)
    }

    /// Records an API key's use without holding up the request: the commit waits for the disk,
    /// so it runs in a task of its own. Must be called within a tokio runtime (as every caller
    /// of [`Auth::authenticate`] is).
    fn record_key_use(&self, ops: Vec<Op>) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.commit(ops).await {
                tracing::warn!(error = %e, "recording an API key's use failed");
            }
        });
    }

    /// Admits callers holding `role` (admins hold every role). The `/admin/*` API uses
    /// `operator` for plugins and `admin` for users and keys.
    pub async fn require(
        &self,
        role: &str,
        authorization: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let principal = self.authenticate(authorization).await?;
        if principal.has_role(role) {
            Ok(principal)
        } else {
            Err(AuthError::Forbidden(role.into()))
        }
    }

    /// Admits a caller to a plugin route under its policy. On a public route a valid credential
    /// still identifies the caller, and a missing or bad one just means anonymous.
    pub async fn authorize(
        &self,
        policy: &AuthPolicy,
        authorization: Option<&str>,
    ) -> Result<Option<Principal>, AuthError> {
        match policy {
            AuthPolicy::Public => Ok(self.authenticate(authorization).await.ok()),
            AuthPolicy::User => self.authenticate(authorization).await.map(Some),
            AuthPolicy::Role(role) => {
                let principal = self.authenticate(authorization).await?;
                if principal.has_role(role) {
                    Ok(Some(principal))
                } else {
                    Err(AuthError::Forbidden(role.clone()))
                }
            }
        }
    }

    async fn create_user(
        &self,
        email: &str,
        password: String,
        extra_roles: &[&str],
    ) -> Result<User, AccountError> {
        self.create_user_with(email, password, extra_roles, Vec::new(), None)
            .await
    }

    /// Creates an account, applying `extra` ops atomically with it (e.g. consuming an invite),
    /// and, when an operator made it (`audit`: who and the action), its audit entry.
    async fn create_user_with(
        &self,
        email: &str,
        password: String,
        extra_roles: &[&str],
        mut extra: Vec<Op>,
        audit: Option<(&Actor, &str)>,
    ) -> Result<User, AccountError> {
        let email = accounts::normalize_email(email)?;
        accounts::check_password(&password)?;
        let hash = self.passwords.hash(password).await?;
        let user = User::new(email, hash, extra_roles, now_ms());
        let audit = audit.map(|(by, action)| {
            by.records(
                action,
                &user.id,
                serde_json::json!({ "email": user.email, "roles": user.roles }),
            )
        });
        if let Some(entry) = &audit {
            extra.push(entry.op()?);
        }
        if accounts::insert(&*self.store, &user, extra).await? {
            if let Some(entry) = audit {
                entry.committed();
            }
            Ok(user)
        } else {
            Err(AccountError::EmailTaken)
        }
    }

    /// `POST /auth/setup`: exchanges the one-time setup token for the first admin account.
    /// Works once, and only while no account exists. Audited as done by the setup token from
    /// `address`.
    pub async fn setup(
        &self,
        setup_token: &str,
        email: &str,
        password: String,
        address: std::net::SocketAddr,
    ) -> Result<UserInfo, AccountError> {
        // One setup at a time: the token is checked, the account made and the token spent
        // before another request may check it.
        let _setup = self.setup.lock().await;
        let digest = sha256(setup_token);
        let stored = self.store.meta(SETUP_TOKEN_KEY).await?.unwrap_or_default();
        let matches = !stored.is_empty()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                stored.as_slice(),
                digest.as_slice(),
            ));
        let valid = matches && !accounts::any(&*self.store).await?;
        if !valid {
            return Err(AccountError::InvalidSetupToken);
        }
        let by = Actor {
            who: "setup-token".into(),
            address: Some(address.ip().to_string()),
        };
        let user = self
            .create_user_with(
                email,
                password,
                &[ROLE_ADMIN],
                Vec::new(),
                Some((&by, "auth.setup")),
            )
            .await?;
        self.store.set_meta(SETUP_TOKEN_KEY, Vec::new()).await?;
        tracing::info!(
            email = user.email,
            "created the first admin account with the setup token"
        );
        Ok(UserInfo::from(&user))
    }

    /// `POST /auth/register`: creates a `user` account when registration is open, or with a
    /// valid invitation when it is invite-only.
    pub async fn register(
        &self,
        email: &str,
        password: String,
        invite: Option<String>,
    ) -> Result<UserInfo, AccountError> {
        let consume = match self.settings.registration {
            Registration::Closed => return Err(AccountError::RegistrationClosed),
            Registration::Open => Vec::new(),
            Registration::Invite => {
                let code = invite.ok_or(AccountError::InviteRequired)?;
                let normalized = accounts::normalize_email(email)?;
                let found = invites::find(&*self.store, &code, now_ms())
                    .await?
                    .ok_or(AccountError::InvalidInvite)?;
                if found
                    .invite
                    .email
                    .as_ref()
                    .is_some_and(|bound| *bound != normalized)
                {
                    return Err(AccountError::InvalidInvite);
                }
                found.consume
            }
        };
        let invited = !consume.is_empty();
        match self
            .create_user_with(email, password, &[], consume, None)
            .await
        {
            // With an invite, a failed commit is either a taken email or a used invitation.
            Err(AccountError::EmailTaken) if invited => {
                let email = accounts::normalize_email(email)?;
                let taken = accounts::by_email(&*self.store, &email).await?.is_some();
                Err(if taken {
                    AccountError::EmailTaken
                } else {
                    AccountError::InvalidInvite
                })
            }
            result => result.map(|user| UserInfo::from(&user)),
        }
    }

    /// Creates a single-use invitation, optionally bound to one email, valid for `ttl`.
    pub async fn create_invite(
        &self,
        email: Option<String>,
        ttl: Duration,
        by: &Actor,
    ) -> Result<NewInvite, AccountError> {
        let email = email.map(|e| accounts::normalize_email(&e)).transpose()?;
        let ttl_ms = ttl.as_millis() as u64;
        let (code, invite) = invites::create(&*self.store, email, ttl_ms, now_ms(), by).await?;
        Ok(NewInvite {
            invite: code,
            id: invite.id,
            email: invite.email,
            expires_at: rfc3339(invite.expires_at_ms),
        })
    }

    /// The invitations not yet used or expired, soonest to expire first (never their codes).
    pub async fn list_invites(&self) -> Result<Vec<InviteInfo>, AccountError> {
        let pending = invites::pending(&*self.store, now_ms()).await?;
        Ok(pending
            .into_iter()
            .map(|invite| InviteInfo {
                id: invite.id,
                email: invite.email,
                created_at: rfc3339(invite.created_at_ms),
                expires_at: rfc3339(invite.expires_at_ms),
            })
            .collect())
    }

    /// Revokes an invitation not yet used.
    pub async fn revoke_invite(&self, id: String, by: &Actor) -> Result<(), AccountError> {
        if invites::revoke(&*self.store, &id, by).await? {
            Ok(())
        } else {
            Err(AccountError::InviteNotFound(id))
        }
    }

    async fn start_session(&self, user: &User) -> Result<Session, AccountError> {
        let generation = user.token_generation;
        let ttl = self.settings.refresh_ttl.as_millis() as u64;
        // The family carries the generation the account had when the password was checked: if
        // a password change or logout everywhere came in meanwhile, it is born ended.
        let refresh_token =
            sessions::start(&*self.store, &user.id, generation, ttl, now_ms()).await?;
        self.session(user, refresh_token)
    }

    fn session(&self, user: &User, refresh_token: String) -> Result<Session, AccountError> {
        Ok(Session {
            access_token: self
                .tokens
                .issue(&user.id, user.token_generation)
                .map_err(AccountError::Internal)?,
            token_type: "Bearer".into(),
            expires_in: self.tokens.access_ttl().as_secs(),
            refresh_token,
            user: UserInfo::from(user),
        })
    }

    /// Admits one request to a credential endpoint from `ip` (per-IP rate limit, on this host
    /// and, where hosts share the store, across them).
    pub async fn check_ip(&self, ip: std::net::IpAddr) -> Result<(), AccountError> {
        self.throttle
            .check_ip(ip)
            .map_err(|retry_after| AccountError::RateLimited { retry_after })?;
        if let Some(shared) = &self.shared
            && let Err(retry_after) = shared.check_ip(ip).await?
        {
            return Err(AccountError::RateLimited { retry_after });
        }
        Ok(())
    }

    /// Refuses a credential check of `key` while the account is slowed down on any host.
    async fn shared_lockout(&self, key: &str) -> Result<(), AccountError> {
        if let Some(shared) = &self.shared
            && let Some(retry_after) = shared.blocked(key).await?
        {
            return Err(AccountError::AccountThrottled { retry_after });
        }
        Ok(())
    }

    /// Tells the other hosts how a credential check of `key` ended (`ok`: the right one).
    async fn shared_outcome(&self, key: &str, ok: bool) {
        let Some(shared) = &self.shared else { return };
        let recorded = if ok {
            shared.succeeded(key).await
        } else {
            shared.failed(key).await
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording a login's outcome for the other hosts failed");
        }
    }

    /// `POST /auth/login`. Unknown emails and wrong passwords do the same work and give the
    /// same error; repeated failures slow the account down.
    pub async fn login(&self, email: &str, password: String) -> Result<Session, AccountError> {
        let user = self.verify_login(email, password).await?;
        self.start_session(&user).await
    }

    /// The account an email and password sign in to, under the login throttles (the API's
    /// login and the dashboard's sign-in both go through here).
    async fn verify_login(&self, email: &str, password: String) -> Result<User, AccountError> {
        let throttle_key = email.trim().to_lowercase();
        self.shared_lockout(&throttle_key).await?;
        let attempt = self
            .throttle
            .attempt(&throttle_key)
            .map_err(|retry_after| AccountError::AccountThrottled { retry_after })?;
        let result = self.login_checked(email, password).await;
        match &result {
            Ok(_) => {
                attempt.succeeded();
                self.shared_outcome(&throttle_key, true).await;
            }
            Err(AccountError::BadCredentials) => {
                attempt.failed();
                self.shared_outcome(&throttle_key, false).await;
            }
            Err(_) => drop(attempt),
        }
        result
    }

    async fn login_checked(&self, email: &str, password: String) -> Result<User, AccountError> {
        let user = match accounts::normalize_email(email) {
            Ok(email) => accounts::by_email(&*self.store, &email).await?,
            Err(_) => None,
        };
        let verified = self
            .passwords
            .verify(
                password.clone(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        let Some(user) = user.filter(|_| verified.ok) else {
            return Err(AccountError::BadCredentials);
        };
        if user.disabled {
            // The same answer as a wrong password: the right one must not confirm that a
            // disabled account exists and what its password is.
            return Err(AccountError::BadCredentials);
        }
        if verified.needs_rehash {
            self.rehash(user, password).await
        } else {
            Ok(user)
        }
    }

    /// Upgrades a stored hash to the configured parameters (best effort: a concurrent change
    /// to the account wins).
    async fn rehash(&self, user: User, password: String) -> Result<User, AccountError> {
        let hash = self.passwords.hash(password).await?;
        let next = User {
            password_hash: hash,
            ..user.clone()
        };
        let applied = accounts::update(&*self.store, &user, &next, Vec::new()).await?;
        Ok(if applied { next } else { user })
    }

    /// `POST /auth/refresh`: exchanges a refresh token for a new pair.
    pub async fn refresh(&self, refresh_token: String) -> Result<Session, AccountError> {
        let ttl = self.settings.refresh_ttl.as_millis() as u64;
        // The account is read once (by `rotate`): to check it may still refresh, and to answer
        // with it.
        let mut user = None;
        let ok = |account: Option<User>, generation: u64| {
            user = account.filter(|u| !u.disabled && u.token_generation == generation);
            user.is_some()
        };
        let refreshed = sessions::rotate(&*self.store, &refresh_token, ttl, now_ms(), ok).await?;
        match (refreshed, user) {
            (Refreshed::Rotated { token, .. }, Some(user)) => self.session(&user, token),
            _ => Err(AccountError::InvalidRefreshToken),
        }
    }

    /// `POST /auth/logout`: ends the refresh token's family. Unknown tokens are ignored.
    pub async fn logout(&self, refresh_token: String) -> Result<(), AccountError> {
        Ok(sessions::end(&*self.store, &refresh_token).await?)
    }

    /// Creates an API key carrying `role`, optionally expiring after `ttl`.
    pub async fn create_api_key(
        &self,
        name: String,
        role: String,
        ttl: Option<Duration>,
        by: &Actor,
    ) -> Result<NewApiKey, AccountError> {
        if name.trim().is_empty() || name.len() > MAX_KEY_NAME {
            return Err(AccountError::InvalidKeyName);
        }
        if !valid_role(&role) {
            return Err(AccountError::InvalidRole(role));
        }
        let now = now_ms();
        let expires = ttl.map(|t| now.saturating_add(t.as_millis() as u64));
        let (key, record) = self
            .api_keys
            .create(&*self.store, &name, &role, expires, now, by)
            .await?;
        Ok(NewApiKey {
            key,
            info: ApiKeyInfo::from(&record),
        })
    }

    /// Rotates the JWT signing key; returns the ids of the keys that now verify, the new
    /// (signing) one first.
    pub async fn rotate_signing_key(&self, by: &Actor) -> Result<Vec<String>, AccountError> {
        self.tokens.rotate(&*self.store, Some(by)).await?;
        Ok(self.tokens.key_ids())
    }

    /// Rereads the signing keys, after another host sharing the store rotated them.
    pub async fn reload_signing_keys(&self) -> Result<(), StoreError> {
        self.tokens.reload(&*self.store).await
    }

    /// The ids of the signing keys that verify, the signing one first.
    pub fn signing_key_ids(&self) -> Vec<String> {
        self.tokens.key_ids()
    }

    /// Every API key (without the keys).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, AccountError> {
        let keys = api_keys::list(&*self.store).await?;
        Ok(keys.iter().map(ApiKeyInfo::from).collect())
    }

    /// Revokes an API key at once.
    pub async fn revoke_api_key(&self, id: String, by: &Actor) -> Result<(), AccountError> {
        if api_keys::revoke(&*self.store, &id, by).await? {
            Ok(())
        } else {
            Err(AccountError::ApiKeyNotFound(id))
        }
    }

    /// `POST /auth/logout-everywhere`: ends every session of the calling account, its refresh
    /// tokens and its access tokens (this one included).
    pub async fn logout_everywhere(&self, principal: &Principal) -> Result<(), AccountError> {
        let Principal::User(user) = principal else {
            return Err(AccountError::NotAnAccount);
        };
        self.modify(
            &user.id,
            |u| {
                Ok(User {
                    token_generation: next_generation(u.token_generation),
                    ..u.clone()
                })
            },
            true,
            None,
        )
        .await
        .map(drop)
    }

    /// `POST /auth/password`: changes the caller's password and ends all their sessions.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: String,
        new: String,
    ) -> Result<(), AccountError> {
        let Principal::User(user) = principal else {
            return Err(AccountError::NotAnAccount);
        };
        accounts::check_password(&new)?;
        // The same throttle as logins: a stolen access token is not an unlimited oracle for
        // the account's password.
        // Its own key: an attacker's failed logins must not lock the signed-in owner out of
        // the way to change the password.
        let throttle_key = format!("password-change:{}", user.id);
        self.shared_lockout(&throttle_key).await?;
        let attempt = self
            .throttle
            .attempt(&throttle_key)
            .map_err(|retry_after| AccountError::AccountThrottled { retry_after })?;
        let verified = self
            .passwords
            .verify(current, Some(user.password_hash.clone()))
            .await?;
        if !verified.ok {
            attempt.failed();
            self.shared_outcome(&throttle_key, false).await;
            return Err(AccountError::BadCredentials);
        }
        attempt.succeeded();
        self.shared_outcome(&throttle_key, true).await;
        let hash = self.passwords.hash(new).await?;
        let next = User {
            password_hash: hash,
            token_generation: next_generation(user.token_generation),
            ..User::clone(user)
        };
        if !accounts::update(&*self.store, user, &next, Vec::new()).await? {
            return Err(AccountError::Internal(
                "the account changed meanwhile; try again".into(),
            ));
        }
        sessions::end_all(&*self.store, &next.id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Basic abc")), Err(AuthError::Invalid));
        assert_eq!(bearer(Some("Bearer ")), Err(AuthError::Invalid));
    }

    #[test]
    fn policies_parse() {
        assert_eq!("public".parse(), Ok(AuthPolicy::Public));
        assert_eq!("user".parse(), Ok(AuthPolicy::User));
        assert_eq!(
            "role:billing".parse(),
            Ok(AuthPolicy::Role("billing".into()))
        );
        assert!("role:".parse::<AuthPolicy>().is_err());
        assert!("role:a b".parse::<AuthPolicy>().is_err());
        assert!("admin".parse::<AuthPolicy>().is_err());
    }

    #[test]
    fn admin_token_principals_hold_every_role() {
        assert!(Principal::AdminToken.has_role("anything"));
        let user = User::new("a@b.io".into(), "h".into(), &[], 0);
        assert!(!Principal::User(Arc::new(user)).has_role(ROLE_OPERATOR));
    }
}
