//! Outbox rows the broker refused for good, for an operator: listed with their reason and
//! sent again once the cause is fixed (also `eventrabbit outbox list|retry`).

use crate::error::Result;
use crate::outbox::Outbox;
use sqlx::{PgPool, Row};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An outbox row marked failed: the broker refused it for good (no such exchange, a name
/// or header over what AMQP carries, too large), or it was not taken within
/// [`RelayConfig::give_up_after`](crate::RelayConfig::give_up_after).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailedRow {
    /// The row's id.
    pub id: i64,
    /// The message id it is sent with.
    pub message_id: String,
    /// The exchange it goes to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its action.
    pub action: String,
    /// Its ordering key, if it has one.
    pub ordering_key: Option<String>,
    /// How many times it was tried.
    pub attempts: i32,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was marked failed.
    pub failed_at: SystemTime,
}

impl Outbox {
    /// The rows marked failed and not retried yet, oldest first (at most `limit`).
    pub async fn failed(&self, pool: &PgPool, limit: usize) -> Result<Vec<FailedRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(&self.schema().sql(
            "SELECT id, message_id, exchange, routing_key, action, ordering_key, attempts, \
                    last_error, EXTRACT(EPOCH FROM failed_at)::float8 AS failed_at \
             FROM {schema}.eventrabbit_outbox \
             WHERE failed_at IS NOT NULL AND sent_at IS NULL ORDER BY id LIMIT $1",
        ))
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let at: f64 = r.try_get("failed_at")?;
                Ok(FailedRow {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    exchange: r.try_get("exchange")?,
                    routing_key: r.try_get("routing_key")?,
                    action: r.try_get("action")?,
                    ordering_key: r.try_get("ordering_key")?,
                    attempts: r.try_get("attempts")?,
                    error: r.try_get("last_error")?,
                    failed_at: UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0)),
                })
            })
            .collect()
    }

    /// Sends failed rows again: those in `ids`, or every failed row when `ids` is empty.
    /// They are taken by the next relay round as if just committed (attempts reset); rows
    /// of their ordering key committed after them may already have been sent. Returns how
    /// many rows were reset.
    pub async fn retry_failed(&self, pool: &PgPool, ids: &[i64]) -> Result<u64> {
        let done = sqlx::query(&self.schema().sql(
            "UPDATE {schema}.eventrabbit_outbox \
             SET failed_at = NULL, next_attempt_at = NULL, attempts = 0 \
             WHERE failed_at IS NOT NULL AND sent_at IS NULL \
               AND (cardinality($1::bigint[]) = 0 OR id = ANY($1))",
        ))
        .bind(ids)
        .execute(pool)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(self.schema().channel())
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }
}
