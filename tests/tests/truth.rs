//! Telling the truth about trouble, on the real broker: a silent connection is noticed
//! fast, no call outlives its deadline, health says what a consumer is really doing, a
//! re-created exchange delivers again, shutdown keeps its deadline, and a Python
//! eventrabbit service's topology and RPC callers are met.

use eventrabbit::{
    Binding, Config, ConsumeChannel, ConsumerState, Error, MessageContext, QueueConfig,
    RetryConfig, build_event_dependencies, consumer,
};
use eventrabbit_tests::*;
use lapin::BasicProperties;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[consumer(action = "T_TRUTH_NOTE")]
async fn note(n: u64) {
    NOTED.lock().unwrap().push(n);
}

static NOTED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn noted(n: u64) -> bool {
    NOTED.lock().unwrap().contains(&n)
}

async fn consumer_state(
    handle: &eventrabbit::Handle,
    queue: &str,
) -> Option<(ConsumerState, Option<String>)> {
    handle
        .health()
        .await
        .consumers
        .into_iter()
        .find(|c| c.queue == queue)
        .map(|c| (c.state, c.last_error))
}

/// A connection that goes silent (no FIN, no RST) is noticed within about 30 s with the
/// default heartbeat: health says not connected, and the consumer resumes on a new
/// connection.
#[tokio::test]
async fn a_silent_connection_is_noticed_within_about_30_seconds() {
    let proxy = Proxy::start().await;
    let queue = unique("q-truth-silent");
    let (events, handle) = deps_at(&proxy.url(), Config::default()).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_TRUTH_NOTE"]),
    )
    .await;
    let health = handle.health().await;
    assert!(health.connected, "{health:?}");
    assert!(
        health.node.as_deref().unwrap().contains("127.0.0.1"),
        "health says which node: {health:?}"
    );
    proxy.freeze_existing();
    wait_until!(Duration::from_secs(40), !handle.health().await.connected);
    assert!(
        !handle.health().await.connected,
        "a silent connection is noticed"
    );
    // It recovers on a new connection (the proxy lets new ones through).
    wait_until!(
        WAIT,
        consumer_state(&handle, &queue).await.map(|s| s.0) == Some(ConsumerState::Running)
    );
    events
        .publish("", &queue, "T_TRUTH_NOTE", &json!({"n": 1}))
        .await
        .unwrap();
    wait_until!(WAIT, noted(1));
    assert!(noted(1), "consuming again");
    assert!(events.connections_opened() >= 2);
    handle.shutdown_within(Duration::from_secs(5)).await;
    cleanup(&[&queue], &[]).await;
}

/// A publish to a broker that accepts the connection but never answers gives up by its
/// own deadline, not by the (longer) connection attempt's.
#[tokio::test]
async fn a_publish_never_outlives_its_deadline_because_of_a_connection_attempt() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let config = Config::default()
        .with_connect_timeout(Duration::from_secs(30))
        .with_publish_timeout(Duration::from_secs(2));
    let (events, _handle) =
        build_event_dependencies(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), config)
            .await
            .unwrap();
    let published = tokio::time::timeout(
        Duration::from_secs(8),
        events.publish("", "anywhere", "T_TRUTH_NOTE", &json!({"n": 0})),
    )
    .await
    .expect("the publish returns by its deadline, not the connection attempt's");
    assert!(
        matches!(published, Err(Error::Unavailable(..))),
        "{published:?}"
    );
    let called = tokio::time::timeout(
        Duration::from_secs(8),
        events.call_with_timeout::<Value>(
            "anywhere",
            "T_TRUTH_NOTE",
            json!({"n": 0}),
            Duration::from_secs(2),
        ),
    )
    .await
    .expect("a call returns by its deadline too");
    assert!(called.is_err());
    silent.abort();
}

/// A consumer whose task was dropped (or panicked) is `Dead`; one whose set-up is wrong
/// is `Failed` with the error, and its `consume()` returns that error.
#[tokio::test]
async fn health_reports_dead_and_failed_consumers() {
    let (_events, handle) = deps(Config::default()).await;
    let dead = unique("q-truth-dead");
    let task = start(
        &handle,
        ConsumeChannel::new(&dead).actions(["T_TRUTH_NOTE"]),
    )
    .await;
    task.abort();
    let _ = task.await;
    let (state, error) = consumer_state(&handle, &dead).await.unwrap();
    assert_eq!(state, ConsumerState::Dead);
    assert!(error.unwrap().contains("dropped"));
    let failed = unique("q-truth-failed");
    let e = handle
        .consume(ConsumeChannel::new(&failed).actions(["T_TRUTH_NOBODY"]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownAction { .. }), "{e}");
    let (state, error) = consumer_state(&handle, &failed).await.unwrap();
    assert_eq!(state, ConsumerState::Failed);
    assert!(error.unwrap().contains("T_TRUTH_NOBODY"));
    assert!(!handle.health().await.is_ready());
    handle.shutdown().await;
    cleanup(&[&dead], &[]).await;
}

