//! Waiting in the broker: retry wait queues keep their messages however late a retry
//! comes, and delayed publishes (`publish_after`, `publish_at`) arrive after their delay,
//! also across a restart of the node that holds them.

use eventrabbit::{Config, ConsumeChannel, RetryConfig, consumer};
use eventrabbit_tests::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Runs of each `n`; the first run of each fails.
static LATE_RUNS: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

#[consumer(action = "T_DELAY_FAILS_ONCE")]
async fn fails_once(n: u64) -> Result<(), String> {
    let mut runs = LATE_RUNS.lock().unwrap();
    let count = runs.get_or_insert_default().entry(n).or_default();
    *count += 1;
    if *count == 1 {
        return Err(format!("first run of {n}"));
    }
    Ok(())
}

fn runs_of(n: u64) -> u32 {
    LATE_RUNS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|r| r.get(&n).copied())
        .unwrap_or(0)
}

/// A wait queue is deleted by the broker once unused for its `x-expires` (its TTL plus a
/// minute), and publishing into it is not a use. A retry sent into it more than a minute
/// after it was declared must still come back: the wait queue's lease is renewed.
#[tokio::test]
async fn a_retry_sent_long_after_its_wait_queue_was_declared_comes_back() {
    let queue = unique("q-delay-lease");
    let (events, handle) = deps(
        Config::default().with_retry(
            RetryConfig::default()
                .with_delay(Duration::from_secs(5))
                .with_multiplier(1.0),
        ),
    )
    .await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_DELAY_FAILS_ONCE"]),
    )
    .await;
    // The first failure declares `<queue>.retry.5000ms`.
    events
        .publish("", &queue, "T_DELAY_FAILS_ONCE", &json!({"n": 1}))
        .await
        .unwrap();
    wait_until!(WAIT, runs_of(1) == 2);
    assert_eq!(runs_of(1), 2, "the first retry came back");
    // 62 s after the declaration (beyond the lease of 5 s + 60 s unless renewed, before
    // the second retry is due), a second message fails into the same wait queue.
    tokio::time::sleep(Duration::from_secs(57)).await;
    events
        .publish("", &queue, "T_DELAY_FAILS_ONCE", &json!({"n": 2}))
        .await
        .unwrap();
    wait_until!(WAIT, runs_of(2) == 2);
    assert_eq!(
        runs_of(2),
        2,
        "the retry sent late came back (its wait queue was not deleted with it inside)"
    );
    handle.shutdown().await;
    cleanup(&[&queue, &format!("{queue}.retry.5000ms")], &[]).await;
}

/// `publish_after` holds a message in the broker for its delay, then publishes it to its
/// exchange with its routing key (a topic binding sees the key), body and message id
/// intact; `publish_at` likewise; a delay the broker cannot hold is refused before
/// anything is sent.
#[tokio::test]
async fn a_delayed_publish_arrives_after_its_delay_with_its_routing_key() {
    let (exchange, queue) = (unique("x-delay"), unique("q-delay-target"));
    let (_c, ch) = raw_channel().await;
    bind_queue(
        &ch,
        &queue,
        &exchange,
        lapin::ExchangeKind::Topic,
        "order.*",
    )
    .await;
    let (events, handle) = deps(Config::default()).await;
    events
        .publish_after(
            Duration::from_secs(3),
            &exchange,
            "order.placed",
            "T_DELAY_ORDER",
            &json!({"order": 1}),
        )
        .await
        .unwrap();
    assert_eq!(
        queue_len(&ch, &queue).await,
        0,
        "held back, not published at once"
    );
    let wait_queue = format!("eventrabbit.delay.3000ms:{exchange}:order.placed");
    assert_eq!(
        queue_len(&ch, &wait_queue).await,
        1,
        "held in its wait queue"
    );
    let got = get_message(&ch, &queue, WAIT).await.expect("arrives");
    assert_eq!(got.delivery.routing_key.as_str(), "order.placed");
    let body: serde_json::Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(
        body,
        json!({"action": "T_DELAY_ORDER", "data": {"order": 1}})
    );
    assert!(got.delivery.properties.message_id().is_some());

    events
        .publish_at(
            std::time::SystemTime::now() + Duration::from_secs(1),
            &exchange,
            "order.paid",
            "T_DELAY_ORDER",
            &json!({"order": 2}),
        )
        .await
        .unwrap();
    let got = get_message(&ch, &queue, WAIT).await.expect("arrives");
    assert_eq!(got.delivery.routing_key.as_str(), "order.paid");

    let err = events
        .publish_after(
            Duration::from_secs(30 * 24 * 3600),
            &exchange,
            "order.placed",
            "T_DELAY_ORDER",
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, eventrabbit::Error::InvalidDelay { .. }),
        "{err}"
    );
    handle.shutdown().await;
    cleanup(&[&queue, &wait_queue], &[&exchange]).await;
}

/// A delayed message is durable: the node holding it restarts before it is due, and it
/// still arrives. On a node of the local cluster (never the machine's default node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_survives_a_restart_of_its_node() {
    use eventrabbit_tests::cluster::{cluster_urls, heal, node_url, start_node, stop_node};
    let _ = cluster_urls();
    heal();
    let queue = unique("q-delay-durable");
    let (events, handle) = eventrabbit::build_event_dependencies(&node_url(1), Config::default())
        .await
        .expect("node 1");
    // The target queue, declared through node 2 (it stays up).
    let conn = lapin::Connection::connect(&node_url(2), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, &queue, true).await;
    events
        .publish_after(
            Duration::from_secs(10),
            "",
            &queue,
            "T_DELAY_DURABLE",
            &json!({"n": 1}),
        )
        .await
        .unwrap();
    handle.shutdown().await;
    let wait_queue = format!("eventrabbit.delay.10000ms::{queue}");
    assert_eq!(
        queue_len(&ch, &wait_queue).await,
        1,
        "held in its wait queue when the node stops"
    );
    tokio::task::block_in_place(|| {
        stop_node(1);
        start_node(1);
    });
    let got = get_message(&ch, &queue, Duration::from_secs(60))
        .await
        .expect("the delayed message arrives after the restart");
    let body: serde_json::Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(body["data"], json!({"n": 1}));
    let _ = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
}

/// The test broker routes a delayed publish at once and records the delay RabbitMQ would
/// have waited, rounded up as on RabbitMQ.
#[tokio::test]
async fn the_test_broker_records_delayed_publishes() {
    let broker = eventrabbit::testing::TestBroker::new();
    broker.declare_exchange("tb-delay", eventrabbit::ExchangeKind::Fanout);
    broker
        .publish_after(
            Duration::from_millis(10_001),
            "tb-delay",
            "",
            "T_DELAY_ORDER",
            &json!({"order": 1}),
        )
        .unwrap();
    assert_eq!(broker.delayed("tb-delay"), [Duration::from_secs(11)]);
    assert_eq!(broker.published_to("tb-delay").len(), 1);
    assert!(
        broker
            .publish_after(
                Duration::from_secs(40 * 24 * 3600),
                "tb-delay",
                "",
                "X",
                &json!({})
            )
            .is_err()
    );
}
