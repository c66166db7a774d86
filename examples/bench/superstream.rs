//! Partitioned event logs (issue 30): replaying 200,000 events from one stream and from a
//! log of 4 partitions (the super-stream layout), through eventrabbit's unnamed readers
//! and through the raw stream reader (one connection per stream, each decoding every
//! body into a struct), in the same run.

use crate::broker::{KeyedEnvelope, addr, persistent, raw};
use crate::raw_stream::RawStream;
use eventrabbit::{
    Binding, Config, EventLog, StartAt, StreamConsumer, build_event_dependencies, consumer,
};
use lapin::options::*;
use rabbitmq_stream_protocol::commands::subscribe::OffsetSpecification;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

pub const SS_N: u64 = 200_000;
pub const PARTITIONS: u16 = 4;
const KEYS: u64 = 1_000;

static COUNT: AtomicU64 = AtomicU64::new(0);
static DONE: Notify = Notify::const_new();

#[consumer(action = "SS_EVENT")]
async fn on_event(key: String, seq: u64) {
    std::hint::black_box((key, seq));
    if COUNT.fetch_add(1, Ordering::Relaxed) + 1 == SS_N {
        DONE.notify_one();
    }
}

/// The two logs: `<tag>-one` (one stream) and `<tag>-parts` (4 partitions), each fed
/// by an exchange of its name, filled once with the same events keyed over 1,000 keys.
pub async fn setup(tag: &str) -> (String, String) {
    let (one, parts) = (
        format!("bench-ss-one-{tag}"),
        format!("bench-ss-parts-{tag}"),
    );
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    handle
        .declare_log(&EventLog::new(&one).bind(Binding::fanout(format!("{one}-x"))))
        .await
        .unwrap();
    handle
        .declare_log(
            &EventLog::new(&parts)
                .bind(Binding::fanout(format!("{parts}-x")))
                .partitions(PARTITIONS),
        )
        .await
        .unwrap();
    handle.shutdown().await;
    let (_c, ch) = raw().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..SS_N {
        let key = format!("key-{}", i % KEYS);
        let body = serde_json::to_vec(
            &json!({"action": "SS_EVENT", "data": {"key": key, "seq": i / KEYS}}),
        )
        .unwrap();
        for exchange in [format!("{one}-x"), format!("{parts}-x")] {
            ch.basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                persistent().with_message_id(uuid::Uuid::new_v4().to_string().into()),
            )
            .await
            .unwrap();
        }
        if i % 10_000 == 9_999 {
            ch.wait_for_confirms().await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
    (one, parts)
}

pub async fn teardown(one: &str, parts: &str) {
    let (_c, ch) = raw().await;
    let mut queues = vec![one.to_owned(), format!("{one}.dlq")];
    for i in 0..PARTITIONS {
        queues.push(format!("{parts}.p{i}"));
        queues.push(format!("{parts}.p{i}.dlq"));
    }
    for queue in queues {
        let _ = ch
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [format!("{one}-x"), format!("{parts}-x"), parts.to_owned()] {
        let _ = ch
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// eventrabbit: an unnamed reader from the first event (of every partition when
/// `partitions`), until the handler has seen every event; timed from the call.
pub async fn eventrabbit(log: &str, partitions: Option<u16>) -> f64 {
    COUNT.store(0, Ordering::SeqCst);
    let done = DONE.notified();
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let mut consumer = StreamConsumer::new(log)
        .start_at(StartAt::First)
        .actions(["SS_EVENT"]);
    if let Some(n) = partitions {
        consumer = consumer.partitions(n);
    }
    let h = handle.clone();
    let start = Instant::now();
    let task = tokio::spawn(async move { h.replay(consumer).await });
    done.await;
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    SS_N as f64 / secs
}

/// The raw stream reader: one connection per stream from the first offset, each in a
/// task of its own, decoding every body; timed from connecting until all were read.
pub async fn raw_client(streams: Vec<String>) -> f64 {
    let start = Instant::now();
    let total = std::sync::Arc::new(AtomicU64::new(0));
    let all_read = std::sync::Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for stream in streams {
        let reader = RawStream::connect("127.0.0.1", crate::w4::stream_port())
            .await
            .expect("the rabbitmq_stream plugin must be enabled");
        let (total, all_read) = (total.clone(), all_read.clone());
        tasks.push(tokio::spawn(async move {
            let _ = reader
                .read(&stream, OffsetSpecification::First, |_, message| {
                    let body = message.data().unwrap_or_default();
                    let env: KeyedEnvelope = serde_json::from_slice(body).unwrap();
                    std::hint::black_box((env.data.key, env.data.seq));
                    if total.fetch_add(1, Ordering::Relaxed) + 1 == SS_N {
                        all_read.notify_one();
                    }
                    true
                })
                .await;
        }));
    }
    all_read.notified().await;
    let secs = start.elapsed().as_secs_f64();
    for task in tasks {
        task.abort();
    }
    SS_N as f64 / secs
}
