//! Projections in memory: a read model folded from the published events exactly once.

use super::event::RecordedEvent;
use super::store::{EventStore, StoreError};
use crate::handler::context::MessageContext;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// What projecting one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// Applied this many events: the message's, and earlier ones of its stream that had
    /// not arrived yet (read from the store, so a stream is never applied out of order).
    Applied(u64),
    /// The event was applied before (a duplicate or a redelivery): nothing done.
    AlreadyApplied,
}

/// What a projection holding version `applied` of `event`'s stream must apply for it, in
/// order: nothing (it was applied before), the event alone, or the stream's events it
/// lacks up to it, read from `store` (an event that came before earlier ones of its
/// stream). The rule every projector shares.
pub async fn events_to_apply<S: EventStore>(
    store: &S,
    event: RecordedEvent,
    applied: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if applied >= event.version {
        return Ok(Vec::new());
    }
    if applied + 1 == event.version {
        return Ok(vec![event]);
    }
    let mut earlier = store.read_stream(&event.stream, applied).await?;
    earlier.retain(|e| e.version <= event.version);
    Ok(earlier)
}

type Fold<M> = Arc<dyn Fn(&mut M, &RecordedEvent) + Send + Sync>;

/// A read model in memory, updated from published events: the counterpart of
/// `eventrabbit_postgres::Projector`, for unit tests.
///
/// It keeps per stream the version it applied, beside the model and under the same lock,
/// so a duplicated or redelivered event is recognised and not applied twice, and an event
/// arriving before earlier ones of its stream brings those from the store first.
pub struct MemoryProjection<M, S> {
    store: S,
    fold: Fold<M>,
    inner: Arc<Mutex<Model<M>>>,
}

struct Model<M> {
    model: M,
    applied: HashMap<String, u64>,
}

impl<M, S: Clone> Clone for MemoryProjection<M, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            fold: Arc::clone(&self.fold),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M, S> std::fmt::Debug for MemoryProjection<M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProjection")
            .field("streams", &self.inner.lock().applied.len())
            .finish_non_exhaustive()
    }
}

impl<M: Default + Send + 'static, S: EventStore> MemoryProjection<M, S> {
    /// An empty model over `store`, each event folded in by `fold`.
    pub fn new<F>(store: S, fold: F) -> Self
    where
        F: Fn(&mut M, &RecordedEvent) + Send + Sync + 'static,
    {
        Self {
            store,
            fold: Arc::new(fold),
            inner: Arc::new(Mutex::new(Model {
                model: M::default(),
                applied: HashMap::new(),
            })),
        }
    }

    /// Projects the message a handler is handling (by its message id).
    pub async fn project(&self, ctx: &MessageContext) -> Result<Projected, StoreError> {
        let id = ctx.message_id().ok_or(StoreError::NoMessageId)?;
        self.project_message(id).await
    }

    /// Projects the event published with `message_id`.
    pub async fn project_message(&self, message_id: &str) -> Result<Projected, StoreError> {
        let event = self
            .store
            .event(message_id)
            .await?
            .ok_or_else(|| StoreError::UnknownMessage(message_id.to_owned()))?;
        let applied = self.applied(&event.stream);
        let missing = events_to_apply(&self.store, event, applied).await?;
        let n = self.apply(&missing);
        Ok(if n == 0 {
            Projected::AlreadyApplied
        } else {
            Projected::Applied(n)
        })
    }

    /// Applies what the model lacks, from the store's global order; returns how many
    /// events that was.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        let mut after = 0;
        let mut applied = 0;
        loop {
            let page = self.store.read_all(after, 1000).await?;
            let Some(last) = page.last() else {
                return Ok(applied);
            };
            after = last.position;
            applied += self.apply(&page);
        }
    }

    /// Forgets the model and rebuilds it from the store's global order.
    pub async fn rebuild(&self) -> Result<u64, StoreError> {
        self.reset();
        self.catch_up().await
    }

    /// Forgets the model and what it applied (to rebuild it, from the store or a replay
    /// of the event log).
    pub fn reset(&self) {
        let mut inner = self.inner.lock();
        inner.model = M::default();
        inner.applied.clear();
    }

    /// Reads the model.
    pub fn read<R>(&self, read: impl FnOnce(&M) -> R) -> R {
        read(&self.inner.lock().model)
    }

    fn applied(&self, stream: &str) -> u64 {
        self.inner.lock().applied.get(stream).copied().unwrap_or(0)
    }

    /// Folds in the events of `events` that follow what each stream applied.
    fn apply(&self, events: &[RecordedEvent]) -> u64 {
        let mut inner = self.inner.lock();
        let Model { model, applied } = &mut *inner;
        let mut n = 0;
        for event in events {
            let at = applied.entry(event.stream.clone()).or_insert(0);
            if event.version == *at + 1 {
                (self.fold)(model, event);
                *at = event.version;
                n += 1;
            }
        }
        n
    }
}
