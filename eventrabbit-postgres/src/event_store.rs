//! The event store in PostgreSQL: streams with optimistic concurrency, a global order
//! without holes, snapshots, and the outbox written in the same transaction.

use crate::error::Result;
use crate::schema::Schema;
use eventrabbit::sourcing::{
    Appended, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, Snapshot, StoreError,
    Upcasters,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An [`EventStore`] in PostgreSQL (tables made by [`migrate`](crate::migrate)).
///
/// With [`publish_to`](Self::publish_to), every append also writes its events into the
/// outbox, in the same transaction, with the stream as ordering key: the
/// [`Relay`](crate::Relay) publishes exactly what was appended, in stream order, as the
/// envelopes `{"action": .., "data": {..}}` a `#[producer]` sends, with the event's
/// message id (and its `traceparent`). No dual write: a rolled-back append publishes
/// nothing, a committed one is published even if the process dies right after.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> eventrabbit_postgres::Result<()> {
/// use eventrabbit::sourcing::{EventStore, ExpectedVersion, NewEvent};
/// use eventrabbit_postgres::{migrate, PgEventStore};
/// migrate(&pool, "bank").await?;
/// let store = PgEventStore::new(pool, "bank")?.publish_to("bank", "");
/// let opened = NewEvent::new("ACCOUNT_OPENED", &serde_json::json!({"owner": "ann"}))?;
/// store.append("account-1", ExpectedVersion::Exact(0), vec![opened]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgEventStore {
    pool: PgPool,
    schema: Schema,
    publish: Option<Arc<(String, String)>>,
    upcasters: Arc<Upcasters>,
}

/// The columns of an event, as read.
const COLUMNS: &str = "position, stream_id, version, action, revision, data, message_id, \
     causation_id, correlation_id, traceparent, \
     (EXTRACT(EPOCH FROM recorded_at) * 1000000)::bigint AS recorded_us";

impl PgEventStore {
    /// The store whose tables live in `schema`; appends publish nothing until
    /// [`publish_to`](Self::publish_to).
    pub fn new(pool: PgPool, schema: &str) -> Result<Self> {
        Ok(Self {
            pool,
            schema: Schema::new(schema)?,
            publish: None,
            upcasters: Arc::new(Upcasters::new()),
        })
    }

    /// Every append also goes into the outbox of the same schema, to `exchange` with
    /// `routing_key`, ordered by stream.
    #[must_use]
    pub fn publish_to(
        mut self,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        self.publish = Some(Arc::new((exchange.into(), routing_key.into())));
        self
    }

