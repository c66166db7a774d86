//! Deliveries that could not be settled, by message: a message given back to the broker
//! again and again (its retry or dead letter cannot be sent, or settling it panics) is
//! held after a few tries: left unacknowledged, its handler not run again, and reported
//! in health, instead of cycling between the broker and the handler forever.

use crate::handler::context::Message;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many times a message is given back before it is held.
pub(super) const GIVE_BACK_LIMIT: u32 = 5;

/// Beyond this many messages tracked, the counts start over (held ones are kept).
const MAX_TRACKED: usize = 10_000;

/// Identifies a message across redeliveries: its `message_id`, else its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct MessageKey(u64);

impl MessageKey {
    pub(super) fn of(message: &Message) -> Self {
        let mut h = DefaultHasher::new();
        match message.properties.message_id() {
            Some(id) => id.as_str().hash(&mut h),
            None => message.body.hash(&mut h),
        }
        Self(h.finish())
    }
}

/// What one consumer knows of the messages it could not settle.
#[derive(Debug, Default)]
pub(super) struct Unsettled {
    /// Times given back, by message; `GIVE_BACK_LIMIT` or more means held.
    counts: Mutex<HashMap<MessageKey, u32>>,
    /// How many entries `counts` has: the delivery path looks at it without locking.
    tracked: AtomicUsize,
}

impl Unsettled {
    /// Whether any message is tracked (the common case is no: nothing to look up).
    pub(super) fn any(&self) -> bool {
        self.tracked.load(Ordering::Relaxed) > 0
    }

    /// Whether `key` is held.
    pub(super) fn is_held(&self, key: MessageKey) -> bool {
        self.counts
            .lock()
            .get(&key)
            .is_some_and(|n| *n >= GIVE_BACK_LIMIT)
    }

    /// Counts a give-back of `key`; `true` once it is to be held.
    pub(super) fn gave_back(&self, key: MessageKey) -> bool {
        let mut counts = self.counts.lock();
        if counts.len() >= MAX_TRACKED {
            counts.retain(|_, n| *n >= GIVE_BACK_LIMIT);
        }
        let n = counts.entry(key).or_default();
        *n = n.saturating_add(1);
        let held = *n >= GIVE_BACK_LIMIT;
        self.tracked.store(counts.len(), Ordering::Relaxed);
        held
    }

    /// Holds `key` at once (it can never be settled).
    pub(super) fn hold(&self, key: MessageKey) {
        let mut counts = self.counts.lock();
        counts.insert(key, GIVE_BACK_LIMIT);
        self.tracked.store(counts.len(), Ordering::Relaxed);
    }

    /// `key` was settled: forget it.
    pub(super) fn settled(&self, key: MessageKey) {
        let mut counts = self.counts.lock();
        counts.remove(&key);
        self.tracked.store(counts.len(), Ordering::Relaxed);
    }

    /// How many messages are held.
    pub(super) fn held(&self) -> usize {
        self.counts
            .lock()
            .values()
            .filter(|n| **n >= GIVE_BACK_LIMIT)
            .count()
    }
}
