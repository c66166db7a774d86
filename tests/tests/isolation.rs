//! One message or caller never hurts the others, on the real broker: a refused publish
//! fails only itself, nothing a message carries can break the connection, nothing loops
//! forever, nothing from the broker or a caller panics the runtime, acks are never held
//! hostage, and a set-up timeout abandons only the connection it waited on.

use eventrabbit::types::{AMQPValue, FieldTable, LongString};
use eventrabbit::{
    Binding, Config, ConsumeChannel, ConsumerState, Error, ErrorKind, MessageContext, QueueConfig,
    Redrive, RetryConfig, consumer,
};
use eventrabbit_tests::*;
use futures_util::future::join_all;
use lapin::BasicProperties;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[consumer(action = "T_ISO_ECHO")]
async fn echo(n: u64, ms: u64) -> Value {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    json!({ "n": n })
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// 10,000 confirmed publishes in flight, 1,000 at a time, with 3 publishes to an exchange
/// nobody declared among them and RPC calls waiting for their replies meanwhile: the 3
/// fail with their own error, every other publish and call succeeds, and each good
/// message arrives exactly once.
#[tokio::test]
async fn a_refused_publish_fails_only_itself() {
    let (exchange, queue, missing, rpc_queue) = (
        unique("x-iso-good"),
        unique("q-iso-good"),
        unique("x-iso-missing"),
        unique("q-iso-rpc"),
    );
    let (_c, ch) = raw_channel().await;
    bind_queue(&ch, &queue, &exchange, lapin::ExchangeKind::Fanout, "").await;
    let (events, handle) = deps(Config::default()).await;
    start(
        &handle,
        ConsumeChannel::new(&rpc_queue)
            .actions(["T_ISO_ECHO"])
            .prefetch(100),
    )
    .await;
    let calls = {
        let events = events.clone();
        let rpc_queue = rpc_queue.clone();
        tokio::spawn(async move {
            join_all((0..50u64).map(|n| {
                events.call::<Value>(&rpc_queue, "T_ISO_ECHO", json!({"n": n, "ms": 2000}))
            }))
            .await
        })
    };
    let mut refused = Vec::new();
    let mut good_failures = Vec::new();
    for chunk in 0..10u64 {
        let mut sends: Vec<Boxed<'_, (bool, eventrabbit::Result<()>)>> = (0..1000u64)
            .map(|k| {
                let n = chunk * 1000 + k;
                let exchange = exchange.clone();
                let events = events.clone();
                Box::pin(async move {
                    let r = events
                        .publish(&exchange, "", "T_ISO_GOOD", &json!({"n": n}))
                        .await;
                    (true, r)
                }) as Boxed<'_, _>
            })
            .collect();
        if chunk % 3 == 1 {
            // In the middle of the chunk: sent while hundreds of confirms are outstanding.
            let bad = Box::pin(async {
                let r = events
                    .publish(&missing, "", "T_ISO_BAD", &json!({"n": chunk}))
                    .await;
                (false, r)
            }) as Boxed<'_, _>;
            sends.insert(500, bad);
        }
        for (good, result) in join_all(sends).await {
            match (good, result) {
                (true, Err(e)) => good_failures.push(e.to_string()),
                (false, r) => refused.push(r),
                (true, Ok(())) => {}
            }
        }
    }
    // An RPC call through the missing exchange, while others are in flight: only it fails.
    let more_calls = join_all(
        (50..60u64)
            .map(|n| events.call::<Value>(&rpc_queue, "T_ISO_ECHO", json!({"n": n, "ms": 500}))),
    );
    let refused_call = events.call_exchange::<Value>(
        &missing,
        "",
        "T_ISO_ECHO",
        json!({"n": 0, "ms": 0}),
        Duration::from_secs(10),
    );
    let (more, refused_call) = tokio::join!(more_calls, refused_call);
    assert!(
        good_failures.is_empty(),
        "{} good publishes failed, e.g. {:?}",
        good_failures.len(),
        good_failures.first()
    );
    assert_eq!(refused.len(), 3);
    for r in refused {
        let e = r.expect_err("a publish to a missing exchange is refused");
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert!(e.to_string().contains(&missing), "names its exchange: {e}");
    }
    let e = refused_call.expect_err("a call through a missing exchange is refused");
    assert!(e.to_string().contains(&missing), "{e}");
    for (n, reply) in calls.await.unwrap().into_iter().enumerate() {
        assert_eq!(
            reply.expect("a call in flight got its reply"),
            json!({"n": n})
        );
    }
    for reply in more {
        reply.expect("a concurrent call got its reply");
    }
    wait_until!(WAIT, queue_len(&ch, &queue).await >= 10_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        queue_len(&ch, &queue).await,
        10_000,
        "each good publish arrived exactly once"
    );
    handle.shutdown().await;
    cleanup(&[&queue, &rpc_queue], &[&exchange]).await;
}

static ALWAYS_FAILS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[consumer(action = "T_ISO_ALWAYS_FAILS")]
async fn always_fails(ctx: MessageContext) -> Result<(), String> {
    ALWAYS_FAILS.lock().unwrap().push(ctx.queue().to_owned());
    Err("downstream is down".into())
}

fn failures_on(queue: &str) -> usize {
    ALWAYS_FAILS
        .lock()
        .unwrap()
        .iter()
        .filter(|q| *q == queue)
        .count()
}

static SIBLING_SEEN: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_ISO_SIBLING")]
async fn sibling(n: u64) {
    assert!(n < 1_000);
    SIBLING_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// A retry wait queue left by an older deploy with other arguments: the message is
/// dead-lettered as `retry-unpublishable` after one run of its handler, naming the wait
/// queue, instead of being run every second forever; publishes elsewhere are unaffected.
#[tokio::test]
async fn a_refused_retry_queue_dead_letters_the_message_instead_of_looping() {
    let (queue, sibling_queue) = (unique("q-iso-waitq"), unique("q-iso-sib"));
    let wait_queue = format!("{queue}.retry.100ms");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &wait_queue, false).await; // no TTL, no dead-letter target
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(100))
        .with_max_retries(3);
    let (events, handle) = deps(Config::default().with_retry(retry)).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_ISO_ALWAYS_FAILS"]),
    )
    .await;
    start(
        &handle,
        ConsumeChannel::new(&sibling_queue).actions(["T_ISO_SIBLING"]),
    )
    .await;
    publish_envelope(&ch, "", &queue, "T_ISO_ALWAYS_FAILS", json!({})).await;
    // Meanwhile, unrelated publishes all succeed.
    let sends = join_all((0..200u64).map(|n| {
        let (events, sibling_queue) = (&events, &sibling_queue);
        async move {
            events
                .publish("", sibling_queue, "T_ISO_SIBLING", &json!({"n": n}))
                .await
        }
    }))
    .await;
    assert!(sends.iter().all(|r| r.is_ok()), "{sends:?}");
    let m = get_message(&ch, &handle.dead_letter_queue(&queue), WAIT)
        .await
        .expect("dead-lettered instead of looping");
    let props = &m.delivery.properties;
    assert_eq!(
        header(props, "x-dead-letter-code").as_deref(),
        Some("retry-unpublishable")
    );
    let reason = header(props, "x-dead-letter-reason").unwrap();
    assert!(
        reason.contains(&wait_queue),
        "names the wait queue: {reason}"
    );
    assert!(reason.contains("downstream is down"), "{reason}");
    assert_eq!(header(props, "x-attempts").as_deref(), Some("1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        failures_on(&queue),
        1,
        "the handler ran once, not in a loop"
    );
    wait_until!(WAIT, SIBLING_SEEN.load(Ordering::SeqCst) >= 200);
    assert_eq!(SIBLING_SEEN.load(Ordering::SeqCst), 200);
    let health = handle.health().await;
    assert!(health.is_ready(), "{health:?}");
    handle.shutdown().await;
    cleanup(&[&queue, &sibling_queue, &wait_queue], &[]).await;
}

