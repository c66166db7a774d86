//! Health: the connection and each consumer, for readiness probes.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use tokio_util::task::TaskTracker;

/// What a consumer loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Connecting and declaring its topology for the first time.
    Starting,
    /// Consuming.
    Running,
    /// Consuming, but some messages cannot be settled (their retry or dead letter cannot
    /// be sent): they are given back to the broker again and again, with a pause, and
    /// [`ConsumerHealth::stuck`] names them; `last_error` says why. An event log's reader
    /// is stuck on one event it cannot dead-letter.
    Stuck,
    /// Lost its channel or connection; reconnecting. `last_error` says why.
    Recovering,
    /// Returned after a shutdown.
    Stopped,
    /// Returned on an error reconnecting cannot fix (a refused topology, a bad handler
    /// set); `last_error` says which.
    Failed,
    /// Its task ended without returning: it panicked, or its future was dropped.
    Dead,
}

impl ConsumerState {
    fn code(self) -> u8 {
        match self {
            ConsumerState::Starting => 0,
            ConsumerState::Running => 1,
            ConsumerState::Stuck => 2,
            ConsumerState::Recovering => 3,
            ConsumerState::Stopped => 4,
            ConsumerState::Failed => 5,
            ConsumerState::Dead => 6,
        }
    }

    fn from_code(n: u8) -> Self {
        match n {
            0 => ConsumerState::Starting,
            1 => ConsumerState::Running,
            2 => ConsumerState::Stuck,
            3 => ConsumerState::Recovering,
            4 => ConsumerState::Stopped,
            5 => ConsumerState::Failed,
            _ => ConsumerState::Dead,
        }
    }

    /// Whether the consumer loop has ended (stopped, failed or dead).
    #[must_use]
    pub fn is_over(self) -> bool {
        matches!(
            self,
            ConsumerState::Stopped | ConsumerState::Failed | ConsumerState::Dead
        )
    }
}

/// One consumer's health.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// The queue it consumes.
    pub queue: String,
    /// What it is doing.
    pub state: ConsumerState,
    /// Deliveries being handled now.
    pub in_flight: usize,
    /// How many messages it cannot settle for now (the length of `stuck`).
    pub held: usize,
    /// The messages it cannot settle for now: given back to the broker more than once
    /// (their retry or dead letter could not be sent), or, for an event log, the event its
    /// reader waits on.
    pub stuck: Vec<StuckMessage>,
    /// What last went wrong, if anything ever did.
    pub last_error: Option<String>,
}

/// A message a consumer cannot settle for now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StuckMessage {
    /// Its `message_id`, if it has one.
    pub message_id: Option<String>,
    /// How many times it was given back to the broker (or, for an event log, tried).
    pub given_back: u32,
    /// Why it could not be settled.
    pub reason: String,
}

/// A snapshot of the connection and every consumer started by one [`Handle`](crate::Handle).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the connection is open.
    pub connected: bool,
    /// The node the connection goes to (its URL without the password), when connected.
    pub node: Option<String>,
    /// Why the broker blocks publishing, if it does.
    pub blocked: Option<String>,
    /// Every consumer, in the order they were started.
    pub consumers: Vec<ConsumerHealth>,
}

impl Health {
    pub(crate) fn new(
        node: Option<String>,
        blocked: Option<String>,
        consumers: Vec<ConsumerHealth>,
    ) -> Self {
        Self {
            connected: node.is_some(),
            node,
            blocked,
            consumers,
        }
    }

    /// Ready to serve: connected, not blocked, and every consumer running (none stuck,
    /// recovering, failed or dead).
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
    held: AtomicUsize,
    stuck: Mutex<Vec<StuckMessage>>,
    pub(crate) tracker: TaskTracker,
    last_error: Mutex<Option<String>>,
}

impl ConsumerSlot {
    pub(crate) fn new(queue: String) -> Self {
        Self {
            queue,
            state: AtomicU8::new(ConsumerState::Starting.code()),
            held: AtomicUsize::new(0),
            stuck: Mutex::default(),
            tracker: TaskTracker::new(),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> ConsumerState {
        ConsumerState::from_code(self.state.load(Ordering::Relaxed))
    }

    /// Consuming: `Running`, or `Stuck` while it holds messages.
    pub(crate) fn running(&self) {
        let state = match self.held.load(Ordering::Relaxed) {
            0 => ConsumerState::Running,
            _ => ConsumerState::Stuck,
        };
        self.set(state);
    }

    pub(crate) fn set(&self, state: ConsumerState) {
        self.state.store(state.code(), Ordering::Relaxed);
    }

    /// Records what went wrong, and the state it leaves the consumer in.
    pub(crate) fn error(&self, state: ConsumerState, error: impl std::fmt::Display) {
        *self.last_error.lock() = Some(error.to_string());
        self.set(state);
    }

    /// Records what went wrong without changing the state.
    pub(crate) fn note(&self, error: impl std::fmt::Display) {
        *self.last_error.lock() = Some(error.to_string());
    }

    /// The messages the consumer cannot settle for now: `Stuck` while there are any, back
    /// to `Running` when none is left.
    pub(crate) fn stuck(&self, stuck: Vec<StuckMessage>) {
        let count = stuck.len();
        let last = stuck.first().map(|m| m.reason.clone());
        *self.stuck.lock() = stuck;
        self.held.store(count, Ordering::Relaxed);
        match (last, self.state()) {
            (Some(why), ConsumerState::Running | ConsumerState::Stuck) => {
                self.error(ConsumerState::Stuck, why);
            }
            (None, ConsumerState::Stuck) => self.set(ConsumerState::Running),
            _ => {}
        }
    }

    pub(crate) fn snapshot(&self) -> ConsumerHealth {
        ConsumerHealth {
            queue: self.queue.clone(),
            state: self.state(),
            in_flight: self.tracker.len(),
            held: self.held.load(Ordering::Relaxed),
            stuck: self.stuck.lock().clone(),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// Marks the consumer `Dead` if its loop ends without saying how (a panic unwinding
/// through it, or its future dropped).
#[derive(Debug)]
pub(crate) struct EndGuard<'a>(pub(crate) &'a ConsumerSlot);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        if !self.0.state().is_over() {
            let why = match std::thread::panicking() {
                true => "the consumer's task panicked",
                false => "the consumer's task was dropped before it returned",
            };
            self.0.error(ConsumerState::Dead, why);
        }
    }
}
