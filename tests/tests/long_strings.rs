//! No string from a caller, a broker, a database or another service can panic anything
//! (issue 33): every entry point that takes a string AMQP carries as a short string (255
//! bytes at most) is driven with strings of 0, 255, 256 and 64 KiB bytes. What is to be
//! sent fails with `Error::InvalidName` past 255 bytes, before anything is sent; what is
//! received is cut or left out; nothing panics, and the consumers go on.

use eventrabbit::{
    Binding, Config, ConsumeChannel, Error, EventLog, FailureEvents, MessageContext,
    PublishOptions, StartAt, StreamConsumer, consumer,
};
use eventrabbit_postgres::{Outbox, OutboxMessage, Relay, RelayConfig};
use eventrabbit_tests::raw_stream::RawStream;
use eventrabbit_tests::*;
use rabbitmq_stream_protocol::message::Message;
use serde_json::json;
use std::time::Duration;

const LENGTHS: [usize; 4] = [0, 255, 256, 64 * 1024];
const WAIT: Duration = Duration::from_secs(60);

fn text(len: usize) -> String {
    "s".repeat(len)
}

/// A short string past 255 bytes is refused before anything is sent, naming it.
fn refused_if_long(len: usize, result: eventrabbit::Result<()>, what: &str) {
    if len > 255 {
        match result {
            Err(Error::InvalidName { len: l, .. }) => assert_eq!(l, len, "{what}"),
            other => panic!("{what} of {len} bytes: {other:?}"),
        }
    }
}

/// Publishing, RPC calls and delayed publishes with exchanges, routing keys, actions,
/// message ids and header keys and values of every length.
#[tokio::test]
async fn publishing_calls_and_delays_take_strings_of_any_length() {
    let (events, handle) = deps(Config::default().with_rpc_timeout(Duration::from_secs(2))).await;
    let data = json!({"n": 1});
    for len in LENGTHS {
        let s = text(len);
        let exchange = events.publish(&s, "", "T_LS", &data).await;
        if len == 0 {
            exchange.as_ref().expect("the default exchange");
        } else if len == 255 {
            assert!(
                exchange.as_ref().is_err_and(|e| !e.is_retryable()),
                "{exchange:?}"
            );
        }
        refused_if_long(len, exchange, "exchange");
        let key = events.publish("", &s, "T_LS", &data).await;
        if len <= 255 {
            key.as_ref().expect("routed nowhere, not an error");
        }
        refused_if_long(len, key, "routing key");
        events
            .publish("", "", &s, &data)
            .await
            .expect("an action is body text, of any length");
        let id = events
            .publish_with("", "", "T_LS", &data, &PublishOptions::new().message_id(&s))
            .await;
        if len <= 255 {
            id.as_ref().expect("a message id of up to 255 bytes");
        }
        refused_if_long(len, id, "message id");
        let header = PublishOptions::new().header(&s, "v").header("v", &s);
        let header = events.publish_with("", "", "T_LS", &data, &header).await;
        if len <= 255 {
            header.as_ref().expect("a header key of up to 255 bytes");
        }
        refused_if_long(len, header, "header key");
        let call = events.call::<serde_json::Value>(&s, "T_LS", &data).await;
        if len > 255 {
            assert!(matches!(call, Err(Error::InvalidName { .. })), "{call:?}");
        } else {
            assert!(matches!(call, Err(Error::Unroutable { .. })), "{call:?}");
        }
        let called = events.call::<serde_json::Value>("q", &s, &data).await;
        assert!(called.is_err(), "no such queue: {called:?}");
        let delayed = events
            .publish_after(Duration::from_millis(10), "", &s, "T_LS", &data)
            .await;
        if len <= 255 {
            delayed
                .as_ref()
                .expect("a delayed publish of any key up to 255 bytes");
        }
        refused_if_long(len, delayed, "delayed routing key");
    }
    handle.shutdown().await;
}

static GOT: Recorder = Recorder::new();

#[consumer(action = "T_LS_GOOD")]
async fn good(n: u64, ctx: MessageContext) {
    GOT.record(json!({
        "queue": ctx.queue(),
        "n": n,
        "id_len": ctx.message_id().map(str::len),
        "headers": ctx.headers().map(|h| h.inner().len()).unwrap_or(0),
    }));
}