static COUNTS_SEEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[consumer(action = "T_ISO_COUNTED_FAILS")]
async fn counted_fails(ctx: MessageContext) -> Result<(), String> {
    COUNTS_SEEN.lock().unwrap().push(ctx.retry_count());
    Err("fails".into())
}

/// `x-retry-count` of any type and value (the largest u32, an i64, a negative number, a
/// float, text) is read saturating: no overflow, and `max_retries` always ends in the DLQ
/// with an honest attempt count.
#[tokio::test]
async fn retry_counts_of_any_type_and_value_end_in_the_dead_letter_queue() {
    let queue = unique("q-iso-counts");
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(50))
        .with_max_retries(2);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    let task = start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_ISO_COUNTED_FAILS"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    let cases: Vec<(AMQPValue, &str)> = vec![
        (AMQPValue::LongUInt(u32::MAX), "4294967295"),
        (AMQPValue::LongLongInt(i64::MAX), "4294967295"),
        (AMQPValue::LongLongInt(-3), "3"),
        (AMQPValue::Double(1e300), "4294967295"),
        (AMQPValue::LongString(LongString::from("abc")), "3"),
    ];
    for (i, (value, _)) in cases.iter().enumerate() {
        let mut headers = FieldTable::default();
        headers.insert("x-retry-count".into(), value.clone());
        let body = serde_json::to_vec(&json!({"action": "T_ISO_COUNTED_FAILS", "data": {"i": i}}))
            .unwrap();
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(format!("case-{i}").into());
        publish_raw(&ch, "", &queue, &body, props).await;
    }
    let dlq = handle.dead_letter_queue(&queue);
    let mut attempts: HashMap<String, String> = HashMap::new();
    for _ in 0..cases.len() {
        let m = get_message(&ch, &dlq, WAIT)
            .await
            .expect("every case ends in the dead-letter queue");
        let props = &m.delivery.properties;
        assert_eq!(
            header(props, "x-dead-letter-code").as_deref(),
            Some("retries-exhausted")
        );
        attempts.insert(
            props.message_id().as_ref().unwrap().to_string(),
            header(props, "x-attempts").unwrap(),
        );
    }
    for (i, (_, expected)) in cases.iter().enumerate() {
        assert_eq!(attempts[&format!("case-{i}")], *expected, "case {i}");
    }
    assert!(!task.is_finished(), "the consumer is still running");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

