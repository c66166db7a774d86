//! Handler policy in the macros, on the real broker and on the test broker: permanent
//! errors are dead-lettered at once, a handler's own retry policy overrides its queue's,
//! action patterns route (an exact action first), overlapping patterns are refused.
//!
//! Every consumer here names its actions: this binary registers overlapping patterns on
//! purpose.

use eventrabbit::middleware::{BoxOutcome, Failure, Layers, Middleware, Next, Reply};
use eventrabbit::testing::TestBroker;
use eventrabbit::{
    Config, ConsumeChannel, Error, HandlerError, MessageContext, PublishOptions, Rejected,
    RetryConfig, consumer,
};
use eventrabbit_tests::*;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A queue policy that would take minutes to give up: what a test sees within seconds
/// came from the handler's own policy or from a rejection.
fn slow_queue_retries() -> Config {
    Config::default().with_retry(
        RetryConfig::default()
            .with_delay(Duration::from_secs(30))
            .with_max_retries(10),
    )
}

static REJECT_RUNS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

#[consumer(action = "T_POL_REJECT")]
async fn reject_odd(n: i64) -> Result<i64, Rejected> {
    REJECT_RUNS.lock().unwrap().push(n);
    if n % 2 == 1 {
        return Err(Rejected::new(format!("n must be even, got {n}")));
    }
    Ok(n)
}

#[derive(Debug)]
enum PayError {
    Declined,
    GatewayDown,
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PayError::Declined => "card declined",
            PayError::GatewayDown => "gateway down",
        })
    }
}

impl HandlerError for PayError {
    fn is_permanent(&self) -> bool {
        matches!(self, PayError::Declined)
    }
}

static PAY_RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[consumer(action = "T_POL_PAY", retry(max = 2, delay = "100ms"))]
async fn pay(card: String) -> Result<(), PayError> {
    PAY_RUNS.lock().unwrap().push(card.clone());
    match card.as_str() {
        "declined" => Err(PayError::Declined),
        _ => Err(PayError::GatewayDown),
    }
}

#[consumer(action = "T_POL_BOXED")]
async fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err(Box::new(Rejected::new("boxed rejection")))
}

