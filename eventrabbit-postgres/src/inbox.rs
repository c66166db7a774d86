//! The inbox: a handler's database work and the record that its message was handled,
//! committed together, so that a redelivered or duplicated message is not handled again.

use crate::error::{Error, Result};
use crate::schema::Schema;
use eventrabbit::MessageContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

/// The inbox of one consumer (a name of your choosing: a handler, or a read model).
///
/// ```no_run
/// use eventrabbit::{consumer, MessageContext};
/// use eventrabbit_postgres::{Claim, Inbox};
/// # static INBOX: std::sync::OnceLock<Inbox> = std::sync::OnceLock::new();
///
/// #[consumer(action = "ORDER_PLACED")]
/// async fn project_order(order_id: i64, ctx: MessageContext) -> Result<(), eventrabbit_postgres::Error> {
///     let inbox = INBOX.get().expect("set up at start");
///     let Claim::New(mut tx) = inbox.begin(&ctx).await? else {
///         return Ok(()); // handled before: acknowledged, not handled again
///     };
///     sqlx::query("INSERT INTO order_view (id) VALUES ($1)")
///         .bind(order_id)
///         .execute(&mut *tx)
///         .await?;
///     tx.commit().await // the row and the inbox record, together
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Inbox {
    pool: PgPool,
    schema: Schema,
    consumer: String,
}

/// What [`Inbox::begin`] found.
#[derive(Debug)]
pub enum Claim {
    /// First time: handle it in this transaction, then commit.
    New(InboxTx),
    /// Handled before; what it was answered with, if it was an RPC request.
    Done(Option<StoredReply>),
}

/// The reply an RPC request was answered with, stored with its inbox record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply(serde_json::Value);

impl StoredReply {
    /// The reply as `T`.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T> {
        Ok(serde_json::from_value(self.0)?)
    }

    /// The reply as JSON.
    #[must_use]
    pub fn json(&self) -> &serde_json::Value {
        &self.0
    }
}

/// A transaction that has recorded its message in the inbox: the handler's writes go
/// through it (it derefs to a `PgConnection`), and commit with the record. Dropped
/// without committing, it rolls back, record included: the message is handled again when
/// it comes back.
#[derive(Debug)]
pub struct InboxTx {
    tx: Transaction<'static, Postgres>,
    schema: Schema,
    consumer: String,
    message_id: String,
}

impl Inbox {
    /// The inbox of `consumer`, in `schema` (see [`migrate`](crate::migrate)).
    pub fn new(pool: PgPool, schema: &str, consumer: impl Into<String>) -> Result<Self> {
        Ok(Self {
            pool,
            schema: Schema::new(schema)?,
            consumer: consumer.into(),
        })
    }

    /// Begins a transaction and records the message of `ctx` in it. If another delivery
    /// of the same message is being handled at the same moment, waits for that one's
    /// transaction: once it committed, this one is [`Claim::Done`].
    pub async fn begin(&self, ctx: &MessageContext) -> Result<Claim> {
        let message_id = ctx.message_id().ok_or(Error::NoMessageId)?;
        self.begin_for(message_id).await
    }

    /// [`Inbox::begin`] for a message id.
    pub async fn begin_for(&self, message_id: &str) -> Result<Claim> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&self.schema.sql(
            "INSERT INTO {schema}.eventrabbit_inbox (consumer, message_id) VALUES ($1, $2) \
             ON CONFLICT (consumer, message_id) DO NOTHING",
        ))
        .bind(&self.consumer)
        .bind(message_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::New(InboxTx {
                tx,
                schema: self.schema.clone(),
                consumer: self.consumer.clone(),
                message_id: message_id.to_owned(),
            }));
        }
        let reply: Option<serde_json::Value> = sqlx::query_scalar(&self.schema.sql(
            "SELECT reply FROM {schema}.eventrabbit_inbox WHERE consumer = $1 AND message_id = $2",
        ))
        .bind(&self.consumer)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        tx.rollback().await?;
        Ok(Claim::Done(reply.map(StoredReply)))
    }

    /// [`Inbox::begin`] for a batch, in one transaction and one statement: records every
    /// message id not handled before and returns them as [`BatchClaim::new_ids`]; the
    /// others were handled before (or by a delivery whose transaction committed while this
    /// one waited for it). Handle the new ones through the claim, then commit: all the
    /// records commit with the batch's writes, or none does.
    pub async fn begin_batch<I, S>(&self, message_ids: I) -> Result<BatchClaim>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let ids: Vec<String> = message_ids
            .into_iter()
            .map(|id| id.as_ref().to_owned())
            .collect();
        let mut tx = self.pool.begin().await?;
        let mut new: Vec<String> = sqlx::query_scalar(&self.schema.sql(
            "INSERT INTO {schema}.eventrabbit_inbox (consumer, message_id) \
             SELECT $1, m FROM unnest($2::text[]) AS m ORDER BY m \
             ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id",
        ))
        .bind(&self.consumer)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        // In the batch's order (a duplicate within the batch counts once).
        let claimed: std::collections::HashSet<String> = new.drain(..).collect();
        let mut seen = std::collections::HashSet::new();
        let new = ids
            .into_iter()
            .filter(|id| claimed.contains(id) && seen.insert(id.clone()))
            .collect();
        Ok(BatchClaim { tx, new })
    }

    /// Whether the message `message_id` was handled (committed) by this consumer.
    pub async fn contains(&self, message_id: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(&self.schema.sql(
            "SELECT 1 FROM {schema}.eventrabbit_inbox WHERE consumer = $1 AND message_id = $2",
        ))
        .bind(&self.consumer)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Deletes the records of messages handled longer ago than `age` (a message redelivered
    /// after that is handled again). Returns how many were deleted.
    pub async fn purge_older_than(&self, age: Duration) -> Result<u64> {
        let done = sqlx::query(&self.schema.sql(
            "DELETE FROM {schema}.eventrabbit_inbox \
             WHERE consumer = $1 AND handled_at < now() - make_interval(secs => $2)",
        ))
        .bind(&self.consumer)
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// A transaction that has recorded a batch's new messages in the inbox (see
/// [`Inbox::begin_batch`]): the handler's writes go through it, and commit with the
/// records. Dropped without committing, it rolls back, records included.
#[derive(Debug)]
pub struct BatchClaim {
    tx: Transaction<'static, Postgres>,
    new: Vec<String>,
}

impl BatchClaim {
    /// The message ids handled for the first time, in the batch's order: handle these.
    #[must_use]
    pub fn new_ids(&self) -> &[String] {
        &self.new
    }

    /// Whether `message_id` is new in this batch.
    #[must_use]
    pub fn is_new(&self, message_id: &str) -> bool {
        self.new.iter().any(|id| id == message_id)
    }

    /// Commits the batch's writes and its inbox records.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Deref for BatchClaim {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for BatchClaim {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl InboxTx {
    /// Commits the handler's writes and the inbox record.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Commits, storing `reply` with the record: a repeat of this RPC request gets the
    /// same answer ([`Claim::Done`] carries it).
    pub async fn commit_with_reply<T: Serialize + ?Sized>(mut self, reply: &T) -> Result<()> {
        let reply = serde_json::to_value(reply)?;
        sqlx::query(&self.schema.sql(
            "UPDATE {schema}.eventrabbit_inbox SET reply = $3 WHERE consumer = $1 AND message_id = $2",
        ))
        .bind(&self.consumer)
        .bind(&self.message_id)
        .bind(reply)
        .execute(&mut *self.tx)
        .await?;
        self.commit().await
    }

    /// The message id recorded.
    #[must_use]
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
}

impl Deref for InboxTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for InboxTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
