//! Projections in PostgreSQL: a read model and its checkpoint, committed together.

use crate::error::Result;
use crate::event_store::PgEventStore;
use eventrabbit::MessageContext;
use eventrabbit::sourcing::{EventStore, Projected, RecordedEvent, StoreError, events_to_apply};
use sqlx::{PgConnection, Postgres, Transaction};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// A read model kept in PostgreSQL, updated from events.
///
/// ```no_run
/// use eventrabbit::sourcing::RecordedEvent;
/// use eventrabbit_postgres::{Projection, Result};
/// use sqlx::PgConnection;
///
/// struct Balances;
///
/// impl Projection for Balances {
///     async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<()> {
///         if event.action == "DEPOSITED" {
///             sqlx::query("UPDATE balances SET cents = cents + $2 WHERE account = $1")
///                 .bind(&event.stream)
///                 .bind(event.data["amount"].as_i64().unwrap_or(0))
///                 .execute(tx)
///                 .await?;
///         }
///         Ok(())
///     }
///
///     async fn reset(&self, tx: &mut PgConnection) -> Result<()> {
///         sqlx::query("DELETE FROM balances").execute(tx).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait Projection: Send + Sync + 'static {
    /// Folds `event` into the read model, on `tx` (the transaction that also moves the
    /// checkpoint: both commit or neither).
    fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Empties the read model, before a rebuild.
    fn reset(&self, tx: &mut PgConnection) -> impl Future<Output = Result<()>> + Send;
}

/// Runs a [`Projection`] exactly once per event: each update commits in one transaction
/// with the projection's checkpoint (per stream, the version applied), so a duplicated or
/// redelivered event is recognised and skipped, and an event arriving before earlier ones
/// of its stream brings those from the store first. It reads the published events from a
/// queue or the event log ([`project`](Self::project) in a consumer), or the store's
/// global order ([`catch_up`](Self::catch_up), [`rebuild`](Self::rebuild)): all three end
/// in the same read model.
#[derive(Debug)]
pub struct Projector<P> {
    store: PgEventStore,
    name: Arc<str>,
    projection: Arc<P>,
}

impl<P> Clone for Projector<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            name: Arc::clone(&self.name),
            projection: Arc::clone(&self.projection),
        }
    }
}

impl<P: Projection> Projector<P> {
    /// The projection `name` (its checkpoint's key) over the events of `store`, kept in
    /// the store's database.
    pub fn new(store: PgEventStore, name: impl Into<String>, projection: P) -> Self {
        Self {
            store,
            name: name.into().into(),
            projection: Arc::new(projection),
        }
    }

    /// Projects the message a handler is handling: the stored event with its message id.
    pub async fn project(&self, ctx: &MessageContext) -> Result<Projected> {
        let id = ctx.message_id().ok_or(StoreError::NoMessageId)?;
        self.project_message(id).await
    }

    /// Projects the event published with `message_id`, with the earlier events of its
    /// stream the read model lacks.
    pub async fn project_message(&self, message_id: &str) -> Result<Projected> {
        let event = self
            .store
            .event(message_id)
            .await?
            .ok_or_else(|| StoreError::UnknownMessage(message_id.to_owned()))?;
        let mut tx = self.store.pool().begin().await?;
        let applied = self.lock_checkpoint(&mut tx, &event.stream).await?;
        let missing = events_to_apply(&self.store, event, applied).await?;
        let Some(last) = missing.last().map(|e| e.version) else {
            tx.rollback().await?;
            return Ok(Projected::AlreadyApplied);
        };
        for event in &missing {
            self.projection.apply(&mut tx, event).await?;
        }
        self.move_checkpoints(&mut tx, &[(missing[0].stream.clone(), last)])
            .await?;
        tx.commit().await?;
        Ok(Projected::Applied(missing.len() as u64))
    }

    /// Applies what the read model lacks, from the store's global order, a page of up to
    /// 1,000 events per transaction; returns how many events that was.
    pub async fn catch_up(&self) -> Result<u64> {
        let mut after = 0;
        let mut applied = 0;
        loop {
            let page = self.store.read_all(after, 1000).await?;
            let Some(last) = page.last() else {
                return Ok(applied);
            };
            after = last.position;
            applied += self.apply_page(&page).await?;
        }
    }

