//! The dashboard's pages: the overview (with the last hour's charts) and the plugin list
//! (with each plugin's requests, errors and p95 over the last hour).

use super::session::SignedIn;
use super::{charts, layout};
use crate::api::AppState;
use crate::metrics::history::{Gauges, Minute, resident_memory};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

/// How many recent changes the overview lists.
const RECENT_CHANGES: usize = 8;

/// `GET /_/`: how the server is doing, and what changed lately.
pub(super) async fn overview(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    let active = state.registry.active();
    let in_use = state.max_in_flight - state.in_flight.available_permits();
    // The audit log names every account: admins see it, operators the latest deploys.
    let recent = if signed_in.is_admin() {
        match state.audit.list(None, RECENT_CHANGES, None, None).await {
            Ok(page) => page
                .entries
                .into_iter()
                .map(|e| (e.at, e.actor, e.action, e.target))
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading the audit log failed");
                return layout::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "The server cannot read its store right now. Try again shortly.",
                );
            }
        }
    } else {
        let mut deploys: Vec<_> = active
            .plugins
            .values()
            .map(|p| {
                (
                    crate::units::rfc3339(p.record.deployed_at_ms),
                    p.record.deployed_by.clone().unwrap_or_default(),
                    format!("version {}", p.record.version),
                    p.record.name.clone(),
                )
            })
            .collect();
        deploys.sort_by(|a, b| b.0.cmp(&a.0));
        deploys.truncate(RECENT_CHANGES);
        deploys
    };
    let failures: u64 = active
        .plugins
        .values()
        .map(|p| {
            let f = p.failures.snapshot();
            f.traps + f.timeouts + f.memory_limit
        })
        .sum();
    let minutes = state.metrics.history().host(Gauges {
        instances: in_use as u64,
        memory: resident_memory(),
    });
    let series = |value: fn(&(Minute, Gauges)) -> Option<f64>| -> Vec<Option<f64>> {
        minutes.iter().map(value).collect()
    };
    let requests = series(|(m, _)| Some(m.requests as f64));
    let errors = series(|(m, _)| Some(m.errors as f64));
    let p95 = series(|(m, _)| m.p95_ms);
    let instances = series(|(_, g)| Some(g.instances as f64));
    let memory = series(|(_, g)| g.memory.map(|b| b as f64 / (1024.0 * 1024.0)));
    let content = html! {
        section aria-label="Server" {
            dl.stats {
                div { dt { "Up for" } dd { (uptime(state.started.elapsed())) } }
                div { dt { "Plugins" } dd { (active.plugins.len()) } }
                div { dt { "Requests in progress" } dd { (in_use) " of " (state.max_in_flight) } }
                div { dt { "Failed requests" } dd { (failures) } }
                div { dt { "Memory in use" } dd { (resident_memory().map_or("unknown".into(), layout::bytes)) } }
            }
        }
        section.charts aria-labelledby="last-hour" {
            h2 id="last-hour" { "The last hour" }
            (charts::chart("Requests per minute", "", &requests, charts::number))
            (charts::chart("Errors per minute", "", &errors, charts::number))
            (charts::chart("p95 latency", " ms", &p95, charts::number))
            (charts::chart("Instances in use", "", &instances, charts::number))
            (charts::chart("Memory", " MiB", &memory, charts::number))
        }
        section aria-labelledby="recent" {
            h2 id="recent" { @if signed_in.is_admin() { "Recent changes" } @else { "Latest deploys" } }
            @if recent.is_empty() {
                p { "Nothing has changed yet." }
            } @else {
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "On" } } }
                    tbody {
                        @for (at, who, what, on) in &recent {
                            tr {
                                td { time datetime=(at) { (at) } }
                                td { (who) }
                                td { code { (what) } }
                                td { (on) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page(&signed_in, "Overview", "Overview", content).into_response()
}

/// `GET /_/plugins`: every active plugin with its version, routes and failures.
pub(super) async fn plugins(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    let active = state.registry.active();
    let infos: Vec<_> = active
        .plugins
        .values()
        .map(|p| state.registry.info(p))
        .collect();
    let history = state.metrics.history();
    let content = html! {
        @if infos.is_empty() {
            p { "No plugins are deployed yet." }
        } @else {
            table {
                thead {
                    tr {
                        th scope="col" { "Plugin" }
                        th scope="col" { "Version" }
                        th scope="col" { "Routes" }
                        th scope="col" { "Deployed" }
                        th scope="col" { "Requests/min" }
                        th scope="col" { "Errors" }
                        th scope="col" { "p95, last hour" }
                        th scope="col" { "Failures" }
                    }
                }
                tbody {
                    @for info in &infos {
                        tr {
                            th scope="row" { a href={ "/_/plugins/" (info.name) } { (info.name) } }
                            td { (info.version) }
                            td {
                                ul.plain {
                                    @for route in &info.routes {
                                        li { code { (route.methods.join(" ")) " " (route.path) } " " span.badge { (route.auth) } }
                                    }
                                }
                                @if !info.missing_config.is_empty() {
                                    p.warning { "Missing config: " (info.missing_config.join(", ")) }
                                }
                            }
                            td { time datetime=(info.deployed_at) { (info.deployed_at) } @if let Some(by) = &info.deployed_by { br; (by) } }
                            @let minutes = history.plugin(&info.name);
                            @let (served, failed) = minutes.iter().fold((0, 0), |(r, e), m| (r + m.requests, e + m.errors));
                            td.number { (minutes.last().map_or(0, |m| m.requests)) }
                            td.number { (error_rate(served, failed)) }
                            td {
                                @let p95: Vec<Option<f64>> = minutes.iter().map(|m| m.p95_ms).collect();
                                (charts::sparkline(&format!("p95 latency of {} over the last hour, in milliseconds", info.name), &p95))
                                " " span.muted { (p95.last().copied().flatten().map_or("–".into(), |v| format!("{} ms", charts::number(v)))) }
                            }
                            td { (info.failures.traps + info.failures.timeouts + info.failures.memory_limit) }
                        }
                    }
                }
            }
        }
    };
    layout::page(&signed_in, "Plugins", "Plugins", content).into_response()
}

/// Server errors as a share of requests over the last hour: `0.4%` (of 250), `–` with none.
fn error_rate(requests: u64, errors: u64) -> String {
    if requests == 0 {
        return "–".into();
    }
    format!(
        "{:.1}% of {requests}",
        errors as f64 * 100.0 / requests as f64
    )
}

/// A duration as days, hours and minutes.
fn uptime(elapsed: std::time::Duration) -> String {
    let minutes = elapsed.as_secs() / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes} min"),
        (0, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::{error_rate, uptime};
    use std::time::Duration;

    #[test]
    fn an_error_rate_says_of_how_many() {
        assert_eq!(error_rate(0, 0), "–");
        assert_eq!(error_rate(250, 1), "0.4% of 250");
    }

    #[test]
    fn uptime_reads_in_the_largest_units() {
        assert_eq!(uptime(Duration::from_secs(59)), "0 min");
        assert_eq!(uptime(Duration::from_secs(3 * 3600 + 120)), "3 h 2 min");
        assert_eq!(uptime(Duration::from_secs(2 * 86400 + 5 * 3600)), "2 d 5 h");
    }
}
