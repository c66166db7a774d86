//! What an event store does, whatever keeps it: PostgreSQL (`eventrabbit-postgres`) or
//! memory ([`MemoryEventStore`](super::MemoryEventStore)).

use super::event::{ExpectedVersion, NewEvent, RecordedEvent};
use crate::handler::rejection::HandlerError;
use std::future::Future;

/// Why an event store refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version: another command appended first.
    #[error("stream `{stream}` is at version {actual}, not at the expected {expected}")]
    Conflict {
        /// The stream.
        stream: String,
        /// The version the append expected.
        expected: ExpectedVersion,
        /// The version the stream is at.
        actual: u64,
    },
    /// An event was not an envelope `{"action": .., "data": {..}}`.
    #[error("not an event envelope: {reason}")]
    NotAnEnvelope {
        /// What was wrong.
        reason: String,
    },
    /// A stored event did not read as the type asked for.
    #[error("event {version} of stream `{stream}` (`{action}`) does not decode: {reason}")]
    Decode {
        /// The stream.
        stream: String,
        /// The event's version in it.
        version: u64,
        /// Its action.
        action: String,
        /// What did not fit.
        reason: String,
    },
    /// An upcaster refused a stored event.
    #[error(
        "event {version} of stream `{stream}` (`{action}` revision {revision}) could not be upcast: {reason}"
    )]
    Upcast {
        /// The stream.
        stream: String,
        /// The event's version in it.
        version: u64,
        /// Its action.
        action: String,
        /// The revision the failing upcaster reads.
        revision: u32,
        /// The upcaster's reason.
        reason: String,
    },
    /// An event's message id is already another event's.
    #[error("message id `{0}` is already taken by another event")]
    DuplicateMessageId(String),
    /// A message without a `message_id`: no event can be found for it.
    #[error("the message has no message_id: no stored event can be found for it")]
    NoMessageId,
    /// A message the store holds no event for.
    #[error("the store holds no event with message id `{0}`")]
    UnknownMessage(String),
    /// The store itself failed (the database could not be reached, ...); `transient`
    /// says whether trying again later may succeed.
    #[error("event store: {source}")]
    Backend {
        /// Whether the same call may succeed later (a lost connection, a timeout).
        transient: bool,
        /// The store's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether the same call may succeed later: a conflict (after reloading) or a store
    /// that was unreachable. Everything else is final for this call.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Conflict { .. } => true,
            Self::Backend { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// In a handler (a projection's consumer), what may pass later is retried; a message
/// that is not an event of the store, or an event that does not read, is dead-lettered
/// at once with the reason.
impl HandlerError for StoreError {
    fn is_permanent(&self) -> bool {
        !self.is_transient()
    }
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: u64,
    /// The events, as recorded.
    pub events: Vec<RecordedEvent>,
}

/// An aggregate's state at a version, kept so that loading need not replay every event.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream.
    pub stream: String,
    /// The version of the last event folded into `state`.
    pub version: u64,
    /// Which shape of the state this is (an aggregate ignores snapshots of another).
    pub revision: u32,
    /// The state, as JSON.
    pub state: serde_json::Value,
}

/// An event store: streams of events with optimistic concurrency, a global order, and
/// snapshots. Upcasters (see [`Upcasters`](super::Upcasters)) apply to everything read.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` if it is at `expected`, all or none; fails with
    /// [`StoreError::Conflict`] (naming the stream, the expected and the actual version)
    /// otherwise.
    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// The events of `stream` after version `after` (0: all), in order.
    fn read_stream(
        &self,
        stream: &str,
        after: u64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// At most `limit` events of every stream after global position `after` (0: from the
    /// start), in global order. An event appended later never takes a position at or
    /// below one already returned.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The event published with `message_id`, if the store holds it.
    fn event(
        &self,
        message_id: &str,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send;

    /// The latest snapshot of `stream`.
    fn snapshot(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Keeps `snapshot` as the stream's latest (an older one does not replace a newer).
    fn save_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
