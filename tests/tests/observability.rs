//! Spans, trace propagation, metrics and health, on the real broker. One test binary
//! with a global tracing subscriber and metrics recorder that capture what is emitted.

use eventrabbit::{Config, ConsumeChannel, ConsumerState, RetryConfig, consumer, function};
use eventrabbit_tests::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const WAIT: Duration = Duration::from_secs(10);

/// Every `eventrabbit.*` span: its name and fields (including ones recorded later).
#[derive(Default)]
struct SpanLog(Mutex<HashMap<u64, (String, SpanFields)>>);

type SpanFields = HashMap<String, String>;

struct Capture(&'static SpanLog);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        if attrs.metadata().name().starts_with("eventrabbit.") {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0
                .0
                .lock()
                .unwrap()
                .insert(id.into_u64(), (attrs.metadata().name().to_owned(), fields));
        }
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: Context<'_, S>,
    ) {
        if let Some((_, fields)) = self.0.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

static SPANS: OnceLock<&'static SpanLog> = OnceLock::new();
/// Taking a metrics snapshot drains every counter: the tests here take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static METRICS: OnceLock<Snapshotter> = OnceLock::new();

fn install() -> (&'static SpanLog, &'static Snapshotter) {
    let spans = *SPANS.get_or_init(|| {
        let log: &'static SpanLog = Box::leak(Box::default());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with(Capture(log));
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    });
    let snapshotter = METRICS.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("one recorder");
        snapshotter
    });
    (spans, snapshotter)
}

fn spans_named(log: &SpanLog, name: &str) -> Vec<HashMap<String, String>> {
    log.0
        .lock()
        .unwrap()
        .values()
        .filter(|(n, _)| n == name)
        .map(|(_, f)| f.clone())
        .collect()
}

/// One snapshot of the recorder (taking a snapshot drains its counters).
struct Metrics(Vec<(metrics_util::CompositeKey, DebugValue)>);

impl Metrics {
    fn take(snap: &Snapshotter) -> Self {
        Self(
            snap.snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (k, v))
                .collect(),
        )
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key.key().name() == name)
            .filter(move |(key, _)| {
                labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, v)| v)
    }
}

/// Sum of a counter over series whose labels include all of `labels`.
fn counter(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    m.matching(name, labels)
        .map(|v| {
            if let DebugValue::Counter(n) = v {
                *n
            } else {
                0
            }
        })
        .sum()
}

fn histogram_len(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> usize {
    m.matching(name, labels)
        .map(|v| {
            if let DebugValue::Histogram(h) = v {
                h.len()
            } else {
                0
            }
        })
        .sum()
}

#[function(
    action = "T_OBS_RELAY",
    exchange = "",
    key = "",
    action_reply = "T_OBS_RELAYED"
)]
async fn relay(
    n: u32,
    fail_first: bool,
    ctx: eventrabbit::MessageContext,
) -> Result<serde_json::Value, String> {
    if fail_first && ctx.retry_count() == 0 {
        return Err("first attempt fails".into());
    }
    Ok(json!({ "n": n }))
}

