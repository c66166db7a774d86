//! Per-key lanes of a keyed consumer ([`ConsumeChannel::order_by`]): a delivery waits
//! until the one before it with the same key has finished, and runs at once when its key
//! is idle. The lane of a key exists while one of its deliveries is in flight.
//!
//! [`ConsumeChannel::order_by`]: crate::ConsumeChannel::order_by

use futures_util::FutureExt;
use futures_util::future::Shared;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Finished when a delivery's turn ends (its sender sent or dropped).
pub(super) type TurnDone = Shared<oneshot::Receiver<()>>;

/// The keys in flight, each with its last delivery's turn.
#[derive(Default)]
pub(super) struct Lanes {
    last: Mutex<HashMap<String, (u64, TurnDone)>>,
    next_turn: AtomicU64,
}

/// A delivery's place in its key's lane, held while it is handled: dropping it lets the
/// key's next delivery run.
pub(super) struct Turn {
    lanes: Arc<Lanes>,
    key: String,
    id: u64,
    done: Option<oneshot::Sender<()>>,
}

impl Lanes {
    /// Takes the next turn in `key`'s lane: the turn, and what it waits for first (the
    /// turn before it, if that one is still in flight).
    pub(super) fn join(self: &Arc<Self>, key: String) -> (Turn, Option<TurnDone>) {
        let id = self.next_turn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let before = self
            .last
            .lock()
            .insert(key.clone(), (id, rx.shared()))
            .map(|(_, done)| done);
        let turn = Turn {
            lanes: self.clone(),
            key,
            id,
            done: Some(tx),
        };
        (turn, before)
    }

    /// How many keys have a delivery in flight.
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.last.lock().len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        let mut last = self.lanes.last.lock();
        // The key is idle unless a later turn joined meanwhile.
        if last.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            last.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_runs_one_turn_at_a_time_and_keys_do_not_wait_for_each_other() {
        let lanes = Arc::new(Lanes::default());
        let (a1, none) = lanes.join("a".into());
        assert!(none.is_none());
        let (b1, none) = lanes.join("b".into());
        assert!(none.is_none());
        let (a2, wait) = lanes.join("a".into());
        let wait = wait.expect("a2 waits for a1");
        assert_eq!(lanes.busy(), 2);
        drop(b1);
        assert_eq!(lanes.busy(), 1, "b is idle once its only turn ends");
        assert!(wait.clone().now_or_never().is_none(), "a1 is still running");
        drop(a1);
        assert!(wait.now_or_never().is_some(), "a2 runs once a1 ended");
        assert_eq!(lanes.busy(), 1, "a2 still holds the lane");
        drop(a2);
        assert_eq!(lanes.busy(), 0);
    }
}
