//! Deliveries that could not be settled, by message. Nothing is held: a delivery whose
//! retry or dead letter cannot be sent (after `Config::settle_timeout` of weather) is given
//! back to the broker after a pause that grows with each give-back of the same message, up
//! to [`MAX_PAUSE`], and comes back. A message whose dead letter was decided but could not
//! be sent does not run its handler again when it comes back: its dead letter is sent.
//! Health names the messages given back more than once (queue, message id, why).

use super::in_doubt::InDoubt;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::telemetry::health::StuckMessage;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The pause before the first give-back of a message; doubled for each further one.
const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause before a give-back. With `Config::settle_timeout` (5 s by default)
/// it bounds how long a delivery stays unacknowledged after its handler finished, far
/// below the broker's `consumer_timeout`.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(5);

/// A message given back this often is reported as stuck in health.
const STUCK_AFTER: u32 = 2;

/// A message not seen again for this long is forgotten (another consumer took it, or it
/// was settled elsewhere).
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Beyond this many messages tracked, the oldest are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Identifies a message across redeliveries: its `message_id` and its body. Two messages
/// with one key are the same message as far as anyone can tell, so settling either for
/// the other (a retry or dead letter taken for one, the other acknowledged) leaves the
/// same messages behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct MessageKey(u64);

impl MessageKey {
    pub(super) fn of(message: &Message) -> Self {
        let mut h = DefaultHasher::new();
        message
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str())
            .hash(&mut h);
        message.body.hash(&mut h);
        Self(h.finish())
    }
}

#[derive(Debug)]
struct Entry {
    given_back: u32,
    message_id: Option<String>,
    why: String,
    /// The dead letter decided for it, which could not be sent yet.
    dead_letter: Option<DeadReason>,
    /// Its retry or dead letter whose confirm was late: the broker may have it.
    in_doubt: Option<InDoubt>,
    seen: Instant,
}

/// What one consumer knows of the messages it could not settle.
#[derive(Debug, Default)]
pub(super) struct Unsettled {
    entries: Mutex<HashMap<MessageKey, Entry>>,
    /// How many entries there are: the delivery path looks at it without locking.
    tracked: AtomicUsize,
}

impl Unsettled {
    /// Whether any message is tracked (the common case is no: nothing to look up).
    pub(super) fn any(&self) -> bool {
        self.tracked.load(Ordering::Relaxed) > 0
    }

    /// The dead letter decided for `key` that could not be sent yet, if any.
    pub(super) fn pending_dead_letter(&self, key: MessageKey) -> Option<DeadReason> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&key)?;
        entry.seen = Instant::now();
        entry.dead_letter.clone()
    }

    /// Its retry or dead letter left in doubt, if any.
    pub(super) fn in_doubt(&self, key: MessageKey) -> Option<InDoubt> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&key)?;
        entry.seen = Instant::now();
        entry.in_doubt.clone()
    }

    /// Its retry or dead letter in doubt was not taken: it is to be sent again.
    pub(super) fn not_taken(&self, key: MessageKey) {
        if let Some(entry) = self.entries.lock().get_mut(&key) {
            entry.in_doubt = None;
        }
    }

    /// Counts a give-back of `message` for `why` (remembering the dead letter decided for
    /// it, if that is what could not be sent, and its retry or dead letter left in doubt);
    /// returns how long to pause before giving it back.
    pub(super) fn gave_back(
        &self,
        message: &Message,
        why: String,
        dead_letter: Option<DeadReason>,
        in_doubt: Option<InDoubt>,
    ) -> Duration {
        let key = MessageKey::of(message);
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_TRACKED {
            entries.retain(|_, e| e.seen.elapsed() < FORGET_AFTER);
            if entries.len() >= MAX_TRACKED {
                entries.clear();
            }
        }
        let entry = entries.entry(key).or_insert_with(|| Entry {
            given_back: 0,
            message_id: message
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            why: String::new(),
            dead_letter: None,
            in_doubt: None,
            seen: Instant::now(),
        });
        entry.given_back = entry.given_back.saturating_add(1);
        entry.why = why;
        entry.seen = Instant::now();
        if dead_letter.is_some() {
            entry.dead_letter = dead_letter;
        }
        if in_doubt.is_some() {
            entry.in_doubt = in_doubt;
        }
        let pause = FIRST_PAUSE.saturating_mul(1 << (entry.given_back - 1).min(8));
        self.tracked.store(entries.len(), Ordering::Relaxed);
        pause.min(MAX_PAUSE)
    }

    /// `key` was settled: forget it.
    pub(super) fn settled(&self, key: MessageKey) {
        let mut entries = self.entries.lock();
        if entries.remove(&key).is_some() {
            self.tracked.store(entries.len(), Ordering::Relaxed);
        }
    }

    /// The messages given back more than once and seen lately, for health.
    pub(super) fn stuck(&self) -> Vec<StuckMessage> {
        let mut entries = self.entries.lock();
        entries.retain(|_, e| e.seen.elapsed() < FORGET_AFTER);
        self.tracked.store(entries.len(), Ordering::Relaxed);
        let mut stuck: Vec<StuckMessage> = entries
            .values()
            .filter(|e| e.given_back >= STUCK_AFTER)
            .map(|e| StuckMessage {
                message_id: e.message_id.clone(),
                given_back: e.given_back,
                reason: e.why.clone(),
            })
            .collect();
        stuck.sort_by_key(|m| std::cmp::Reverse(m.given_back));
        stuck
    }
}
