//! Throttling of the credential endpoints: a per-IP rate limit (governor's GCRA) on login,
//! registration, refresh and setup, and a per-account slowdown after repeated failed logins.
//!
//! The account slowdown grows exponentially (1 s after 10 failures, doubling, capped at 15
//! minutes) and resets on success, so an attacker is slowed to a crawl while the owner is never
//! locked out for good. Failures are tracked for any email, known or not, so the answer reveals
//! nothing about which accounts exist.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins an account absorbs before it is slowed down.
const FREE_FAILURES: u32 = 10;
/// The longest an account is slowed down for.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Entries kept before old ones are pruned (memory stays bounded under a spray of emails).
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
}

/// The throttles.
pub struct Throttle {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    accounts: Mutex<HashMap<String, Failures>>,
}

/// Round a wait up to whole seconds for `Retry-After` (at least 1).
fn retry_secs(wait: Duration) -> u64 {
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
        self.per_ip.check_key(&ip).map_err(|not_until| {
            retry_secs(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Whether `email` may attempt a login now, or how many seconds to wait.
    pub fn check_account(&self, email: &str) -> Result<(), u64> {
        let Ok(accounts) = self.accounts.lock() else {
            return Ok(());
        };
        match accounts.get(email).and_then(|f| f.blocked_until) {
            Some(until) if until > Instant::now() => Err(retry_secs(until - Instant::now())),
            _ => Ok(()),
        }
    }

    /// Records a failed login for `email`.
    pub fn failed(&self, email: &str) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        if accounts.len() >= MAX_TRACKED {
            let now = Instant::now();
            accounts.retain(|_, f| f.blocked_until.is_some_and(|t| t > now));
            if accounts.len() >= MAX_TRACKED {
                accounts.clear();
            }
        }
        let entry = accounts.entry(email.to_string()).or_insert(Failures {
            count: 0,
            blocked_until: None,
        });
        entry.count = entry.count.saturating_add(1);
        if entry.count >= FREE_FAILURES {
            let exponent = (entry.count - FREE_FAILURES).min(20);
            let backoff = Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF);
            entry.blocked_until = Some(Instant::now() + backoff);
        }
    }

    /// Forgets the failures of `email` after a successful login.
    pub fn succeeded(&self, email: &str) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(email);
        }
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
    }

    #[test]
    fn accounts_slow_down_after_repeated_failures_and_recover_on_success() {
        let t = Throttle::new(RateLimit::default());
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("a@b.io");
        }
        assert!(t.check_account("a@b.io").is_ok());
        t.failed("a@b.io");
        assert_eq!(t.check_account("a@b.io"), Err(1));
        assert!(t.check_account("other@b.io").is_ok());
        t.succeeded("a@b.io");
        assert!(t.check_account("a@b.io").is_ok());
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
    }
}