    /// The same store, read through `upcasters` and written at their revisions.
    #[must_use]
    pub fn upcasting(&self, upcasters: Upcasters) -> Self {
        Self {
            upcasters: Arc::new(upcasters),
            ..self.clone()
        }
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// [`EventStore::append`] on `conn`, in the caller's transaction (pass `&mut tx`): the
    /// events (and their outbox rows) exist if and only if it commits. Other appends to
    /// the stream wait for that commit.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        // One statement: the shared lock (readers of the global order wait for appends in
        // flight, see `horizon`), the outbox's lock of the stream's key (a key's rows
        // follow commit order), and the stream's row, locked until the commit (appends to
        // one stream take turns) and read at its latest committed version.
        let notify = if self.publish.is_some() {
            "pg_notify($3, '')"
        } else {
            "$3::text"
        };
        let actual: i64 = sqlx::query_scalar(&self.schema.sql(&format!(
            "WITH locked AS ( \
               SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0)), \
                      pg_advisory_xact_lock(hashtextextended($2, 0)), {notify} \
             ) \
             INSERT INTO {{schema}}.eventrabbit_streams (stream_id, version) \
             SELECT $4, 0 FROM locked \
             ON CONFLICT (stream_id) DO UPDATE SET version = {{schema}}.eventrabbit_streams.version \
             RETURNING version"
        )))
        .bind(self.global_lock())
        .bind(format!("eventrabbit_outbox:{}:{stream}", self.schema.name()))
        .bind(self.schema.channel())
        .bind(stream)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        let actual = u64::try_from(actual).unwrap_or(0);
        if !expected.admits(actual) {
            return Err(StoreError::Conflict {
                stream: stream.to_owned(),
                expected,
                actual,
            });
        }
        if events.is_empty() {
            return Ok(Appended {
                version: actual,
                events: Vec::new(),
            });
        }
        let columns = Columns::of(&events, &self.upcasters);
        let (exchange, routing_key) = match &self.publish {
            Some(to) => (Some(to.0.as_str()), to.1.as_str()),
            None => (None, ""),
        };
        let rows = sqlx::query(&self.schema.sql(
            "WITH ev AS ( \
               INSERT INTO {schema}.eventrabbit_events \
                 (stream_id, version, action, revision, data, message_id, causation_id, \
                  correlation_id, traceparent) \
               SELECT $1, $2 + u.n, u.a, u.r, u.d, u.m, u.c, u.k, u.t \
               FROM unnest($3::text[], $4::int[], $5::jsonb[], $6::text[], $7::text[], \
                           $8::text[], $9::text[]) WITH ORDINALITY AS u(a, r, d, m, c, k, t, n) \
               ORDER BY u.n \
               RETURNING position, version, message_id, action, data, traceparent, recorded_at \
             ), ob AS ( \
               INSERT INTO {schema}.eventrabbit_outbox \
                 (message_id, exchange, routing_key, action, data, headers, ordering_key) \
               SELECT message_id, $10::text, $11, action, data, \
                      CASE WHEN traceparent IS NULL THEN NULL \
                           ELSE jsonb_build_object('traceparent', traceparent) END, $1 \
               FROM ev WHERE $10::text IS NOT NULL ORDER BY version \
             ), moved AS ( \
               UPDATE {schema}.eventrabbit_streams SET version = $2 + cardinality($3::text[]) \
               WHERE stream_id = $1 \
             ) \
             SELECT position, version, (EXTRACT(EPOCH FROM recorded_at) * 1000000)::bigint AS recorded_us \
             FROM ev ORDER BY version",
        ))
        .bind(stream)
        .bind(i64::try_from(actual).unwrap_or(i64::MAX))
        .bind(&columns.actions)
        .bind(&columns.revisions)
        .bind(&columns.data)
        .bind(&columns.message_ids)
        .bind(&columns.causation_ids)
        .bind(&columns.correlation_ids)
        .bind(&columns.traceparents)
        .bind(exchange)
        .bind(routing_key)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| unique_violation(e, stream, expected, actual))?;
        let recorded = events
            .into_iter()
            .zip(columns.revisions)
            .zip(rows)
            .map(|((event, revision), row)| {
                Ok(RecordedEvent {
                    stream: stream.to_owned(),
                    version: unsigned(row.try_get("version").map_err(backend)?),
                    position: unsigned(row.try_get("position").map_err(backend)?),
                    action: event.action().to_owned(),
                    revision: u32::try_from(revision).unwrap_or(1),
                    data: event.data().clone(),
                    metadata: event.meta().clone(),
                    recorded_at: time(row.try_get("recorded_us").map_err(backend)?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Appended {
            version: actual + recorded.len() as u64,
            events: recorded,
        })
    }

    fn global_lock(&self) -> String {
        format!("eventrabbit_events:{}", self.schema.name())
    }

    /// The highest position below which every append has committed or rolled back: taken
    /// while no append is in flight (they hold the shared lock until they end), so no
    /// append can still take a position at or below it.
    async fn horizon(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(self.global_lock())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let max: i64 = sqlx::query_scalar(
            &self
                .schema
                .sql("SELECT coalesce(max(position), 0) FROM {schema}.eventrabbit_events"),
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(unsigned(max))
    }

    fn read_rows(&self, rows: Vec<PgRow>) -> Result<Vec<RecordedEvent>, StoreError> {
        rows.into_iter()
            .map(|row| self.upcasters.apply(recorded(&row)?))
            .collect()
    }
}

impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let appended = self.append_in(&mut tx, stream, expected, events).await?;
        tx.commit().await.map_err(backend)?;
        Ok(appended)
    }

    async fn read_stream(
        &self,
        stream: &str,
        after: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&self.schema.sql(&format!(
            "SELECT {COLUMNS} FROM {{schema}}.eventrabbit_events \
             WHERE stream_id = $1 AND version > $2 ORDER BY version"
        )))
        .bind(stream)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        self.read_rows(rows)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let horizon = self.horizon().await?;
        let rows = sqlx::query(&self.schema.sql(&format!(
            "SELECT {COLUMNS} FROM {{schema}}.eventrabbit_events \
             WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
        )))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(horizon).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        self.read_rows(rows)
    }

    async fn event(&self, message_id: &str) -> Result<Option<RecordedEvent>, StoreError> {
        let row = sqlx::query(&self.schema.sql(&format!(
            "SELECT {COLUMNS} FROM {{schema}}.eventrabbit_events WHERE message_id = $1"
        )))
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| self.upcasters.apply(recorded(&row)?))
            .transpose()
    }

