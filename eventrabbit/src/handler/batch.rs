//! Batch handlers (`#[consumer(action = .., batch(max = 100, window = "50ms"))]`): messages
//! of one action handled by one call taking a `Vec`, up to `max` of them or what arrived
//! within `window` of the first, whichever comes first.
//!
//! Each message waits for its batch in its own delivery task; the first of a batch (its
//! leader) waits until the batch is full or the window passed, closes it, runs the handler
//! once and hands the outcome to every member. Each member then settles its own message
//! by that outcome: acknowledged, or retried one by one (a retried message runs alone, a
//! batch of one, so that one bad message does not fail the others again), then
//! dead-lettered one by one when its retries are spent.

use super::input::{Failure, HandlerFuture, Input, Reply};
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// A batch handler's limits, from the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    pub(crate) max: usize,
    pub(crate) window: Duration,
}

impl BatchSpec {
    /// Up to `max` messages, or those that arrived within `window_ms` of the first.
    pub const fn new(max: usize, window_ms: u64) -> Self {
        Self {
            max,
            window: Duration::from_millis(window_ms),
        }
    }

    /// The most messages in one call.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// How long the first message of a batch waits for others.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// A registered batch handler's entry point: the messages of one batch, in arrival order.
pub type BatchFn = fn(Vec<Input>) -> HandlerFuture;

/// What every member of a batch learns: the handler's outcome (its reply is not shared:
/// a batch handler returns `()`).
type Shared = Option<Result<(), Failure>>;

/// One batch: open while it takes members, closed once full or its window passed.
struct Slot {
    inputs: Mutex<Vec<Input>>,
    done: watch::Sender<Shared>,
    full: Notify,
}

/// The open batch of one batch handler on one queue.
#[derive(Default)]
pub(crate) struct Batcher {
    open: Mutex<Option<Arc<Slot>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Fails the batch of a leader that went away before running it.
struct Abandon<'a> {
    batcher: &'a Batcher,
    slot: &'a Arc<Slot>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        self.batcher.close(self.slot);
        let _ = self.slot.done.send(Some(Err(Failure::Failed(
            "the batch was abandoned before its handler ran".into(),
        ))));
    }
}

impl Batcher {
    /// Takes `slot` out of the open place, if it is still there: later members open a
    /// new batch.
    fn close(&self, slot: &Arc<Slot>) {
        let mut open = self.open.lock();
        if open.as_ref().is_some_and(|o| Arc::ptr_eq(o, slot)) {
            *open = None;
        }
    }

    /// Closes the open batch, if any: its leader runs it now.
    pub(crate) fn flush(&self) {
        if let Some(slot) = self.open.lock().take() {
            slot.full.notify_one();
        }
    }

    /// Adds `input` to the open batch (opening one if none is), waits for the batch's
    /// outcome and returns it. The caller that opened the batch runs the handler.
    pub(crate) async fn submit(
        &self,
        spec: BatchSpec,
        call: BatchFn,
        input: Input,
    ) -> Result<Reply, Failure> {
        let max = spec.max.max(1);
        // Joining happens under the lock of the open place, so a batch its leader closed
        // (and took the members of) is never joined afterwards.
        let (slot, leader, filled, mut done) = {
            let mut open = self.open.lock();
            let (slot, leader) = match open.as_ref() {
                Some(slot) => (slot.clone(), false),
                None => {
                    let slot = Arc::new(Slot {
                        inputs: Mutex::new(Vec::with_capacity(max)),
                        done: watch::channel(None).0,
                        full: Notify::new(),
                    });
                    *open = Some(slot.clone());
                    (slot, true)
                }
            };
            let done = slot.done.subscribe();
            let filled = {
                let mut inputs = slot.inputs.lock();
                inputs.push(input);
                inputs.len() >= max
            };
            if filled {
                *open = None;
            }
            (slot, leader, filled, done)
        };
        if filled {
            // `notify_one` keeps a permit: a leader not yet waiting still sees it.
            slot.full.notify_one();
        }
        if leader {
            let guard = Abandon {
                batcher: self,
                slot: &slot,
            };
            if !filled {
                let _ = tokio::time::timeout(spec.window, slot.full.notified()).await;
            }
            // Closed under the open place's lock: nobody joins it after this.
            self.close(&slot);
            let inputs = std::mem::take(&mut *slot.inputs.lock());
            let outcome = match AssertUnwindSafe(call(inputs)).catch_unwind().await {
                Ok(outcome) => outcome.map(|_| ()),
                Err(_) => Err(Failure::Failed("batch handler panicked".into())),
            };
            std::mem::forget(guard);
            let _ = slot.done.send(Some(outcome));
        }
        match done.wait_for(Option::is_some).await {
            Ok(outcome) => match &*outcome {
                Some(Ok(())) => Ok(Reply::none()),
                // Which member was refused is not known: each is retried alone, where
                // the handler's verdict is its own.
                Some(Err(Failure::Rejected(why))) => Err(Failure::Failed(format!(
                    "its batch was rejected ({why}); retried alone"
                ))),
                Some(Err(failure)) => Err(failure.clone()),
                None => Err(Failure::Failed("the batch ended without an outcome".into())),
            },
            Err(_) => Err(Failure::Failed("the batch ended without an outcome".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::context::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static HANDLED: AtomicUsize = AtomicUsize::new(0);

    fn count(inputs: Vec<Input>) -> HandlerFuture {
        HANDLED.fetch_add(inputs.len(), Ordering::SeqCst);
        Box::pin(async { Ok(Reply::none()) })
    }

    fn input() -> Input {
        let message = Message {
            queue: "q".into(),
            exchange: "".into(),
            routing_key: "q".into(),
            redelivered: false,
            offset: None,
            properties: Default::default(),
            body: br#"{"action":"A","data":{}}"#.to_vec(),
        };
        Input::new(Arc::new(message), 21..23, Default::default())
    }

    /// Every member told its batch succeeded was in a batch the handler ran: joining and
    /// closing never race (a member joining a batch its leader had already taken would be
    /// acknowledged without being handled).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_member_is_acknowledged_without_being_handled() {
        let batcher = Arc::new(Batcher::default());
        let spec = BatchSpec::new(7, 1);
        let mut tasks = Vec::new();
        for _ in 0..4_000 {
            let batcher = batcher.clone();
            tasks.push(tokio::spawn(async move {
                batcher.submit(spec, count, input()).await.is_ok()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap() {
                ok += 1;
            }
        }
        assert_eq!(ok, HANDLED.load(Ordering::SeqCst));
    }
}