/// Names over AMQP's 255 bytes are errors naming what is too long, never panics: a queue
/// whose retry wait queue name would be too long fails `consume` at once, and publishes
/// and calls with long names fail without sending anything.
#[tokio::test]
async fn names_over_255_bytes_are_errors_not_panics() {
    let (events, handle) = deps(Config::default()).await;
    let long_queue = format!("q-{}", "x".repeat(243)); // 245 bytes: fits, its wait queue does not
    let e = tokio::time::timeout(WAIT, handle.consume(ConsumeChannel::new(&long_queue)))
        .await
        .expect("consume fails at once")
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidName {
                what: "retry wait queue",
                ..
            }
        ),
        "{e}"
    );
    let health = handle.health().await;
    let c = health
        .consumers
        .iter()
        .find(|c| c.queue == long_queue)
        .unwrap();
    assert_eq!(c.state, ConsumerState::Failed);
    assert!(c.last_error.as_deref().unwrap().contains("255"), "{c:?}");
    let bound = ConsumeChannel::new(unique("q-iso-names"))
        .bind(Binding::topic(unique("x-iso-names"), "k".repeat(300)));
    let e = handle.consume(bound).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidName {
                what: "binding key",
                ..
            }
        ),
        "{e}"
    );
    let e = events
        .publish(&"x".repeat(256), "", "T_ISO_NAMES", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidName {
                what: "exchange",
                len: 256,
                ..
            }
        ),
        "{e}"
    );
    let e = events
        .publish("", &"k".repeat(300), "T_ISO_NAMES", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidName {
                what: "routing key",
                ..
            }
        ),
        "{e}"
    );
    let e = events
        .call::<Value>(&"q".repeat(300), "T_ISO_ECHO", json!({"n": 1, "ms": 0}))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Permanent);
    // Nothing was sent, and the connection is as usable as before.
    events
        .publish("", &unique("q-iso-nobody"), "T_ISO_NAMES", &json!({}))
        .await
        .expect("a publish with fitting names");
    assert_eq!(events.connections_opened(), 1);
    handle.shutdown().await;
}

#[consumer(action = "T_ISO_HUGE_ERROR")]
async fn huge_error() -> Result<(), String> {
    Err("e".repeat(200_000))
}

#[consumer(action = "T_ISO_FIELDS")]
async fn fields(#[data] values: BTreeMap<String, u64>) {
    assert!(!values.is_empty());
}

static HEALTHY: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[consumer(action = "T_ISO_HEALTHY")]
async fn healthy(n: u64) {
    HEALTHY.lock().unwrap().push(n);
}

