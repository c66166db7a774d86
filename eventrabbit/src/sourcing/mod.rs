//! Event sourcing: state kept as events, decided by aggregates, stored with optimistic
//! concurrency, published as ordinary envelopes, projected exactly once.
//!
//! * An [`Aggregate`] decides a command's events from its state and folds events into
//!   its state; its events serialize to the envelope `{"action": .., "data": {..}}` a
//!   `#[producer]` sends.
//! * An [`EventStore`] keeps streams of events (one per aggregate) with an expected
//!   version on every append, a global order, and snapshots. `eventrabbit_postgres::PgEventStore`
//!   keeps them in PostgreSQL and hands them to the outbox in the same transaction, so
//!   what is appended is published and nothing else is; [`MemoryEventStore`] has the
//!   same API, for unit tests.
//! * A [`Repository`] loads an aggregate (from a snapshot and the events after it), runs a
//!   command, appends with the loaded version, and decides again on a conflict.
//! * [`Upcasters`] upgrade old shapes of an event as it is read.
//! * A projection folds published events into a read model exactly once:
//!   `eventrabbit_postgres::Projector` in one database transaction with its checkpoint,
//!   [`MemoryProjection`] in memory.
//!
//! ```
//! # use eventrabbit::sourcing::Aggregate;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Default, Serialize, Deserialize)]
//! # struct Counter { n: u64 }
//! # #[derive(Debug, Serialize, Deserialize)]
//! # #[serde(tag = "action", content = "data")]
//! # enum CounterEvent { #[serde(rename = "INCREMENTED")] Incremented {} }
//! # impl Aggregate for Counter {
//! #     const KIND: &'static str = "counter";
//! #     type Event = CounterEvent;
//! #     type Command = ();
//! #     type Error = String;
//! #     fn handle(&self, _: &()) -> Result<Vec<CounterEvent>, String> { Ok(vec![CounterEvent::Incremented {}]) }
//! #     fn apply(&mut self, _: &CounterEvent) { self.n += 1 }
//! # }
//! use eventrabbit::sourcing::{MemoryEventStore, Repository};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let counters = Repository::<Counter, _>::new(MemoryEventStore::new()).snapshot_every(100);
//! let done = counters.execute("7", &()).await.unwrap();
//! assert_eq!((done.version, done.state.n), (1, 1));
//! # }
//! ```

mod aggregate;
mod event;
mod memory;
mod projection;
mod repository;
mod store;
mod upcast;

pub use aggregate::Aggregate;
pub use event::{Causation, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
pub use memory::MemoryEventStore;
pub use projection::{MemoryProjection, Projected, events_to_apply};
pub use repository::{CommandError, Committed, Loaded, Repository};
pub use store::{Appended, EventStore, Snapshot, StoreError};
pub use upcast::Upcasters;
