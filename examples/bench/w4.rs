//! W4: replaying 1,000,000 small events from an event log (a RabbitMQ stream), through an
//! eventrabbit handler and through a raw stream-protocol reader (`raw_stream`, written on
//! the stream protocol crate's codec, as the official client reads) decoding each into a
//! struct.
//!
//! The log is written once, through AMQP with the properties eventrabbit's producers set
//! (a message id, a timestamp, the content type), as a service's events would be; both
//! sides then read it from the first event, as many times as there are runs.

use crate::broker::{addr, envelope, persistent, raw};
use crate::raw_stream::RawStream;
use crate::w1::RawEnvelope;
use eventrabbit::{
    Binding, Config, EventLog, StartAt, StreamConsumer, build_event_dependencies, consumer,
};
use lapin::options::*;
use rabbitmq_stream_protocol::commands::subscribe::OffsetSpecification;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub const W4_N: u64 = 1_000_000;

static W4_COUNT: AtomicU64 = AtomicU64::new(0);
static W4_DONE: Notify = Notify::const_new();

#[consumer(action = "REPLAYED_USER")]
async fn on_replayed_user(user_id: i64, name: String) {
    std::hint::black_box((user_id, name));
    if W4_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == W4_N {
        W4_DONE.notify_one();
    }
}

/// The stream port of the local broker (`STREAM_PORT`, 5552 by default).
pub fn stream_port() -> u16 {
    std::env::var("STREAM_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5552)
}

async fn raw_stream() -> RawStream {
    RawStream::connect("127.0.0.1", stream_port())
        .await
        .expect("the rabbitmq_stream plugin must be enabled")
}

/// Declares `log` and writes `W4_N` events to it (confirmed), once.
pub async fn w4_setup(log: &str) {
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    handle
        .declare_log(&EventLog::new(log).bind(Binding::fanout(log)))
        .await
        .unwrap();
    handle.shutdown().await;
    let (_c, ch) = raw().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..W4_N {
        let body = String::from_utf8(envelope(i))
            .unwrap()
            .replace("USER_CREATED", "REPLAYED_USER");
        let props = persistent()
            .with_message_id(uuid::Uuid::new_v4().to_string().into())
            .with_timestamp(now);
        ch.basic_publish(
            log.into(),
            "".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .unwrap();
        if i % 10_000 == 9_999 {
            ch.wait_for_confirms().await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
}

pub async fn w4_teardown(log: &str) {
    let (_c, ch) = raw().await;
    // The log, and the dead-letter queue its consumer declared.
    for queue in [log.to_owned(), crate::broker::dead_letter_queue(log)] {
        let _ = ch
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .exchange_delete(log.into(), ExchangeDeleteOptions::default())
        .await;
}

/// eventrabbit: `Handle::replay` from the first event, an unnamed consumer, until the
/// handler has seen every event; timed from the call.
pub async fn w4_eventrabbit(log: &str) -> f64 {
    W4_COUNT.store(0, Ordering::SeqCst);
    let done = W4_DONE.notified();
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let consumer = StreamConsumer::new(log)
        .start_at(StartAt::First)
        .actions(["REPLAYED_USER"]);
    let h = handle.clone();
    let start = Instant::now();
    let task = tokio::spawn(async move { h.replay(consumer).await });
    done.await;
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    W4_N as f64 / secs
}

/// The raw stream reader the fast way: subscribed from the first offset, decoding each
/// body into a struct in the delivery loop; timed from connecting.
pub async fn w4_raw(log: &str) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    raw_stream()
        .await
        .read(log, OffsetSpecification::First, |_, message| {
            let body = message.data().unwrap_or_default();
            let env: RawEnvelope = serde_json::from_slice(body).unwrap();
            std::hint::black_box((env.data.user_id, env.data.name));
            n += 1;
            n < W4_N
        })
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    W4_N as f64 / secs
}