    /// Empties the read model and its checkpoint, then rebuilds it from the store's
    /// global order. Returns how many events were applied.
    pub async fn rebuild(&self) -> Result<u64> {
        self.reset().await?;
        self.catch_up().await
    }

    /// Empties the read model and its checkpoint (to rebuild it, from the store or by
    /// replaying the event log through [`project`](Self::project)).
    pub async fn reset(&self) -> Result<()> {
        let mut tx = self.store.pool().begin().await?;
        self.projection.reset(&mut tx).await?;
        sqlx::query(
            &self
                .store
                .schema()
                .sql("DELETE FROM {schema}.eventrabbit_projections WHERE projection = $1"),
        )
        .bind(&*self.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The version of `stream` the read model holds.
    pub async fn applied(&self, stream: &str) -> Result<u64> {
        let version: Option<i64> = sqlx::query_scalar(&self.store.schema().sql(
            "SELECT version FROM {schema}.eventrabbit_projections \
             WHERE projection = $1 AND stream_id = $2",
        ))
        .bind(&*self.name)
        .bind(stream)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    /// The checkpoint of `stream`, locked until `tx` ends (made at 0 if new).
    async fn lock_checkpoint(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        stream: &str,
    ) -> Result<u64> {
        let version: i64 = sqlx::query_scalar(&self.store.schema().sql(
            "INSERT INTO {schema}.eventrabbit_projections (projection, stream_id, version) \
             VALUES ($1, $2, 0) \
             ON CONFLICT (projection, stream_id) \
               DO UPDATE SET version = {schema}.eventrabbit_projections.version \
             RETURNING version",
        ))
        .bind(&*self.name)
        .bind(stream)
        .fetch_one(&mut **tx)
        .await?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    async fn move_checkpoints(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        versions: &[(String, u64)],
    ) -> Result<()> {
        let streams: Vec<&str> = versions.iter().map(|(s, _)| s.as_str()).collect();
        let to: Vec<i64> = versions
            .iter()
            .map(|(_, v)| i64::try_from(*v).unwrap_or(i64::MAX))
            .collect();
        sqlx::query(&self.store.schema().sql(
            "UPDATE {schema}.eventrabbit_projections p SET version = u.v \
             FROM unnest($2::text[], $3::bigint[]) AS u(s, v) \
             WHERE p.projection = $1 AND p.stream_id = u.s",
        ))
        .bind(&*self.name)
        .bind(streams)
        .bind(to)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Applies, in one transaction, the events of `page` (in global order) that follow
    /// their stream's checkpoint.
    async fn apply_page(&self, page: &[RecordedEvent]) -> Result<u64> {
        let mut streams: Vec<&str> = page.iter().map(|e| e.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut tx = self.store.pool().begin().await?;
        // Every stream's checkpoint row, made if new and locked, in one order (no
        // deadlock with another catch-up).
        let rows: Vec<(String, i64)> = sqlx::query_as(&self.store.schema().sql(
            "WITH made AS ( \
               INSERT INTO {schema}.eventrabbit_projections (projection, stream_id, version) \
               SELECT $1, s, 0 FROM unnest($2::text[]) AS s ORDER BY s \
               ON CONFLICT (projection, stream_id) DO NOTHING \
             ) \
             SELECT stream_id, version FROM {schema}.eventrabbit_projections \
             WHERE projection = $1 AND stream_id = ANY($2) ORDER BY stream_id FOR UPDATE",
        ))
        .bind(&*self.name)
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?;
        let mut at: HashMap<String, u64> = rows
            .into_iter()
            .map(|(s, v)| (s, u64::try_from(v).unwrap_or(0)))
            .collect();
        let mut applied = 0;
        for event in page {
            let version = at.entry(event.stream.clone()).or_insert(0);
            if event.version == *version + 1 {
                self.projection.apply(&mut tx, event).await?;
                *version = event.version;
                applied += 1;
            }
        }
        let versions: Vec<(String, u64)> = at.into_iter().collect();
        self.move_checkpoints(&mut tx, &versions).await?;
        tx.commit().await?;
        Ok(applied)
    }
}
