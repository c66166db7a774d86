//! The connection: idle timeout and redaction. Broker faults are in `faults.rs`.

use eventrabbit::Config;
use eventrabbit_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn an_idle_publisher_connection_closes_and_the_next_publish_reopens_it() {
    let queue = unique("q-idle");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, false).await;
    let (events, _handle) =
        deps(Config::default().with_idle_timeout(Some(Duration::from_millis(300)))).await;
    events
        .publish("", &queue, "T_IDLE", &json!({"n": 1}))
        .await
        .unwrap();
    assert!(events.is_connected().await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!events.is_connected().await, "closed after being idle");
    events
        .publish("", &queue, "T_IDLE", &json!({"n": 2}))
        .await
        .unwrap();
    assert!(events.is_connected().await, "reopened by the next publish");
    assert_eq!(queue_len(&ch, &queue).await, 2);
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn credentials_never_show_in_errors_or_debug() {
    let url = "amqp://guest:hunter2-secret@127.0.0.1:1/%2f";
    let (events, handle) = eventrabbit::build_event_dependencies(
        url,
        Config::default().with_publish_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert!(!format!("{events:?} {handle:?}").contains("hunter2"));
    let err = events.publish("", "q", "A", &json!({})).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}
