//! The outbox relay (issue 32): how fast a relay drains a backlog of committed events,
//! for four distributions of ordering keys, against eventrabbit's own confirmed publish of
//! the same events in the same run; and the latency from a commit to the event's arrival
//! at a consumer while the relay is idle.

use crate::broker::{addr, delete_queue, raw};
use crate::measure::{HostCpu, stats};
use crate::w2::w2_setup;
use eventrabbit::{Config, Events, build_event_dependencies};
use eventrabbit_postgres::{Outbox, OutboxMessage, Relay, RelayConfig, migrate};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions};
use serde_json::json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Events per drain.
pub const OUTBOX_N: u64 = 20_000;

/// How the backlog's events are keyed.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    /// No ordering key.
    None,
    /// A key of its own per event.
    Distinct,
    /// 100 keys, round robin.
    Hundred,
    /// One key for all.
    One,
}

impl Keys {
    pub const ALL: [Keys; 4] = [Keys::None, Keys::Distinct, Keys::Hundred, Keys::One];

    pub fn label(self) -> &'static str {
        match self {
            Keys::None => "no key",
            Keys::Distinct => "a key per event",
            Keys::Hundred => "100 keys round robin",
            Keys::One => "one key",
        }
    }

    /// The SQL expression of row `n`'s key.
    fn sql(self) -> &'static str {
        match self {
            Keys::None => "NULL",
            Keys::Distinct => "'k-' || n",
            Keys::Hundred => "'k-' || (n % 100)",
            Keys::One => "'k-one'",
        }
    }
}

/// The database the bench writes its outbox to (`DATABASE_URL`, or the local one).
pub async fn pool() -> PgPool {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await
        .expect("PostgreSQL for the outbox bench (DATABASE_URL)")
}

/// A fresh schema with the outbox, an exchange and the queue it feeds.
pub async fn setup(pool: &PgPool, tag: &str) -> (String, String) {
    let schema = format!("bench_outbox_{tag}");
    migrate(pool, &schema).await.unwrap();
    let x = format!("bench-outbox-{tag}");
    w2_setup(&x, &x).await;
    (schema, x)
}

pub async fn teardown(pool: &PgPool, schema: &str, x: &str) {
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(pool)
        .await;
    let (_c, ch) = raw().await;
    delete_queue(&ch, x).await;
    let _ = ch
        .exchange_delete(x.into(), ExchangeDeleteOptions::default())
        .await;
}

/// eventrabbit's confirmed publish of the same events, 1,000 in flight (as W2).
pub async fn direct(x: &str) -> Drain {
    let (events, _handle) = connected(x).await;
    let cpu = HostCpu::now();
    let start = Instant::now();
    futures_util::stream::iter(1..=OUTBOX_N)
        .map(|n| {
            let events = events.clone();
            async move {
                events
                    .publish(
                        x,
                        "",
                        "USER_CREATED",
                        &json!({"user_id": n, "name": format!("user-{n}")}),
                    )
                    .await
            }
        })
        .buffer_unordered(1000)
        .for_each(|r| async move { r.unwrap() })
        .await;
    Drain {
        rate: OUTBOX_N as f64 / start.elapsed().as_secs_f64(),
        cpu: cpu.per_event_since(OUTBOX_N),
    }
}

/// How a drain (or the direct publish it is compared with) went: events per second, and
/// the CPU the broker, PostgreSQL and this process spent per event meanwhile (on this
/// 2-core machine the three share the cores).
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub rate: f64,
    pub cpu: HostCpu,
}

