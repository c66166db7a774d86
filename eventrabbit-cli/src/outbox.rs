//! `eventrabbit outbox list|retry`: the outbox rows the broker refused for good, read from
//! the service's PostgreSQL database (`DATABASE_URL` or `--database-url`).

use crate::Failure;
use eventrabbit_postgres::Outbox;
use sqlx::PgPool;
use std::time::{Duration, UNIX_EPOCH};

/// Connects to the database, failing fast.
async fn pool(database_url: &str) -> Result<PgPool, Failure> {
    let connecting = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(pool)) => Ok(pool),
        Ok(Err(e)) => Err(Failure::NoDatabase(crate::redacted(&e.to_string()))),
        Err(_) => Err(Failure::NoDatabase("no answer within 10 s".to_owned())),
    }
}

fn outbox(schema: &str) -> Result<Outbox, Failure> {
    Outbox::new(schema).map_err(|e| Failure::Usage(e.to_string()))
}

/// `outbox list`: one line per failed row (id, key, exchange, action, attempts, when, why).
pub(crate) async fn list(
    database_url: &str,
    schema: &str,
    limit: usize,
    json: bool,
) -> Result<(), Failure> {
    let outbox = outbox(schema)?;
    let pool = pool(database_url).await?;
    let rows = outbox
        .failed(&pool, limit)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    if json {
        for row in &rows {
            let at = row
                .failed_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            println!(
                "{}",
                serde_json::json!({
                    "id": row.id,
                    "ordering_key": row.ordering_key,
                    "exchange": row.exchange,
                    "routing_key": row.routing_key,
                    "action": row.action,
                    "message_id": row.message_id,
                    "attempts": row.attempts,
                    "failed_at": crate::headers::rfc3339_ms(at),
                    "error": row.error,
                })
            );
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("no failed outbox rows in schema `{schema}`");
        return Ok(());
    }
    println!("{} failed outbox row(s) in schema `{schema}`:", rows.len());
    for row in rows {
        let at = row
            .failed_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let at = crate::headers::rfc3339_ms(at);
        println!(
            "  id {}  key {}  exchange `{}`  routing key `{}`  action {}  message id {}  attempts {}  failed at {}  why: {}",
            row.id,
            row.ordering_key.as_deref().unwrap_or("-"),
            row.exchange,
            row.routing_key,
            row.action,
            row.message_id,
            row.attempts,
            at,
            row.error.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// `outbox retry`: sends the given failed rows (or all) again.
pub(crate) async fn retry(database_url: &str, schema: &str, ids: &[i64]) -> Result<(), Failure> {
    let outbox = outbox(schema)?;
    let pool = pool(database_url).await?;
    let n = outbox
        .retry_failed(&pool, ids)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    println!("{n} failed outbox row(s) will be sent again by the relay");
    Ok(())
}
