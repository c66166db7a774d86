//! The inbox (issue 32): 20,000 messages consumed from a queue (a pool of 10 PostgreSQL
//! connections), each writing one row:
//! * per message (prefetch 100), the handler's transaction with the inbox (`Inbox::begin`, the row,
//!   commit) against the same handler's transaction without it (begin, the row, commit):
//!   the inbox's own cost;
//! * a batch handler (`batch(max = 100)`, prefetch 300: a batch committing while the
//!   next ones fill, as README advises a prefetch above `max`) claiming its whole batch with
//!   `Inbox::begin_batch` and writing its rows in one statement, against the per-message
//!   inbox handler: what batching buys.

use crate::broker::{addr, declare_queue, persistent, raw};
use eventrabbit::{
    Config, ConsumeChannel, MessageContext, State, build_event_dependencies, consumer,
};
use eventrabbit_postgres::{Claim, Inbox, migrate};
use lapin::options::*;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

pub const INBOX_N: u64 = 20_000;

static COUNT: AtomicU64 = AtomicU64::new(0);
static DONE: Notify = Notify::const_new();

/// What the handlers write with.
pub struct Db {
    pool: PgPool,
    inbox: Inbox,
    table: String,
}

#[derive(Deserialize)]
struct Row {
    id: String,
    n: i64,
}

fn counted(n: u64) {
    if COUNT.fetch_add(n, Ordering::Relaxed) + n >= INBOX_N {
        DONE.notify_one();
    }
}

type Failed = eventrabbit_postgres::Error;

#[consumer(action = "BENCH_ROW_PLAIN")]
async fn plain(n: i64, db: State<Arc<Db>>) -> Result<(), Failed> {
    let mut tx = db.pool.begin().await?;
    sqlx::query(&format!("INSERT INTO {} (n) VALUES ($1)", db.table))
        .bind(n)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    counted(1);
    Ok(())
}

#[consumer(action = "BENCH_ROW_INBOX")]
async fn with_inbox(n: i64, ctx: MessageContext, db: State<Arc<Db>>) -> Result<(), Failed> {
    if let Claim::New(mut tx) = db.inbox.begin(&ctx).await? {
        sqlx::query(&format!("INSERT INTO {} (n) VALUES ($1)", db.table))
            .bind(n)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    counted(1);
    Ok(())
}

#[consumer(action = "BENCH_ROW_BATCH", batch(max = 100, window = "20ms"))]
async fn batched(rows: Vec<Row>, db: State<Arc<Db>>) -> Result<(), Failed> {
    let mut claim = db
        .inbox
        .begin_batch(rows.iter().map(|r| r.id.as_str()))
        .await?;
    let new: Vec<i64> = rows
        .iter()
        .filter(|r| claim.is_new(&r.id))
        .map(|r| r.n)
        .collect();
    sqlx::query(&format!(
        "INSERT INTO {} (n) SELECT unnest($1::bigint[])",
        db.table
    ))
    .bind(&new)
    .execute(&mut *claim)
    .await?;
    claim.commit().await?;
    counted(rows.len() as u64);
    Ok(())
}

/// A schema with the inbox and the rows' table.
pub async fn setup(pool: &PgPool, tag: &str) -> Arc<Db> {
    let schema = format!("bench_inbox_{tag}");
    migrate(pool, &schema).await.unwrap();
    let table = format!("{schema}.bench_rows");
    sqlx::query(&format!("CREATE TABLE {table} (n BIGINT NOT NULL)"))
        .execute(pool)
        .await
        .unwrap();
    Arc::new(Db {
        pool: pool.clone(),
        inbox: Inbox::new(pool.clone(), &schema, "bench").unwrap(),
        table,
    })
}

pub async fn teardown(pool: &PgPool, tag: &str) {
    let _ = sqlx::query(&format!("DROP SCHEMA bench_inbox_{tag} CASCADE"))
        .execute(pool)
        .await;
}

/// Fills `q` with `INBOX_N` messages of `action`, each with a fresh message id (also in
/// its data, for the batch handler).
pub async fn preload(q: &str, action: &str) {
    let (_c, ch) = raw().await;
    declare_queue(&ch, q).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..INBOX_N {
        let id = uuid::Uuid::new_v4().to_string();
        let body =
            serde_json::to_vec(&json!({"action": action, "data": {"id": id, "n": i}})).unwrap();
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            &body,
            persistent().with_message_id(id.into()),
        )
        .await
        .unwrap();
        if i % 5_000 == 4_999 {
            ch.wait_for_confirms().await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
}

/// Consumes the preloaded `q` with the handler of `action`; messages per second, timed
/// from the start of consuming to the last row committed.
pub async fn consume(q: &str, action: &'static str, db: &Arc<Db>, prefetch: u16) -> f64 {
    COUNT.store(0, Ordering::SeqCst);
    let done = DONE.notified();
    let config = Config::default().with_state(db.clone());
    let (_events, handle) = build_event_dependencies(addr(), config).await.unwrap();
    let channel = ConsumeChannel::new(q).actions([action]).prefetch(prefetch);
    let h = handle.clone();
    let start = Instant::now();
    let task = tokio::spawn(async move { h.consume(channel).await });
    tokio::select! {
        () = done => {}
        ended = task => panic!("the consumer ended: {ended:?}"),
    }
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    INBOX_N as f64 / secs
}
