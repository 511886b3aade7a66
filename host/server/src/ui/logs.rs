//! A plugin's log in the dashboard: its recent lines filtered by level, text or request id,
//! and a live tail of new ones (server-sent events the page's script appends as text).

use super::layout;
use super::session::SignedIn;
use crate::api::AppState;
use crate::plugin_logs::{Level, LogLine};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

/// Lines searched for a page (the buffer's newest), and the most a page shows.
const SEARCHED: usize = 5_000;
const SHOWN: usize = 200;
/// Longest text filter and request id taken from a query.
const MAX_FILTER: usize = 256;

/// What a log page or stream keeps.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Filter {
    /// The least severe level shown.
    level: Option<Level>,
    /// Text the line must contain (case-insensitive).
    #[serde(default)]
    q: String,
    /// Only the lines of this request.
    #[serde(default)]
    request: String,
    /// For the stream: only lines after this one.
    since: Option<u64>,
    /// `q` in lower case, made once (see [`Filter::bounded`]) rather than for every line.
    #[serde(skip)]
    q_lower: String,
}

impl Filter {
    fn keeps(&self, line: &LogLine) -> bool {
        self.level.is_none_or(|least| line.level >= least)
            && (self.request.is_empty() || line.request_id.as_deref() == Some(&*self.request))
            && (self.q_lower.is_empty()
                || line
                    .message
                    .to_string()
                    .to_lowercase()
                    .contains(&self.q_lower))
    }

    /// The filter's query string (without `since`), for the stream and the links.
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(level) = self.level {
            query.append_pair("level", level.as_str());
        }
        if !self.q.is_empty() {
            query.append_pair("q", &self.q);
        }
        if !self.request.is_empty() {
            query.append_pair("request", &self.request);
        }
        query.finish()
    }

    /// Bounded, so a long query cannot make every line's search expensive.
    fn bounded(mut self) -> Self {
        self.q.truncate(self.q.floor_char_boundary(MAX_FILTER));
        self.request
            .truncate(self.request.floor_char_boundary(MAX_FILTER));
        self.q_lower = self.q.to_lowercase();
        self
    }
}

fn not_deployed(name: &str) -> Response {
    layout::error_page(
        StatusCode::NOT_FOUND,
        "plugin_not_found",
        &format!("No plugin named {name:?} is deployed."),
    )
}

/// `GET /_/plugins/{name}/logs`.
pub(super) async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Response {
    if !state.registry.active().plugins.contains_key(&name) {
        return not_deployed(&name);
    }
    let filter = filter.bounded();
    let recent = state.logs.read(&name, None, SEARCHED);
    let mut lines: Vec<_> = recent.lines.iter().filter(|l| filter.keeps(l)).collect();
    let skip = lines.len().saturating_sub(SHOWN);
    lines.drain(..skip);
    let query = filter.query();
    let stream = format!(
        "/_/plugins/{name}/logs/stream?since={}{}{query}",
        recent.next_since,
        if query.is_empty() { "" } else { "&" }
    );
    let levels = [
        ("", "Every level"),
        ("info", "Info and above"),
        ("warn", "Warnings and errors"),
        ("error", "Errors"),
    ];
    let chosen = filter.level.map_or("", Level::as_str);
    let content = html! {
        p { a href={ "/_/plugins/" (name) } { "Back to " (name) } }
        form.inline method="get" action={ "/_/plugins/" (name) "/logs" } role="search" {
            label { "Level"
                select name="level" {
                    @for (value, label) in levels {
                        option value=(value) selected[value == chosen] { (label) }
                    }
                }
            }
            label { "Containing" input type="search" name="q" value=(filter.q) maxlength="256"; }
            @if !filter.request.is_empty() {
                input type="hidden" name="request" value=(filter.request);
            }
            button type="submit" { "Filter" }
            @if !query.is_empty() { a href={ "/_/plugins/" (name) "/logs" } { "Clear" } }
        }
        @if !filter.request.is_empty() {
            p role="status" { "Every line of request " code { (filter.request) } "." }
        }
        p.muted id="live-status" aria-live="polite" { "New lines appear below as they are written." }
        table.log data-log-stream=(stream) data-log-base={ "/_/plugins/" (name) "/logs" } {
            thead { tr { th scope="col" { "When" } th scope="col" { "Level" } th scope="col" { "From" } th scope="col" { "Line" } th scope="col" { "Request" } } }
            tbody {
                @for line in &lines {
                    tr class={ "level-" (line.level.as_str()) } {
                        td { time { (crate::units::rfc3339_at(line.at)) } }
                        td { (line.level.as_str()) }
                        td { (line.source.as_str()) }
                        td.message { (line.message.to_string()) }
                        td {
                            @if let Some(id) = &line.request_id {
                                a href={ "/_/plugins/" (name) "/logs?request=" (form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()) } title=(id) { (id.chars().take(8).collect::<String>()) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page(&signed_in, "Plugins", &format!("{name}: log"), content).into_response()
}

/// `GET /_/plugins/{name}/logs/stream`: the live tail the page's script follows.
pub(super) async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _signed_in: SignedIn,
    Query(filter): Query<Filter>,
) -> Response {
    if !state.registry.active().plugins.contains_key(&name) {
        return not_deployed(&name);
    }
    let filter = filter.bounded();
    let since = filter.since;
    crate::api::plugin_logs::live(&state, &name, since, SHOWN, move |line| filter.keeps(line))
}
