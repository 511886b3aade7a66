//! Instances kept between requests, for plugins whose manifest asks for reuse and whose
//! operator allows it (see [`super::limits::InstanceReuse`]). An instance goes back to the pool
//! only after its request finished cleanly; one that trapped, ran out of time or was cancelled
//! is dropped like any other.
//!
//! **Invariant:** idle instances never take the slots requests in flight need. Every pool draws
//! on one [`IdleBudget`] of `max_instances - max_in_flight` slots, so however many plugins keep
//! instances, a request let in by admission always finds a free slot in the engine's pool.

use super::RequestState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// One instance between requests: its store and its exports.
pub(super) struct Idle {
    pub store: Store<RequestState>,
    pub proxy: Proxy,
}

/// How many more instances may be kept idle, across every plugin's pool.
#[derive(Debug)]
pub(super) struct IdleBudget {
    free: AtomicUsize,
}

impl IdleBudget {
    /// A budget of `slots` idle instances in all.
    pub(super) fn new(slots: usize) -> Self {
        Self {
            free: AtomicUsize::new(slots),
        }
    }

    /// Takes one slot if any is free.
    fn claim(&self) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(1)
            })
            .is_ok()
    }

    /// Gives back `slots` slots.
    fn release(&self, slots: usize) {
        self.free.fetch_add(slots, Ordering::AcqRel);
    }
}

/// The idle instances of one plugin version. Holds at most `capacity` (its concurrency
/// limit), so a burst does not leave more memory behind than the plugin may use at once, and
/// only as many as the shared budget allows.
pub struct InstancePool {
    idle: Mutex<Vec<Idle>>,
    capacity: usize,
    budget: Arc<IdleBudget>,
}

impl InstancePool {
    /// An empty pool keeping at most `capacity` instances, drawing on `budget`.
    pub(super) fn new(capacity: usize, budget: Arc<IdleBudget>) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            capacity,
            budget,
        }
    }

    /// An idle instance, most recently used first (its memory is warmest).
    pub(super) fn take(&self) -> Option<Idle> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if idle.is_some() {
            self.budget.release(1);
        }
        idle
    }

    /// Keeps `idle` for a later request, or drops it when this pool or the budget is full.
    pub(super) fn put(&self, idle: Idle) {
        let surplus = {
            let mut pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < self.capacity && self.budget.claim() {
                pool.push(idle);
                None
            } else {
                Some(idle)
            }
        };
        // Dropped outside the lock: tearing an instance down takes a few microseconds.
        drop(surplus);
    }
}

impl Drop for InstancePool {
    /// A replaced or removed version's idle instances go with it, and so do their slots.
    fn drop(&mut self) {
        let kept = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        let slots = kept.len();
        // The instances first, then their slots: a slot is never offered while still in use.
        drop(kept);
        self.budget.release(slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_claimed_and_released_exactly() {
        let budget = IdleBudget::new(2);
        assert!(budget.claim());
        assert!(budget.claim());
        assert!(!budget.claim(), "a third idle instance has no slot");
        budget.release(1);
        assert!(budget.claim());
        assert!(!budget.claim());
    }
}
