//! The dashboard at `/_/`: server-rendered pages (maud templates, escaped by construction) over
//! the same domain calls as `api`, for operators and admins signed in with a browser session
//! (`auth::web_sessions`). Every asset is embedded in the binary and pages carry no inline
//! script, which a strict Content-Security-Policy holds the browser to.
//!
//! **Boundary:** like `api`, handlers translate between HTTP and the domain modules (`registry`,
//! `auth`, `audit`); they hold no state of their own beyond [`AppState`].
//!
//! **Invariant:** every state-changing request carries its session's CSRF token and comes from
//! this origin (`guard`); the session cookie is HttpOnly and SameSite=Strict.

mod assets;
mod audit;
mod charts;
mod deploy;
mod guard;
mod keys;
mod kv;
mod layout;
mod logs;
mod pages;
mod people;
mod plugin;
mod session;

use crate::api::AppState;
use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

/// Largest form body the dashboard reads (a config value is the largest field).
const FORM_LIMIT: usize = 256 * 1024;

/// The dashboard's routes, each under `/_/` (a prefix no plugin may claim), with its security
/// headers and origin check.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let upload = usize::try_from(state.max_component_size.0)
        .unwrap_or(usize::MAX)
        .saturating_add(deploy::UPLOAD_OVERHEAD);
    // A value typed as hex takes two characters a byte, and a form escapes some as three.
    let edit = usize::try_from(state.kv_limits.max_value)
        .unwrap_or(usize::MAX)
        .saturating_mul(3)
        .saturating_add(FORM_LIMIT);
    Router::new()
        .route(
            "/_/deploy",
            get(deploy::page)
                .post(deploy::deploy)
                .layer(axum::extract::DefaultBodyLimit::max(upload)),
        )
        .route(
            "/_/plugins/{name}/kv/entry",
            get(kv::entry)
                .post(kv::save)
                .layer(axum::extract::DefaultBodyLimit::max(edit)),
        )
        .route(
            "/_/plugins/{name}/kv/import",
            post(kv::import).layer(axum::extract::DefaultBodyLimit::max(
                crate::kv_admin::MAX_IMPORT_BYTES,
            )),
        )
        .route("/_/users", get(people::list).post(people::create))
        .route("/_/users/{id}", get(people::show))
        .route("/_/users/{id}/roles", post(people::set_role))
        .route("/_/users/{id}/disable", post(people::disable))
        .route("/_/users/{id}/enable", post(people::enable))
        .route("/_/users/{id}/delete", post(people::delete))
        .route("/_/invites", post(people::invite))
        .route("/_/invites/{id}/revoke", post(people::revoke_invite))
        .route("/_/keys", get(keys::page).post(keys::create))
        .route("/_/keys/{id}/revoke", post(keys::revoke))
        .route("/_/signing-keys/rotate", post(keys::rotate))
        .route("/_/plugins/{name}/kv", get(kv::list))
        .route("/_/plugins/{name}/kv/delete", post(kv::delete))
        .route("/_/plugins/{name}/kv/export", get(kv::export))
        .route("/_", get(|| async { Redirect::to("/_/") }))
        .route("/_/", get(pages::overview))
        .route("/_/plugins", get(pages::plugins))
        .route("/_/audit", get(audit::page))
        .route("/_/plugins/{name}", get(plugin::show))
        .route("/_/plugins/{name}/logs", get(logs::page))
        .route("/_/plugins/{name}/logs/stream", get(logs::stream))
        .route("/_/plugins/{name}/rollback", post(plugin::rollback))
        .route("/_/plugins/{name}/delete", post(plugin::remove))
        .route("/_/plugins/{name}/config", post(plugin::set_config))
        .route(
            "/_/plugins/{name}/config/delete",
            post(plugin::unset_config),
        )
        .route(
            "/_/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/_/sign-out", post(session::sign_out))
        .route("/_/assets/{file}", get(assets::serve))
        // Forms are small: nothing is read past this, before or after the sign-in limits.
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::from_fn(guard::same_origin_only))
        .layer(axum::middleware::from_fn(guard::security_headers))
}
