//! The event store in memory: the same API as the PostgreSQL one, for unit tests of
//! aggregates and projections.

use super::event::{ExpectedVersion, NewEvent, RecordedEvent};
use super::store::{Appended, EventStore, Snapshot, StoreError};
use super::upcast::Upcasters;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// An [`EventStore`] in memory. Clones share the events.
///
/// ```
/// use eventrabbit::sourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), eventrabbit::sourcing::StoreError> {
/// let store = MemoryEventStore::new();
/// let opened = NewEvent::new("ACCOUNT_OPENED", &serde_json::json!({"owner": "ann"}))?;
/// store.append("account-1", ExpectedVersion::Exact(0), vec![opened]).await?;
/// let again = NewEvent::new("ACCOUNT_OPENED", &serde_json::json!({"owner": "bob"}))?;
/// assert!(store.append("account-1", ExpectedVersion::Exact(0), vec![again]).await.is_err());
/// assert_eq!(store.read_stream("account-1", 0).await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryEventStore {
    inner: Arc<Mutex<Stored>>,
    upcasters: Arc<Upcasters>,
}

#[derive(Debug, Default)]
struct Stored {
    /// Every event in global order (position = index + 1), as written.
    events: Vec<RecordedEvent>,
    /// Per stream, the indexes of its events.
    streams: HashMap<String, Vec<usize>>,
    by_message: HashMap<String, usize>,
    snapshots: HashMap<String, Snapshot>,
}

impl MemoryEventStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same events, read through `upcasters` and written at their revisions.
    #[must_use]
    pub fn upcasting(&self, upcasters: Upcasters) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            upcasters: Arc::new(upcasters),
        }
    }

    /// How many events the store holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self, event: &RecordedEvent) -> Result<RecordedEvent, StoreError> {
        self.upcasters.apply(event.clone())
    }
}

impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let mut stored = self.inner.lock();
        let actual = stored.streams.get(stream).map_or(0, |s| s.len() as u64);
        if !expected.admits(actual) {
            return Err(StoreError::Conflict {
                stream: stream.to_owned(),
                expected,
                actual,
            });
        }
        if let Some(taken) = events
            .iter()
            .find(|e| stored.by_message.contains_key(&e.metadata.message_id))
        {
            return Err(StoreError::DuplicateMessageId(
                taken.metadata.message_id.clone(),
            ));
        }
        let now = SystemTime::now();
        let mut recorded = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let index = stored.events.len();
            let event = RecordedEvent {
                stream: stream.to_owned(),
                version: actual + i as u64 + 1,
                position: index as u64 + 1,
                revision: self.upcasters.revision(&event.action),
                action: event.action,
                data: event.data,
                metadata: event.metadata,
                recorded_at: now,
            };
            stored
                .by_message
                .insert(event.metadata.message_id.clone(), index);
            stored
                .streams
                .entry(stream.to_owned())
                .or_default()
                .push(index);
            stored.events.push(event.clone());
            recorded.push(event);
        }
        Ok(Appended {
            version: actual + recorded.len() as u64,
            events: recorded,
        })
    }

    async fn read_stream(
        &self,
        stream: &str,
        after: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stored = self.inner.lock();
        let Some(indexes) = stored.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(after).unwrap_or(usize::MAX);
        indexes
            .iter()
            .skip(skip)
            .map(|&i| self.read(&stored.events[i]))
            .collect()
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let stored = self.inner.lock();
        let skip = usize::try_from(after).unwrap_or(usize::MAX);
        stored
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .map(|e| self.read(e))
            .collect()
    }

    async fn event(&self, message_id: &str) -> Result<Option<RecordedEvent>, StoreError> {
        let stored = self.inner.lock();
        stored
            .by_message
            .get(message_id)
            .map(|&i| self.read(&stored.events[i]))
            .transpose()
    }

    async fn snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.inner.lock().snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut stored = self.inner.lock();
        let newer = stored
            .snapshots
            .get(&snapshot.stream)
            .is_none_or(|kept| kept.version <= snapshot.version);
        if newer {
            stored.snapshots.insert(snapshot.stream.clone(), snapshot);
        }
        Ok(())
    }
}
