//! The last hour of plugin requests, a minute at a time, for the dashboard's charts: requests,
//! server errors (5xx) and p95 latency per plugin and for the host, and for the host also the
//! instances in use and the memory it holds.
//!
//! A request adds to its plugin's running [`Tally`] with relaxed atomics (no lock, no
//! allocation on the request path); once a minute [`History::close_minute`] turns what each
//! tally gained into a [`Minute`], kept for [`MINUTES`] minutes. Readers also get the minute so
//! far, so a request shows in the charts at once.

use super::LATENCY_BUCKETS;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Minutes kept, per plugin and for the host.
pub const MINUTES: usize = 60;
/// Latency buckets: one per bound, and one past the last.
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// One plugin's requests since start, counted as they finish.
#[derive(Debug, Default)]
pub struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Tally {
    /// Counts one request: its status and how long it took.
    pub(super) fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Relaxed);
    }

    fn read(&self) -> Counts {
        Counts {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Relaxed)),
        }
    }
}

/// Counts at one moment, or gained between two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    errors: u64,
    latency: [u64; BUCKETS],
}

impl Counts {
    fn since(&self, before: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(before.latency[i])),
        }
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine += theirs;
        }
    }

    fn minute(&self) -> Minute {
        Minute {
            requests: self.requests,
            errors: self.errors,
            p95_ms: quantile(&self.latency, 0.95),
        }
    }
}

/// The `q` quantile of the latencies counted in `buckets`, in milliseconds, interpolated within
/// its bucket as Prometheus's `histogram_quantile` does; `None` without requests.
fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0.0;
    for (i, &count) in buckets.iter().enumerate() {
        let count = count as f64;
        if count > 0.0 && below + count >= rank {
            let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                // Past the last bound: that bound is all that is known.
                return Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let within = (rank - below) / count;
            return Some((lower + (upper - lower) * within) * 1000.0);
        }
        below += count;
    }
    None
}

/// One minute of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Minute {
    /// Requests that finished.
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    /// 95th percentile latency, in milliseconds; `None` without requests.
    pub p95_ms: Option<f64>,
}

/// What the host holds at the end of a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Plugin requests (each in an instance) in progress.
    pub instances: u64,
    /// Resident memory, in bytes, when known.
    pub memory: Option<u64>,
}

/// A plugin's tally and its closed minutes.
#[derive(Debug)]
struct Series {
    tally: Arc<Tally>,
    /// The tally at the last close.
    closed: Counts,
    minutes: VecDeque<Minute>,
}

impl Series {
    fn so_far(&self) -> Counts {
        self.tally.read().since(&self.closed)
    }
}

/// Every plugin's last hour, and the host's.
#[derive(Debug, Default)]
pub struct History {
    plugins: Mutex<BTreeMap<String, Series>>,
    host: Mutex<VecDeque<(Minute, Gauges)>>,
}

/// Appends to a window of [`MINUTES`].
fn push<T>(window: &mut VecDeque<T>, item: T) {
    if window.len() == MINUTES {
        window.pop_front();
    }
    window.push_back(item);
}

impl History {
    /// The tally `plugin`'s requests add to (one per plugin name, shared by its routes and
    /// versions).
    pub(super) fn tally(&self, plugin: &str) -> Arc<Tally> {
        let mut plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        plugins
            .entry(plugin.to_string())
            .or_insert_with(|| Series {
                tally: Arc::default(),
                closed: Counts::default(),
                minutes: VecDeque::with_capacity(MINUTES),
            })
            .tally
            .clone()
    }

    /// Ends the current minute: what each plugin gained since the last close becomes its
    /// newest minute, their sum with `gauges` the host's. A plugin no route counts for any
    /// more (removed, or every route gone) is forgotten once its last hour is empty.
    pub fn close_minute(&self, gauges: Gauges) {
        let mut plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = Counts::default();
        for series in plugins.values_mut() {
            let now = series.tally.read();
            let gained = now.since(&series.closed);
            series.closed = now;
            total.add(&gained);
            push(&mut series.minutes, gained.minute());
        }
        plugins.retain(|_, series| {
            Arc::strong_count(&series.tally) > 1 || series.minutes.iter().any(|m| m.requests > 0)
        });
        drop(plugins);
        let mut host = self.host.lock().unwrap_or_else(PoisonError::into_inner);
        push(&mut host, (total.minute(), gauges));
    }