#[tokio::test]
async fn deliveries_get_spans_metrics_and_continue_the_callers_trace() {
    let _serial = SERIAL.lock().await;
    let (spans, metrics) = install();
    let queue = unique("q-obs");
    let sink = unique("q-obs-sink");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &sink, false).await;
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(50))
        .with_max_retries(3);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    // The function's own publish (default exchange, key "") routes nowhere; the RPC reply
    // goes to `sink`.
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;

    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(parent.into()),
    );
    let body =
        serde_json::to_vec(&json!({"action": "T_OBS_RELAY", "data": {"n": 1, "fail_first": true}}))
            .unwrap();
    let props = lapin::BasicProperties::default()
        .with_message_id("obs-1".into())
        .with_reply_to(sink.as_str().into())
        .with_correlation_id("c-1".into())
        .with_headers(headers);
    publish_raw(&ch, "", &queue, &body, props).await;
    publish_raw(&ch, "", &queue, b"not json", Default::default()).await;

    // The reply continues the caller's trace: same trace id, new span id.
    let reply = get_message(&ch, &sink, WAIT).await.expect("reply");
    let tp = header(&reply.delivery.properties, "traceparent").expect("traceparent on the reply");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(!tp.contains("00f067aa0ba902b7"), "a new span id: {tp}");

    // One span per delivery (the first attempt, the retry, the poison message).
    let ours = || {
        spans_named(spans, "eventrabbit.consume")
            .into_iter()
            .filter(|f| f.get("queue").map(String::as_str) == Some(queue.as_str()))
            .collect::<Vec<_>>()
    };
    wait_until!(WAIT, ours().len() >= 3);
    let consumed = ours();
    let relayed: Vec<_> = consumed
        .iter()
        .filter(|f| f.get("action").map(String::as_str) == Some("T_OBS_RELAY"))
        .collect();
    assert_eq!(relayed.len(), 2, "{consumed:?}");
    for f in &relayed {
        assert_eq!(f["message_id"], "obs-1");
        assert_eq!(f["correlation_id"], "c-1");
        assert_eq!(f["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(f["redelivered"], "false");
    }
    let mut retries: Vec<&str> = relayed.iter().map(|f| f["retry_count"].as_str()).collect();
    retries.sort();
    assert_eq!(retries, vec!["0", "1"]);
    assert!(
        !spans_named(spans, "eventrabbit.publish").is_empty(),
        "publishes have spans"
    );

    // Metrics, per queue and action.
    let q = queue.as_str();
    let metrics = &Metrics::take(metrics);
    assert_eq!(
        counter(
            metrics,
            "eventrabbit_messages_consumed_total",
            &[("queue", q), ("action", "T_OBS_RELAY")]
        ),
        1
    );
    assert_eq!(
        counter(
            metrics,
            "eventrabbit_messages_failed_total",
            &[("queue", q), ("action", "T_OBS_RELAY")]
        ),
        1
    );
    assert_eq!(
        counter(
            metrics,
            "eventrabbit_messages_retried_total",
            &[("queue", q), ("action", "T_OBS_RELAY")]
        ),
        1
    );
    assert_eq!(
        counter(
            metrics,
            "eventrabbit_messages_dead_lettered_total",
            &[("queue", q), ("reason", "not-json")]
        ),
        1
    );
    assert_eq!(
        histogram_len(
            metrics,
            "eventrabbit_handler_duration_seconds",
            &[("queue", q), ("action", "T_OBS_RELAY")]
        ),
        2
    );
    assert!(counter(metrics, "eventrabbit_publish_confirms_total", &[]) >= 3);
    handle.shutdown().await;
    cleanup(&[&queue, &sink], &[]).await;
}

#[consumer(action = "T_OBS_ECHO")]
async fn echo(n: u32) -> serde_json::Value {
    json!({ "n": n })
}

#[tokio::test]
async fn rpc_calls_are_timed_and_health_reports_each_consumer() {
    let _serial = SERIAL.lock().await;
    let (_spans, metrics) = install();
    let queue = unique("q-obs-rpc");
    let (events, handle) = deps(Config::default()).await;
    let before = handle.health().await;
    assert!(before.consumers.iter().all(|c| c.queue != queue));
    let task = start(&handle, ConsumeChannel::new(&queue)).await;
    let r: serde_json::Value = events
        .call(&queue, "T_OBS_ECHO", json!({"n": 4}))
        .await
        .unwrap();
    assert_eq!(r, json!({"n": 4}));
    let metrics = &Metrics::take(metrics);
    assert!(
        histogram_len(
            metrics,
            "eventrabbit_rpc_duration_seconds",
            &[("action", "T_OBS_ECHO"), ("outcome", "ok")]
        ) >= 1
    );

    // The handler acknowledges just after its reply is confirmed: give it that moment.
    let idle = || async {
        handle
            .health()
            .await
            .consumers
            .iter()
            .all(|c| c.in_flight == 0)
    };
    wait_until!(WAIT, idle().await);
    let health = handle.health().await;
    assert!(health.connected);
    assert_eq!(health.blocked, None);
    let mine = health
        .consumers
        .iter()
        .find(|c| c.queue == queue)
        .expect("listed");
    assert_eq!(mine.state, ConsumerState::Running);
    assert_eq!(mine.in_flight, 0);
    assert!(health.is_ready());

    handle.shutdown().await;
    task.await.unwrap().unwrap();
    let after = handle.health().await;
    let mine = after
        .consumers
        .iter()
        .find(|c| c.queue == queue)
        .expect("still listed");
    assert_eq!(mine.state, ConsumerState::Stopped);
    assert!(!after.is_ready());
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn while_spans_are_recorded_a_publish_starts_a_trace_by_default() {
    let _serial = SERIAL.lock().await;
    let _ = install();
    let queue = unique("q-obs-root");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, false).await;
    let (events, _handle) = deps(Config::default()).await;
    events
        .publish("", &queue, "T_OBS_ANY", &json!({}))
        .await
        .expect("publish");
    let msg = get_message(&ch, &queue, WAIT).await.expect("the message");
    let tp = header(&msg.delivery.properties, "traceparent").expect("a traceparent");
    assert_eq!(tp.len(), 55, "{tp}");
    cleanup(&[&queue], &[]).await;
}

#[derive(Debug, serde::Serialize)]
struct Lonely {
    n: u32,
}

#[eventrabbit::producer(
    exchange = "",
    key = "eventrabbit-nobody-listens",
    action = "T_OBS_LONELY",
    mandatory = true
)]
async fn lonely(n: u32) -> Lonely {
    Lonely { n }
}

