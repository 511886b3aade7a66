//! Throttling of the credential endpoints: a per-IP rate limit (governor's GCRA) on login,
//! registration, refresh and setup, and a per-account slowdown after repeated failed logins.
//!
//! The account slowdown grows exponentially (1 s after 10 failures, doubling, capped at 15
//! minutes) and resets on success, so an attacker is slowed to a crawl while the owner is never
//! locked out for good. Failures are tracked for any email, known or not, so the answer reveals
//! nothing about which accounts exist.
//!
//! An attempt is counted when it starts ([`Throttle::attempt`]), not when its password check
//! ends: guesses sent at once cannot all pass the check before the first failure is counted.
//! Once an account has used its free failures, one attempt at a time is let through. The map
//! of accounts is bounded by evicting the least telling entries, never by forgetting lockouts.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins an account absorbs before it is slowed down.
pub(super) const FREE_FAILURES: u32 = 10;
/// The longest an account is slowed down for.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Accounts tracked at most (memory stays bounded under a spray of emails).
const MAX_TRACKED: usize = 100_000;

/// Per-IP limits from the server config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window (also the burst).
    pub requests: u32,
    /// The window they refill over.
    pub window: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests: 20,
            window: Duration::from_secs(60),
        }
    }
}

struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
    /// Attempts started and not yet resolved.
    in_flight: u32,
}

/// The throttles.
pub struct Throttle {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    accounts: Mutex<HashMap<String, Failures>>,
}

/// One credential check in progress for an account: resolve it with [`Attempt::failed`] or
/// [`Attempt::succeeded`]; dropped unresolved (an error, a cancelled request), it counts as
/// neither.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    key: String,
    resolved: bool,
}

impl Attempt<'_> {
    /// The credential was wrong.
    pub fn failed(mut self) {
        self.resolved = true;
        self.throttle.resolve(&self.key, Some(false));
    }

    /// The credential was right: the account's failures are forgotten.
    pub fn succeeded(mut self) {
        self.resolved = true;
        self.throttle.resolve(&self.key, Some(true));
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.throttle.resolve(&self.key, None);
        }
    }
}

/// The bucket an address is limited in: an IPv4 address alone, an IPv6 address by its /64 (a
/// single host is usually given a whole /64, so per-address buckets would give it billions).
pub(super) fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Round a wait up to whole seconds for `Retry-After` (at least 1).
pub(super) fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