/// A 200 KB handler error, action name or field path, and a message whose own headers
/// leave no room for the failure headers: each is dead-lettered with bounded headers (the
/// last with code `unpublishable`, its own headers dropped), the connection is never
/// closed, and a healthy queue on the same connection handles each of its messages once.
#[tokio::test]
async fn nothing_a_message_carries_breaks_the_connection() {
    let (queue, healthy_queue) = (unique("q-iso-huge"), unique("q-iso-healthy"));
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(50))
        .with_max_retries(1);
    let (events, handle) = deps(Config::default().with_retry(retry)).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions([
            "T_ISO_HUGE_ERROR",
            "T_ISO_FIELDS",
            "T_ISO_ALWAYS_FAILS",
        ]),
    )
    .await;
    start(
        &handle,
        ConsumeChannel::new(&healthy_queue).actions(["T_ISO_HEALTHY"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    let huge = "h".repeat(200_000);
    publish_envelope(&ch, "", &queue, "T_ISO_HUGE_ERROR", json!({})).await;
    publish_envelope(&ch, "", &queue, &huge, json!({})).await;
    publish_envelope(
        &ch,
        "",
        &queue,
        "T_ISO_FIELDS",
        json!({ huge.clone(): "not a number" }),
    )
    .await;
    // Headers that fit in a frame as they are, but not with the failure headers added.
    let mut headers = FieldTable::default();
    headers.insert(
        "x-big".into(),
        AMQPValue::LongString(LongString::from("b".repeat(130_900))),
    );
    let body = br#"{"action":"T_ISO_ALWAYS_FAILS","data":{}}"#;
    publish_raw(
        &ch,
        "",
        &queue,
        body,
        BasicProperties::default().with_headers(headers),
    )
    .await;
    for n in 0..300u64 {
        events
            .publish("", &healthy_queue, "T_ISO_HEALTHY", &json!({"n": n}))
            .await
            .unwrap();
    }
    let dlq = handle.dead_letter_queue(&queue);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let m = get_message(&ch, &dlq, WAIT)
            .await
            .unwrap_or_else(|| panic!("dead-lettered; got so far: {codes:?}"));
        let props = &m.delivery.properties;
        let code = header(props, "x-dead-letter-code").unwrap();
        for key in ["x-dead-letter-reason", "x-last-error"] {
            if let Some(text) = header(props, key) {
                assert!(text.len() <= 4096, "{key} is bounded: {} bytes", text.len());
            }
        }
        if code == "unpublishable" {
            assert!(
                header(props, "x-big").is_none(),
                "its own huge header dropped"
            );
            assert_eq!(m.delivery.data, body, "the body is kept");
        }
        codes.push(code);
    }
    codes.sort();
    assert_eq!(
        codes,
        [
            "invalid-data",
            "retries-exhausted",
            "unknown-action",
            "unpublishable"
        ]
    );
    wait_until!(WAIT, HEALTHY.lock().unwrap().len() >= 300);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = HEALTHY.lock().unwrap().clone();
    assert_eq!(seen.len(), 300, "each healthy message handled exactly once");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 300);
    assert_eq!(
        events.connections_opened(),
        1,
        "the connection was never closed"
    );
    handle.shutdown().await;
    cleanup(&[&queue, &healthy_queue], &[]).await;
}

static GUARDED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[consumer(action = "T_ISO_GUARDED")]
async fn guarded(n: u64) {
    GUARDED.lock().unwrap().push(n);
}

/// A tracing layer that panics while eventrabbit opens the span of the first deliveries
/// of one queue: a bug outside the handler.
struct PanicsOnConsumeSpan {
    queue: String,
    left: AtomicU32,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnConsumeSpan {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Queue(Option<String>);
        impl tracing::field::Visit for Queue {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "queue" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        if attrs.metadata().name() != "eventrabbit.consume" {
            return;
        }
        let mut queue = Queue(None);
        attrs.record(&mut queue);
        if queue.0.as_deref() == Some(self.queue.as_str())
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            panic!("a tracing layer bug");
        }
    }
}

