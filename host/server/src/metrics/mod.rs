//! `/metrics`: Prometheus (OpenMetrics text) metrics of the host and of every plugin, with
//! `prometheus-client`. Per request: a counter by status class and a latency histogram per plugin
//! route, and failure counters by kind; per scrape: instances running, active plugins, each
//! plugin's kv bytes and instance memory high-water mark. [`history`] keeps the last hour a
//! minute at a time for the dashboard's charts.

pub mod history;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in seconds (0.5 ms to 10 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One plugin route's requests, by status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    plugin: String,
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    plugin: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Host-wide facts read at scrape time.
pub struct HostSnapshot {
    /// Plugin instances running now.
    pub active_instances: i64,
    /// Active plugins.
    pub plugins: i64,
    /// Bytes each plugin keeps in its kv store.
    pub kv_bytes: Vec<(String, u64)>,
    /// Each active plugin's largest instance memory so far.
    pub memory_peaks: Vec<(String, u64)>,
    /// Components compiled since start.
    pub compiled: u64,
    /// Components loaded from a stored artifact since start.
    pub loaded: u64,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    failures: Family<FailureLabels, Counter>,
    deploys: Counter,
    rollbacks: Counter,
    active_instances: Gauge,
    plugins: Gauge,
    kv_bytes: Family<PluginLabels, Gauge<u64, AtomicU64>>,
    memory_peak: Family<PluginLabels, Gauge<u64, AtomicU64>>,
    compiled: Gauge<u64, AtomicU64>,
    loaded: Gauge<u64, AtomicU64>,
    /// One scrape at a time sets the scrape-time gauges and encodes.
    scrape: Mutex<()>,
    /// The last hour, a minute at a time, for the dashboard.
    history: history::History,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A status code's class: its index among a route's counters and its label.
fn class(status: u16) -> (usize, &'static str) {
    match status {
        100..=199 => (0, "1xx"),
        200..=299 => (1, "2xx"),
        300..=399 => (2, "3xx"),
        400..=499 => (3, "4xx"),
        _ => (4, "5xx"),
    }
}

/// One plugin route's request counters and latency histogram, found once ([`Metrics::route`])
/// so that counting a request builds no label strings and searches no map.
pub struct RouteMetrics {
    requests: Family<RequestLabels, Counter>,
    labels: RouteLabels,
    /// The counter of each status class, created at its first request (a class never seen
    /// is not exported).
    by_class: [OnceLock<Counter>; 5],
    latency: Histogram,
    /// The plugin's running tally for [`history`].
    recent: std::sync::Arc<history::Tally>,
}

impl RouteMetrics {
    /// Counts one request and its latency.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let (index, label) = class(status);
        self.by_class[index]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        plugin: self.labels.plugin.clone(),
                        route: self.labels.route.clone(),
                        status: label,
                    })
                    .clone()
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
        self.recent.record(status, elapsed);
    }
}

impl Metrics {
    /// Registers every metric under the `plinth_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plinth");
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            failures: Family::default(),
            deploys: Counter::default(),
            rollbacks: Counter::default(),
            active_instances: Gauge::default(),
            plugins: Gauge::default(),
            kv_bytes: Family::default(),
            memory_peak: Family::default(),
            compiled: Gauge::default(),
            loaded: Gauge::default(),
            scrape: Mutex::new(()),
            history: history::History::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Plugin requests by plugin, route and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from routing a plugin request to its response head",
            metrics.latency.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin requests that trapped, timed out or hit the memory limit",
            metrics.failures.clone(),
        );
        registry.register(
            "deploys",
            "Deploys that changed a plugin",
            metrics.deploys.clone(),
        );
        registry.register("rollbacks", "Rollbacks", metrics.rollbacks.clone());
        registry.register(
            "active_instances",
            "Plugin instances running now",
            metrics.active_instances.clone(),
        );
        registry.register("plugins", "Active plugins", metrics.plugins.clone());
        registry.register(
            "kv_bytes",
            "Bytes (bucket + key + value) each plugin stores",
            metrics.kv_bytes.clone(),
        );
        registry.register(
            "instance_memory_peak_bytes",
            "Largest linear memory an instance of the plugin grew to since start",
            metrics.memory_peak.clone(),
        );
        registry.register(
            "components_compiled",
            "Components compiled since start (a restart with cached artifacts compiles none)",
            metrics.compiled.clone(),
        );
        registry.register(
            "components_loaded_from_cache",
            "Components loaded from a stored compiled artifact since start",
            metrics.loaded.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The metrics of one plugin route, to count its requests with.
    pub fn route(&self, plugin: &str, route: &str) -> RouteMetrics {
        let labels = RouteLabels {
            plugin: plugin.to_string(),
            route: route.to_string(),
        };
        RouteMetrics {
            requests: self.requests.clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            recent: self.history.tally(plugin),
            labels,
            by_class: Default::default(),
        }
    }

    /// The last hour of requests, a minute at a time.
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// Counts a failed request: `kind` is `trap`, `timeout` or `memory_limit`.
    pub fn failure(&self, plugin: &str, kind: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                plugin: plugin.to_string(),
                kind,
            })
            .inc();
    }

    /// Counts a deploy that changed a plugin.
    pub fn deployed(&self) {
        self.deploys.inc();
    }

    /// Counts a rollback.
    pub fn rolled_back(&self) {
        self.rollbacks.inc();
    }

    /// The exposition, with the scrape-time values of `host`.
    pub fn encode(&self, host: HostSnapshot) -> String {
        let _one_scrape = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.active_instances.set(host.active_instances);
        self.plugins.set(host.plugins);
        self.compiled.set(host.compiled);
        self.loaded.set(host.loaded);
        // Deleted plugins drop out of the per-plugin gauges.
        self.kv_bytes.clear();
        for (plugin, bytes) in host.kv_bytes {
            self.kv_bytes
                .get_or_create(&PluginLabels { plugin })
                .set(bytes);
        }
        self.memory_peak.clear();
        for (plugin, bytes) in host.memory_peaks {
            self.memory_peak
                .get_or_create(&PluginLabels { plugin })
                .set(bytes);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status_class() {
        let metrics = Metrics::new();
        let route = metrics.route("hello", "/hello/{name}");
        route.record(200, Duration::from_millis(2));
        // A second handle on the same route (after a redeploy) counts into the same series.
        metrics
            .route("hello", "/hello/{name}")
            .record(503, Duration::from_millis(1));
        metrics.failure("hello", "trap");
        let text = metrics.encode(HostSnapshot {
            active_instances: 0,
            plugins: 1,
            kv_bytes: vec![("hello".into(), 42)],
            memory_peaks: vec![("hello".into(), 1 << 20)],
            compiled: 1,
            loaded: 0,
        });
        assert!(text.contains(
            r#"plinth_requests_total{plugin="hello",route="/hello/{name}",status="2xx"} 1"#
        ));
        assert!(text.contains(r#"status="5xx"} 1"#));
        assert!(
            !text.contains(r#"status="4xx""#),
            "a class never seen is not exported"
        );
        assert!(text.contains(r#"plinth_plugin_failures_total{plugin="hello",kind="trap"} 1"#));
        assert!(text.contains(r#"plinth_kv_bytes{plugin="hello"} 42"#));
        assert!(text.contains(
            r#"plinth_request_duration_seconds_bucket{le="0.0025",plugin="hello",route="/hello/{name}"} 2"#
        ));
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