/// eventrabbit on the local broker, its publishing channel to `x` opened by one publish.
async fn connected(x: &str) -> (Events, eventrabbit::Handle) {
    let (events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    warm(&events, x).await;
    (events, handle)
}

async fn warm(events: &Events, x: &str) {
    events
        .publish(
            x,
            "",
            "USER_CREATED",
            &json!({"user_id": 0, "name": "warm"}),
        )
        .await
        .unwrap();
}

/// The host's CPU per event during the drains of `keys` and the direct publishes paired
/// with them: the broker's, PostgreSQL's and this process's (medians, min–max), and the
/// three together as a ratio row (lower is better).
pub fn cpu_rows(keys: Keys, relay: &[HostCpu], direct: &[HostCpu]) {
    let label = keys.label();
    type Part = fn(&HostCpu) -> f64;
    let parts: [(&str, Part); 3] = [
        ("broker", |c| c.broker),
        ("PostgreSQL", |c| c.database),
        ("client", |c| c.client),
    ];
    for (name, part) in parts {
        let (rm, rlo, rhi) = stats(&relay.iter().map(part).collect::<Vec<_>>());
        let (dm, dlo, dhi) = stats(&direct.iter().map(part).collect::<Vec<_>>());
        println!(
            "| Outbox relay, {label}: host CPU per event, {name} | {rm:.1} ({rlo:.1}–{rhi:.1}) µs | {dm:.1} ({dlo:.1}–{dhi:.1}) µs direct | | lower is better |"
        );
    }
    let total = |c: &[HostCpu]| c.iter().map(|c| c.total()).collect::<Vec<_>>();
    crate::measure::row(
        &format!("Outbox relay, {label}: host CPU per event, all three (vs direct publish)"),
        "µs",
        &total(relay),
        &total(direct),
        false,
    );
}

/// Commits a backlog of `OUTBOX_N` events keyed by `keys` (not timed), then times a relay
/// sending them all.
pub async fn relay(pool: &PgPool, schema: &str, x: &str, keys: Keys) -> Drain {
    sqlx::query(&format!(
        "INSERT INTO {schema}.eventrabbit_outbox (message_id, exchange, routing_key, action, data, ordering_key) \
         SELECT gen_random_uuid()::text, $1, '', 'USER_CREATED', \
                jsonb_build_object('user_id', n, 'name', 'user-' || n), {} \
         FROM generate_series(1, $2) AS n",
        keys.sql()
    ))
    .bind(x)
    .bind(OUTBOX_N as i64)
    .execute(pool)
    .await
    .unwrap();
    let (events, _handle) = connected(x).await;
    // BENCH_RELAY_WORKERS / BENCH_RELAY_BATCH: other settings than the defaults.
    let mut config = RelayConfig::default().schema(schema);
    if let Some(n) = env_number("BENCH_RELAY_WORKERS") {
        config = config.workers(n);
    }
    if let Some(n) = env_number("BENCH_RELAY_BATCH") {
        config = config.batch_size(n);
    }
    let relay = Relay::new(pool.clone(), events, config).unwrap();
    let cpu = HostCpu::now();
    let start = Instant::now();
    let running = relay.clone();
    let task = tokio::spawn(async move { running.run().await });
    while relay.health().sent < OUTBOX_N {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = OUTBOX_N as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu.per_event_since(OUTBOX_N);
    relay.stop();
    let _ = task.await;
    sqlx::query(&format!("DELETE FROM {schema}.eventrabbit_outbox"))
        .execute(pool)
        .await
        .unwrap();
    // What autovacuum does in time: the next measurement does not wade through the
    // 20,000 dead rows (a relay's own clean-up deletes sent rows a week later, a few at a
    // time).
    sqlx::query(&format!("VACUUM ANALYZE {schema}.eventrabbit_outbox"))
        .execute(pool)
        .await
        .unwrap();
    Drain { rate, cpu }
}

/// Commit-to-arrival latency with an idle relay: `samples` events committed one at a time,
/// `gap` apart, each timed from its commit to its delivery to a consumer of the queue.
/// Returns the latencies in µs, sorted.
pub async fn latency(pool: &PgPool, schema: &str, x: &str, samples: usize) -> Vec<f64> {
    let (events, _handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let relay = Relay::new(pool.clone(), events, RelayConfig::default().schema(schema)).unwrap();
    let running = relay.clone();
    let task = tokio::spawn(async move { running.run().await });
    let (_c, ch) = raw().await;
    let mut consumer = ch
        .basic_consume(
            x.into(),
            "bench-outbox-latency".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    // Let the relay reach its idle wait (LISTEN) before the first sample.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outbox = Outbox::new(schema).unwrap();
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut tx = pool.begin().await.unwrap();
        let message =
            OutboxMessage::new(x, "USER_CREATED", &json!({"user_id": i, "name": "late"})).unwrap();
        let id = outbox.publish(&mut tx, message).await.unwrap();
        tx.commit().await.unwrap();
        committed.insert(id, Instant::now());
        // The sample's own delivery (the queue holds nothing else).
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivered within 10 s")
            .expect("a delivery")
            .expect("not an error");
        let arrived = Instant::now();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let got = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        if let Some(at) = committed.remove(&got) {
            latencies.push(arrived.duration_since(at).as_secs_f64() * 1e6);
        }
        // Idle again before the next one.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop();
    let _ = task.await;
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// The `q` quantile of sorted `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// Publishes one after another (each confirm awaited before the next), as a single
/// ordering key must: eventrabbit (`raw` false) or raw lapin. Messages per second.
pub async fn sequential(x: &str, n: u64, raw_lapin: bool) -> f64 {
    if raw_lapin {
        let (_c, ch) = raw().await;
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        let start = Instant::now();
        for i in 0..n {
            let confirm = ch
                .basic_publish(
                    x.into(),
                    "".into(),
                    lapin::options::BasicPublishOptions::default(),
                    &crate::broker::envelope(i),
                    crate::broker::persistent(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
        return n as f64 / start.elapsed().as_secs_f64();
    }
    let (events, _handle) = connected(x).await;
    let start = Instant::now();
    for i in 0..n {
        events
            .publish(
                x,
                "",
                "USER_CREATED",
                &json!({"user_id": i, "name": format!("user-{i}")}),
            )
            .await
            .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
