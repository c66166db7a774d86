//! W2: confirmed publishing of 100,000 events, plain and with a `traceparent`.

use crate::broker::{addr, declare_queue, envelope, persistent, raw};
use eventrabbit::{Config, TracePropagation, build_event_dependencies};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use std::time::Instant;

pub const W2_N: u64 = 100_000;

pub async fn w2_setup(x: &str, q: &str) {
    let (_c, ch) = raw().await;
    ch.exchange_declare(
        x.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_queue(&ch, q).await;
    ch.queue_bind(
        q.into(),
        x.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// `traced`: every message carries a `traceparent` (eventrabbit: `TracePropagation::Always`).
pub async fn w2_eventrabbit(x: &str, traced: bool) -> f64 {
    let config = if traced {
        Config::default().with_trace_propagation(TracePropagation::Always)
    } else {
        Config::default()
    };
    let (events, _handle) = build_event_dependencies(addr(), config).await.unwrap();
    events
        .publish(
            x,
            "",
            "USER_CREATED",
            &json!({"user_id": 0, "name": "warm"}),
        )
        .await
        .unwrap();
    let start = Instant::now();
    futures_util::stream::iter(1..=W2_N)
        .map(|n| {
            let events = events.clone();
            let f = async move {
                events
                    .publish(
                        x,
                        "",
                        "USER_CREATED",
                        &json!({"user_id": n, "name": format!("user-{n}")}),
                    )
                    .await
            };
            if n == 1 && std::env::var_os("BENCH_THREADS").is_some() {
                println!("eventrabbit future: {} B", std::mem::size_of_val(&f));
            }
            f
        })
        .buffer_unordered(1000)
        .for_each(|r| async move { r.unwrap() })
        .await;
    crate::measure::thread_report("eventrabbit");
    W2_N as f64 / start.elapsed().as_secs_f64()
}

/// Raw lapin the fast way: up to 1000 publishes in flight, each confirm awaited
/// concurrently (pipelined, as eventrabbit's callers do above). `traced`: with a
/// `traceparent` header on every message.
pub async fn w2_raw(x: &str, traced: bool) -> f64 {
    let (_c, ch) = raw().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    futures_util::stream::iter(1..=W2_N)
        .map(|n| {
            let ch = ch.clone();
            let f = async move {
                let body = envelope(n);
                let mut props =
                    persistent().with_message_id(uuid::Uuid::new_v4().to_string().into());
                if traced {
                    let mut h = FieldTable::default();
                    let tp = format!("00-{:032x}-{:016x}-01", fastrand::u128(1..), n);
                    h.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
                    props = props.with_headers(h);
                }
                let confirm = ch
                    .basic_publish(
                        x.into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                assert!(confirm.is_ack());
            };
            if n == 1 && std::env::var_os("BENCH_THREADS").is_some() {
                println!("raw future: {} B", std::mem::size_of_val(&f));
            }
            f
        })
        .buffer_unordered(1000)
        .for_each(|_| async {})
        .await;
    crate::measure::thread_report("raw");
    W2_N as f64 / start.elapsed().as_secs_f64()
}
