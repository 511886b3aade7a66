//! The page frame every dashboard page shares: head, navigation, who is signed in, and the
//! sign-out form; and the page for an error.

use crate::api::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

/// A page without navigation (sign-in, errors).
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Plinth" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/_/assets/style.css";
                script src="/_/assets/app.js" defer {}
            }
            body { (body) }
        }
    }
}

/// What the page frame shows of the signed-in browser (`session::SignedIn` is one).
pub(super) trait Viewer {
    /// Who is signed in, as people read it.
    fn who(&self) -> String;
    /// Whether the admins' pages are theirs.
    fn is_admin(&self) -> bool;
    /// The session's CSRF token, for the sign-out form.
    fn csrf(&self) -> &str;
}

/// A page of the signed-in dashboard: `current` names the navigation entry to mark.
pub(super) fn page(signed_in: &impl Viewer, current: &str, title: &str, content: Markup) -> Markup {
    let mut nav = vec![
        ("/_/", "Overview"),
        ("/_/plugins", "Plugins"),
        ("/_/deploy", "Deploy"),
    ];
    if signed_in.is_admin() {
        nav.extend([
            ("/_/users", "Users"),
            ("/_/keys", "Keys"),
            ("/_/audit", "Audit log"),
        ]);
    }
    bare(
        title,
        html! {
            header.top {
                a.brand href="/_/" { "Plinth" }
                nav aria-label="Dashboard" {
                    ul {
                        @for (href, label) in nav {
                            li {
                                @if label == current {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                    }
                }
                div.who {
                    span { (signed_in.who()) @if signed_in.is_admin() { " (admin)" } @else { " (operator)" } }
                    form method="post" action="/_/sign-out" {
                        input type="hidden" name="_csrf" value=(signed_in.csrf());
                        button type="submit" { "Sign out" }
                    }
                }
            }
            main id="main" {
                h1 { (title) }
                (content)
            }
        },
    )
}

/// The page answering the creation of a secret (an API key, an invitation code), which shows
/// it this once: answered, not redirected to, so the secret never ends up in a URL or the
/// browser's history, and never cached.
pub(super) fn shown_once(
    signed_in: &impl Viewer,
    current: &str,
    title: &str,
    content: Markup,
) -> Response {
    (
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        page(signed_in, current, title, content),
    )
        .into_response()
}

/// A byte count as people read it: `172.3 MiB`, `118.2 KiB`, `512 B`.
pub(super) fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// An API error as a page: the same status, code and message the API would answer.
pub(super) fn refusal(error: &ApiError) -> Response {
    let (status, code, message) = error.explain();
    error_page(status, code, &message)
}

/// After a change: the browser goes to `page`, or sees the refusal.
pub(super) fn then_show<T>(changed: Result<T, ApiError>, page: &str) -> Response {
    match changed {
        Ok(_) => Redirect::to(page).into_response(),
        Err(e) => refusal(&e),
    }
}

/// An error as a page, with its stable code.
pub(super) fn error_page(status: StatusCode, code: &str, message: &str) -> Response {
    let body = html! {
        main.error-page {
            h1 { (status.canonical_reason().unwrap_or("Error")) }
            p role="alert" { (message) }
            p { "Code: " code { (code) } }
            p { a href="/_/" { "Back to the dashboard" } }
        }
    };
    (status, bare("Error", body)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_read_in_the_largest_unit() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(121_090), "118.3 KiB");
        assert_eq!(super::bytes(176_414_720), "168.2 MiB");
    }
}