#[consumer(
    action = "T_LS_RETRIED",
    retry(max = 1, delay = "1ms", max_delay = "9999999ms")
)]
async fn retried(n: u64) -> Result<(), String> {
    Err(format!("{n} always fails"))
}

fn got_on(queue: &str) -> Vec<serde_json::Value> {
    GOT.values()
        .into_iter()
        .filter(|v| v["queue"] == queue)
        .collect()
}

/// Consumers: queue, binding and argument names, failure events (whose routing key is
/// the failed action, of any length), and the retry wait queue a handler's own
/// `retry(..)` derives. What cannot be declared fails `consume` at once, naming it; the
/// failure event of an action too long for a routing key is logged, and the message is
/// still dead-lettered.
#[tokio::test]
async fn consumers_take_names_and_failure_events_of_any_length() {
    let (_events, handle) = deps(Config::default()).await;
    for len in LENGTHS {
        let s = text(len);
        if len > 255 {
            for spec in [
                ConsumeChannel::new(&s),
                ConsumeChannel::new(unique("q-ls")).bind(Binding::topic(&s, "k")),
                ConsumeChannel::new(unique("q-ls")).bind(Binding::topic("x", &s)),
                ConsumeChannel::new(unique("q-ls")).bind(Binding::headers("x").header(&s, "v")),
                ConsumeChannel::new(unique("q-ls"))
                    .argument(&s, eventrabbit::types::AMQPValue::Boolean(true)),
                ConsumeChannel::new(unique("q-ls")).failure_events(FailureEvents::to(&s)),
            ] {
                let e = handle.consume(spec).await.expect_err("refused at start");
                assert!(matches!(e, Error::InvalidName { .. }), "{e}");
            }
        }
    }
    // A handler's own retry policy makes the wait queue name longer than the queue's own
    // policy would: `consume` checks every handler's, naming it.
    // `q-ls-` and 235 bytes: the queue's own longest wait queue (`.retry.60000ms`) fits in
    // 255 bytes, the handler's (`.retry.9999999ms`) does not.
    let long_queue = format!("q-ls-{}", text(235));
    let e = handle
        .consume(ConsumeChannel::new(&long_queue).actions(["T_LS_RETRIED"]))
        .await
        .expect_err("a wait queue name over 255 bytes");
    assert!(
        matches!(&e, Error::InvalidQueue { reason, .. } if reason.contains("T_LS_RETRIED")),
        "{e}"
    );
    // Failure events: the event's routing key is the failed action plus `_FAILED`.
    let queue = unique("q-ls-failures");
    let task = start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_LS_GOOD"])
            .failure_events(FailureEvents::to("")),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    for len in LENGTHS {
        let body = serde_json::to_vec(&json!({"action": text(len), "data": {}})).unwrap();
        publish_raw(&ch, "", &queue, &body, lapin::BasicProperties::default()).await;
    }
    let good = serde_json::to_vec(&json!({"action": "T_LS_GOOD", "data": {"n": 1}})).unwrap();
    publish_raw(&ch, "", &queue, &good, lapin::BasicProperties::default()).await;
    wait_until!(WAIT, !got_on(&queue).is_empty());
    let dlq = handle.dead_letter_queue(&queue);
    wait_until!(WAIT, queue_len(&ch, &dlq).await >= 4);
    assert_eq!(
        queue_len(&ch, &dlq).await,
        4,
        "every unknown action dead-lettered"
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue], &[]).await;
}

/// Outbox rows with header keys and values of every length: the relay sends those AMQP
/// can carry, marks the others failed, and never panics.
#[tokio::test]
async fn outbox_headers_of_any_length_never_panic_the_relay() {
    let pool = pg_pool().await;
    let schema = pg_schema(&pool).await;
    let (events, handle) = deps(Config::default()).await;
    let queue = unique("q-ls-outbox");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, true).await;
    let outbox = Outbox::new(&schema).unwrap();
    let mut tx = pool.begin().await.unwrap();
    for len in LENGTHS {
        let message = OutboxMessage::new("", "T_LS", &json!({"len": len}))
            .unwrap()
            .routing_key(&queue)
            .ordering_key("one key")
            .header(text(len), text(len));
        outbox.publish(&mut tx, message).await.unwrap();
    }
    tx.commit().await.unwrap();
    let relay = Relay::new(pool.clone(), events, RelayConfig::default().schema(&schema)).unwrap();
    // One row of a key per round: four rounds take them all.
    while relay.run_once().await.unwrap() > 0 {}
    wait_until!(WAIT, queue_len(&ch, &queue).await >= 2);
    assert_eq!(
        queue_len(&ch, &queue).await,
        2,
        "the 0- and 255-byte keys went"
    );
    let failed = outbox.failed(&pool, 10).await.unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|r| r.error.as_deref().unwrap().contains("header key"))
    );
    handle.shutdown().await;
    drop_schema(&pool, &schema).await;
    cleanup(&[&queue], &[]).await;
}

