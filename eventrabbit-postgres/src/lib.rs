//! # eventrabbit-postgres
//!
//! Consistency between a service's PostgreSQL and its events, for
//! [eventrabbit](https://docs.rs/eventrabbit):
//!
//! * **Outbox**: [`Outbox::publish`] writes an event in the caller's own transaction; the
//!   [`Relay`] sends committed events to RabbitMQ with publisher confirms, in commit order
//!   per ordering key, woken by each commit (`LISTEN`/`NOTIFY`) with a polling fallback.
//!   Nothing is sent for a transaction that rolls back; nothing committed is lost.
//!   Scheduled events ([`OutboxMessage::publish_at`]) are sent when due.
//! * **Inbox**: [`Inbox::begin`] records a message in the handler's transaction, so a
//!   redelivered or duplicated message (at-least-once delivery, a relay that died before
//!   marking what it sent) is recognised and not handled again: effectively once.
//! * **Event store**: [`PgEventStore`] keeps aggregates' events (streams with optimistic
//!   concurrency, a global order without holes, snapshots) and writes them into the
//!   outbox in the same statement, so what is appended is published, in stream order, as
//!   the envelopes a `#[producer]` sends. A [`Projector`] runs a [`Projection`] exactly
//!   once per event, its read model and checkpoint in one transaction. The aggregates and
//!   the repository are in [`eventrabbit::sourcing`].
//!
//! Built on [sqlx](https://docs.rs/sqlx): the most used async PostgreSQL layer in Rust
//! services, so an event joins the transaction the service already has (`&mut tx`), and its
//! `PgListener` gives `LISTEN`/`NOTIFY` with reconnection.
//!
//! ```no_run
//! # async fn run(events: eventrabbit::Events) -> eventrabbit_postgres::Result<()> {
//! use eventrabbit_postgres::{migrate, Outbox, OutboxMessage, Relay, RelayConfig};
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/shop").await?;
//! migrate(&pool, "public").await?;              // idempotent: at every start
//! let relay = Relay::new(pool.clone(), events, RelayConfig::default())?;
//! tokio::spawn({ let relay = relay.clone(); async move { relay.run().await } });
//!
//! let outbox = Outbox::new("public")?;
//! let mut tx = pool.begin().await?;
//! // ... the service's own writes on &mut *tx ...
//! outbox.publish(&mut tx, OutboxMessage::new("shop", "ORDER_PLACED", &serde_json::json!({"order_id": 1}))?).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod event_store;
mod failed;
mod inbox;
mod outbox;
mod projector;
mod relay;
mod schema;

pub use error::{Error, Result};
pub use event_store::PgEventStore;
pub use failed::FailedRow;
pub use inbox::{BatchClaim, Claim, Inbox, InboxTx, StoredReply};
pub use outbox::{Outbox, OutboxMessage};
pub use projector::{Projection, Projector};
pub use relay::{FAILED_METRIC, Relay, RelayConfig, RelayHealth};
pub use schema::migrate;