/// An event no queue receives: by default `Ok` with a warning and a count in
/// `eventrabbit_publish_unroutable_total`; an `Error::Unroutable` for a mandatory publish
/// (per publish, per producer, or by configuration), counted as well.
#[tokio::test]
async fn unroutable_events_are_counted_and_errors_when_mandatory() {
    let _serial = SERIAL.lock().await;
    let (_, metrics) = install();
    let _ = Metrics::take(metrics);
    let exchange = unique("x-obs-unbound");
    let (_c, ch) = raw_channel().await;
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let (events, _handle) = deps(Config::default()).await;
    events
        .publish(&exchange, "", "T_OBS_NOWHERE", &json!({"n": 1}))
        .await
        .expect("not mandatory by default");
    let e = events
        .publish_mandatory(&exchange, "", "T_OBS_NOWHERE", &json!({"n": 2}))
        .await
        .unwrap_err();
    assert!(matches!(e, eventrabbit::Error::Unroutable { .. }), "{e}");
    let e = lonely(3).await.unwrap_err();
    assert!(matches!(e, eventrabbit::Error::Unroutable { .. }), "{e}");
    let (strict, _strict_handle) = deps(Config::default().with_mandatory(true)).await;
    let e = strict
        .publish(&exchange, "", "T_OBS_NOWHERE", &json!({"n": 4}))
        .await
        .unwrap_err();
    assert!(matches!(e, eventrabbit::Error::Unroutable { .. }), "{e}");
    let m = Metrics::take(metrics);
    assert_eq!(
        counter(
            &m,
            "eventrabbit_publish_unroutable_total",
            &[("exchange", &exchange)]
        ),
        3,
        "every unroutable publish is counted"
    );
    assert_eq!(
        counter(
            &m,
            "eventrabbit_publish_unroutable_total",
            &[("exchange", "")]
        ),
        1,
        "the producer's"
    );
    cleanup(&[], &[&exchange]).await;
}

#[consumer(action = "T_OBS_PING")]
async fn ping(n: u64) -> u64 {
    n
}

/// An RPC reply goes to the caller's direct reply-to pseudo-queue, which the broker never
/// counts as routed: a reply is not "unroutable" (no warning, no count) though it is
/// delivered.
#[tokio::test]
async fn rpc_replies_are_not_counted_as_unroutable() {
    let _serial = SERIAL.lock().await;
    let (_, metrics) = install();
    let queue = unique("q-obs-ping");
    let (events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).actions(["T_OBS_PING"])).await;
    let _ = Metrics::take(metrics);
    for n in 0..3u64 {
        let got: u64 = events
            .call(&queue, "T_OBS_PING", json!({"n": n}))
            .await
            .unwrap();
        assert_eq!(got, n);
    }
    handle.shutdown().await;
    let m = Metrics::take(metrics);
    assert_eq!(
        counter(
            &m,
            "eventrabbit_publish_unroutable_total",
            &[("exchange", "")]
        ),
        0,
        "three replies delivered, none unroutable"
    );
    cleanup(&[&queue], &[]).await;
}
