//! Instances kept between requests, for plugins whose manifest asks for reuse and whose
//! operator allows it (see [`super::limits::InstanceReuse`]). An instance goes back to the pool
//! only after its request finished cleanly; one that trapped, ran out of time or was cancelled
//! is dropped like any other.

use super::RequestState;
use std::sync::{Mutex, PoisonError};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// One instance between requests: its store and its exports.
pub(super) struct Idle {
    pub store: Store<RequestState>,
    pub proxy: Proxy,
}

/// The idle instances of one plugin version. Holds at most `capacity` (its concurrency
/// limit), so a burst does not leave more memory behind than the plugin may use at once.
pub struct InstancePool {
    idle: Mutex<Vec<Idle>>,
    capacity: usize,
}

impl InstancePool {
    /// An empty pool keeping at most `capacity` instances.
    pub fn new(capacity: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// An idle instance, most recently used first (its memory is warmest).
    pub(super) fn take(&self) -> Option<Idle> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps `idle` for a later request, or drops it when the pool is full.
    pub(super) fn put(&self, idle: Idle) {
        let surplus = {
            let mut pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < self.capacity {
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