    /// The host's last minutes, oldest first, the last one being the minute so far with
    /// `now`'s gauges.
    pub fn host(&self, now: Gauges) -> Vec<(Minute, Gauges)> {
        let so_far = {
            let plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
            let mut total = Counts::default();
            for series in plugins.values() {
                total.add(&series.so_far());
            }
            total
        };
        let host = self.host.lock().unwrap_or_else(PoisonError::into_inner);
        Self::window(host.iter().copied(), (so_far.minute(), now))
    }

    /// `plugin`'s last minutes, oldest first, ending with the minute so far (empty if it has
    /// served nothing since start).
    pub fn plugin(&self, plugin: &str) -> Vec<Minute> {
        let plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        match plugins.get(plugin) {
            Some(series) => Self::window(series.minutes.iter().copied(), series.so_far().minute()),
            None => Vec::new(),
        }
    }

    /// The last [`MINUTES`] of `closed` followed by `current`.
    fn window<T>(closed: impl ExactSizeIterator<Item = T>, current: T) -> Vec<T> {
        let skip = (closed.len() + 1).saturating_sub(MINUTES);
        closed.chain(std::iter::once(current)).skip(skip).collect()
    }
}

/// This process's resident memory, from `/proc/self/status` (Linux; `None` elsewhere).
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Closes a minute every minute, with the host's gauges as `gauges` reads them then.
pub(crate) fn spawn_sampler(
    history: Arc<super::Metrics>,
    gauges: impl Fn() -> Gauges + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await; // the first tick is now
        loop {
            every.tick().await;
            history.history().close_minute(gauges());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Gauges = Gauges {
        instances: 0,
        memory: None,
    };

    #[test]
    fn p95_is_interpolated_within_its_bucket() {
        let mut buckets = [0; BUCKETS];
        assert_eq!(quantile(&buckets, 0.95), None);
        // 100 requests between 1 and 2.5 ms: the 95th is 95% of the way through.
        buckets[2] = 100;
        let p95 = quantile(&buckets, 0.95).unwrap();
        assert!((p95 - 2.425).abs() < 1e-9, "{p95}");
        // One slow request in twenty past every bound: the last bound.
        buckets[BUCKETS - 1] = 100;
        assert_eq!(quantile(&buckets, 0.95), Some(10_000.0));
    }

    #[test]
    fn minutes_close_per_plugin_and_add_up_for_the_host() {
        let history = History::default();
        let (a, b) = (history.tally("a"), history.tally("b"));
        for _ in 0..3 {
            a.record(200, Duration::from_millis(3));
        }
        b.record(503, Duration::from_millis(30));
        // The minute so far shows before it closes.
        assert_eq!(history.plugin("a").last().unwrap().requests, 3);
        let host = history.host(IDLE);
        assert_eq!(
            (host.len(), host[0].0.requests, host[0].0.errors),
            (1, 4, 1)
        );
        history.close_minute(Gauges {
            instances: 2,
            memory: Some(1 << 20),
        });
        a.record(200, Duration::from_millis(3));
        let minutes = history.plugin("a");
        assert_eq!(
            minutes.iter().map(|m| m.requests).collect::<Vec<_>>(),
            [3, 1]
        );
        let host = history.host(IDLE);
        assert_eq!(host[0].1.instances, 2);
        assert_eq!(host[1].0.requests, 1);
        assert_eq!(history.plugin("unknown"), []);
    }

    #[test]
    fn an_hour_is_kept_and_a_plugin_nothing_counts_for_is_forgotten_once_idle() {
        let history = History::default();
        let tally = history.tally("gone");
        tally.record(200, Duration::from_millis(1));
        drop(tally);
        history.close_minute(IDLE);
        assert_eq!(
            history.plugin("gone").len(),
            2,
            "kept while its hour has requests"
        );
        for _ in 0..MINUTES {
            history.close_minute(IDLE);
        }
        assert_eq!(history.plugin("gone"), []);
        assert_eq!(history.host(IDLE).len(), MINUTES);
    }
}
