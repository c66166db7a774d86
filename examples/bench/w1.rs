//! W1: consuming 100,000 events from a durable queue.

use crate::broker::{addr, quorum, raw};
use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, consumer};
use futures_util::{FutureExt, StreamExt};
use lapin::options::*;
use lapin::types::FieldTable;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

pub const W1_N: u64 = 100_000;

static W1_COUNT: AtomicU64 = AtomicU64::new(0);
static W1_TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static W1_DONE: Notify = Notify::const_new();

#[consumer(action = "USER_CREATED")]
async fn on_user_created(user_id: i64, name: String) {
    std::hint::black_box((user_id, name));
    if W1_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == W1_TARGET.load(Ordering::Relaxed) {
        W1_DONE.notify_one();
    }
}

/// Resets the count of `USER_CREATED` handled; the future ends when `n` were.
pub fn expect(n: u64) -> tokio::sync::futures::Notified<'static> {
    W1_COUNT.store(0, Ordering::SeqCst);
    W1_TARGET.store(n, Ordering::SeqCst);
    W1_DONE.notified()
}

pub async fn w1_eventrabbit(q: &str) -> f64 {
    let done = expect(W1_N);
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let h = handle.clone();
    let mut channel = ConsumeChannel::new(q)
        .actions(["USER_CREATED"])
        .prefetch(100);
    if quorum() {
        channel = channel.quorum();
    }
    let start = Instant::now();
    let task = tokio::spawn(async move { h.consume(channel).await });
    done.await;
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    W1_N as f64 / secs
}

#[derive(Deserialize)]
pub struct RawEnvelope {
    #[allow(dead_code)]
    action: String,
    pub data: RawUser,
}

#[derive(Deserialize)]
pub struct RawUser {
    pub user_id: i64,
    pub name: String,
}

/// Starts consuming `q` on `ch` with raw lapin, prefetch 100, as consumer `tag`.
pub async fn raw_consume(ch: &lapin::Channel, q: &str, tag: &str) -> lapin::Consumer {
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    ch.basic_consume(
        q.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// Raw lapin the fast way, for `n` deliveries: decode each in the delivery loop, ack
/// every 50 (and the last) with `multiple`, queued without awaiting the write.
pub async fn raw_drain(ch: &lapin::Channel, consumer: &mut lapin::Consumer, n: u64) {
    let mut seen = 0u64;
    while let Some(Ok(d)) = consumer.next().await {
        let env: RawEnvelope = serde_json::from_slice(&d.data).unwrap();
        std::hint::black_box((env.data.user_id, env.data.name));
        seen += 1;
        if seen.is_multiple_of(50) || seen == n {
            // Queued without waiting for the write, as eventrabbit does: the fastest correct
            // form (an ack that fails with its channel is redelivered by the broker anyway).
            let ack = ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true });
            if let Some(Err(e)) = ack.now_or_never() {
                panic!("ack failed: {e}");
            }
        }
        if seen == n {
            break;
        }
    }
}

/// Raw lapin the fast way: decode in the delivery loop, ack every 50 with `multiple`,
/// queued without awaiting the write.
pub async fn w1_raw(q: &str) -> f64 {
    // Timed from connecting, as eventrabbit's run is (it connects and declares in `consume`).
    let start = Instant::now();
    let (_c, ch) = raw().await;
    let mut consumer = raw_consume(&ch, q, "raw-w1").await;
    raw_drain(&ch, &mut consumer, W1_N).await;
    let secs = start.elapsed().as_secs_f64();
    ch.basic_cancel("raw-w1".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    W1_N as f64 / secs
}
