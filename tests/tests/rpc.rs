//! RPC over the real broker: round trip, many calls in flight, timeouts, remote errors.

use eventrabbit::{Config, ConsumeChannel, Error, RetryConfig, consumer};
use eventrabbit_tests::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sum {
    total: i64,
    tag: String,
}

#[consumer(action = "T_RPC_ADD")]
async fn add(a: i64, b: i64, tag: String) -> Sum {
    // Later calls finish first, so replies come back out of order.
    tokio::time::sleep(Duration::from_millis((100 - (a % 100)) as u64)).await;
    Sum { total: a + b, tag }
}

#[tokio::test]
async fn call_gets_the_typed_reply() {
    let queue = unique("q-rpc");
    let (events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let reply: Sum = events
        .call(&queue, "T_RPC_ADD", json!({"a": 2, "b": 3, "tag": "x"}))
        .await
        .unwrap();
    assert_eq!(
        reply,
        Sum {
            total: 5,
            tag: "x".into()
        }
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn hundred_concurrent_calls_each_get_their_own_reply() {
    let queue = unique("q-rpc-many");
    let (events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).prefetch(100)).await;
    let calls = (0..100i64).map(|i| {
        let events = events.clone();
        let queue = queue.clone();
        async move {
            let r: Sum = events
                .call(
                    &queue,
                    "T_RPC_ADD",
                    json!({"a": i, "b": 1000, "tag": format!("t{i}")}),
                )
                .await
                .unwrap();
            (i, r)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(results.len(), 100);
    for (i, r) in results {
        assert_eq!(
            r,
            Sum {
                total: i + 1000,
                tag: format!("t{i}")
            }
        );
    }
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn call_without_a_consumer_times_out_and_a_late_reply_is_dropped() {
    let queue = unique("q-rpc-timeout");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, true).await;
    let (events, handle) = deps(Config::default()).await;
    let err = events
        .call_with_timeout::<Sum>(
            &queue,
            "T_RPC_ADD",
            json!({"a": 1, "b": 1, "tag": "late"}),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&queue), "{err}");
    // Now a consumer answers the stale request: the reply has nobody waiting and is dropped,
    // and the client keeps working.
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let reply: Sum = events
        .call(&queue, "T_RPC_ADD", json!({"a": 1, "b": 2, "tag": "fresh"}))
        .await
        .unwrap();
    assert_eq!(reply.total, 3);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn call_to_a_missing_queue_fails_at_once() {
    let (events, _handle) = deps(Config::default()).await;
    let err = events
        .call_with_timeout::<Sum>(
            "no-such-queue-for-rpc",
            "T_RPC_ADD",
            json!({}),
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unroutable { .. }), "{err}");
}

/// A request the broker refuses (here a queue that holds no message and rejects what
/// comes: it nacks) fails the call with `Nacked`, not at its timeout, although a call
/// looks at its request's confirm only once its reply is a moment late.
#[tokio::test]
async fn call_the_broker_refuses_fails_with_nacked_before_its_timeout() {
    let queue = unique("q-rpc-nack");
    let (_c, ch) = raw_channel().await;
    declare_refusing_queue(&ch, &queue, 0).await;
    let (events, _handle) = deps(Config::default()).await;
    // Failing at the timeout would be `Error::Timeout`.
    let err = events
        .call_with_timeout::<Sum>(&queue, "T_RPC_ADD", json!({}), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Nacked { .. }), "{err}");
    cleanup(&[&queue], &[]).await;
}

/// A request is transient (delivery mode 1; see README, "Wire format"), carries
/// `reply_to`, a `correlation_id` and a `message_id`, and a server that is not eventrabbit
/// can answer it.
#[tokio::test]
async fn a_request_is_transient_and_any_server_can_answer_it() {
    let queue = unique("q-rpc-transient");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, true).await;
    let (events, handle) = deps(Config::default()).await;
    let server = {
        let (ch, queue) = (ch.clone(), queue.clone());
        tokio::spawn(async move {
            let m = get_message(&ch, &queue, Duration::from_secs(20))
                .await
                .expect("the request");
            let props = m.delivery.properties.clone();
            let reply_to = props.reply_to().clone().expect("reply_to");
            let correlation_id = props.correlation_id().clone().expect("correlation_id");
            publish_raw(
                &ch,
                "",
                reply_to.as_str(),
                br#"{"data": {"total": 3, "tag": "raw"}}"#,
                lapin::BasicProperties::default().with_correlation_id(correlation_id),
            )
            .await;
            (props, m.delivery.data)
        })
    };
    let reply: Sum = events
        .call(&queue, "T_RPC_ADD", json!({"a": 1, "b": 2, "tag": "raw"}))
        .await
        .unwrap();
    assert_eq!(
        reply,
        Sum {
            total: 3,
            tag: "raw".into()
        }
    );
    let (props, body) = server.await.unwrap();
    assert_eq!(*props.delivery_mode(), Some(1), "{props:?}");
    assert!(props.message_id().is_some(), "{props:?}");
    assert_eq!(
        props.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"action": "T_RPC_ADD", "data": {"a": 1, "b": 2, "tag": "raw"}})
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[consumer(action = "T_RPC_FAILS")]
async fn always_fails(reason: String) -> Result<Sum, String> {
    Err(reason)
}

#[tokio::test]
async fn a_request_that_fails_for_good_gets_an_error_reply() {
    let queue = unique("q-rpc-fails");
    let retry = RetryConfig::default()
        .with_max_retries(1)
        .with_delay(Duration::from_millis(50));
    let (events, handle) = deps(Config::default().with_retry(retry)).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let err = events
        .call::<Sum>(&queue, "T_RPC_FAILS", json!({"reason": "card declined"}))
        .await
        .unwrap_err();
    match &err {
        Error::Remote { message, .. } => assert!(message.contains("card declined"), "{message}"),
        other => panic!("expected a remote error, got {other}"),
    }
    // Poison input is answered at once too.
    let err = events
        .call::<Sum>(&queue, "T_RPC_FAILS", json!({"reason": 5}))
        .await
        .unwrap_err();
    match &err {
        Error::Remote { message, .. } => assert!(message.contains("reason"), "{message}"),
        other => panic!("expected a remote error, got {other}"),
    }
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn reply_that_does_not_fit_the_type_names_the_field() {
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Wrong {
        total: String,
    }
    let queue = unique("q-rpc-badreply");
    let (events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let err = events
        .call::<Wrong>(&queue, "T_RPC_ADD", json!({"a": 1, "b": 1, "tag": "t"}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BadReply { .. }) && err.to_string().contains("total"),
        "{err}"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}