/// A permanent error is dead-lettered at once with code `rejected` and the handler's
/// text, whatever the queue's retry budget; an RPC caller hears it at once; a transient
/// error of the same handler is retried by the handler's own policy.
#[tokio::test]
async fn permanent_errors_are_dead_lettered_at_once_and_transient_ones_retried() {
    let queue = unique("q-pol-reject");
    let dlq = format!("{queue}.dlq");
    let (events, handle) = deps(slow_queue_retries()).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_POL_REJECT", "T_POL_PAY", "T_POL_BOXED"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;

    events
        .publish("", &queue, "T_POL_REJECT", &json!({"n": 3}))
        .await
        .unwrap();
    let dead = get_message(&ch, &dlq, WAIT)
        .await
        .expect("rejected at once");
    let props = &dead.delivery.properties;
    assert_eq!(
        header(props, "x-dead-letter-code").as_deref(),
        Some("rejected")
    );
    assert_eq!(header(props, "x-attempts").as_deref(), Some("1"));
    let reason = header(props, "x-dead-letter-reason").unwrap();
    assert!(
        reason.contains("T_POL_REJECT") && reason.contains("n must be even, got 3"),
        "{reason}"
    );
    let runs_of_3 = REJECT_RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|n| **n == 3)
        .count();
    assert_eq!(runs_of_3, 1, "never retried");

    // An RPC caller gets the rejection as its error, without waiting for retries.
    let err = events
        .call::<Value>(&queue, "T_POL_REJECT", json!({"n": 5}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("n must be even, got 5"), "{err}");
    let ok: i64 = events
        .call(&queue, "T_POL_REJECT", json!({"n": 4}))
        .await
        .unwrap();
    assert_eq!(ok, 4);
    let _ = get_message(&ch, &dlq, WAIT).await.expect("the RPC one too");

    // A HandlerError decides per value: declined is permanent, gateway down is retried
    // twice (the handler's retry(max = 2)), then dead-lettered as retries-exhausted.
    events
        .publish("", &queue, "T_POL_PAY", &json!({"card": "declined"}))
        .await
        .unwrap();
    let dead = get_message(&ch, &dlq, WAIT).await.expect("declined");
    assert_eq!(
        header(&dead.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("rejected")
    );
    events
        .publish("", &queue, "T_POL_PAY", &json!({"card": "down"}))
        .await
        .unwrap();
    let dead = get_message(&ch, &dlq, WAIT).await.expect("exhausted");
    assert_eq!(
        header(&dead.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("retries-exhausted")
    );
    assert_eq!(
        header(&dead.delivery.properties, "x-attempts").as_deref(),
        Some("3")
    );
    let runs = PAY_RUNS.lock().unwrap().clone();
    assert_eq!(runs, ["declined", "down", "down", "down"]);

    // A boxed Rejected (`Box<dyn Error + Send + Sync>`, as `?` makes one) is permanent too.
    events
        .publish("", &queue, "T_POL_BOXED", &json!({}))
        .await
        .unwrap();
    let dead = get_message(&ch, &dlq, WAIT).await.expect("boxed rejection");
    assert_eq!(
        header(&dead.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("rejected")
    );
    handle.shutdown().await;
    cleanup(&[&queue, &format!("{queue}.retry.100ms")], &[]).await;
}

static USER_ANY: Mutex<Vec<String>> = Mutex::new(Vec::new());
static USER_CREATED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[consumer(action = "T_POL_USER_*")]
async fn user_any(ctx: MessageContext, n: u64) {
    USER_ANY
        .lock()
        .unwrap()
        .push(format!("{}:{n}", ctx.action()));
}

#[consumer(action = "T_POL_USER_CREATED")]
async fn user_created(n: u64) {
    USER_CREATED.lock().unwrap().push(n);
}

#[consumer(action = "t.pol.order.*")]
async fn order_any(ctx: MessageContext) {
    USER_ANY.lock().unwrap().push(ctx.action());
}

/// `T_POL_USER_*` takes every `T_POL_USER_..` action but the exact `T_POL_USER_CREATED`;
/// the handler reads the action it got; a dead letter names the actual action; an
/// action no pattern matches is dead-lettered as unknown.
#[tokio::test]
async fn action_patterns_route_and_an_exact_action_wins() {
    let queue = unique("q-pol-patterns");
    let dlq = format!("{queue}.dlq");
    let (events, handle) = deps(Config::default()).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions([
            "T_POL_USER_*",
            "T_POL_USER_CREATED",
            "t.pol.order.*",
        ]),
    )
    .await;
    for (action, n) in [
        ("T_POL_USER_CREATED", 1),
        ("T_POL_USER_DELETED", 2),
        ("T_POL_USER_", 3),
        ("t.pol.order.placed", 4),
    ] {
        events
            .publish("", &queue, action, &json!({"n": n}))
            .await
            .unwrap();
    }
    events
        .publish(
            "",
            &queue,
            "T_POL_USER_RENAMED",
            &json!({"n": "not a number"}),
        )
        .await
        .unwrap();
    events
        .publish("", &queue, "T_POL_ORDER", &json!({"n": 6}))
        .await
        .unwrap();
    wait_until!(WAIT, USER_ANY.lock().unwrap().len() >= 3);
    wait_until!(WAIT, !USER_CREATED.lock().unwrap().is_empty());
    assert_eq!(*USER_CREATED.lock().unwrap(), [1]);
    let mut any = USER_ANY.lock().unwrap().clone();
    any.sort();
    assert_eq!(
        any,
        [
            "T_POL_USER_:3",
            "T_POL_USER_DELETED:2",
            "t.pol.order.placed"
        ]
    );
    let (_c, ch) = raw_channel().await;
    let mut codes = Vec::new();
    for _ in 0..2 {
        let dead = get_message(&ch, &dlq, WAIT).await.expect("a dead letter");
        let props = &dead.delivery.properties;
        codes.push((
            header(props, "x-dead-letter-code").unwrap(),
            header(props, "x-dead-letter-reason").unwrap(),
        ));
    }
    codes.sort();
    assert_eq!(codes[0].0, "invalid-data");
    assert!(
        codes[0].1.contains("T_POL_USER_RENAMED") && codes[0].1.contains("field `n`"),
        "the actual action is named: {}",
        codes[0].1
    );
    assert_eq!(codes[1].0, "unknown-action");
    assert!(codes[1].1.contains("T_POL_ORDER"), "{}", codes[1].1);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[consumer(action = "T_POL_OVER_*")]
async fn over_prefix() {}

#[consumer(action = "T_POL_*_Z")]
async fn over_suffix() {}

/// Two patterns one action could match (`T_POL_OVER_Z`) cannot serve one queue: consuming
/// fails at start naming both, on the real broker and on the test broker.
#[tokio::test]
async fn overlapping_patterns_on_one_queue_are_a_start_up_error() {
    let queue = unique("q-pol-overlap");
    let (_events, handle) = deps(Config::default()).await;
    let channel = || ConsumeChannel::new(&queue).actions(["T_POL_OVER_*", "T_POL_*_Z"]);
    let err = tokio::time::timeout(WAIT, handle.consume(channel()))
        .await
        .expect("fails at once")
        .unwrap_err();
    assert!(matches!(err, Error::OverlappingPatterns { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&queue) && text.contains("T_POL_OVER_* (") && text.contains("T_POL_*_Z ("),
        "{text}"
    );
    let broker = TestBroker::new();
    let err = broker.consume(channel()).unwrap_err();
    assert!(matches!(err, Error::OverlappingPatterns { .. }), "{err}");
    // Served apart, they are fine.
    broker
        .consume(ConsumeChannel::new("tb-over-a").actions(["T_POL_OVER_*"]))
        .unwrap();
    broker
        .consume(ConsumeChannel::new("tb-over-b").actions(["T_POL_*_Z"]))
        .unwrap();
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static TB_SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[consumer(action = "TB_POL_*", retry(max = 1, delay = "250ms"))]
async fn tb_any(ctx: MessageContext, n: i64) -> Result<(), Rejected> {
    TB_SEEN.lock().unwrap().push(ctx.action());
    match n {
        0 => Ok(()),
        1 => Err(Rejected::new("one is refused")),
        _ => panic!("n = {n} fails"),
    }
}

/// The test broker applies the same policy: patterns, rejection, the handler's retries.
#[tokio::test]
async fn the_test_broker_applies_handler_policy() {
    let broker = TestBroker::with_config(slow_queue_retries());
    broker
        .consume(ConsumeChannel::new("tb-pol").actions(["TB_POL_*"]))
        .unwrap();
    for (action, n) in [("TB_POL_A", 0), ("TB_POL_B", 1), ("TB_POL_C", 2)] {
        broker
            .publish("", "tb-pol", action, &json!({"n": n}))
            .unwrap();
    }
    broker.run_until_idle().await.unwrap();
    let mut seen = TB_SEEN.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["TB_POL_A", "TB_POL_B", "TB_POL_C", "TB_POL_C"]);
    let mut dead: Vec<_> = broker
        .dead_letters("tb-pol")
        .into_iter()
        .map(|d| (d.code, d.attempts))
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            ("rejected".to_owned(), 1),
            ("retries-exhausted".to_owned(), 2)
        ]
    );
    assert_eq!(
        broker.retry_delays("tb-pol"),
        [Duration::from_millis(250)],
        "the handler's delay, not the queue's 30 s"
    );
}

#[consumer(action = "T_POL_ORDER_PLACED")]
async fn order_placed(order_id: i64) -> Result<(), String> {
    if order_id < 0 {
        return Err(format!("order {order_id} cannot be stored"));
    }
    Ok(())
}

/// With failure events on, a message dead-lettered for good is announced as
/// `<ACTION>_FAILED` on the configured exchange, carrying the original data, the reason
/// code and text, the attempts, the queue and the message id; a message handled fine is
/// not announced; the dead letter is still there.
#[tokio::test]
async fn a_message_that_fails_for_good_is_announced() {
    let (queue, failures, observer) = (
        unique("q-pol-failing"),
        unique("x-pol-failures"),
        unique("q-pol-observer"),
    );
    let (_c, ch) = raw_channel().await;
    bind_queue(&ch, &observer, &failures, lapin::ExchangeKind::Topic, "#").await;
    let (events, handle) = deps(
        Config::default().with_retry(
            RetryConfig::default()
                .with_delay(Duration::from_millis(50))
                .with_max_retries(1),
        ),
    )
    .await;
    start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_POL_ORDER_PLACED", "T_POL_REJECT"])
            .failure_events(eventrabbit::FailureEvents::to(&failures)),
    )
    .await;
    events
        .publish("", &queue, "T_POL_ORDER_PLACED", &json!({"order_id": 1}))
        .await
        .unwrap();
    events
        .publish_with(
            "",
            &queue,
            "T_POL_ORDER_PLACED",
            &json!({"order_id": -7}),
            &PublishOptions::default().message_id("order-minus-7"),
        )
        .await
        .unwrap();
    let event = get_message(&ch, &observer, WAIT).await.expect("announced");
    assert_eq!(
        event.delivery.routing_key.as_str(),
        "T_POL_ORDER_PLACED_FAILED"
    );
    let body: Value = serde_json::from_slice(&event.delivery.data).unwrap();
    assert_eq!(body["action"], "T_POL_ORDER_PLACED_FAILED");
    let data = &body["data"];
    assert_eq!(data["action"], "T_POL_ORDER_PLACED");
    assert_eq!(data["data"], json!({"order_id": -7}));
    assert_eq!(data["code"], "retries-exhausted");
    assert_eq!(data["attempts"], 2);
    assert_eq!(data["queue"], queue.as_str());
    assert_eq!(data["message_id"], "order-minus-7");
    assert!(
        data["reason"]
            .as_str()
            .unwrap()
            .contains("order -7 cannot be stored"),
        "{data}"
    );
    let dead = get_message(&ch, &format!("{queue}.dlq"), WAIT).await;
    assert!(dead.is_some(), "the dead letter is kept as well");
    // A rejection is announced too, with its code; nothing else was.
    events
        .publish("", &queue, "T_POL_REJECT", &json!({"n": 9}))
        .await
        .unwrap();
    let event = get_message(&ch, &observer, WAIT).await.expect("announced");
    let body: Value = serde_json::from_slice(&event.delivery.data).unwrap();
    assert_eq!(body["data"]["code"], "rejected");
    assert_eq!(body["data"]["attempts"], 1);
    assert!(
        get_message(&ch, &observer, Duration::from_millis(500))
            .await
            .is_none(),
        "the order handled fine is not announced"
    );
    handle.shutdown().await;
    cleanup(
        &[&queue, &observer, &format!("{queue}.retry.50ms")],
        &[&failures],
    )
    .await;
}

/// The test broker announces failures the same way.
#[tokio::test]
async fn the_test_broker_announces_failures() {
    let broker = TestBroker::with_config(
        Config::default().with_retry(RetryConfig::default().with_max_retries(0)),
    );
    broker.declare_exchange("tb-failures", eventrabbit::ExchangeKind::Fanout);
    broker
        .consume(
            ConsumeChannel::new("tb-pol-failing")
                .actions(["T_POL_ORDER_PLACED"])
                .failure_events(eventrabbit::FailureEvents::to("tb-failures").suffix(".failed")),
        )
        .unwrap();
    broker
        .publish(
            "",
            "tb-pol-failing",
            "T_POL_ORDER_PLACED",
            &json!({"order_id": -1}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let published = broker.published_to("tb-failures");
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].action.as_deref(),
        Some("T_POL_ORDER_PLACED.failed")
    );
    assert_eq!(published[0].data["data"], json!({"order_id": -1}));
    assert_eq!(published[0].data["code"], "retries-exhausted");
}

/// What the layers saw, in order: `(layer, action)`.
static LAYERED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static LAYERED_HANDLED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Records that it ran, then runs the rest.
struct Trace(&'static str);

impl Middleware for Trace {
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
        Box::pin(async move {
            LAYERED
                .lock()
                .unwrap()
                .push((self.0.to_owned(), ctx.action()));
            next.run().await
        })
    }
}

/// Rejects messages without a `tenant` header; skips the handler for `skip`; panics for
/// `boom`.
struct Gate;

impl Middleware for Gate {
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
        Box::pin(async move {
            match ctx.header_str("tenant").as_deref() {
                None => Err(Failure::Rejected("no tenant".into())),
                Some("skip") => Ok(Reply::none()),
                Some("boom") => panic!("the gate broke"),
                Some(_) => next.run().await,
            }
        })
    }
}

