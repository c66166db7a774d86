//! Writing events into the outbox, inside the caller's own transaction.

use crate::error::{Error, Result};
use crate::schema::Schema;
use serde::Serialize;
use sqlx::PgConnection;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes events into the outbox table of one schema.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> eventrabbit_postgres::Result<()> {
/// use eventrabbit_postgres::{Outbox, OutboxMessage};
/// let outbox = Outbox::new("public")?;
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO orders (id) VALUES (17)").execute(&mut *tx).await?;
/// outbox
///     .publish(&mut tx, OutboxMessage::new("shop", "ORDER_PLACED", &serde_json::json!({"order_id": 17}))?
///         .ordering_key("order-17"))
///     .await?;
/// tx.commit().await?; // the event is sent once this commits, never if it rolls back
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    schema: Schema,
}

/// One event to write into the outbox: what `Events::publish` would send.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    exchange: String,
    routing_key: String,
    action: String,
    data: serde_json::Value,
    message_id: String,
    ordering_key: Option<String>,
    publish_at: Option<SystemTime>,
    headers: serde_json::Map<String, serde_json::Value>,
}

impl OutboxMessage {
    /// `data` under `action`, for `exchange` (`""`: the default exchange) with routing
    /// key `""`, a fresh message id, sent as soon as committed. `data` must serialize to
    /// a JSON object.
    pub fn new<T: Serialize + ?Sized>(
        exchange: impl Into<String>,
        action: impl Into<String>,
        data: &T,
    ) -> Result<Self> {
        let action = action.into();
        let data = serde_json::to_value(data)?;
        if !data.is_object() {
            return Err(Error::NotAnObject(action));
        }
        Ok(Self {
            exchange: exchange.into(),
            routing_key: String::new(),
            action,
            data,
            // The 32-digit form, as eventrabbit's own ids (longer properties slow the broker).
            message_id: uuid::Uuid::new_v4().simple().to_string(),
            ordering_key: None,
            publish_at: None,
            headers: serde_json::Map::new(),
        })
    }

    /// The routing key.
    #[must_use]
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = key.into();
        self
    }

    /// The AMQP `message_id` (a fresh uuid by default).
    #[must_use]
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = id.into();
        self
    }

    /// Events of one key (typically an aggregate's id) are sent one after another in the
    /// order their transactions committed. Without a key, no order is promised.
    #[must_use]
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Not sent before `at` (a scheduled event).
    #[must_use]
    pub fn publish_at(mut self, at: SystemTime) -> Self {
        self.publish_at = Some(at);
        self
    }

    /// A string header sent with the message.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .insert(key.into(), serde_json::Value::String(value.into()));
        self
    }
}

impl Outbox {
    /// The outbox whose tables live in `schema` (see [`migrate`](crate::migrate)).
    pub fn new(schema: &str) -> Result<Self> {
        Ok(Self {
            schema: Schema::new(schema)?,
        })
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Writes `message` on `conn`, which should be in the caller's transaction (pass
    /// `&mut tx`): the event exists if and only if the transaction commits. Returns its
    /// message id. Relays are woken at commit.
    pub async fn publish(&self, conn: &mut PgConnection, message: OutboxMessage) -> Result<String> {
        if let Some(key) = &message.ordering_key {
            // Writers of one key take turns until they commit, so ids follow commit order.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("eventrabbit_outbox:{}:{key}", self.schema.name()))
                .execute(&mut *conn)
                .await?;
        }
        let headers = (!message.headers.is_empty())
            .then(|| serde_json::Value::Object(message.headers.clone()));
        let publish_at = message.publish_at.map(epoch_seconds);
        sqlx::query(&self.schema.sql(
            "INSERT INTO {schema}.eventrabbit_outbox \
             (message_id, exchange, routing_key, action, data, headers, ordering_key, publish_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8))",
        ))
        .bind(&message.message_id)
        .bind(&message.exchange)
        .bind(&message.routing_key)
        .bind(&message.action)
        .bind(&message.data)
        .bind(headers)
        .bind(&message.ordering_key)
        .bind(publish_at)
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(self.schema.channel())
            .execute(&mut *conn)
            .await?;
        Ok(message.message_id)
    }
}

/// Seconds since the Unix epoch, with fractions (for `to_timestamp`).
pub(crate) fn epoch_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}
