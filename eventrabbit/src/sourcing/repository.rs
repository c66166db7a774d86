//! The repository: load an aggregate, decide a command, append with the loaded version.

use super::aggregate::Aggregate;
use super::event::{Causation, ExpectedVersion, NewEvent, RecordedEvent};
use super::store::{EventStore, Snapshot, StoreError};
use crate::handler::rejection::HandlerError;
use std::marker::PhantomData;
use std::time::Duration;

/// An aggregate as loaded: its state and the version of its last event.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// How many events it folds (0: none yet).
    pub version: u64,
}

/// A command that went through.
#[derive(Debug, Clone)]
pub struct Committed<A> {
    /// The state after its events.
    pub state: A,
    /// The stream's version after them.
    pub version: u64,
    /// The events appended (none when the command decided none).
    pub events: Vec<RecordedEvent>,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E: std::fmt::Display + std::fmt::Debug> {
    /// The aggregate rejected it; nothing was appended.
    #[error("rejected: {0}")]
    Rejected(E),
    /// Other commands appended first every time it was tried; nothing was appended.
    #[error(
        "stream `{stream}` changed under the command {attempts} times (now at version {actual}); nothing was appended"
    )]
    Conflict {
        /// The stream.
        stream: String,
        /// How many times it was tried.
        attempts: u32,
        /// The stream's version at the last try.
        actual: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// In a handler running commands: a rejected command is dead-lettered at once with the
/// aggregate's reason; a conflict after every attempt is retried later, as the store's
/// errors say.
impl<E: std::fmt::Display + std::fmt::Debug> HandlerError for CommandError<E> {
    fn is_permanent(&self) -> bool {
        match self {
            Self::Rejected(_) => true,
            Self::Conflict { .. } => false,
            Self::Store(e) => e.is_permanent(),
        }
    }
}

/// Loads aggregates of type `A` from an event store and runs commands on them.
///
/// A command is decided on the state loaded at version `v` and appended with expected
/// version `v`: when another command appended first, it is decided again on the new
/// state, up to [`attempts`](Self::attempts) times, so no update is ever lost.
/// Snapshots, taken every [`snapshot_every`](Self::snapshot_every) events, only spare
/// the replay: loading from one gives the same state as folding every event.
#[derive(Debug)]
pub struct Repository<A, S> {
    store: S,
    snapshot_every: Option<u64>,
    attempts: u32,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            snapshot_every: self.snapshot_every,
            attempts: self.attempts,
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// Aggregates kept in `store`; commands tried up to 10 times; no snapshots.
    pub fn new(store: S) -> Self {
        Self {
            store,
            snapshot_every: None,
            attempts: 10,
            aggregate: PhantomData,
        }
    }

    /// Takes a snapshot each time an aggregate passes a multiple of `n` events (`0`: never).
    #[must_use]
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = (n > 0).then_some(n);
        self
    }

    /// Tries a command at most `n` times (at least once) while other commands append first.
    #[must_use]
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The aggregate `id`: from its latest snapshot (of the current revision) and the
    /// events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let stream = A::stream(id);
        let start = match self.store.snapshot(&stream).await? {
            Some(snapshot) if snapshot.revision == A::SNAPSHOT_REVISION => {
                match serde_json::from_value::<A>(snapshot.state) {
                    Ok(state) => Loaded {
                        state,
                        version: snapshot.version,
                    },
                    Err(e) => {
                        tracing::warn!(stream, error = %e, "snapshot does not decode; replaying every event");
                        Loaded {
                            state: A::default(),
                            version: 0,
                        }
                    }
                }
            }
            _ => Loaded {
                state: A::default(),
                version: 0,
            },
        };
        self.fold_from(&stream, start).await
    }

    /// The aggregate `id`, folded from every event (no snapshot).
    pub async fn load_from_events(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let start = Loaded {
            state: A::default(),
            version: 0,
        };
        self.fold_from(&A::stream(id), start).await
    }

    async fn fold_from(&self, stream: &str, mut at: Loaded<A>) -> Result<Loaded<A>, StoreError> {
        for event in self.store.read_stream(stream, at.version).await? {
            at.state.apply(&event.decode::<A::Event>()?);
            at.version = event.version;
        }
        Ok(at)
    }

    /// Runs `command` on the aggregate `id` (see [`execute_caused`](Self::execute_caused)).
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_caused(id, command, &Causation::new()).await
    }

    /// Runs `command` on the aggregate `id`: loads it, lets it decide, appends the events
    /// with the loaded version (their metadata from `causation`), and decides again on a
    /// conflict. A rejected command appends nothing.
    pub async fn execute_caused(
        &self,
        id: &str,
        command: &A::Command,
        causation: &Causation,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let stream = A::stream(id);
        let mut actual = 0;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
            let Loaded { mut state, version } = self.load(id).await?;
            let events = state.handle(command).map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Committed {
                    state,
                    version,
                    events: Vec::new(),
                });
            }
            let new = events
                .iter()
                .map(|e| NewEvent::from_envelope(e).map(|n| n.metadata(causation.metadata())))
                .collect::<Result<Vec<_>, _>>()?;
            match self
                .store
                .append(&stream, ExpectedVersion::Exact(version), new)
                .await
            {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    self.maybe_snapshot(&stream, version, appended.version, &state)
                        .await;
                    return Ok(Committed {
                        state,
                        version: appended.version,
                        events: appended.events,
                    });
                }
                Err(StoreError::Conflict { actual: now, .. }) => actual = now,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Conflict {
            stream,
            attempts: self.attempts,
            actual,
        })
    }

    /// Keeps a snapshot when the append passed a multiple of the snapshot interval. A
    /// snapshot is an optimisation: failing to keep one is logged, not returned.
    async fn maybe_snapshot(&self, stream: &str, before: u64, after: u64, state: &A) {
        let Some(every) = self.snapshot_every else {
            return;
        };
        if after / every == before / every {
            return;
        }
        let kept = match serde_json::to_value(state) {
            Ok(state) => {
                self.store
                    .save_snapshot(Snapshot {
                        stream: stream.to_owned(),
                        version: after,
                        revision: A::SNAPSHOT_REVISION,
                        state,
                    })
                    .await
            }
            Err(e) => Err(StoreError::NotAnEnvelope {
                reason: format!("the state did not serialize: {e}"),
            }),
        };
        if let Err(e) = kept {
            tracing::warn!(stream, version = after, error = %e, "snapshot not kept");
        }
    }
}

/// A random wait before deciding again after a conflict, growing with the attempt (at
/// most about 30 ms), so that competing commands spread out.
fn conflict_backoff(attempt: u32) -> Duration {
    let ceiling = 500u64 << attempt.min(6);
    Duration::from_micros(fastrand::u64(ceiling / 4..=ceiling))
}