#[consumer(action = "T_POL_LAYERED")]
async fn layered(n: u64) {
    LAYERED_HANDLED.lock().unwrap().push(n);
}

/// Layers given to the handle wrap those given to one queue, which wrap the handler; a
/// layer can reject (dead-lettered at once as `rejected`), settle without the handler,
/// or fail (a panicking layer is retried like a panicking handler).
#[tokio::test]
async fn middleware_wraps_the_handlers_of_a_queue() {
    let queue = unique("q-pol-layers");
    let dlq = format!("{queue}.dlq");
    let (events, handle) = deps(
        Config::default().with_retry(
            RetryConfig::default()
                .with_delay(Duration::from_millis(50))
                .with_max_retries(1),
        ),
    )
    .await;
    handle.layer(Trace("outer"));
    let task = {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(&queue).actions(["T_POL_LAYERED"]);
        tokio::spawn(async move {
            handle
                .consume_with(channel, Layers::new().with(Trace("inner")).with(Gate))
                .await
        })
    };
    wait_for_consumer(&queue).await;
    let with = |tenant: &str| PublishOptions::new().header("tenant", tenant);
    for (n, tenant) in [
        (1, Some("acme")),
        (2, None),
        (3, Some("skip")),
        (4, Some("boom")),
    ] {
        let options = tenant.map(with).unwrap_or_default();
        events
            .publish_with("", &queue, "T_POL_LAYERED", &json!({"n": n}), &options)
            .await
            .unwrap();
    }
    let (_c, ch) = raw_channel().await;
    let mut dead = Vec::new();
    for _ in 0..2 {
        let d = get_message(&ch, &dlq, WAIT).await.expect("dead letters");
        dead.push((
            header(&d.delivery.properties, "x-dead-letter-code").unwrap(),
            header(&d.delivery.properties, "x-dead-letter-reason").unwrap(),
        ));
    }
    dead.sort();
    assert_eq!(dead[0].0, "rejected");
    assert!(dead[0].1.contains("no tenant"), "{}", dead[0].1);
    assert_eq!(dead[1].0, "retries-exhausted");
    assert!(dead[1].1.contains("the gate broke"), "{}", dead[1].1);
    assert_eq!(
        *LAYERED_HANDLED.lock().unwrap(),
        [1],
        "only the one let through"
    );
    let seen = LAYERED.lock().unwrap().clone();
    let first: Vec<_> = seen.iter().take(2).map(|(l, _)| l.as_str()).collect();
    assert_eq!(first, ["outer", "inner"], "the handle's layer is outermost");
    // 4 messages, the panicking one run twice: 5 passes through each layer.
    assert_eq!(seen.iter().filter(|(l, _)| l == "inner").count(), 5);
    assert!(seen.iter().all(|(_, a)| a == "T_POL_LAYERED"));
    handle.shutdown().await;
    let _ = task.await;
    cleanup(&[&queue, &format!("{queue}.retry.50ms")], &[]).await;
}