/// A queue deleted under a running consumer: health says the broker cancelled it
/// because the queue was deleted (not a timeout), and the consumer declares the queue
/// again and resumes.
#[tokio::test]
async fn a_deleted_queue_is_reported_as_such_and_the_consumer_resumes() {
    let queue = unique("q-truth-deleted");
    let (events, handle) = deps(Config::default()).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_TRUTH_NOTE"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    wait_until!(
        WAIT,
        consumer_state(&handle, &queue)
            .await
            .and_then(|s| s.1)
            .is_some()
    );
    let (_, error) = consumer_state(&handle, &queue).await.unwrap();
    let error = error.unwrap();
    assert!(
        error.contains("cancelled") && error.contains("deleted"),
        "{error}"
    );
    assert!(!error.contains("not reachable"), "{error}");
    wait_until!(
        WAIT,
        consumer_state(&handle, &queue).await.map(|s| s.0) == Some(ConsumerState::Running)
    );
    events
        .publish("", &queue, "T_TRUTH_NOTE", &json!({"n": 2}))
        .await
        .unwrap();
    wait_until!(WAIT, noted(2));
    assert!(noted(2), "the queue was declared again and is consumed");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static STUCK_RUNS: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_TRUTH_STUCK")]
async fn stuck() -> Result<(), String> {
    STUCK_RUNS.fetch_add(1, Ordering::SeqCst);
    Err("always".into())
}

/// Removes a policy when dropped, even if the test panicked.
struct PolicyGuard(String);

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.0])
            .output();
    }
}

/// A message that cannot be dead-lettered (the dead-letter queue rejects every message)
/// is given back to the broker, never held and never looped hot: health says `Stuck`
/// with the reason, the handler ran once (when it comes back, its dead letter is tried
/// again, not its handler), and the message is not lost.
#[tokio::test]
async fn a_message_that_cannot_be_settled_is_given_back_and_reported_stuck() {
    let queue = unique("q-truth-stuck");
    let policy = unique("p-truth-stuck");
    let _guard = PolicyGuard(policy.clone());
    rabbitmqctl(&[
        "set_policy",
        &policy,
        &format!("^{queue}\\.dlq$"),
        r#"{"max-length":0,"overflow":"reject-publish"}"#,
        "--apply-to",
        "queues",
    ]);
    let retry = RetryConfig::default().with_max_retries(0);
    let config = Config::default()
        .with_retry(retry)
        .with_settle_timeout(Duration::from_millis(300));
    let (events, handle) = deps(config).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_TRUTH_STUCK"]),
    )
    .await;
    events
        .publish("", &queue, "T_TRUTH_STUCK", &json!({}))
        .await
        .unwrap();
    wait_until!(
        WAIT,
        consumer_state(&handle, &queue).await.map(|s| s.0) == Some(ConsumerState::Stuck)
    );
    let health = handle.health().await;
    let c = health.consumers.iter().find(|c| c.queue == queue).unwrap();
    assert_eq!(c.state, ConsumerState::Stuck, "{health:?}");
    assert_eq!(c.held, 1);
    assert!(
        c.last_error.as_deref().unwrap().contains("nacked"),
        "{:?}",
        c.last_error
    );
    assert!(!health.is_ready());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        STUCK_RUNS.load(Ordering::SeqCst),
        1,
        "the handler is not run again"
    );
    let (_c, ch) = raw_channel().await;
    let kept = u64::from(queue_len(&ch, &queue).await) + unacked(&queue);
    assert_eq!(kept, 1, "given back, not lost");
    handle.shutdown_within(Duration::from_secs(5)).await;
    cleanup(&[&queue], &[]).await;
}

