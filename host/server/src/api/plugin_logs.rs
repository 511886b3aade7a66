//! `/admin/plugins/{name}/logs`: a plugin's recent log lines, as a page of JSON or, with
//! `follow=true` (or `Accept: text/event-stream`), as a live server-sent-event stream.

use super::admin::Operator;
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::plugin_logs::LogLine;
use crate::registry::DeployError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(logs))
}

/// Lines a page returns unless `limit` says otherwise, and the most it may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Only lines after this `seq`.
    since: Option<u64>,
    /// At most this many lines (the newest ones when `since` is absent).
    limit: Option<usize>,
    /// Keep the connection open and stream new lines as server-sent events.
    #[serde(default)]
    follow: bool,
}

fn event(line: &LogLine) -> Event {
    Event::default()
        .id(line.seq.to_string())
        .json_data(line)
        .unwrap_or_else(|_| Event::default().comment("unencodable line"))
}

/// A page of the plugin's log lines, or (`follow=true`, `Accept: text/event-stream`) a live
/// stream of them.
#[utoipa::path(get, path = "/admin/plugins/{name}/logs", tag = "logs", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), LogQuery),
    responses((status = 200, body = crate::plugin_logs::LogPage, description = "a page; with follow, `text/event-stream` of LogLine events"),
        (status = 404, body = ErrorBody)))]
async fn logs(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidBody(e.body_text()))?;
    if !state.registry.active().plugins.contains_key(&name) {
        return Err(DeployError::NotFound(name).into());
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !(query.follow || wants_stream) {
        return Ok(Json(state.logs.read(&name, query.since, limit)).into_response());
    }
    // A reconnecting EventSource says where it stopped.
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(query.since);
    Ok(live(&state, &name, since, limit, |_| true))
}

/// A live stream of `name`'s log lines that `keep` admits, as server-sent events of
/// [`LogLine`] JSON: those after `since` (without it, the newest of the last `backlog`), then
/// each new one as it is written. The API's `follow` and the dashboard's live tail.
pub(crate) fn live(
    state: &AppState,
    name: &str,
    since: Option<u64>,
    backlog: usize,
    keep: impl Fn(&LogLine) -> bool + Send + Sync + 'static,
) -> Response {
    let (backlog, mut live) = state.logs.follow(name, since, backlog);
    // A task feeds the response: it ends when the client goes away (the send fails) or the
    // server shuts down, so a follower never holds up a graceful stop.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(64);
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        for line in backlog.iter().filter(|line| keep(line)) {
            if sender.send(event(line)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                next = live.recv() => next,
            };
            let event = match next {
                Ok(line) if keep(&line) => event(&line),
                Ok(_) => continue,
                // A follower too slow for the plugin's output skips ahead and is told so.
                Err(RecvError::Lagged(skipped)) => {
                    Event::default().event("lagged").data(skipped.to_string())
                }
                Err(RecvError::Closed) => return,
            };
            if sender.send(event).await.is_err() {
                return;
            }
        }
    });
    let stream = ReceiverStream::new(receiver).map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
