//! W6: latency under load. An open-loop publisher sends at a fixed rate (about half of
//! W1's on this machine) for a fixed time, each event carrying the time it was sent; the
//! consumer records, at the start of its handler, how long the event took to arrive.
//! The publisher is the same raw lapin code for both sides (no confirms, so it never
//! slows down when the broker does): only the consumer differs.

use crate::broker::{addr, declare_queue, persistent, raw};
use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, consumer};
use futures_util::{FutureExt, StreamExt};
use lapin::options::*;
use lapin::types::FieldTable;
use serde::Deserialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Events per second sent: `W6_RATE`, by default 10,000. Half of W1's consume-only rate
/// (25,000) saturates this 2-core machine once the publisher shares it: the queue grows
/// and every latency is seconds of queueing, not the consumer's.
pub fn rate() -> u64 {
    std::env::var("W6_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000)
}
/// How long the publisher sends.
pub const W6_SECS: u64 = 30;

static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static SEEN: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static DONE: Notify = Notify::const_new();

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn record(sent_ns: u64) {
    let latency = now_ns().saturating_sub(sent_ns);
    LATENCIES.lock().unwrap().push(latency);
    if SEEN.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        DONE.notify_one();
    }
}

#[consumer(action = "W6_EVENT")]
async fn w6_event(sent_ns: u64) {
    record(sent_ns);
}

/// p50, p99 and p99.9 in µs, and the distribution: (percentile, µs) pairs.
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub curve: Vec<(f64, f64)>,
}

/// The percentiles the distribution chart is drawn through.
const CURVE: [f64; 16] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999,
    0.99995, 0.99999,
];

fn percentiles() -> Latency {
    let mut all = std::mem::take(&mut *LATENCIES.lock().unwrap());
    all.sort_unstable();
    let at = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e3;
    Latency {
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        curve: CURVE.iter().map(|&p| (p, at(p))).collect(),
    }
}

/// Sends `W6_RATE` events a second for `W6_SECS` seconds to `q`, one tick a millisecond.
async fn publish_open_loop(q: &str) {
    let (_c, ch) = raw().await;
    let per_tick = rate() / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(W6_SECS);
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            let body = format!(
                r#"{{"action":"W6_EVENT","data":{{"sent_ns":{}}}}}"#,
                now_ns()
            );
            let _ = ch
                .basic_publish(
                    "".into(),
                    q.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    persistent(),
                )
                .await;
        }
    }
}

fn reset(expected: u64) -> tokio::sync::futures::Notified<'static> {
    LATENCIES.lock().unwrap().clear();
    LATENCIES.lock().unwrap().reserve(expected as usize);
    SEEN.store(0, Ordering::SeqCst);
    TARGET.store(expected, Ordering::SeqCst);
    DONE.notified()
}

fn expected() -> u64 {
    rate() * W6_SECS
}

pub async fn w6_eventrabbit(q: &str) -> Latency {
    let (_c, ch) = raw().await;
    declare_queue(&ch, q).await;
    let done = reset(expected());
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let h = handle.clone();
    let channel = ConsumeChannel::new(q).prefetch(100).actions(["W6_EVENT"]);
    let task = tokio::spawn(async move { h.consume(channel).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_open_loop(q).await;
    let _ = tokio::time::timeout(Duration::from_secs(60), done).await;
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    percentiles()
}

#[derive(Deserialize)]
struct RawEvent {
    data: RawSent,
}

#[derive(Deserialize)]
struct RawSent {
    sent_ns: u64,
}

pub async fn w6_raw(q: &str) -> Latency {
    let (_c, ch) = raw().await;
    declare_queue(&ch, q).await;
    let done = reset(expected());
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            q.into(),
            "raw-w6".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let expected = expected();
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(Ok(d)) = consumer.next().await {
            let ev: RawEvent = serde_json::from_slice(&d.data).unwrap();
            record(ev.data.sent_ns);
            n += 1;
            if n.is_multiple_of(50) || n == expected {
                let ack = ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true });
                if let Some(Err(e)) = ack.now_or_never() {
                    panic!("ack failed: {e}");
                }
            }
            if n == expected {
                break;
            }
        }
    });
    publish_open_loop(q).await;
    let _ = tokio::time::timeout(Duration::from_secs(60), done).await;
    reader.abort();
    percentiles()
}
