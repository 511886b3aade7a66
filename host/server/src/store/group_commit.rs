//! Group commit: writers apply their change in memory, take a ticket, and wait until one flush
//! that started after their change has finished. One thread does the flushing, so any number of
//! concurrent writers share each flush instead of each paying for its own.

use super::StoreError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// How a flush is done (for sled: `flush()` then `fdatasync`).
pub(super) type FlushFn = Box<dyn FnMut() -> Result<(), StoreError> + Send>;

/// How quickly plugin key-value writes reach the disk. Host records (deploys, users, keys) are
/// always durable before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A write returns only once it is on disk (group commit). The default.
    #[default]
    Durable,
    /// A write returns at once and is flushed within [`PERIODIC_FLUSH`]; a crash may lose the
    /// writes of that last interval.
    Periodic,
}

/// How often the flusher runs in [`Durability::Periodic`] mode.
pub(super) const PERIODIC_FLUSH: Duration = Duration::from_millis(200);

/// What the flusher has done: every change with a ticket `<= durable` is on disk; tickets
/// `<= failed` were in a flush that failed.
#[derive(Debug, Clone, Default)]
struct Flushed {
    durable: u64,
    failed: u64,
    error: Option<Arc<str>>,
}

#[derive(Default)]
struct State {
    /// The ticket of the newest applied change.
    written: u64,
    flushed: Flushed,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher.
    work: Condvar,
    /// Wakes blocking waiters.
    done: Condvar,
    /// Wakes async waiters.
    published: watch::Sender<Flushed>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did (plain counters).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The group committer of one store. Dropping it flushes what is pending and stops its thread.
pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A change waiting to become durable.
#[must_use = "a write is durable only once its ticket has been waited for"]
pub(super) struct Ticket {
    number: u64,
    shared: Option<Arc<Shared>>,
    /// A reader's ticket (see [`GroupCommit::ticket`]): a failed flush that a later one made
    /// good is no failure for it.
    reader: bool,
}

impl GroupCommit {
    /// Starts the flusher thread. In [`Durability::Periodic`] mode it also flushes on a timer.
    pub(super) fn start(mut flush: FlushFn, periodic: bool) -> Result<Self, StoreError> {
        let (published, _) = watch::channel(Flushed::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            published,
        });
        let flusher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("plinth-flush".into())
            .spawn(move || {
                loop {
                    let target = {
                        let mut state = flusher.lock();
                        while state.written == state.flushed.durable && !state.stop {
                            state = if periodic {
                                flusher
                                    .work
                                    .wait_timeout(state, PERIODIC_FLUSH)
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .0
                            } else {
                                flusher
                                    .work
                                    .wait(state)
                                    .unwrap_or_else(PoisonError::into_inner)
                            };
                        }
                        if state.written == state.flushed.durable {
                            return; // stopping, nothing pending
                        }
                        state.written
                    };
                    let result = flush();
                    let mut state = flusher.lock();
                    match result {
                        Ok(()) => state.flushed.durable = target,
                        Err(e) => {
                            tracing::error!(error = %e, "flushing the store failed");
                            state.flushed.failed = target;
                            state.flushed.error = Some(e.to_string().into());
                            // Do not spin on a failing disk.
                            if !state.stop {
                                drop(state);
                                std::thread::sleep(Duration::from_millis(50));
                                state = flusher.lock();
                            }
                            if state.stop {
                                // Report the failure to everyone still waiting, then stop.
                                state.flushed.durable = state.written.max(target);
                                state.flushed.failed = state.flushed.durable;
                            }
                        }
                    }
                    flusher.published.send_replace(state.flushed.clone());
                    flusher.done.notify_all();
                    if periodic && !state.stop {
                        drop(state);
                        std::thread::sleep(PERIODIC_FLUSH);
                    }
                }
            })
            .map_err(|e| StoreError::Backend {
                op: "start the flush thread",
                message: e.to_string(),
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Records that a change has been applied and asks for a flush. Wait on the ticket before
    /// acknowledging the change.
    pub(super) fn written(&self) -> Ticket {
        let number = {
            let mut state = self.shared.lock();
            state.written += 1;
            state.written
        };
        self.shared.work.notify_one();
        Ticket {
            number,
            shared: Some(self.shared.clone()),
            reader: false,
        }
    }

    /// A reader's ticket for the change numbered `number` (from [`Ticket::number`]), already
    /// written: ready once that change is durable (at once for 0 or one that already is). Its
    /// own flush may have failed and a retry succeeded since: then it is durable all the same.
    pub(super) fn ticket(&self, number: u64) -> Ticket {
        if number == 0 || number <= self.shared.lock().flushed.durable {
            return Ticket::ready();
        }
        Ticket {
            number,
            shared: Some(self.shared.clone()),
            reader: true,
        }
    }

    /// Records a change that need not be waited for ([`Durability::Periodic`]): the timer
    /// flushes it.
    pub(super) fn written_lazily(&self) -> Ticket {
        self.shared.lock().written += 1;
        Ticket::ready()
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Ticket {
    /// A ticket with nothing to wait for.
    pub(super) fn ready() -> Self {
        Self {
            number: 0,
            shared: None,
            reader: false,
        }
    }

    /// The change's number in the store's order of writes (0: nothing to wait for).
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    fn outcome(number: u64, reader: bool, flushed: &Flushed) -> Option<Result<(), StoreError>> {
        if reader && number <= flushed.durable {
            return Some(Ok(()));
        }
        if number <= flushed.failed {
            Some(Err(StoreError::Backend {
                op: "flush",
                message: flushed.error.as_deref().unwrap_or("unknown").to_string(),
            }))
        } else if number <= flushed.durable {
            Some(Ok(()))
        } else {
            None
        }
    }

    /// Blocks until the change is on disk.
    pub(super) fn wait_blocking(self) -> Result<(), StoreError> {
        let Some(shared) = self.shared else {
            return Ok(());
        };
        let mut state = shared.lock();
        loop {
            if let Some(result) = Self::outcome(self.number, self.reader, &state.flushed) {
                return result;
            }
            state = shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits, without blocking a thread, until the change is on disk.
    pub(super) async fn wait(self) -> Result<(), StoreError> {
        let Some(shared) = self.shared else {
            return Ok(());
        };
        let mut receiver = shared.published.subscribe();
        let (number, reader) = (self.number, self.reader);
        let flushed = receiver
            .wait_for(|f| Self::outcome(number, reader, f).is_some())
            .await
            .map_err(|_| StoreError::Backend {
                op: "flush",
                message: "the store was closed".into(),
            })?;
        Self::outcome(number, reader, &flushed).unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn concurrent_writers_share_flushes_and_every_ticket_completes() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counter = flushes.clone();
        let group = Arc::new(
            GroupCommit::start(
                Box::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    Ok(())
                }),
                false,
            )
            .unwrap(),
        );
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let group = group.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        group.written().wait_blocking().unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(flushes >= 20, "every writer waited for its own flush");
        assert!(
            flushes < 160,
            "writers shared flushes: {flushes} for 160 writes"
        );
    }

    #[test]
    fn periodic_mode_returns_at_once_and_flushes_on_its_timer() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counter = flushes.clone();
        let group = GroupCommit::start(
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
            true,
        )
        .unwrap();
        group.written_lazily().wait_blocking().unwrap();
        let deadline = std::time::Instant::now() + PERIODIC_FLUSH * 10;
        while flushes.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the timer never flushed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Dropping the committer flushes what is pending and stops the thread.
        let before = flushes.load(Ordering::SeqCst);
        let _pending = group.written_lazily();
        drop(group);
        assert_eq!(flushes.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn a_readers_ticket_waits_for_the_flush_of_what_it_may_have_seen() {
        // A flush that waits for the test's go, and fails the first time.
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let group = GroupCommit::start(
            Box::new(move || {
                let _ = gate.lock().unwrap().recv();
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(StoreError::Backend {
                        op: "fsync",
                        message: "once".into(),
                    });
                }
                Ok(())
            }),
            false,
        )
        .unwrap();
        let written = group.written();
        let reader = group.ticket(written.number());
        assert_eq!(reader.number(), written.number());
        // Nothing flushed yet: the reader's ticket is not ready.
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || done.send(reader.wait_blocking()).unwrap());
        assert!(finished.recv_timeout(Duration::from_millis(200)).is_err());
        // The first flush fails: its writer and the waiting reader hear it (the read cannot be
        // answered from data that may be lost).
        go.send(()).unwrap();
        assert!(written.wait_blocking().is_err());
        let read = finished.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(read.is_err(), "{read:?}");
        waiter.join().unwrap();
        // The flusher retries; once that succeeds, the data is durable and a reader of it has
        // nothing to wait for (a reader's ticket does not inherit the earlier failure).
        go.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while group.ticket(1).number() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the retry never landed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let late = Ticket {
            number: 1,
            shared: Some(group.shared.clone()),
            reader: true,
        };
        assert!(late.wait_blocking().is_ok());
        drop(go);
    }

    #[tokio::test]
    async fn a_failed_flush_is_reported_to_its_writers() {
        let group = GroupCommit::start(
            Box::new(|| {
                Err(StoreError::Backend {
                    op: "fsync",
                    message: "disk on fire".into(),
                })
            }),
            false,
        )
        .unwrap();
        let err = group.written().wait().await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