/// A panic outside the handler (here a tracing layer) is contained: the delivery is given
/// back and its prefetch slot freed, the consumer keeps running, and every message is
/// handled once.
#[tokio::test]
async fn a_panic_outside_the_handler_gives_the_delivery_back() {
    use tracing_subscriber::layer::SubscriberExt;
    let queue = unique("q-iso-panic");
    let layer = PanicsOnConsumeSpan {
        queue: queue.clone(),
        left: AtomicU32::new(2),
    };
    // This test's runtime runs on this thread only: the layer sees eventrabbit's spans.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let (events, handle) = deps(Config::default()).await;
    let task = start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_ISO_GUARDED"])
            .prefetch(1),
    )
    .await;
    for n in 0..3u64 {
        events
            .publish("", &queue, "T_ISO_GUARDED", &json!({"n": n}))
            .await
            .unwrap();
    }
    wait_until!(WAIT, GUARDED.lock().unwrap().len() >= 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = GUARDED.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [0, 1, 2], "each handled once, the slot was freed");
    assert!(!task.is_finished(), "the consumer is still running");
    let health = handle.health().await;
    assert!(health.is_ready(), "{health:?}");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static STARTED: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_ISO_GATED")]
async fn gated(slow: bool) {
    STARTED.fetch_add(1, Ordering::SeqCst);
    if slow {
        GATE.acquire().await.unwrap().forget();
    }
}

