//! Event sourcing (issue 31): appends per second on 1 stream and on 1,000 streams
//! (through `PgEventStore`, writing the outbox in the same statement) against a
//! hand-written transaction inserting the same event and outbox rows, in the same run;
//! loading an aggregate of 10,000 events from a snapshot against a full replay; and the
//! time from a command to its projection's update, through the outbox relay, the broker
//! and the projector.

use crate::broker::addr;
use eventrabbit::sourcing::{
    Aggregate, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Repository, Snapshot,
};
use eventrabbit::{
    Config, ConsumeChannel, ExchangeKind, MessageContext, State, build_event_dependencies, consumer,
};
use eventrabbit_postgres::{PgEventStore, Projection, Projector, Relay, RelayConfig, migrate};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Appends per measurement.
pub const APPENDS: usize = 4_000;
/// Appends in flight.
const CONCURRENCY: usize = 8;
/// Events of the aggregate loaded.
pub const LOADED: u64 = 10_000;

/// A counter aggregate: every event adds to it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: i64,
    events: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "action", content = "data")]
enum CounterEvent {
    #[serde(rename = "BENCH_ES_ADDED")]
    Added { n: i64 },
}

impl Aggregate for Counter {
    const KIND: &'static str = "counter";
    type Event = CounterEvent;
    type Command = i64;
    type Error = String;

    fn handle(&self, n: &i64) -> Result<Vec<CounterEvent>, String> {
        Ok(vec![CounterEvent::Added { n: *n }])
    }

    fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) {
        self.total += n;
        self.events += 1;
    }
}

/// A schema with the store's tables and the hand-written baseline's.
pub async fn setup(pool: &PgPool, tag: &str) -> String {
    let schema = format!("bench_es_{tag}");
    migrate(pool, &schema).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE {schema}.raw_events (id BIGSERIAL PRIMARY KEY, stream TEXT NOT NULL, \
           action TEXT NOT NULL, data JSONB NOT NULL, message_id TEXT NOT NULL UNIQUE); \
         CREATE TABLE {schema}.raw_outbox (id BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL, \
           exchange TEXT NOT NULL, action TEXT NOT NULL, data JSONB NOT NULL, key TEXT); \
         CREATE TABLE {schema}.bench_model (stream TEXT PRIMARY KEY, total BIGINT NOT NULL);"
    ))
    .execute(pool)
    .await
    .unwrap();
    schema
}

pub async fn teardown(pool: &PgPool, schema: &str) {
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(pool)
        .await;
}