/// The test broker runs the same layers.
#[tokio::test]
async fn the_test_broker_runs_middleware() {
    let broker = TestBroker::new();
    broker
        .consume_with(
            ConsumeChannel::new("tb-pol-layers").actions(["T_POL_ORDER_PLACED"]),
            Layers::new().with(Gate),
        )
        .unwrap();
    broker
        .publish(
            "",
            "tb-pol-layers",
            "T_POL_ORDER_PLACED",
            &json!({"order_id": 1}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let dead = broker.dead_letters("tb-pol-layers");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, "rejected");
}

#[derive(serde::Deserialize)]
struct Metric {
    n: u64,
    #[serde(default)]
    fail: bool,
}

/// Each call of the batch handler: the `n` of its messages.
static BATCHES: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

#[consumer(action = "T_POL_METRIC", batch(max = 10, window = "300ms"))]
async fn metrics(items: Vec<Metric>) -> Result<(), String> {
    BATCHES
        .lock()
        .unwrap()
        .push(items.iter().map(|m| m.n).collect());
    if items.iter().any(|m| m.fail) {
        return Err("a metric failed".into());
    }
    Ok(())
}

fn batches_with(range: std::ops::Range<u64>) -> Vec<Vec<u64>> {
    BATCHES
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.iter().any(|n| range.contains(n)))
        .cloned()
        .collect()
}