/// A prefetch of 0 (unlimited, to the broker) given through the queue defaults is
/// taken as 1: one delivery at a time.
#[tokio::test]
async fn a_prefetch_of_zero_is_never_unlimited() {
    let queue = unique("q-iso-prefetch");
    let defaults = QueueConfig {
        prefetch: 0,
        ..QueueConfig::default()
    };
    let (events, handle) = deps(Config::default().with_queue(defaults)).await;
    let before = STARTED.load(Ordering::SeqCst);
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_ISO_GATED"]),
    )
    .await;
    for _ in 0..3 {
        events
            .publish("", &queue, "T_ISO_GATED", &json!({"slow": true}))
            .await
            .unwrap();
    }
    wait_until!(WAIT, STARTED.load(Ordering::SeqCst) > before);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(unacked(&queue), 1, "one delivery at a time");
    assert_eq!(STARTED.load(Ordering::SeqCst) - before, 1);
    GATE.add_permits(3);
    wait_until!(
        WAIT,
        unacked(&queue) == 0 && queue_len_of(&queue).await == 0
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

async fn queue_len_of(queue: &str) -> u32 {
    let (_c, ch) = raw_channel().await;
    queue_len(&ch, queue).await
}

static SLOW_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

#[consumer(action = "T_ISO_SLOW_OR_FAST")]
async fn slow_or_fast(slow: bool) {
    if slow {
        SLOW_GATE.acquire().await.unwrap().forget();
    }
}

/// Deliveries that finished behind a slow one are acknowledged within the batching
/// delay, not when the slow one ends.
#[tokio::test]
async fn acks_are_not_held_hostage_by_a_slow_delivery() {
    let queue = unique("q-iso-hostage");
    let (events, handle) = deps(Config::default()).await;
    start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_ISO_SLOW_OR_FAST"])
            .prefetch(10),
    )
    .await;
    events
        .publish("", &queue, "T_ISO_SLOW_OR_FAST", &json!({"slow": true}))
        .await
        .unwrap();
    for _ in 0..4 {
        events
            .publish("", &queue, "T_ISO_SLOW_OR_FAST", &json!({"slow": false}))
            .await
            .unwrap();
    }
    wait_until!(WAIT, unacked(&queue) == 1);
    assert_eq!(
        unacked(&queue),
        1,
        "only the slow delivery is unacknowledged"
    );
    SLOW_GATE.add_permits(1);
    wait_until!(WAIT, unacked(&queue) == 0);
    assert_eq!(unacked(&queue), 0);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[consumer(action = "T_ISO_QUIET")]
async fn quiet() {}

/// Two consumers start while the connection has gone silent; the first gives up on it
/// after the set-up timeout and resumes on a new connection. When the second's set-up
/// times out later, it abandons only the silent connection it waited on, not the new one
/// the first now runs on.
#[tokio::test]
async fn a_setup_timeout_abandons_only_the_connection_it_waited_on() {
    let proxy = Proxy::start().await;
    let (q2, q3) = (unique("q-iso-setup2"), unique("q-iso-setup3"));
    let (events, handle) = deps_at(&proxy.url(), Config::default()).await;
    events
        .publish("", &q2, "T_ISO_QUIET", &json!({}))
        .await
        .expect("a first connection");
    assert_eq!(events.connections_opened(), 1);
    proxy.freeze_existing();
    let consume = |queue: &String| {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(queue).actions(["T_ISO_QUIET"]);
        tokio::spawn(async move { handle.consume(channel).await })
    };
    let _second = consume(&q2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _third = consume(&q3);
    let running = |queue: &str| {
        let handle = handle.clone();
        let queue = queue.to_owned();
        async move {
            handle
                .health()
                .await
                .consumers
                .iter()
                .any(|c| c.queue == queue && c.state == ConsumerState::Running)
        }
    };
    wait_until!(
        Duration::from_secs(40),
        running(&q2).await && running(&q3).await
    );
    assert!(
        running(&q2).await && running(&q3).await,
        "{:?}",
        handle.health().await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        events.connections_opened(),
        2,
        "the silent one and the one that replaced it; the new one was never abandoned"
    );
    handle.shutdown_within(Duration::from_secs(5)).await;
    cleanup(&[&q2, &q3], &[]).await;
}

static REDRIVE_FIXED: AtomicBool = AtomicBool::new(false);
static REDRIVEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[consumer(action = "T_ISO_REDRIVE")]
async fn redriven(id: u32) -> Result<(), String> {
    if !REDRIVE_FIXED.load(Ordering::SeqCst) {
        return Err("still broken".into());
    }
    REDRIVEN.lock().unwrap().push(id);
    Ok(())
}

/// A redrive takes at most what was in the dead-letter queue when it started (so it ends
/// even when every message fails again), counts exactly, and a dry run says by code and
/// action which dead letters today's handlers would take, moving none.
#[tokio::test]
async fn a_redrive_is_bounded_and_a_dry_run_says_what_would_pass() {
    let queue = unique("q-iso-redrive");
    let retry = RetryConfig::default().with_max_retries(0);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_ISO_REDRIVE"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    for id in 0..5 {
        publish_envelope(&ch, "", &queue, "T_ISO_REDRIVE", json!({"id": id})).await;
    }
    for _ in 0..2 {
        publish_envelope(&ch, "", &queue, "T_ISO_REDRIVE", json!({"id": "x"})).await;
    }
    let dlq = handle.dead_letter_queue(&queue);
    wait_until!(WAIT, queue_len(&ch, &dlq).await >= 7);
    let report = handle
        .redrive(&queue, Redrive::new().dry_run(true))
        .await
        .unwrap();
    assert_eq!((report.found, report.examined, report.moved), (7, 7, 0));
    let group = |code: &str| {
        report
            .groups
            .iter()
            .find(|g| g.code == code)
            .unwrap_or_else(|| panic!("a group {code}: {report:?}"))
    };
    let exhausted = group("retries-exhausted");
    assert_eq!(exhausted.action.as_deref(), Some("T_ISO_REDRIVE"));
    assert_eq!((exhausted.count, exhausted.would_pass), (5, 5));
    let invalid = group("invalid-data");
    assert_eq!((invalid.count, invalid.would_pass), (2, 0));
    assert!(
        invalid.failure.as_deref().unwrap().contains("id"),
        "{invalid:?}"
    );
    wait_until!(WAIT, queue_len(&ch, &dlq).await == 7);
    assert_eq!(queue_len(&ch, &dlq).await, 7, "a dry run moves nothing");
    // Still broken: every moved message fails again, and the redrive still ends.
    let report = tokio::time::timeout(WAIT, handle.redrive(&queue, Redrive::new()))
        .await
        .expect("a redrive ends")
        .unwrap();
    assert_eq!((report.found, report.moved, report.error), (7, 7, None));
    wait_until!(WAIT, queue_len(&ch, &dlq).await == 7);
    let report = handle
        .redrive(&queue, Redrive::new().max(3).dry_run(true))
        .await
        .unwrap();
    assert_eq!((report.found, report.examined), (7, 3), "at most `max`");
    REDRIVE_FIXED.store(true, Ordering::SeqCst);
    assert_eq!(handle.redrive_dead_letters(&queue, 100).await.unwrap(), 7);
    wait_until!(WAIT, REDRIVEN.lock().unwrap().len() >= 5);
    let mut ids = REDRIVEN.lock().unwrap().clone();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    wait_until!(WAIT, queue_len(&ch, &dlq).await == 2);
    assert_eq!(queue_len(&ch, &dlq).await, 2, "the invalid ones are back");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}
