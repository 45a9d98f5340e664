//! One shutdown signal for every task and thread of the daemon.
//!
//! `Shutdown` is created once by the service and triggered once (a signal, the end of a finite
//! source, a lost bus). Every task and thread holds a `ShutdownSignal` clone: async tasks `await
//! signal.triggered()` inside their `select!`, threads check `signal.is_triggered()` between steps.
//! A task or thread also holds a `Done` guard; when it ends (returns, panics, or is dropped) its guard
//! drops, and `Shutdown::join` returns once every guard is gone — or reports, after a deadline, how
//! many are still running, so that the process can exit instead of hanging on a stuck model call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The owner's end: triggers the shutdown and waits for everyone to finish.
pub struct Shutdown {
    trigger: watch::Sender<bool>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
    running: Arc<()>,
}

/// A holder's end: tells whether (or when) the shutdown was triggered.
#[derive(Clone)]
pub struct ShutdownSignal {
    triggered: watch::Receiver<bool>,
}

/// Held by a task or thread for as long as it runs; dropping it tells `Shutdown::join` it ended.
pub struct Done {
    _tx: mpsc::Sender<()>,
    _running: Arc<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (trigger, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Shutdown {
            trigger,
            done_tx: Some(done_tx),
            done_rx,
            running: Arc::new(()),
        }
    }

    /// A signal and a done guard for one more task or thread.
    pub fn subscribe(&self) -> (ShutdownSignal, Done) {
        let done = Done {
            _tx: self.done_tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
            _running: Arc::clone(&self.running),
        };
        (self.signal(), done)
    }

    /// A signal alone (for code that is joined some other way, e.g. the D-Bus handlers).
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            triggered: self.trigger.subscribe(),
        }
    }

    /// Tells every holder to stop. Idempotent.
    pub fn trigger(&self) {
        self.trigger.send_replace(true);
    }

    /// Triggers, then waits up to `limit` for every task and thread to drop its guard. Returns the
    /// number still running at the deadline (0: all ended).
    pub async fn join(mut self, limit: Duration) -> usize {
        self.trigger();
        self.done_tx = None;
        match tokio::time::timeout(limit, self.done_rx.recv()).await {
            Ok(_) => 0,
            // Every guard still alive holds a clone of `running`; ours is the one extra.
            Err(_) => Arc::strong_count(&self.running) - 1,
        }
    }
}

impl ShutdownSignal {
    /// Whether the shutdown was triggered (for threads, between their steps).
    pub fn is_triggered(&self) -> bool {
        *self.triggered.borrow()
    }

    /// Completes once the shutdown is triggered (for async tasks, in their `select!`).
    pub async fn triggered(&mut self) {
        // An error means the owner is gone: that is a shutdown too.
        let _ = self.triggered.wait_for(|t| *t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_see_the_trigger_and_join_waits_for_their_guards() {
        let shutdown = Shutdown::new();
        let (mut signal, done) = shutdown.subscribe();
        let task = tokio::spawn(async move {
            signal.triggered().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(done);
        });
        let (thread_signal, thread_done) = shutdown.subscribe();
        let thread = std::thread::spawn(move || {
            while !thread_signal.is_triggered() {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(thread_done);
        });
        assert_eq!(shutdown.join(Duration::from_secs(5)).await, 0);
        task.await.unwrap();
        thread.join().unwrap();
    }

    #[tokio::test]
    async fn join_reports_what_is_still_running_at_the_deadline() {
        let shutdown = Shutdown::new();
        let (_ignored, stuck) = shutdown.subscribe();
        let (_signal, finished) = shutdown.subscribe();
        drop(finished);
        let t = std::time::Instant::now();
        assert_eq!(shutdown.join(Duration::from_millis(100)).await, 1);
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(stuck);
    }
}