/// 25 waiting messages reach a `batch(max = 10)` handler in calls of at most 10, each
/// message once, acknowledged together; a batch that fails is retried message by message,
/// so the good ones pass and only the bad one is dead-lettered.
#[tokio::test]
async fn a_batch_handler_takes_up_to_max_messages_and_failures_are_settled_one_by_one() {
    let (queue, failing) = (unique("q-pol-batch"), unique("q-pol-batch-fail"));
    let (events, handle) = deps(
        Config::default().with_retry(
            RetryConfig::default()
                .with_delay(Duration::from_millis(50))
                .with_max_retries(1),
        ),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, true).await;
    declare_queue(&ch, &failing, true).await;
    for n in 0..25u64 {
        events
            .publish("", &queue, "T_POL_METRIC", &json!({"n": n}))
            .await
            .unwrap();
    }
    for (n, fail) in [(100, false), (101, true), (102, false)] {
        events
            .publish("", &failing, "T_POL_METRIC", &json!({"n": n, "fail": fail}))
            .await
            .unwrap();
    }
    for q in [&queue, &failing] {
        start(
            &handle,
            ConsumeChannel::new(q.as_str())
                .actions(["T_POL_METRIC"])
                .prefetch(50),
        )
        .await;
    }
    wait_until!(
        WAIT,
        batches_with(0..25).iter().map(Vec::len).sum::<usize>() >= 25
    );
    let batches = batches_with(0..25);
    let mut all: Vec<u64> = batches.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (0..25).collect::<Vec<_>>(), "each message once");
    assert!(batches.iter().all(|b| b.len() <= 10), "{batches:?}");
    assert!(batches.iter().any(|b| b.len() == 10), "{batches:?}");
    wait_until!(
        WAIT,
        queue_len(&ch, &queue).await == 0 && unacked(&queue) == 0
    );
    assert_eq!(unacked(&queue), 0, "all acknowledged");

    let dead = get_message(&ch, &format!("{failing}.dlq"), WAIT)
        .await
        .expect("the bad one dead-lettered");
    let body: serde_json::Value = serde_json::from_slice(&dead.delivery.data).unwrap();
    assert_eq!(body["data"]["n"], 101);
    assert_eq!(
        header(&dead.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("retries-exhausted")
    );
    wait_until!(WAIT, batches_with(100..103).len() >= 4);
    let mut calls = batches_with(100..103);
    calls.sort();
    assert_eq!(
        calls,
        [vec![100], vec![100, 101, 102], vec![101], vec![102]],
        "one batch, then each alone"
    );
    assert!(
        get_message(&ch, &format!("{failing}.dlq"), Duration::from_millis(300))
            .await
            .is_none(),
        "the good ones were not dead-lettered"
    );
    handle.shutdown().await;
    cleanup(&[&queue, &failing, &format!("{failing}.retry.50ms")], &[]).await;
}

/// The test broker hands a batch handler what is waiting, up to the prefetch window.
#[tokio::test]
async fn the_test_broker_runs_batch_handlers() {
    let broker = TestBroker::with_config(
        Config::default().with_retry(RetryConfig::default().with_max_retries(1)),
    );
    broker
        .consume(
            ConsumeChannel::new("tb-pol-batch")
                .actions(["T_POL_METRIC"])
                .prefetch(20),
        )
        .unwrap();
    for n in 200..215u64 {
        broker
            .publish(
                "",
                "tb-pol-batch",
                "T_POL_METRIC",
                &json!({"n": n, "fail": n == 207}),
            )
            .unwrap();
    }
    broker.run_until_idle().await.unwrap();
    let batches = batches_with(200..215);
    assert!(batches.iter().all(|b| b.len() <= 10), "{batches:?}");
    let dead = broker.dead_letters("tb-pol-batch");
    assert_eq!(dead.len(), 1, "only the bad one");
    let body: serde_json::Value = serde_json::from_slice(&dead[0].body).unwrap();
    assert_eq!(body["data"]["n"], 207);
}
