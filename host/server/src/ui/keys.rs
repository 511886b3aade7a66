//! API keys and JWT signing keys (admins only): list, create and revoke API keys (a new key is
//! shown once, on the page that answers its creation), and see and rotate the signing keys,
//! through the same `auth` calls as `/admin/api-keys` and `/admin/signing-keys`.

use super::layout;
use super::session::{Admin, ConfirmForm, Posted, unconfirmed};
use crate::api::{ApiError, AppState, to_completion};
use crate::auth::{ROLE_ADMIN, ROLE_OPERATOR};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

/// The lifetimes the new-key form offers (`never` or as `humantime` reads them).
const KEY_LIFETIMES: [&str; 5] = ["never", "1day", "30days", "90days", "365days"];

/// `GET /_/keys`.
pub(super) async fn page(State(state): State<AppState>, Admin(signed_in): Admin) -> Response {
    let keys = match state.auth.list_api_keys().await {
        Ok(keys) => keys,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let signing = state.auth.signing_key_ids();
    let csrf = &signed_in.session.csrf;
    let content = html! {
        section aria-labelledby="api-keys" {
            h2 id="api-keys" { "API keys" }
            @if keys.is_empty() {
                p { "No API key exists." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for key in &keys {
                            tr {
                                th scope="row" { (key.name) br; code.muted { (key.id) } }
                                td { span.badge { (key.role) } }
                                td { time datetime=(key.created_at) { (key.created_at) } }
                                td { (key.expires_at.as_deref().unwrap_or("never")) }
                                td { (key.last_used_at.as_deref().unwrap_or("never")) }
                                td {
                                    form.inline method="post" action={ "/_/keys/" (key.id) "/revoke" } {
                                        input type="hidden" name="_csrf" value=(csrf);
                                        label.check { input type="checkbox" name="confirm" value="yes" required; "Yes, revoke " (key.name) }
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Make a key" }
            form.inline method="post" action="/_/keys" {
                input type="hidden" name="_csrf" value=(csrf);
                label { "Name" input name="name" required maxlength="200" placeholder="ci deploys"; }
                label { "Role"
                    select name="role" {
                        @for role in ["user", ROLE_OPERATOR, ROLE_ADMIN] {
                            option value=(role) selected[role == ROLE_OPERATOR] { (role) }
                        }
                    }
                }
                label { "Expires"
                    select name="expires_in" {
                        @for lifetime in KEY_LIFETIMES {
                            option value=(lifetime) selected[lifetime == "90days"] { (lifetime.replace("day", " day")) }
                        }
                    }
                }
                button type="submit" { "Make the key" }
            }
        }
        section aria-labelledby="signing-keys" {
            h2 id="signing-keys" { "Signing keys" }
            p { "Access tokens are signed with the first key; every key listed still verifies the tokens it signed until they expire." }
            ol {
                @for (i, id) in signing.iter().enumerate() {
                    li { code { (id) } @if i == 0 { " " span.badge { "signing" } } }
                }
            }
            form.inline method="post" action="/_/signing-keys/rotate" {
                input type="hidden" name="_csrf" value=(csrf);
                label.check { input type="checkbox" name="confirm" value="yes" required; "Yes, sign new tokens with a new key" }
                button type="submit" { "Rotate" }
            }
        }
    };
    layout::page(&signed_in, "Keys", "Keys", content).into_response()
}

#[derive(Deserialize)]
pub(super) struct NewKeyForm {
    name: String,
    role: String,
    expires_in: String,
}

/// `POST /_/keys`: makes an API key and shows it, this once.
pub(super) async fn create(
    State(state): State<AppState>,
    Posted {
        form,
        by: Admin(signed_in),
        actor,
    }: Posted<NewKeyForm, Admin>,
) -> Response {
    let ttl = match form.expires_in.as_str() {
        "never" => None,
        lifetime if KEY_LIFETIMES.contains(&lifetime) => humantime::parse_duration(lifetime).ok(),
        _ => {
            return layout::refusal(&ApiError::InvalidBody(format!(
                "`expires_in` must be one of {}",
                KEY_LIFETIMES.join(", ")
            )));
        }
    };
    let auth = state.auth.clone();
    let made = to_completion(async move {
        Ok(auth
            .create_api_key(form.name, form.role, ttl, &actor)
            .await?)
    })
    .await;
    let key = match made {
        Ok(key) => key,
        Err(e) => return layout::refusal(&e),
    };
    let content = html! {
        p.notice role="status" { "Copy the key now. It is shown only this once: the server keeps only its digest." }
        dl.facts {
            div { dt { "Key" } dd { code.secret { (key.key) } } }
            div { dt { "Name" } dd { (key.info.name) } }
            div { dt { "Role" } dd { (key.info.role) } }
            div { dt { "Expires" } dd { (key.info.expires_at.as_deref().unwrap_or("never")) } }
        }
        p { "Send it as " code { "Authorization: Bearer <key>" } ", or sign in to this dashboard with it." }
        p { a href="/_/keys" { "← back to the keys" } }
    };
    layout::shown_once(&signed_in, "Keys", "Key made", content)
}

/// `POST /_/keys/{id}/revoke`: the key stops working at once, once confirmed.
pub(super) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { form, actor, .. }: Posted<ConfirmForm, Admin>,
) -> Response {
    if !form.confirmed() {
        return unconfirmed();
    }
    let auth = state.auth.clone();
    let revoked = to_completion(async move { Ok(auth.revoke_api_key(id, &actor).await?) }).await;
    match revoked {
        Ok(()) => Redirect::to("/_/keys").into_response(),
        Err(e) => layout::refusal(&e),
    }
}

/// `POST /_/signing-keys/rotate`, once confirmed.
pub(super) async fn rotate(
    State(state): State<AppState>,
    Posted { form, actor, .. }: Posted<ConfirmForm, Admin>,
) -> Response {
    if !form.confirmed() {
        return unconfirmed();
    }
    let auth = state.auth.clone();
    let rotated = to_completion(async move { Ok(auth.rotate_signing_key(&actor).await?) }).await;
    match rotated {
        Ok(_) => Redirect::to("/_/keys#signing-keys").into_response(),
        Err(e) => layout::refusal(&e),
    }
}
