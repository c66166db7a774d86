//! Health: the connection and each consumer, for readiness probes.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio_util::task::TaskTracker;

/// What a consumer loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Connecting and declaring its topology for the first time.
    Starting,
    /// Consuming.
    Running,
    /// Lost its channel or connection; reconnecting.
    Recovering,
    /// Returned (shut down or failed for good).
    Stopped,
}

/// One consumer's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHealth {
    /// The queue it consumes.
    pub queue: String,
    /// What it is doing.
    pub state: ConsumerState,
    /// Deliveries being handled now.
    pub in_flight: usize,
    /// Why it last had to recover, if it ever did.
    pub last_error: Option<String>,
}

/// A snapshot of the connection and every consumer started by one [`Handle`](crate::Handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether the connection is open.
    pub connected: bool,
    /// Why the broker blocks publishing, if it does.
    pub blocked: Option<String>,
    /// Every consumer, in the order they were started.
    pub consumers: Vec<ConsumerHealth>,
}

impl Health {
    /// Ready to serve: connected, not blocked, and every consumer running.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.connected
            && self.blocked.is_none()
            && self
                .consumers
                .iter()
                .all(|c| c.state == ConsumerState::Running)
    }
}

/// A consumer's live state, shared with its loop.
#[derive(Debug)]
pub(crate) struct ConsumerSlot {
    pub(crate) queue: String,
    state: AtomicU8,
    pub(crate) tracker: TaskTracker,
    last_error: Mutex<Option<String>>,
}

impl ConsumerSlot {
    pub(crate) fn new(queue: String) -> Self {
        Self {
            queue,
            state: AtomicU8::new(0),
            tracker: TaskTracker::new(),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn set(&self, state: ConsumerState) {
        let n = match state {
            ConsumerState::Starting => 0,
            ConsumerState::Running => 1,
            ConsumerState::Recovering => 2,
            ConsumerState::Stopped => 3,
        };
        self.state.store(n, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, error: &crate::error::Error) {
        *self.last_error.lock() = Some(error.to_string());
        self.set(ConsumerState::Recovering);
    }

    pub(crate) fn snapshot(&self) -> ConsumerHealth {
        let state = match self.state.load(Ordering::Relaxed) {
            0 => ConsumerState::Starting,
            1 => ConsumerState::Running,
            2 => ConsumerState::Recovering,
            _ => ConsumerState::Stopped,
        };
        ConsumerHealth {
            queue: self.queue.clone(),
            state,
            in_flight: self.tracker.len(),
            last_error: self.last_error.lock().clone(),
        }
    }
}
