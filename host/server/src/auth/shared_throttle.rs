//! The credential throttles' state in the store, for hosts that share one (PostgreSQL): a
//! client spreading its guesses over every host behind the load balancer gets the attempts one
//! host would give it, not one host's times the number of hosts.
//!
//! Each host still keeps its own in-memory throttles ([`super::throttle`]), which answer first
//! and cost nothing; these add the cluster-wide count. The per-IP limit is the same GCRA as
//! governor's (a theoretical arrival time per address bucket, moved by a conditional commit);
//! an account's failed logins and lockout are one record (keyed by the account's SHA-256), also
//! changed by conditional commits.
//! Both spaces are pruned with the other expired records ([`prune`]).

use super::throttle::{RateLimit, backoff, bucket, retry_secs};
use crate::store::{Op, Space, Store, StoreError, from_json, to_json};
use crate::units::now_ms;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Attempts of a conditional commit that keeps meeting another host's.
const ATTEMPTS: usize = 8;
/// How long an account's failures are remembered after its last one (as in memory, until a
/// success or this long).
const FAILURES_KEPT: Duration = Duration::from_secs(24 * 3600);

/// One account's failed logins across hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Failures {
    count: u32,
    /// Milliseconds since the epoch until which the account is slowed down.
    blocked_until_ms: u64,
    /// When the last failure was recorded.
    updated_ms: u64,
}

/// The shared throttles.
pub(super) struct SharedThrottle {
    store: Arc<dyn Store>,
    /// Milliseconds between two requests of one bucket at the steady rate.
    interval_ms: u64,
    /// How far ahead of now the arrival time may run (the burst).
    tolerance_ms: u64,
}

impl SharedThrottle {
    pub(super) fn new(store: Arc<dyn Store>, limit: RateLimit) -> Self {
        let requests = u64::from(limit.requests.max(1));
        let interval_ms = (limit.window.as_millis() as u64 / requests).max(1);
        Self {
            store,
            interval_ms,
            tolerance_ms: interval_ms * (requests - 1),
        }
    }

    /// Admits one request from `ip` across hosts, or says how many seconds to wait.
    pub(super) async fn check_ip(&self, ip: IpAddr) -> Result<Result<(), u64>, StoreError> {
        let key = bucket(ip).to_string().into_bytes();
        for _ in 0..ATTEMPTS {
            let stored = self.store.get(Space::RateLimits, &key).await?;
            let now = now_ms();
            let arrival = stored
                .as_deref()
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(now, u64::from_be_bytes)
                .max(now);
            if arrival > now + self.tolerance_ms {
                let wait = Duration::from_millis(arrival - self.tolerance_ms - now);
                return Ok(Err(retry_secs(wait)));
            }
            let next = (arrival + self.interval_ms).to_be_bytes().to_vec();
            let ops = vec![
                Op::Expect {
                    space: Space::RateLimits,
                    key: key.clone(),
                    value: stored,
                },
                Op::Put {
                    space: Space::RateLimits,
                    key: key.clone(),
                    value: next,
                },
            ];
            if self.store.commit(ops).await? {
                return Ok(Ok(()));
            }
        }
        // Other hosts kept moving it: this address is busy enough to wait a moment.
        Ok(Err(1))
    }

    /// How many seconds `account` must wait before another attempt, if it is slowed down.
    pub(super) async fn blocked(&self, account: &str) -> Result<Option<u64>, StoreError> {
        let Some(failures) = self.read(account).await? else {
            return Ok(None);
        };
        let now = now_ms();
        Ok((failures.blocked_until_ms > now)
            .then(|| retry_secs(Duration::from_millis(failures.blocked_until_ms - now))))
    }

    /// Counts a failed check of `account`, slowing it down past the free failures.
    pub(super) async fn failed(&self, account: &str) -> Result<(), StoreError> {
        let key = record_key(account);
        for _ in 0..ATTEMPTS {
            let stored = self.store.get(Space::LoginFailures, &key).await?;
            let before = match &stored {
                Some(bytes) => Some(from_json::<Failures>("login failures", bytes)?),
                None => None,
            };
            let now = now_ms();
            let count = before.map_or(0, |f| f.count).saturating_add(1);
            let blocked_until_ms = match backoff(count) {
                Some(wait) => now + wait.as_millis() as u64,
                None => 0,
            };
            let next = Failures {
                count,
                blocked_until_ms,
                updated_ms: now,
            };
            let ops = vec![
                Op::Expect {
                    space: Space::LoginFailures,
                    key: key.clone(),
                    value: stored,
                },
                Op::Put {
                    space: Space::LoginFailures,
                    key: key.clone(),
                    value: to_json("login failures", &next)?,
                },
            ];
            if self.store.commit(ops).await? {
                return Ok(());
            }
        }
        Err(StoreError::Backend {
            op: "count a failed login",
            message: "other hosts kept changing the record".into(),
        })
    }

