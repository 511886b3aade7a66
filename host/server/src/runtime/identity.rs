//! Host side of `plinth:host/identity`: tells the instance who is calling.

use super::bindings::plinth::host::identity::{Host, User};

/// The authenticated caller of one request, as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Account id (`admin-token` for the operator's token).
    pub id: String,
    /// Normalised email (empty for the admin token).
    pub email: String,
    /// Every role it holds (`user` for every account; `operator`, `admin` and custom ones).
    pub roles: Vec<String>,
}

/// The identity context of one instance.
#[derive(Debug, Clone, Default)]
pub struct IdentityCtx {
    /// The caller, if authenticated.
    pub caller: Option<Caller>,
}

impl Host for IdentityCtx {
    fn caller(&mut self) -> Option<User> {
        self.caller.as_ref().map(|c| User {
            id: c.id.clone(),
            email: c.email.clone(),
            roles: c.roles.clone(),
        })
    }
}