impl Throttle {
    /// Throttles with `limit` per IP.
    pub fn new(limit: RateLimit) -> Self {
        let requests = NonZeroU32::new(limit.requests.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = (limit.window / requests.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(requests))
            .allow_burst(requests);
        Self {
            per_ip: RateLimiter::keyed(quota),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request from `ip`, or says how many seconds to wait.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        if self.per_ip.len() > MAX_TRACKED {
            self.per_ip.retain_recent();
        }
        self.per_ip.check_key(&bucket(ip)).map_err(|not_until| {
            retry_secs(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Starts a credential check for `key` (an account's email), or says how many seconds to
    /// wait: while the account is slowed down, and while another check of an account that has
    /// used its free failures is still running.
    pub fn attempt(&self, key: &str) -> Result<Attempt<'_>, u64> {
        let mut accounts = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if !accounts.contains_key(key) && accounts.len() >= MAX_TRACKED {
            evict(&mut accounts, now);
        }
        let entry = accounts.entry(key.to_string()).or_insert(Failures {
            count: 0,
            blocked_until: None,
            in_flight: 0,
        });
        if let Some(until) = entry.blocked_until.filter(|until| *until > now) {
            return Err(retry_secs(until - now));
        }
        if entry.in_flight > 0 && entry.count + entry.in_flight >= FREE_FAILURES {
            return Err(1);
        }
        entry.in_flight += 1;
        Ok(Attempt {
            throttle: self,
            key: key.to_string(),
            resolved: false,
        })
    }

    fn resolve(&self, key: &str, succeeded: Option<bool>) {
        let mut accounts = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = accounts.get_mut(key) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match succeeded {
            // The right credential resets the account; checks still running keep the entry,
            // and their failures still count.
            Some(true) if entry.in_flight == 0 => {
                accounts.remove(key);
            }
            Some(true) => {
                entry.count = 0;
                entry.blocked_until = None;
            }
            Some(false) => {
                entry.count = entry.count.saturating_add(1);
                if let Some(backoff) = backoff(entry.count) {
                    entry.blocked_until = Some(Instant::now() + backoff);
                }
            }
            None => {
                if entry.count == 0 && entry.in_flight == 0 {
                    accounts.remove(key);
                }
            }
        }
    }
}

/// How long an account with `failures` failed logins is slowed down for, once past the free
/// ones: 1 s, doubling, at most [`MAX_BACKOFF`].
pub(super) fn backoff(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    Some(Duration::from_secs(1u64 << over.min(20)).min(MAX_BACKOFF))
}

/// Makes room in a full map: first every entry that says nothing (no failure, no check
/// running, no lockout in force), then those with the fewest failures. Lockouts in force go
/// last, the one ending soonest first, so a spray of emails cannot wipe the lockout of an
/// account under attack.
fn evict(accounts: &mut HashMap<String, Failures>, now: Instant) {
    let locked = |f: &Failures| f.blocked_until.is_some_and(|t| t > now);
    accounts.retain(|_, f| f.in_flight > 0 || locked(f) || f.count > 0);
    if accounts.len() < MAX_TRACKED {
        return;
    }
    let victim = accounts
        .iter()
        .filter(|(_, f)| f.in_flight == 0)
        .min_by_key(|(_, f)| (locked(f), f.blocked_until, f.count))
        .map(|(key, _)| key.clone());
    if let Some(victim) = victim {
        accounts.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit_allows_the_burst_then_refuses() {
        let t = Throttle::new(RateLimit {
            requests: 3,
            window: Duration::from_secs(60),
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check_ip(ip).is_ok());
        }
        let wait = t.check_ip(ip).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(t.check_ip("127.0.0.2".parse().unwrap()).is_ok());
        // IPv6 addresses share their /64's bucket.
        for _ in 0..3 {
            assert!(t.check_ip("2001:db8:1:2::1".parse().unwrap()).is_ok());
        }
        assert!(t.check_ip("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        assert!(t.check_ip("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn accounts_slow_down_after_repeated_failures_and_recover_on_success() {
        let t = Throttle::new(RateLimit::default());
        for _ in 0..FREE_FAILURES - 1 {
            t.attempt("a@b.io").unwrap().failed();
        }
        t.attempt("a@b.io").unwrap().failed();
        assert_eq!(t.attempt("a@b.io").err(), Some(1));
        assert!(t.attempt("other@b.io").is_ok());
        t.accounts
            .lock()
            .unwrap()
            .get_mut("a@b.io")
            .unwrap()
            .blocked_until = None;
        t.attempt("a@b.io").unwrap().succeeded();
        assert!(t.attempt("a@b.io").is_ok());
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
    }

    #[test]
    fn guesses_sent_at_once_are_counted_before_any_check_ends() {
        let t = Throttle::new(RateLimit::default());
        // All free failures in flight at once: the next guess waits for one of them.
        let running: Vec<_> = (0..FREE_FAILURES)
            .map(|_| t.attempt("a@b.io").unwrap())
            .collect();
        assert_eq!(t.attempt("a@b.io").err(), Some(1));
        for attempt in running {
            attempt.failed();
        }
        assert!(
            t.attempt("a@b.io").is_err(),
            "slowed down after the failures"
        );
        // A check that ends without an answer (an error, a dropped request) counts as neither.
        drop(t.attempt("b@b.io").unwrap());
        assert!(!t.accounts.lock().unwrap().contains_key("b@b.io"));
    }

    #[test]
    fn a_full_map_never_forgets_a_lockout_in_force() {
        let t = Throttle::new(RateLimit::default());
        for _ in 0..FREE_FAILURES {
            t.attempt("victim@b.io").unwrap().failed();
        }
        {
            let mut accounts = t.accounts.lock().unwrap();
            for i in 0..MAX_TRACKED {
                accounts.insert(
                    format!("spray{i}@b.io"),
                    Failures {
                        count: 1,
                        blocked_until: None,
                        in_flight: 0,
                    },
                );
            }
        }
        assert!(t.attempt("new@b.io").is_ok());
        assert!(t.attempt("victim@b.io").is_err());
        assert!(t.accounts.lock().unwrap().len() <= MAX_TRACKED + 1);
    }
}