    async fn snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(&self.schema.sql(
            "SELECT version, revision, state FROM {schema}.eventrabbit_snapshots WHERE stream_id = $1",
        ))
        .bind(stream)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| {
            Ok(Snapshot {
                stream: stream.to_owned(),
                version: unsigned(row.try_get("version").map_err(backend)?),
                revision: u32::try_from(row.try_get::<i32, _>("revision").map_err(backend)?)
                    .unwrap_or(0),
                state: row.try_get("state").map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(&self.schema.sql(
            "INSERT INTO {schema}.eventrabbit_snapshots (stream_id, version, revision, state) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE \
               SET version = excluded.version, revision = excluded.revision, \
                   state = excluded.state, taken_at = now() \
             WHERE {schema}.eventrabbit_snapshots.version <= excluded.version",
        ))
        .bind(&snapshot.stream)
        .bind(i64::try_from(snapshot.version).unwrap_or(i64::MAX))
        .bind(i32::try_from(snapshot.revision).unwrap_or(i32::MAX))
        .bind(&snapshot.state)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

/// The events to append, column by column (for one `unnest` insert).
struct Columns {
    actions: Vec<String>,
    revisions: Vec<i32>,
    data: Vec<serde_json::Value>,
    message_ids: Vec<String>,
    causation_ids: Vec<Option<String>>,
    correlation_ids: Vec<Option<String>>,
    traceparents: Vec<Option<String>>,
}

impl Columns {
    fn of(events: &[NewEvent], upcasters: &Upcasters) -> Self {
        let meta = |f: fn(&Metadata) -> &Option<String>| {
            events.iter().map(|e| f(e.meta()).clone()).collect()
        };
        Self {
            actions: events.iter().map(|e| e.action().to_owned()).collect(),
            revisions: events
                .iter()
                .map(|e| i32::try_from(upcasters.revision(e.action())).unwrap_or(i32::MAX))
                .collect(),
            data: events.iter().map(|e| e.data().clone()).collect(),
            message_ids: events.iter().map(|e| e.meta().message_id.clone()).collect(),
            causation_ids: meta(|m| &m.causation_id),
            correlation_ids: meta(|m| &m.correlation_id),
            traceparents: meta(|m| &m.traceparent),
        }
    }
}

fn recorded(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        stream: row.try_get("stream_id").map_err(backend)?,
        version: unsigned(row.try_get("version").map_err(backend)?),
        position: unsigned(row.try_get("position").map_err(backend)?),
        action: row.try_get("action").map_err(backend)?,
        revision: u32::try_from(row.try_get::<i32, _>("revision").map_err(backend)?).unwrap_or(1),
        data: row.try_get("data").map_err(backend)?,
        metadata: Metadata {
            message_id: row.try_get("message_id").map_err(backend)?,
            causation_id: row.try_get("causation_id").map_err(backend)?,
            correlation_id: row.try_get("correlation_id").map_err(backend)?,
            traceparent: row.try_get("traceparent").map_err(backend)?,
        },
        recorded_at: time(row.try_get("recorded_us").map_err(backend)?),
    })
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Microseconds since the epoch as a time (one before the epoch reads as the epoch).
fn time(us: i64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_micros(unsigned(us)))
        .unwrap_or(UNIX_EPOCH)
}

/// A database error as the store's: transient when the database could not be reached or
/// asked to try again.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend {
        transient: crate::error::is_transient(&e),
        source: Box::new(e),
    }
}

/// An insert that hit a unique constraint: another event's message id, or (an append
/// that bypassed the stream's lock) another event at the same version.
fn unique_violation(
    e: sqlx::Error,
    stream: &str,
    expected: ExpectedVersion,
    actual: u64,
) -> StoreError {
    let Some(db) = e.as_database_error() else {
        return backend(e);
    };
    if db.code().as_deref() != Some("23505") {
        return backend(e);
    }
    if db.constraint().is_some_and(|c| c.contains("message_id")) {
        // "Key (message_id)=(<id>) already exists."
        let detail = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .unwrap_or_default();
        let id = detail
            .split_once(")=(")
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or(detail, |(id, _)| id);
        return StoreError::DuplicateMessageId(id.to_owned());
    }
    StoreError::Conflict {
        stream: stream.to_owned(),
        expected,
        actual: actual + 1,
    }
}