/// An exchange deleted and re-created by someone else (which drops the binding): the
/// consumer re-asserts its binding within the check interval and receives again.
#[tokio::test]
async fn a_recreated_exchange_delivers_again_within_the_check_interval() {
    let (queue, exchange) = (unique("q-truth-rebind"), unique("x-truth-rebind"));
    let config = Config::default().with_topology_check_interval(Some(Duration::from_secs(1)));
    let (_events, handle) = deps(config).await;
    start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_TRUTH_NOTE"])
            .bind(Binding::fanout(&exchange)),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut n = 100;
    // Publish until one arrives: nothing can be routed until the binding is back.
    wait_until!(WAIT, {
        n += 1;
        publish_envelope(&ch, &exchange, "", "T_TRUTH_NOTE", json!({"n": n})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        NOTED.lock().unwrap().iter().any(|m| *m > 100)
    });
    assert!(
        NOTED.lock().unwrap().iter().any(|m| *m > 100),
        "the binding was re-asserted"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[&exchange]).await;
}

static SLEEPERS: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_TRUTH_SLEEPS")]
async fn sleeps() {
    SLEEPERS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// `shutdown_within(2s)` with a handler that would run for minutes: every `consume()`
/// returns by about the deadline, and the message is not lost (the broker has it back).
#[tokio::test]
async fn shutdown_within_makes_consume_return_by_its_deadline() {
    let queue = unique("q-truth-shutdown");
    let (events, handle) = deps(Config::default()).await;
    let task = start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_TRUTH_SLEEPS"]),
    )
    .await;
    events
        .publish("", &queue, "T_TRUTH_SLEEPS", &json!({}))
        .await
        .unwrap();
    wait_until!(WAIT, SLEEPERS.load(Ordering::SeqCst) >= 1);
    handle.shutdown_within(Duration::from_secs(2)).await;
    let returned = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("consume() returned by the deadline");
    returned.unwrap().unwrap();
    let (_c, ch) = raw_channel().await;
    wait_until!(WAIT, queue_len(&ch, &queue).await == 1);
    assert_eq!(
        queue_len(&ch, &queue).await,
        1,
        "the message is back in its queue"
    );
    cleanup(&[&queue], &[]).await;
}

/// A Python eventrabbit service declares its exchanges non-durable and its queues
/// durable; with `exchange_durable(false)` a Rust service binds its durable queue to the
/// same exchange without a conflict.
#[tokio::test]
async fn a_python_services_exchange_is_joined_with_separate_durability() {
    let (queue, exchange) = (unique("q-truth-python"), unique("x-truth-python"));
    let (_c, ch) = raw_channel().await;
    // What aio-pika's `declare_exchange(name, FANOUT)` does: not durable.
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let defaults = QueueConfig::default().with_exchange_durable(false);
    let (_events, handle) = deps(Config::default().with_queue(defaults)).await;
    start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_TRUTH_NOTE"])
            .exchange(&exchange, eventrabbit::ExchangeKind::Fanout),
    )
    .await;
    publish_envelope(&ch, &exchange, "", "T_TRUTH_NOTE", json!({"n": 3})).await;
    wait_until!(WAIT, noted(3));
    assert!(noted(3));
    // The queue itself is durable, as Python's is.
    let durable = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", "durable"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&durable.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("{queue}\t")))
        .unwrap();
    assert!(line.ends_with("true"), "{line}");
    handle.shutdown().await;
    cleanup(&[&queue], &[&exchange]).await;
}

#[consumer(action = "T_TRUTH_FAILS_FOR_GOOD")]
async fn fails_for_good(ctx: MessageContext) -> Result<(), String> {
    Err(format!("attempt {}", ctx.retry_count() + 1))
}

/// A request that fails for good is answered with a reply that has `data` (which a
/// Python eventrabbit caller's reply model requires) and the error, which a Rust caller
/// gets as `Error::Remote`; the dead letter's `x-last-error` is the final attempt's.
#[tokio::test]
async fn a_failed_request_is_answered_for_python_and_rust_callers_alike() {
    let queue = unique("q-truth-reply");
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(50))
        .with_max_retries(2);
    let (events, handle) = deps(Config::default().with_retry(retry)).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_TRUTH_FAILS_FOR_GOOD"]),
    )
    .await;
    let e = events
        .call::<Value>(&queue, "T_TRUTH_FAILS_FOR_GOOD", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Remote { .. }), "{e}");
    assert!(e.to_string().contains("attempt 3"), "{e}");
    // As a Python caller sees it: a reply queue of its own.
    let (_c, ch) = raw_channel().await;
    let reply_queue = unique("q-truth-python-replies");
    declare_queue(&ch, &reply_queue, false).await;
    let props = BasicProperties::default()
        .with_reply_to(reply_queue.as_str().into())
        .with_correlation_id("python-1".into());
    let body = br#"{"action":"T_TRUTH_FAILS_FOR_GOOD","data":{}}"#;
    publish_raw(&ch, "", &queue, body, props).await;
    let reply = get_message(&ch, &reply_queue, WAIT).await.expect("a reply");
    let reply: Value = serde_json::from_slice(&reply.delivery.data).unwrap();
    assert!(reply.get("data").is_some(), "`data` is there: {reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attempt 3"),
        "{reply}"
    );
    let dlq = handle.dead_letter_queue(&queue);
    for _ in 0..2 {
        let m = get_message(&ch, &dlq, WAIT).await.expect("dead-lettered");
        assert_eq!(
            header(&m.delivery.properties, "x-last-error").as_deref(),
            Some("attempt 3"),
            "the final attempt's error"
        );
    }
    handle.shutdown().await;
    cleanup(&[&queue, &reply_queue], &[]).await;
}
