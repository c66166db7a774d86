//! The local broker as both sides of a workload see it: connections, queues, bodies.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};

pub fn addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub async fn raw() -> (Connection, Channel) {
    let conn = Connection::connect(&addr(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must be running at AMQP_ADDR");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// The W1/W4 event: `USER_CREATED` with a user id and name.
pub fn envelope(n: u64) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"action": "USER_CREATED", "data": {"user_id": n, "name": format!("user-{n}")}}),
    )
    .unwrap()
}

pub fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Whether the workloads run on quorum queues (W1q, W2q) rather than classic ones.
static QUORUM: AtomicBool = AtomicBool::new(false);

pub fn quorum() -> bool {
    QUORUM.load(Ordering::SeqCst)
}

pub fn set_quorum(on: bool) {
    QUORUM.store(on, Ordering::SeqCst);
}

pub async fn declare_queue(ch: &Channel, q: &str) {
    let mut args = FieldTable::default();
    if quorum() {
        // As eventrabbit declares a quorum queue, so that both sides use the same one.
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead_letter_queue(q).into()),
        );
    }
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
}

/// The dead-letter queue eventrabbit declares for `q` (the default suffix).
pub fn dead_letter_queue(q: &str) -> String {
    format!("{q}.dlq")
}

pub async fn delete_queue(ch: &Channel, q: &str) {
    let _ = ch
        .queue_delete(q.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .queue_delete(
            dead_letter_queue(q).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
}

/// Fills `q` with `n` W1 envelopes, confirmed.
pub async fn preload(q: &str, n: u64) {
    let (_c, ch) = raw().await;
    declare_queue(&ch, q).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            &envelope(i),
            persistent(),
        )
        .await
        .unwrap();
        if i % 5000 == 4999 {
            ch.wait_for_confirms().await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
}

/// Empties `q` (what a run left there).
pub async fn purge(ch: &Channel, q: &str) {
    let _ = ch
        .queue_purge(q.into(), lapin::options::QueuePurgeOptions::default())
        .await;
}

/// The body of a keyed event (`{"action", "data": {"key", "seq"}}`) as the raw clients
/// decode it.
#[derive(serde::Deserialize)]
pub struct KeyedEnvelope {
    pub data: KeyedData,
}

/// The `data` of a keyed event.
#[derive(serde::Deserialize)]
pub struct KeyedData {
    pub key: String,
    pub seq: u64,
}
