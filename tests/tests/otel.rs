//! OpenTelemetry (the `opentelemetry` feature): an RPC call's request, its handling and
//! the reply are one trace in an in-memory exporter, the consumer span a child of the
//! call's span through the message's `traceparent`, with the messaging attributes.

use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, consumer};
use eventrabbit_tests::{amqp_addr, cleanup, raw_connection, unique, wait_until};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{Value, json};
use std::time::Duration;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[consumer(action = "T_OTEL_ECHO")]
async fn echo(n: u64) -> Value {
    json!({ "n": n })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn a_call_its_handling_and_its_reply_are_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("eventrabbit-test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let _ = raw_connection().await;
    let queue = unique("q-otel");
    let (events, handle) = build_event_dependencies(&amqp_addr(), Config::default())
        .await
        .unwrap();
    let task = {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(&queue).actions(["T_OTEL_ECHO"]);
        tokio::spawn(async move { handle.consume(channel).await })
    };
    wait_until!(
        Duration::from_secs(20),
        handle
            .health()
            .await
            .consumers
            .iter()
            .any(|c| c.queue == queue && c.state == eventrabbit::ConsumerState::Running)
    );
    let reply: Value = events
        .call(&queue, "T_OTEL_ECHO", json!({"n": 7}))
        .instrument(tracing::info_span!("caller"))
        .await
        .unwrap();
    assert_eq!(reply, json!({"n": 7}));
    handle.shutdown().await;
    let _ = task.await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let caller = named("caller");
    assert_eq!(caller.len(), 1, "{spans:#?}");
    let caller = caller[0];
    let consume: Vec<_> = spans
        .iter()
        .filter(|s| attr(s, "messaging.operation.type").as_deref() == Some("process"))
        .collect();
    assert_eq!(consume.len(), 1, "one delivery handled: {spans:#?}");
    let consume = consume[0];
    let trace_id = caller.span_context.trace_id();
    assert_eq!(
        consume.span_context.trace_id(),
        trace_id,
        "the consumer joins the caller's trace"
    );
    // The request is published from the call's span, under the caller's.
    // The call's span is a client span named after its target.
    let call: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!(call.len(), 1, "{spans:#?}");
    assert_eq!(call[0].name, format!("{queue} call"));
    assert_eq!(call[0].parent_span_id, caller.span_context.span_id());
    assert_eq!(
        consume.parent_span_id,
        call[0].span_context.span_id(),
        "the consumer is the call's child, through the traceparent"
    );
    assert!(consume.parent_span_is_remote);
    assert_eq!(consume.span_kind, SpanKind::Consumer);
    assert_eq!(
        attr(consume, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attr(consume, "messaging.consumer.group.name"),
        Some(queue.clone())
    );
    assert!(attr(consume, "messaging.message.id").is_some_and(|id| !id.is_empty()));
    assert!(
        attr(consume, "messaging.message.conversation_id").is_some_and(|id| !id.is_empty()),
        "the correlation id"
    );
    // The reply is published from inside the handling: a producer span under it.
    let reply_publish: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.span_kind == SpanKind::Producer && s.parent_span_id == consume.span_context.span_id()
        })
        .collect();
    assert_eq!(reply_publish.len(), 1, "{spans:#?}");
    assert_eq!(reply_publish[0].span_context.trace_id(), trace_id);
    assert_eq!(
        attr(reply_publish[0], "messaging.destination.name").as_deref(),
        Some(""),
        "replies go through the default exchange"
    );
    cleanup(&[&queue], &[]).await;
}
