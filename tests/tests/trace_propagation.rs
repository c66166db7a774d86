//! When published messages carry a `traceparent`, on the real broker. This binary installs
//! no tracing subscriber: nothing records eventrabbit's spans here, which is what the
//! default (`TracePropagation::Auto`) looks at. With a subscriber, see observability.rs.

use eventrabbit::{Config, ConsumeChannel, TracePropagation, consumer};
use eventrabbit_tests::*;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[consumer(action = "T_TP_ECHO")]
async fn tp_echo(n: u64) -> serde_json::Value {
    json!({ "n": n })
}

/// A queue of its own, and what arrives there from `events.publish`.
async fn published_by(config: Config) -> BasicProperties {
    let queue = unique("q-tp-root");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, false).await;
    let (events, _handle) = deps(config).await;
    events
        .publish("", &queue, "T_TP_ANY", &json!({"n": 1}))
        .await
        .expect("publish");
    let msg = get_message(&ch, &queue, WAIT).await.expect("the message");
    cleanup(&[&queue], &[]).await;
    msg.delivery.properties
}

/// The reply a `T_TP_ECHO` request gets, sent with `traceparent` (if any) to a queue of
/// its own by a consumer running with `config`.
async fn reply_to_request(config: Config, traceparent: Option<&str>) -> BasicProperties {
    let queue = unique("q-tp-echo");
    let sink = unique("q-tp-sink");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &sink, false).await;
    let (_events, handle) = deps(config).await;
    let task = start(&handle, ConsumeChannel::new(&queue)).await;
    let mut props = BasicProperties::default()
        .with_reply_to(sink.as_str().into())
        .with_correlation_id("c-tp".into());
    if let Some(tp) = traceparent {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
        props = props.with_headers(headers);
    }
    let body = serde_json::to_vec(&json!({"action": "T_TP_ECHO", "data": {"n": 7}})).unwrap();
    publish_raw(&ch, "", &queue, &body, props).await;
    let reply = get_message(&ch, &sink, WAIT).await.expect("a reply");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply.delivery.data).unwrap(),
        json!({"data": {"n": 7}})
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue, &sink], &[]).await;
    reply.delivery.properties
}

fn assert_continues_parent(props: &BasicProperties) {
    let tp = header(props, "traceparent").expect("a traceparent");
    assert!(tp.starts_with(&format!("00-{PARENT_TRACE}-")), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "a new span id: {tp}");
}

#[tokio::test]
async fn by_default_a_message_nobody_traces_carries_no_header() {
    let props = published_by(Config::default()).await;
    assert_eq!(header(&props, "traceparent"), None);
    assert!(props.message_id().is_some(), "message_id is always set");
}

#[tokio::test]
async fn always_starts_a_trace_on_every_publish() {
    let props =
        published_by(Config::default().with_trace_propagation(TracePropagation::Always)).await;
    let tp = header(&props, "traceparent").expect("a traceparent");
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
}

#[tokio::test]
async fn by_default_a_trace_that_came_in_is_continued() {
    let props = reply_to_request(Config::default(), Some(PARENT)).await;
    assert_continues_parent(&props);
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "c-tp");
}

#[tokio::test]
async fn by_default_no_trace_in_means_no_trace_out() {
    let props = reply_to_request(Config::default(), None).await;
    assert_eq!(header(&props, "traceparent"), None);
}

#[tokio::test]
async fn always_passes_a_trace_on_even_when_none_came_in() {
    let config = Config::default().with_trace_propagation(TracePropagation::Always);
    let props = reply_to_request(config.clone(), None).await;
    assert!(header(&props, "traceparent").is_some());
    assert_continues_parent(&reply_to_request(config, Some(PARENT)).await);
}

#[tokio::test]
async fn never_drops_even_a_trace_that_came_in() {
    let config = Config::default().with_trace_propagation(TracePropagation::Never);
    let props = reply_to_request(config, Some(PARENT)).await;
    assert_eq!(header(&props, "traceparent"), None);
}