/// Events another service wrote into a log over the stream protocol, with message ids,
/// correlation ids and property keys of every length: the reader hands every event it
/// can read to its handler (ids cut to 255 bytes, property keys no AMQP header can carry
/// left out), and sets aside (dead letter `unreadable`, naming the offset) the events the
/// stream client cannot decode, instead of resubscribing to them forever; it never panics
/// or stalls, and reads the event written after them.
#[tokio::test]
async fn stream_events_with_ids_and_keys_of_any_length_are_read() {
    let (_events, handle) = deps(Config::default()).await;
    let log = unique("log-ls");
    handle
        .declare_log(&EventLog::new(&log).max_age(Duration::from_secs(600)))
        .await
        .expect("the log is declared (is the rabbitmq_stream plugin enabled?)");
    let mut writer = RawStream::connect("127.0.0.1", 5552)
        .await
        .expect("the stream port");
    let mut messages = Vec::new();
    for (n, len) in LENGTHS.into_iter().enumerate() {
        let body = serde_json::to_vec(&json!({"action": "T_LS_GOOD", "data": {"n": n}})).unwrap();
        messages.push(
            Message::builder()
                .body(body)
                .properties()
                .message_id(text(len))
                .correlation_id(text(len))
                .content_type("application/json")
                .message_builder()
                .application_properties()
                .insert(text(len), "v")
                .insert("k", text(len))
                .message_builder()
                .build(),
        );
    }
    let after = serde_json::to_vec(&json!({"action": "T_LS_GOOD", "data": {"n": 99}})).unwrap();
    messages.push(Message::builder().body(after).build());
    writer
        .publish(&log, messages)
        .await
        .expect("written to the log");
    let reading = {
        let handle = handle.clone();
        let spec = StreamConsumer::new(&log)
            .start_at(StartAt::First)
            .actions(["T_LS_GOOD"]);
        tokio::spawn(async move { handle.replay(spec).await })
    };
    let on_log = || -> Vec<serde_json::Value> {
        GOT.values()
            .into_iter()
            .filter(|v| v["queue"].as_str().is_some_and(|q| q.contains(&log)))
            .collect()
    };
    // The event written after the long ones is read: nothing stalls the reader.
    wait_until!(WAIT, on_log().iter().any(|v| v["n"] == 99));
    let seen = on_log();
    assert!(seen.iter().any(|v| v["n"] == 99), "{seen:?}");
    for v in &seen {
        let id_len = v["id_len"].as_u64().unwrap_or(0);
        assert!(id_len <= 255, "{v}");
    }
    // Every long event was either handled or set aside with its offset, never skipped.
    let (_c, ch) = raw_channel().await;
    let dlq = format!("{log}.dlq");
    let mut set_aside = Vec::new();
    while let Some(m) = get_message(&ch, &dlq, Duration::from_millis(500)).await {
        assert_eq!(
            header(&m.delivery.properties, "x-dead-letter-code").as_deref(),
            Some("unreadable")
        );
        set_aside.push(header(&m.delivery.properties, "x-dead-letter-reason").unwrap());
    }
    let handled = seen.iter().filter(|v| v["n"] != 99).count();
    assert_eq!(
        handled + set_aside.len(),
        LENGTHS.len(),
        "handled {seen:?}, set aside {set_aside:?}"
    );
    eprintln!(
        "handled {handled} long events, set aside {}: {set_aside:?}",
        set_aside.len()
    );
    handle.shutdown().await;
    reading.await.unwrap().unwrap();
    cleanup(&[&log, &dlq], &[]).await;
}
