//! Account management for admins: list, create, disable, enable, delete, set roles.
//!
//! Disabling or deleting an account, or taking a role from it, ends its refresh tokens at once;
//! its access tokens stop working at once too, because every request re-reads the account and
//! refuses tokens of an earlier session generation.

use super::accounts::{self, ROLE_ADMIN, ROLE_USER, User};
use super::{AccountError, Auth, Principal, UserInfo, next_generation, sessions, valid_role};
use crate::audit::Actor;
use crate::store::{Op, Space, from_json};

/// One page of accounts.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserPage {
    /// Accounts in id order.
    pub users: Vec<UserInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// Largest page a caller may ask for.
pub const MAX_PAGE: usize = 200;

fn is_self(principal: &Principal, id: &str) -> bool {
    matches!(principal, Principal::User(u) if u.id == id)
}

impl Auth {
    /// A page of accounts after `after` (an id), at most `limit` (clamped to 1..=200).
    pub async fn list_users(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<UserPage, AccountError> {
        let limit = limit.clamp(1, MAX_PAGE);
        // Fetch one extra to know whether there is a next page.
        let entries = self
            .store
            .scan(
                Space::Users,
                b"",
                after.as_deref().map(str::as_bytes),
                limit + 1,
            )
            .await?;
        let mut users = Vec::new();
        for (_, bytes) in entries.iter().take(limit) {
            let user: User = from_json("user", bytes)?;
            users.push(UserInfo::from(&user));
        }
        let next = (entries.len() > limit)
            .then(|| users.last().map(|u| u.id.clone()))
            .flatten();
        Ok(UserPage { users, next })
    }

    /// Creates an account with `roles` (plus `user`), regardless of the registration mode.
    pub async fn create_account(
        &self,
        email: &str,
        password: String,
        roles: Vec<String>,
        by: &Actor,
    ) -> Result<UserInfo, AccountError> {
        if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
            return Err(AccountError::InvalidRole(bad.clone()));
        }
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let user = self
            .create_user_with(
                email,
                password,
                &roles,
                Vec::new(),
                Some((by, "user.create")),
            )
            .await?;
        Ok(UserInfo::from(&user))
    }

    async fn load(&self, id: &str) -> Result<User, AccountError> {
        accounts::get(&*self.store, id)
            .await?
            .ok_or_else(|| AccountError::UserNotFound(id.to_string()))
    }

    /// One account.
    pub async fn user(&self, id: &str) -> Result<UserInfo, AccountError> {
        Ok(UserInfo::from(&self.load(id).await?))
    }

    /// Applies `change` to an account with optimistic concurrency (retrying a few times). When
    /// an operator made the change (`audit`: who and the action), its entry is written with it.
    pub(super) async fn modify(
        &self,
        id: &str,
        change: impl Fn(&User) -> Result<User, AccountError> + Send + Sync + 'static,
        end_sessions: bool,
        audit: Option<(&Actor, &str)>,
    ) -> Result<UserInfo, AccountError> {
        let change = std::sync::Arc::new(change);
        for _ in 0..5 {
            let current = self.load(id).await?;
            let next = change(&current)?;
            if next == current {
                // Nothing to change (enabling an enabled account, the same roles): no commit,
                // no audit entry.
                return Ok(UserInfo::from(&next));
            }
            // A change that moved the token cut-off ends the refresh sessions too.
            let end_sessions = end_sessions || next.token_generation != current.token_generation;
            let entry = audit.map(|(by, action)| {
                by.records(
                    action,
                    &next.id,
                    serde_json::json!({
                        "email": next.email,
                        "roles": next.roles,
                        "disabled": next.disabled,
                    }),
                )
            });
            let extra = match &entry {
                Some(entry) => vec![entry.op()?],
                None => Vec::new(),
            };
            if accounts::update(&*self.store, &current, &next, extra).await? {
                if end_sessions {
                    sessions::end_all(&*self.store, &next.id).await?;
                }
                if let Some(entry) = entry {
                    entry.committed();
                }
                return Ok(UserInfo::from(&next));
            }
        }
        Err(AccountError::Internal(
            "the account kept changing; try again".into(),
        ))
    }

    /// Disables (`true`) or re-enables an account. Disabling ends its sessions.
    pub async fn set_disabled(
        &self,
        actor: &Principal,
        id: &str,
        disabled: bool,
        by: &Actor,
    ) -> Result<UserInfo, AccountError> {
        if disabled && is_self(actor, id) {
            return Err(AccountError::SelfModification);
        }
        self.modify(
            id,
            move |u| {
                Ok(User {
                    disabled,
                    // Re-enabling must not bring back the tokens it had before.
                    token_generation: if disabled {
                        next_generation(u.token_generation)
                    } else {
                        u.token_generation
                    },
                    ..u.clone()
                })
            },
            disabled,
            Some((
                by,
                if disabled {
                    "user.disable"
                } else {
                    "user.enable"
                },
            )),
        )
        .await
    }

    /// Replaces an account's roles (`user` is always kept).
    pub async fn set_roles(
        &self,
        actor: &Principal,
        id: &str,
        roles: Vec<String>,
        by: &Actor,
    ) -> Result<UserInfo, AccountError> {
        if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
            return Err(AccountError::InvalidRole(bad.clone()));
        }
        if is_self(actor, id) && !roles.iter().any(|r| r == ROLE_ADMIN) {
            return Err(AccountError::SelfModification);
        }
        let mut next_roles = vec![ROLE_USER.to_string()];
        for role in roles {
            if !next_roles.contains(&role) {
                next_roles.push(role);
            }
        }
        self.modify(
            id,
            move |u| {
                let lost_a_role = u.roles.iter().any(|r| !next_roles.contains(r));
                Ok(User {
                    roles: next_roles.clone(),
                    token_generation: if lost_a_role {
                        next_generation(u.token_generation)
                    } else {
                        u.token_generation
                    },
                    ..u.clone()
                })
            },
            false,
            Some((by, "user.roles")),
        )
        .await
    }

    /// Deletes an account, its email index entry and its sessions.
    pub async fn delete_user(
        &self,
        actor: &Principal,
        id: &str,
        by: &Actor,
    ) -> Result<(), AccountError> {
        if is_self(actor, id) {
            return Err(AccountError::SelfModification);
        }
        let user = self.load(id).await?;
        let audit = by.records(
            "user.delete",
            &user.id,
            serde_json::json!({ "email": user.email }),
        );
        let entry = audit.op()?;
        // Only the account read above, and only its own email entry: a concurrent delete (or a
        // new account that took the email since) makes this one refuse.
        let deleted = self
            .store
            .commit(vec![
                Op::Expect {
                    space: Space::Users,
                    key: user.id.as_bytes().to_vec(),
                    value: Some(user.encode()?),
                },
                Op::Expect {
                    space: Space::Emails,
                    key: user.email.as_bytes().to_vec(),
                    value: Some(user.id.as_bytes().to_vec()),
                },
                Op::Delete {
                    space: Space::Users,
                    key: user.id.as_bytes().to_vec(),
                },
                Op::Delete {
                    space: Space::Emails,
                    key: user.email.as_bytes().to_vec(),
                },
                entry,
            ])
            .await?;
        if !deleted {
            return Err(AccountError::UserNotFound(id.to_string()));
        }
        sessions::end_all(&*self.store, &user.id).await?;
        audit.committed();
        Ok(())
    }
}
