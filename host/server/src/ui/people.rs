//! Accounts and invitations (admins only): list and create accounts, change an account's roles,
//! disable, enable or delete it (once confirmed), and make or revoke invitations, through the
//! same `auth` calls as `/admin/users` and `/admin/invites`. An invitation's code is shown once,
//! on the page that answers its creation, and never again.

use super::layout;
use super::session::{Admin, ConfirmForm, NoFields, Posted, unconfirmed};
use crate::api::{ApiError, AppState, to_completion};
use crate::auth::{ROLE_ADMIN, ROLE_OPERATOR, UserInfo};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

/// Accounts a page lists.
const PAGE: usize = 50;
/// The lifetimes an invitation form offers, as `humantime` reads them.
const INVITE_LIFETIMES: [&str; 3] = ["1day", "7days", "30days"];

/// The role granted besides `user`, most powerful first.
fn role_of(user: &UserInfo) -> &'static str {
    if user.roles.iter().any(|r| r == ROLE_ADMIN) {
        ROLE_ADMIN
    } else if user.roles.iter().any(|r| r == ROLE_OPERATOR) {
        ROLE_OPERATOR
    } else {
        "user"
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    after: Option<String>,
}

/// `GET /_/users`: accounts, a page at a time, and the pending invitations.
pub(super) async fn list(
    State(state): State<AppState>,
    Admin(signed_in): Admin,
    Query(query): Query<ListQuery>,
) -> Response {
    let page = match state.auth.list_users(query.after, PAGE).await {
        Ok(page) => page,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let invites = match state.auth.list_invites().await {
        Ok(invites) => invites,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let csrf = &signed_in.session.csrf;
    let content = html! {
        table {
            thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "State" } th scope="col" { "Created" } } }
            tbody {
                @for user in &page.users {
                    tr {
                        th scope="row" { a href={ "/_/users/" (user.id) } { (user.email) } }
                        td { span.badge { (role_of(user)) } }
                        td { @if user.disabled { "disabled" } @else { "active" } }
                        td { time datetime=(user.created_at) { (user.created_at) } }
                    }
                }
            }
        }
        @if let Some(next) = &page.next {
            p { a rel="next" href={ "/_/users?after=" (next) } { "Next page →" } }
        }
        section aria-labelledby="new-account" {
            h2 id="new-account" { "Add an account" }
            form.inline method="post" action="/_/users" {
                input type="hidden" name="_csrf" value=(csrf);
                label { "Email" input type="email" name="email" required autocomplete="off"; }
                label { "Password" input type="password" name="password" required minlength="10" autocomplete="new-password"; }
                (role_choice("user"))
                button type="submit" { "Add account" }
            }
        }
        section aria-labelledby="invites" {
            h2 id="invites" { "Invitations" }
            @if invites.is_empty() {
                p { "No invitation is waiting to be used." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "For" } th scope="col" { "Expires" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for invite in &invites {
                            tr {
                                th scope="row" { code { (invite.id) } }
                                td { (invite.email.as_deref().unwrap_or("anyone")) }
                                td { time datetime=(invite.expires_at) { (invite.expires_at) } }
                                td {
                                    form method="post" action={ "/_/invites/" (invite.id) "/revoke" } {
                                        input type="hidden" name="_csrf" value=(csrf);
                                        button type="submit" aria-label={ "Revoke invitation " (invite.id) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.inline method="post" action="/_/invites" {
                input type="hidden" name="_csrf" value=(csrf);
                label { "Only for this email (optional)" input type="email" name="email" autocomplete="off"; }
                label { "Valid for"
                    select name="expires_in" {
                        @for lifetime in INVITE_LIFETIMES {
                            option value=(lifetime) selected[lifetime == "7days"] { (lifetime.replace("day", " day")) }
                        }
                    }
                }
                button type="submit" { "Make an invitation" }
            }
        }
    };
    layout::page(&signed_in, "Users", "Users", content).into_response()
}

/// The role a form grants: `user`, `operator` or `admin`.
fn role_choice(chosen: &str) -> maud::Markup {
    html! {
        fieldset.inline {
            legend { "Role" }
            @for role in ["user", ROLE_OPERATOR, ROLE_ADMIN] {
                label.check { input type="radio" name="role" value=(role) checked[role == chosen]; (role) }
            }
        }
    }
}

/// The roles an account gets for the role chosen on a form (an admin is also an operator, and
/// everyone a user), keeping any other roles it holds.
fn roles_for(role: &str, current: &[String]) -> Result<Vec<String>, ApiError> {
    let mut roles: Vec<String> = current
        .iter()
        .filter(|r| !["user", ROLE_OPERATOR, ROLE_ADMIN].contains(&r.as_str()))
        .cloned()
        .collect();
    match role {
        "user" => {}
        ROLE_OPERATOR => roles.push(ROLE_OPERATOR.into()),
        ROLE_ADMIN => roles.push(ROLE_ADMIN.into()),
        other => return Err(ApiError::InvalidBody(format!("unknown role {other:?}"))),
    }
    Ok(roles)
}

#[derive(Deserialize)]
pub(super) struct NewAccountForm {
    email: String,
    password: String,
    role: String,
}

/// `POST /_/users`: creates an account, then shows it.
pub(super) async fn create(
    State(state): State<AppState>,
    Posted { form, actor, .. }: Posted<NewAccountForm, Admin>,
) -> Response {
    let roles = match roles_for(&form.role, &[]) {
        Ok(roles) => roles,
        Err(e) => return layout::refusal(&e),
    };
    let auth = state.auth.clone();
    let created = to_completion(async move {
        Ok(auth
            .create_account(&form.email, form.password, roles, &actor)
            .await?)
    })
    .await;
    match created {
        Ok(user) => Redirect::to(&format!("/_/users/{}", user.id)).into_response(),
        Err(e) => layout::refusal(&e),
    }
}

/// `GET /_/users/{id}`: one account and what can be done to it.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admin(signed_in): Admin,
) -> Response {
    let user = match state.auth.user(&id).await {
        Ok(user) => user,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let csrf = &signed_in.session.csrf;
    let base = format!("/_/users/{}", user.id);
    let content = html! {
        p { a href="/_/users" { "← every account" } }
        dl.facts {
            div { dt { "Id" } dd { code { (user.id) } } }
            div { dt { "Roles" } dd { (user.roles.join(", ")) } }
            div { dt { "State" } dd { @if user.disabled { "disabled" } @else { "active" } } }
            div { dt { "Created" } dd { time datetime=(user.created_at) { (user.created_at) } } }
        }
        section aria-labelledby="role" {
            h2 id="role" { "Role" }
            form.inline method="post" action={ (base) "/roles" } {
                input type="hidden" name="_csrf" value=(csrf);
                (role_choice(role_of(&user)))
                button type="submit" { "Change role" }
            }
            p.hint { "Operators manage plugins; admins also manage accounts and keys. A change applies to the account's next request." }
        }
        section aria-labelledby="access" {
            h2 id="access" { "Access" }
            form.inline method="post" action={ (base) @if user.disabled { "/enable" } @else { "/disable" } } {
                input type="hidden" name="_csrf" value=(csrf);
                button type="submit" { @if user.disabled { "Enable the account" } @else { "Disable the account" } }
            }
            p.hint { "Disabling ends every session of the account at once." }
            form.inline method="post" action={ (base) "/delete" } {
                input type="hidden" name="_csrf" value=(csrf);
                label.check { input type="checkbox" name="confirm" value="yes" required; "Yes, delete " (user.email) }
                button.danger type="submit" { "Delete the account" }
            }
        }
    };
    layout::page(&signed_in, "Users", &user.email, content).into_response()
}

#[derive(Deserialize)]
pub(super) struct RoleForm {
    role: String,
}

/// `POST /_/users/{id}/roles`.
pub(super) async fn set_role(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted {
        form,
        by: Admin(signed_in),
        actor,
    }: Posted<RoleForm, Admin>,
) -> Response {
    let principal = signed_in.session.principal.clone();
    let (auth, target) = (state.auth.clone(), id.clone());
    let changed = to_completion(async move {
        let current = auth.user(&target).await?;
        let roles = roles_for(&form.role, &current.roles)?;
        Ok(auth.set_roles(&principal, &target, roles, &actor).await?)
    })
    .await;
    layout::then_show(changed, &format!("/_/users/{id}"))
}

/// `POST /_/users/{id}/disable` and `/enable`.
async fn set_disabled(
    state: AppState,
    id: String,
    posted: Posted<NoFields, Admin>,
    disabled: bool,
) -> Response {
    let Posted {
        by: Admin(signed_in),
        actor,
        ..
    } = posted;
    let principal = signed_in.session.principal.clone();
    let (auth, target) = (state.auth.clone(), id.clone());
    let changed = to_completion(async move {
        Ok(auth
            .set_disabled(&principal, &target, disabled, &actor)
            .await?)
    })
    .await;
    layout::then_show(changed, &format!("/_/users/{id}"))
}

/// `POST /_/users/{id}/disable`.
pub(super) async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<NoFields, Admin>,
) -> Response {
    set_disabled(state, id, posted, true).await
}

/// `POST /_/users/{id}/enable`.
pub(super) async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<NoFields, Admin>,
) -> Response {
    set_disabled(state, id, posted, false).await
}

/// `POST /_/users/{id}/delete`: deletes the account, once confirmed.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted {
        form,
        by: Admin(signed_in),
        actor,
    }: Posted<ConfirmForm, Admin>,
) -> Response {
    if !form.confirmed() {
        return unconfirmed();
    }
    let principal = signed_in.session.principal.clone();
    let auth = state.auth.clone();
    let deleted =
        to_completion(async move { Ok(auth.delete_user(&principal, &id, &actor).await?) }).await;
    layout::then_show(deleted, "/_/users")
}

#[derive(Deserialize)]
pub(super) struct InviteForm {
    #[serde(default)]
    email: String,
    expires_in: String,
}

/// `POST /_/invites`: makes an invitation and shows its code, this once.
pub(super) async fn invite(
    State(state): State<AppState>,
    Posted {
        form,
        by: Admin(signed_in),
        actor,
    }: Posted<InviteForm, Admin>,
) -> Response {
    let Some(ttl) = INVITE_LIFETIMES
        .contains(&form.expires_in.as_str())
        .then(|| humantime::parse_duration(&form.expires_in).ok())
        .flatten()
    else {
        return layout::refusal(&ApiError::InvalidBody(format!(
            "`expires_in` must be one of {}",
            INVITE_LIFETIMES.join(", ")
        )));
    };
    let email = Some(form.email.trim().to_string()).filter(|e| !e.is_empty());
    let auth = state.auth.clone();
    let made =
        to_completion(async move { Ok(auth.create_invite(email, ttl, &actor).await?) }).await;
    let invite = match made {
        Ok(invite) => invite,
        Err(e) => return layout::refusal(&e),
    };
    let content = html! {
        p.notice role="status" { "Give this code to the person invited. It is shown only now: nobody can read it again, and it works once." }
        dl.facts {
            div { dt { "Code" } dd { code.secret { (invite.invite) } } }
            div { dt { "For" } dd { (invite.email.as_deref().unwrap_or("anyone")) } }
            div { dt { "Expires" } dd { time datetime=(invite.expires_at) { (invite.expires_at) } } }
        }
        p { "They register with " code { "POST /auth/register" } " and " code { "\"invite\": \"<the code>\"" } "." }
        p { a href="/_/users#invites" { "← back to the invitations" } }
    };
    layout::shown_once(&signed_in, "Users", "Invitation made", content)
}

/// `POST /_/invites/{id}/revoke`.
pub(super) async fn revoke_invite(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { actor, .. }: Posted<NoFields, Admin>,
) -> Response {
    let auth = state.auth.clone();
    let revoked = to_completion(async move { Ok(auth.revoke_invite(id, &actor).await?) }).await;
    layout::then_show(revoked, "/_/users#invites")
}

#[cfg(test)]
mod tests {
    use super::roles_for;

    #[test]
    fn a_chosen_role_grants_the_ones_below_it_and_keeps_other_roles() {
        let current = vec!["user".to_string(), "operator".into(), "billing".into()];
        assert_eq!(roles_for("user", &current).unwrap(), ["billing"]);
        assert_eq!(roles_for("admin", &current).unwrap(), ["billing", "admin"]);
        assert!(roles_for("root", &current).is_err());
    }
}
