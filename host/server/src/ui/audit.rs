//! The audit log in the dashboard (admins only: it names every account), newest first, with
//! filters by action and target and older pages.

use super::layout;
use super::session::Admin;
use crate::api::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

/// Entries a page shows.
const PAGE: usize = 50;

/// The page's query: filters and where to continue.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    cursor: Option<String>,
}

/// `GET /_/audit`.
pub(super) async fn page(
    State(state): State<AppState>,
    Admin(signed_in): Admin,
    Query(query): Query<AuditQuery>,
) -> Response {
    let filter = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_string());
    let listed = state
        .audit
        .list(
            query.cursor.as_deref().filter(|c| !c.is_empty()),
            PAGE,
            filter(&query.action),
            filter(&query.target),
        )
        .await;
    let page = match listed {
        Ok(page) => page,
        Err(e) => {
            let (status, code, message) = ApiError::from(e).explain();
            return layout::error_page(status, code, &message);
        }
    };
    let next = page.next_cursor.as_ref().map(|cursor| {
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.append_pair("action", &query.action)
            .append_pair("target", &query.target)
            .append_pair("cursor", cursor);
        format!("/_/audit?{}", link.finish())
    });
    let content = html! {
        form.inline method="get" action="/_/audit" role="search" {
            label { "Action" input name="action" value=(query.action) placeholder="plugin.deploy"; }
            label { "Target" input name="target" value=(query.target) placeholder="a plugin, user id or key id"; }
            button type="submit" { "Filter" }
            a href="/_/audit" { "Clear" }
        }
        @if page.entries.is_empty() {
            p { "No entries." }
        } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "From" } th scope="col" { "What" } th scope="col" { "On" } th scope="col" { "Details" } } }
                tbody {
                    @for entry in &page.entries {
                        tr {
                            td { time datetime=(entry.at) { (entry.at) } }
                            td { (entry.actor) }
                            td { (entry.address.as_deref().unwrap_or("")) }
                            td { code { (entry.action) } }
                            td { (entry.target) }
                            td { code { (entry.details.to_string()) } }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Older entries" } }
        }
    };
    layout::page(&signed_in, "Audit log", "Audit log", content).into_response()
}
