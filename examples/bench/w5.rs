//! W5: many queues on one connection: 200 queues of 500 events, all consumed at once; and
//! the memory of an idle process with 200 consumers (each side in a process of its own).

use crate::broker::{addr, dead_letter_queue, declare_queue, delete_queue, preload, raw};
use crate::w1::{expect, raw_consume, raw_drain};
use eventrabbit::{Config, ConsumeChannel, build_event_dependencies};
use std::time::{Duration, Instant};

pub const W5_QUEUES: usize = 200;
pub const W5_EACH: u64 = 500;

/// The queue names of one run, each loaded with `W5_EACH` events. With
/// `dead_letter_queues`, each queue's dead-letter queue is declared too, as a restarted
/// service finds it (eventrabbit declares it on its first start; raw lapin has none).
pub async fn w5_setup(tag: &str, dead_letter_queues: bool) -> Vec<String> {
    let queues: Vec<String> = (0..W5_QUEUES)
        .map(|i| format!("bench-w5-{tag}-{i}"))
        .collect();
    for q in &queues {
        preload(q, W5_EACH).await;
    }
    if dead_letter_queues {
        let (_c, ch) = raw().await;
        for q in &queues {
            declare_queue(&ch, &dead_letter_queue(q)).await;
        }
    }
    queues
}

/// One `Handle`, a consumer per queue; events per second until all are handled.
pub async fn w5_eventrabbit(queues: &[String]) -> f64 {
    let done = expect(W5_QUEUES as u64 * W5_EACH);
    let start = Instant::now();
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let tasks: Vec<_> = queues
        .iter()
        .map(|q| {
            let h = handle.clone();
            let channel = ConsumeChannel::new(q.as_str())
                .actions(["USER_CREATED"])
                .prefetch(100);
            tokio::spawn(async move { h.consume(channel).await })
        })
        .collect();
    done.await;
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    (W5_QUEUES as u64 * W5_EACH) as f64 / secs
}

/// Raw lapin structured the same way: one connection, and for each queue a task that
/// opens its channel, sets its prefetch, consumes, decodes and acks every 50 as W1's raw
/// consumer does; all started at once, as eventrabbit's consumers are.
///
/// With `one_after_another`, the channels are opened and the consumers started one queue
/// after the other instead (the form of this baseline until 2026-11-27): each consumer
/// then drains most of its 500 events while the next ones are set up, so the queues are
/// consumed nearly in turn rather than at once, a lighter load on the broker.
pub async fn w5_raw(queues: &[String], one_after_another: bool) -> f64 {
    let start = Instant::now();
    let (conn, _ch) = raw().await;
    let conn = std::sync::Arc::new(conn);
    let mut tasks = Vec::new();
    for q in queues {
        let consuming = raw_consumer(conn.clone(), q.clone());
        if one_after_another {
            let consuming = consuming.await;
            tasks.push(tokio::spawn(consuming));
        } else {
            tasks.push(tokio::spawn(async move { consuming.await.await }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (W5_QUEUES as u64 * W5_EACH) as f64 / start.elapsed().as_secs_f64()
}

/// Opens a channel on `conn` and starts consuming `q`; the returned future consumes
/// its `W5_EACH` events.
async fn raw_consumer(
    conn: std::sync::Arc<lapin::Connection>,
    q: String,
) -> impl std::future::Future<Output = ()> {
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = raw_consume(&ch, &q, "raw-w5").await;
    async move { raw_drain(&ch, &mut consumer, W5_EACH).await }
}

/// Resident memory now, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// In a process of its own: 200 consumers on empty queues, settled for 3 s; prints
/// `rss_kib=N`.
pub async fn w5_idle(eventrabbit: bool, tag: &str) {
    let queues: Vec<String> = (0..W5_QUEUES)
        .map(|i| format!("bench-w5i-{tag}-{i}"))
        .collect();
    let (conn, ch) = raw().await;
    for q in &queues {
        declare_queue(&ch, q).await;
    }
    // What keeps the consumers alive until the reading.
    let mut handle = None;
    let mut raw_side = None;
    if eventrabbit {
        let (_events, h) = build_event_dependencies(addr(), Config::default())
            .await
            .unwrap();
        for q in &queues {
            let h = h.clone();
            let channel = ConsumeChannel::new(q.as_str())
                .actions(["USER_CREATED"])
                .prefetch(100);
            tokio::spawn(async move { h.consume(channel).await });
        }
        handle = Some(h);
    } else {
        let (conn2, _) = raw().await;
        let mut consumers = Vec::new();
        for q in &queues {
            let ch = conn2.create_channel().await.unwrap();
            let consumer = raw_consume(&ch, q, "raw-w5i").await;
            consumers.push((ch, consumer));
        }
        raw_side = Some((conn2, consumers));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("rss_kib={}", rss_kib());
    drop(raw_side);
    if let Some(h) = handle {
        h.shutdown().await;
    }
    // With their dead-letter queues, which eventrabbit's side declares.
    for q in &queues {
        delete_queue(&ch, q).await;
    }
    let _ = conn.close(200, "done".into()).await;
}
