//! Per-message options on the real broker (issue 34): a higher priority overtakes on a
//! priority queue; an expired message is dead-lettered to `<queue>.dlq` with the broker's
//! reason, which redrive reports as `broker-expired`; persistence, app id and type reach
//! the consumer as properties; a property over 255 bytes fails the publish, no panic.

use eventrabbit::{Config, ConsumeChannel, Error, PublishOptions, Redrive};
use eventrabbit_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn n_of(m: &lapin::message::BasicGetMessage) -> i64 {
    let v: Value = serde_json::from_slice(&m.delivery.data).unwrap();
    v["data"]["n"].as_i64().unwrap()
}

/// Five messages of priority 1 wait in a priority queue; one of priority 9 published after
/// them is delivered first, with the app id, type and delivery mode it was given.
#[tokio::test]
async fn a_higher_priority_overtakes_on_a_priority_queue() {
    let (events, handle) = deps(Config::default()).await;
    let queue = unique("q-prio");
    handle
        .declare(&ConsumeChannel::new(&queue).max_priority(10))
        .await
        .unwrap();
    let low = PublishOptions::new().priority(1);
    for n in 0..5 {
        events
            .publish_with("", &queue, "T_PRIO", &json!({"n": n}), &low)
            .await
            .unwrap();
    }
    let high = PublishOptions::new()
        .priority(9)
        .app_id("billing")
        .message_type("alert")
        .persistent(false);
    events
        .publish_with("", &queue, "T_PRIO", &json!({"n": 99}), &high)
        .await
        .unwrap();
    let (_c, ch) = raw_channel().await;
    wait_until!(WAIT, queue_len(&ch, &queue).await >= 6);
    let first = get_message(&ch, &queue, WAIT).await.expect("a message");
    assert_eq!(n_of(&first), 99, "the high priority first");
    let props = &first.delivery.properties;
    assert_eq!(*props.priority(), Some(9));
    assert_eq!(props.app_id().as_ref().map(|s| s.as_str()), Some("billing"));
    assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some("alert"));
    assert_eq!(*props.delivery_mode(), Some(1), "transient as asked");
    let second = get_message(&ch, &queue, WAIT).await.expect("a message");
    assert_eq!(n_of(&second), 0, "then the low ones in order");
    assert_eq!(*second.delivery.properties.delivery_mode(), Some(2));
    handle.shutdown().await;
    cleanup(&[&queue, &handle.dead_letter_queue(&queue)], &[]).await;
}

/// A message that waits in a quorum queue longer than its expiration is dead-lettered by
/// the broker to the queue's `<queue>.dlq` with the reason `expired`, which redrive groups
/// as `broker-expired`.
#[tokio::test]
async fn an_expired_message_is_dead_lettered_with_the_brokers_reason() {
    let (events, handle) = deps(Config::default()).await;
    let queue = unique("q-ttl");
    handle
        .declare(&ConsumeChannel::new(&queue).quorum())
        .await
        .unwrap();
    let dlq = handle.dead_letter_queue(&queue);
    events
        .publish_with(
            "",
            &queue,
            "T_TTL",
            &json!({"n": 1}),
            &PublishOptions::new().expiration(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    let (_c, ch) = raw_channel().await;
    wait_until!(WAIT, queue_len(&ch, &dlq).await >= 1);
    assert_eq!(queue_len(&ch, &queue).await, 0);
    let report = handle
        .redrive(&queue, Redrive::new().dry_run(true))
        .await
        .unwrap();
    assert_eq!(report.found, 1, "{report:?}");
    assert_eq!(report.groups[0].code, "broker-expired", "{report:?}");
    let dead = get_message(&ch, &dlq, WAIT).await.expect("the dead letter");
    assert_eq!(
        dead.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|s| s.as_str()),
        None,
        "the broker drops the expiration of a dead letter"
    );
    assert_eq!(n_of(&dead), 1);
    handle.shutdown().await;
    cleanup(&[&queue, &dlq], &[]).await;
}

/// An app id or type over 255 bytes fails that publish with `InvalidName`, nothing sent.
#[tokio::test]
async fn a_property_over_255_bytes_fails_the_publish() {
    let (events, handle) = deps(Config::default()).await;
    for options in [
        PublishOptions::new().app_id("a".repeat(256)),
        PublishOptions::new().message_type("t".repeat(65_536)),
    ] {
        let e = events
            .publish_with("", "q-nowhere", "T_LONG", &json!({}), &options)
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    }
    handle.shutdown().await;
}