async fn clear(pool: &PgPool, schema: &str) {
    sqlx::query(&format!(
        "TRUNCATE {schema}.eventrabbit_events, {schema}.eventrabbit_streams, {schema}.eventrabbit_outbox, \
         {schema}.raw_events, {schema}.raw_outbox"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// `APPENDS` one-event appends, `CONCURRENCY` at once, round robin over `streams`
/// streams: through the store (`raw` false) or a hand-written transaction with the same
/// two inserts. Appends per second.
pub async fn appends(pool: &PgPool, schema: &str, streams: usize, raw: bool) -> f64 {
    clear(pool, schema).await;
    let store = PgEventStore::new(pool.clone(), schema)
        .unwrap()
        .publish_to("bench-es", "");
    let start = Instant::now();
    futures_util::stream::iter(0..APPENDS)
        .map(|i| {
            let (store, pool) = (store.clone(), pool.clone());
            let stream = format!("counter-{}", i % streams);
            async move {
                if raw {
                    raw_append(&pool, schema, &stream, i).await;
                } else {
                    let event = NewEvent::new("BENCH_ES_ADDED", &json!({"n": i})).unwrap();
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap();
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    APPENDS as f64 / start.elapsed().as_secs_f64()
}

/// What a service writes by hand: the event row and its outbox row in one transaction.
async fn raw_append(pool: &PgPool, schema: &str, stream: &str, i: usize) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let data = json!({"n": i});
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {schema}.raw_events (stream, action, data, message_id) VALUES ($1, $2, $3, $4)"
    ))
    .bind(stream)
    .bind("BENCH_ES_ADDED")
    .bind(&data)
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {schema}.raw_outbox (message_id, exchange, action, data, key) \
         VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(&id)
    .bind("bench-es")
    .bind("BENCH_ES_ADDED")
    .bind(&data)
    .bind(stream)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// One aggregate of `LOADED` events (appended 500 at a time) and a snapshot at its end.
pub async fn fill_aggregate(pool: &PgPool, schema: &str) {
    clear(pool, schema).await;
    let store = PgEventStore::new(pool.clone(), schema).unwrap();
    for chunk in 0..LOADED / 500 {
        let events = (0..500)
            .map(|i| NewEvent::new("BENCH_ES_ADDED", &json!({"n": chunk * 500 + i})).unwrap())
            .collect();
        store
            .append("counter-big", ExpectedVersion::Exact(chunk * 500), events)
            .await
            .unwrap();
    }
    let full = Repository::<Counter, _>::new(store.clone())
        .load_from_events("big")
        .await
        .unwrap();
    store
        .save_snapshot(Snapshot {
            stream: "counter-big".into(),
            version: full.version,
            revision: Counter::SNAPSHOT_REVISION,
            state: serde_json::to_value(&full.state).unwrap(),
        })
        .await
        .unwrap();
}

/// Milliseconds to load the big aggregate: from its snapshot, or replaying every event.
pub async fn load(pool: &PgPool, schema: &str, from_snapshot: bool) -> f64 {
    let repository =
        Repository::<Counter, _>::new(PgEventStore::new(pool.clone(), schema).unwrap());
    let start = Instant::now();
    let loaded = if from_snapshot {
        repository.load("big").await.unwrap()
    } else {
        repository.load_from_events("big").await.unwrap()
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(loaded.version, LOADED);
    ms
}

/// The read model of the latency measurement: a total per stream.
struct Totals {
    schema: String,
}

impl Projection for Totals {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> eventrabbit_postgres::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {}.bench_model (stream, total) VALUES ($1, $2) \
             ON CONFLICT (stream) DO UPDATE SET total = bench_model.total + $2",
            self.schema
        ))
        .bind(&event.stream)
        .bind(event.data["n"].as_i64().unwrap_or(0))
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> eventrabbit_postgres::Result<()> {
        sqlx::query(&format!("DELETE FROM {}.bench_model", self.schema))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Projected events, counted for the latency measurement.
struct Projected(watch::Sender<u64>);

#[consumer(action = "BENCH_ES_*")]
async fn bench_project(
    ctx: MessageContext,
    projector: State<Projector<Totals>>,
    projected: State<Projected>,
) -> Result<(), eventrabbit_postgres::Error> {
    projector.project(&ctx).await?;
    projected.0.send_modify(|n| *n += 1);
    Ok(())
}

/// Microseconds from a command's call to its event's update of the read model (the
/// append, the relay woken by the commit, the broker, the projector's transaction), one
/// command at a time, `samples` times.
pub async fn command_to_projection(
    pool: &PgPool,
    schema: &str,
    tag: &str,
    samples: usize,
) -> Vec<f64> {
    clear(pool, schema).await;
    let exchange = format!("bench-es-{tag}");
    let queue = format!("bench-es-projection-{tag}");
    let store = PgEventStore::new(pool.clone(), schema)
        .unwrap()
        .publish_to(&exchange, "");
    let projector = Projector::new(
        store.clone(),
        "totals",
        Totals {
            schema: schema.to_owned(),
        },
    );
    let (projected, mut seen) = watch::channel(0u64);
    let config = Config::default()
        .with_state(projector)
        .with_state(Projected(projected));
    let (events, handle) = build_event_dependencies(addr(), config).await.unwrap();
    let consumer = handle
        .start(
            ConsumeChannel::new(&queue)
                .actions(["BENCH_ES_*"])
                .exchange(&exchange, ExchangeKind::Fanout)
                .auto_delete(true),
        )
        .await
        .unwrap();
    let relay = Relay::new(pool.clone(), events, RelayConfig::default().schema(schema)).unwrap();
    let running = relay.clone();
    let relaying = tokio::spawn(async move { running.run().await });
    let counters = Repository::<Counter, _>::new(store);
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        counters.execute(&(i % 10).to_string(), &1).await.unwrap();
        let target = i as u64 + 1;
        tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|n| *n >= target))
            .await
            .expect("projected within 10 s")
            .unwrap();
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    handle.shutdown().await;
    let _ = consumer.join().await;
    relay.stop();
    let _ = relaying.await;
    let (_c, ch) = crate::broker::raw().await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    latencies.sort_by(f64::total_cmp);
    latencies
}