    /// Forgets `account`'s failures (its right credential was given).
    pub(super) async fn succeeded(&self, account: &str) -> Result<(), StoreError> {
        if self.read(account).await?.is_none() {
            return Ok(());
        }
        self.store
            .commit(vec![Op::Delete {
                space: Space::LoginFailures,
                key: record_key(account),
            }])
            .await
            .map(|_| ())
    }

    async fn read(&self, account: &str) -> Result<Option<Failures>, StoreError> {
        match self
            .store
            .get(Space::LoginFailures, &record_key(account))
            .await?
        {
            Some(bytes) => from_json("login failures", &bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// The key of `account`'s failures record: its SHA-256, so a client signing in with an
/// arbitrary (or enormous) email stores 32 bytes, and the emails people mistype are not kept
/// in clear.
fn record_key(account: &str) -> Vec<u8> {
    super::sha256(account).to_vec()
}

/// Deletes rate-limit records whose arrival time has passed and failure records with no
/// lockout in force and no failure for [`FAILURES_KEPT`]. Returns how many went.
pub(crate) async fn prune(store: &dyn Store, now: u64) -> Result<usize, StoreError> {
    let mut pruned = 0;
    for space in [Space::RateLimits, Space::LoginFailures] {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan(space, b"", after.as_deref(), 500).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let mut ops = Vec::new();
            for (key, value) in page {
                let expired = match space {
                    Space::RateLimits => <[u8; 8]>::try_from(value.as_slice())
                        .map_or(true, |b| u64::from_be_bytes(b) < now),
                    _ => from_json::<Failures>("login failures", &value).map_or(true, |f| {
                        f.blocked_until_ms < now
                            && f.updated_ms + (FAILURES_KEPT.as_millis() as u64) < now
                    }),
                };
                if expired {
                    // Only if unchanged since read: a host counting it now keeps it.
                    ops.push(vec![
                        Op::Expect {
                            space,
                            key: key.clone(),
                            value: Some(value),
                        },
                        Op::Delete { space, key },
                    ]);
                }
            }
            for op in ops {
                if store.commit(op).await? {
                    pruned += 1;
                }
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::throttle::FREE_FAILURES;
    use crate::store::{Durability, SledStore};

    #[tokio::test]
    async fn the_shared_limits_count_every_hosts_requests_and_failures() {
        let dir = std::env::temp_dir().join(format!(
            "plinth-shared-throttle-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&dir, Durability::Durable).await.unwrap());
        let limit = RateLimit {
            requests: 3,
            window: Duration::from_secs(60),
        };
        // Two hosts' throttles on one store.
        let (a, b) = (
            SharedThrottle::new(store.clone(), limit),
            SharedThrottle::new(store.clone(), limit),
        );
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(a.check_ip(ip).await.unwrap(), Ok(()));
        assert_eq!(b.check_ip(ip).await.unwrap(), Ok(()));
        assert_eq!(a.check_ip(ip).await.unwrap(), Ok(()));
        let wait = b.check_ip(ip).await.unwrap().unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(
            a.check_ip("203.0.113.10".parse().unwrap()).await.unwrap(),
            Ok(())
        );

        for i in 0..FREE_FAILURES {
            assert_eq!(a.blocked("x@example.com").await.unwrap(), None, "{i}");
            let host = if i % 2 == 0 { &a } else { &b };
            host.failed("x@example.com").await.unwrap();
        }
        assert_eq!(b.blocked("x@example.com").await.unwrap(), Some(1));
        // An enormous email costs a fixed-size record, and no email is kept in clear.
        a.failed(&"y".repeat(100_000)).await.unwrap();
        let records = store
            .scan(Space::LoginFailures, b"", None, 10)
            .await
            .unwrap();
        assert_eq!(records.len(), 2);
        for (key, value) in &records {
            assert_eq!(key.len(), 32);
            assert!(!String::from_utf8_lossy(value).contains("example"));
        }
        assert_eq!(a.blocked("y@example.com").await.unwrap(), None);
        a.succeeded("x@example.com").await.unwrap();
        assert_eq!(b.blocked("x@example.com").await.unwrap(), None);
        // Nothing is pruned while it still counts; an arrival time past goes.
        assert_eq!(prune(&*store, now_ms()).await.unwrap(), 0);
        let later = now_ms() + 3_600_000;
        assert_eq!(prune(&*store, later).await.unwrap(), 2, "both buckets");
        assert_eq!(
            prune(&*store, later + 86_400_000).await.unwrap(),
            1,
            "the old failure"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
