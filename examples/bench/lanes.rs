//! Keyed order (issue 30): 2,000 events over 8 keys, each taking a 1 ms handler, consumed
//! in per-key order. eventrabbit's keyed lanes (`order_by`, prefetch 64) and its
//! `prefetch(1)`, each against raw lapin with `prefetch(1)` (strict queue order, which is
//! how a raw client keeps each key in order without writing lanes by hand), in the same run.

use crate::broker::{KeyedEnvelope, addr, declare_queue, persistent, raw};
use eventrabbit::{
    Config, ConsumeChannel, OrderKey, RetryConfig, build_event_dependencies, consumer,
};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const LANES_N: u64 = 2_000;
pub const KEYS: u64 = 8;
const WORK: Duration = Duration::from_millis(1);

static COUNT: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static DONE: Notify = Notify::const_new();

#[consumer(action = "BENCH_KEYED")]
async fn keyed(key: String, seq: u64) {
    std::hint::black_box((key, seq));
    tokio::time::sleep(WORK).await;
    if COUNT.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        DONE.notify_one();
    }
}

/// Fills `q` with the events, keys round robin.
pub async fn preload(q: &str) {
    let (_c, ch) = raw().await;
    declare_queue(&ch, q).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..LANES_N {
        let body = serde_json::to_vec(
            &json!({"action": "BENCH_KEYED", "data": {"key": format!("key-{}", i % KEYS), "seq": i / KEYS}}),
        )
        .unwrap();
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            &body,
            persistent(),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
}

/// eventrabbit, keyed by `key` (lanes) or strictly in order (`prefetch(1)`): events/s.
pub async fn eventrabbit(q: &str, lanes: bool) -> f64 {
    COUNT.store(0, Ordering::SeqCst);
    TARGET.store(LANES_N, Ordering::SeqCst);
    let done = DONE.notified();
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let mut channel = ConsumeChannel::new(q)
        .actions(["BENCH_KEYED"])
        .retry(RetryConfig::default().with_max_retries(1));
    channel = if lanes {
        channel.prefetch(64).order_by(OrderKey::field("key"))
    } else {
        channel.prefetch(1)
    };
    let start = Instant::now();
    let h = handle.clone();
    let task = tokio::spawn(async move { h.consume(channel).await });
    tokio::select! {
        () = done => {}
        ended = task => panic!("the consumer ended: {ended:?}"),
    }
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    LANES_N as f64 / secs
}

/// Raw lapin, `prefetch(1)`: decode, 1 ms of work, ack; events/s.
pub async fn raw_in_order(q: &str) -> f64 {
    let start = Instant::now();
    let (_c, ch) = raw().await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            q.into(),
            "raw-lanes".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = 0;
    while let Some(Ok(d)) = consumer.next().await {
        let env: KeyedEnvelope = serde_json::from_slice(&d.data).unwrap();
        std::hint::black_box((env.data.key, env.data.seq));
        tokio::time::sleep(WORK).await;
        d.ack(BasicAckOptions::default()).await.unwrap();
        seen += 1;
        if seen == LANES_N {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ch.basic_cancel("raw-lanes".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    LANES_N as f64 / secs
}
