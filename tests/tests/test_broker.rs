//! The in-memory test broker: the same scenarios as the real-broker tests (shared case
//! tables for routing and poison input), run without RabbitMQ.

use eventrabbit::testing::TestBroker;
use eventrabbit::{
    Config, ConsumeChannel, Error, ExchangeKind, MessageContext, Redrive, RetryConfig,
    UnknownAction, consumer, function, producer,
};
use eventrabbit_tests::{poison_cases, routing_cases};
use serde::Serialize;
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static CASES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

#[consumer(action = "TB_ROUTING_CASE")]
async fn routing_case(case: usize) {
    CASES.lock().unwrap().push(case);
}

#[tokio::test]
async fn routing_cases_hold_on_the_test_broker() {
    let broker = TestBroker::new();
    let cases = routing_cases();
    for (i, case) in cases.iter().enumerate() {
        let (queue, exchange) = (format!("tb-case-{i}"), format!("tb-x-{i}"));
        broker
            .consume(case.channel(&queue, &exchange).actions(["TB_ROUTING_CASE"]))
            .unwrap();
        let body =
            serde_json::to_vec(&json!({"action": "TB_ROUTING_CASE", "data": {"case": i}})).unwrap();
        let props = lapin::BasicProperties::default().with_headers(case.header_table());
        broker
            .publish_with(&exchange, case.key, &body, props)
            .unwrap();
    }
    broker.run_until_idle().await.unwrap();
    let mut got = CASES.lock().unwrap().clone();
    got.sort();
    let expected: Vec<usize> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.routed)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(got, expected);
}

static GOOD: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "TB_GOOD")]
async fn good(user_id: i64, name: String) {
    assert!(user_id >= 0 && !name.is_empty());
    GOOD.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn poison_input_is_dead_lettered_with_the_same_reasons() {
    let broker = TestBroker::new();
    broker
        .consume(ConsumeChannel::new("tb-poison").max_message_size(4096))
        .unwrap();
    let cases = poison_cases("TB_GOOD");
    for (body, _) in &cases {
        broker.publish_raw("", "tb-poison", body).unwrap();
    }
    broker
        .publish(
            "",
            "tb-poison",
            "TB_GOOD",
            &json!({"user_id": 1, "name": "ok"}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let dead = broker.dead_letters("tb-poison");
    let codes: Vec<&str> = dead.iter().map(|d| d.code.as_str()).collect();
    let expected: Vec<&str> = cases.iter().map(|(_, c)| *c).collect();
    assert_eq!(codes, expected);
    for ((body, _), letter) in cases.iter().zip(&dead) {
        assert_eq!(&letter.body, body);
    }
    let reason_of = |body_has: &[u8]| {
        cases
            .iter()
            .zip(&dead)
            .find(|((body, _), _)| body.windows(body_has.len()).any(|w| w == body_has))
            .map(|(_, d)| d.reason.clone())
            .expect("a case with that body")
    };
    let seven = reason_of(b"\"seven\"");
    assert!(seven.contains("field `user_id`"), "{seven}");
    let no_name = reason_of(br#"{"user_id":1}}"#);
    assert!(no_name.contains("missing field `name`"), "{no_name}");
    let duplicate = dead.last().expect("dead letters");
    assert!(
        duplicate.reason.contains("duplicate field `action`"),
        "{}",
        duplicate.reason
    );
    assert_eq!(
        GOOD.load(Ordering::SeqCst),
        1,
        "the good message was handled"
    );
    assert!(
        broker.retry_delays("tb-poison").is_empty(),
        "poison is never retried"
    );
}

static FLAKY: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "TB_FLAKY")]
async fn flaky(ctx: MessageContext) -> Result<(), String> {
    FLAKY.fetch_add(1, Ordering::SeqCst);
    if ctx.retry_count() < 2 {
        Err("not yet".into())
    } else {
        Ok(())
    }
}

#[consumer(action = "TB_ALWAYS_FAILS")]
async fn always_fails() -> Result<(), String> {
    Err("down".into())
}

#[tokio::test]
async fn retries_follow_the_policy_then_dead_letter() {
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(300))
        .with_multiplier(2.0)
        .with_max_retries(3);
    let broker = TestBroker::with_config(Config::default().with_retry(retry));
    broker.consume(ConsumeChannel::new("tb-retry")).unwrap();
    broker
        .publish("", "tb-retry", "TB_FLAKY", &json!({}))
        .unwrap();
    broker.run_until_idle().await.unwrap();
    assert_eq!(FLAKY.load(Ordering::SeqCst), 3);
    assert_eq!(
        broker.retry_delays("tb-retry"),
        vec![Duration::from_millis(300), Duration::from_millis(600)]
    );
    assert!(broker.dead_letters("tb-retry").is_empty());

    broker
        .publish("", "tb-retry", "TB_ALWAYS_FAILS", &json!({}))
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let dead = broker.dead_letters("tb-retry");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, "retries-exhausted");
    assert_eq!(dead[0].attempts, 4);
}

#[tokio::test]
async fn unbounded_retries_of_a_handler_that_always_fails_are_reported_not_hung() {
    let retry = RetryConfig::default().with_delay(Duration::from_millis(1));
    let broker = TestBroker::with_config(Config::default().with_retry(retry));
    broker.consume(ConsumeChannel::new("tb-forever")).unwrap();
    broker
        .publish("", "tb-forever", "TB_ALWAYS_FAILS", &json!({}))
        .unwrap();
    let err = broker.run_until_idle().await.unwrap_err();
    assert!(err.to_string().contains("still busy"), "{err}");
}

#[derive(Serialize)]
struct Sum {
    total: i64,
}

#[consumer(action = "TB_ADD")]
async fn add(a: i64, b: i64) -> Result<Sum, String> {
    if a < 0 {
        Err("negative".into())
    } else {
        Ok(Sum { total: a + b })
    }
}

#[tokio::test]
async fn rpc_replies_and_error_replies() {
    let broker = TestBroker::with_config(
        Config::default().with_retry(RetryConfig::default().with_max_retries(0)),
    );
    broker.consume(ConsumeChannel::new("tb-rpc")).unwrap();
    let r: serde_json::Value = broker
        .call("tb-rpc", "TB_ADD", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(r, json!({"total": 5}));
    let err = broker
        .call::<serde_json::Value>("tb-rpc", "TB_ADD", json!({"a": -1, "b": 3}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message.contains("negative")),
        "{err}"
    );
    let err = broker
        .call::<serde_json::Value>("tb-missing", "TB_ADD", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unroutable { .. }), "{err}");
}

#[derive(Serialize)]
struct Shipped {
    order_id: u64,
}

#[producer(exchange = "tb-shipping", action = "TB_SHIPPED")]
async fn ship(order_id: u64) -> Shipped {
    Shipped { order_id }
}

#[function(
    action = "TB_PLACE_ORDER",
    exchange = "tb-orders",
    action_reply = "TB_ORDER_PLACED"
)]
async fn place_order(order_id: u64) -> eventrabbit::Result<serde_json::Value> {
    ship(order_id).await?; // a producer inside a handler publishes into the same broker
    Ok(json!({ "order_id": order_id }))
}

static SHIPPED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[consumer(action = "TB_SHIPPED")]
async fn on_shipped(order_id: u64) {
    SHIPPED.lock().unwrap().push(order_id);
}

#[tokio::test]
async fn functions_and_producers_publish_into_the_broker() {
    let broker = TestBroker::new();
    broker.consume(ConsumeChannel::new("tb-orders-in")).unwrap();
    broker
        .consume(
            ConsumeChannel::new("tb-orders-log")
                .exchange("tb-orders", ExchangeKind::Fanout)
                .actions(["TB_SHIPPED"])
                .unknown_action(UnknownAction::Drop),
        )
        .unwrap();
    broker
        .consume(
            ConsumeChannel::new("tb-shipping-q")
                .exchange("tb-shipping", ExchangeKind::Fanout)
                .actions(["TB_SHIPPED"]),
        )
        .unwrap();
    broker
        .publish(
            "",
            "tb-orders-in",
            "TB_PLACE_ORDER",
            &json!({"order_id": 9}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let placed = broker.published_to("tb-orders");
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].action.as_deref(), Some("TB_ORDER_PLACED"));
    assert_eq!(placed[0].data, json!({"order_id": 9}));
    assert_eq!(*SHIPPED.lock().unwrap(), vec![9]);
    // Called from the test itself, scoped to this broker.
    broker.scope(ship(10)).await.unwrap();
    broker.run_until_idle().await.unwrap();
    assert_eq!(*SHIPPED.lock().unwrap(), vec![9, 10]);
    assert!(
        broker.dead_letters("tb-orders-log").is_empty(),
        "unknown action dropped, not dead-lettered"
    );
}

static REDRIVE_OK: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "TB_REDRIVE")]
async fn redrive(ctx: MessageContext) -> Result<(), String> {
    if REDRIVE_OK.load(Ordering::SeqCst) == 0 {
        return Err("down".into());
    }
    assert_eq!(ctx.retry_count(), 0);
    REDRIVE_OK.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn dead_letters_can_be_redriven() {
    let broker = TestBroker::with_config(
        Config::default().with_retry(RetryConfig::default().with_max_retries(1)),
    );
    broker.consume(ConsumeChannel::new("tb-redrive")).unwrap();
    broker
        .publish("", "tb-redrive", "TB_REDRIVE", &json!({}))
        .unwrap();
    broker.run_until_idle().await.unwrap();
    broker
        .publish_raw(
            "",
            "tb-redrive",
            br#"{"action":"TB_NOBODY_HERE","data":{}}"#,
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    assert_eq!(broker.dead_letters("tb-redrive").len(), 2);
    let report = broker.redrive("tb-redrive", Redrive::new().dry_run(true));
    assert_eq!((report.found, report.examined, report.moved), (2, 2, 0));
    let exhausted = report
        .groups
        .iter()
        .find(|g| g.code == "retries-exhausted")
        .unwrap();
    assert_eq!((exhausted.count, exhausted.would_pass), (1, 1));
    let unknown = report
        .groups
        .iter()
        .find(|g| g.code == "unknown-action")
        .unwrap();
    assert_eq!(unknown.action.as_deref(), Some("TB_NOBODY_HERE"));
    assert_eq!(unknown.would_pass, 0);
    assert_eq!(
        broker.dead_letters("tb-redrive").len(),
        2,
        "a dry run moves nothing"
    );
    REDRIVE_OK.store(1, Ordering::SeqCst);
    assert_eq!(broker.redrive_dead_letters("tb-redrive"), 2);
    broker.run_until_idle().await.unwrap();
    assert_eq!(REDRIVE_OK.load(Ordering::SeqCst), 2);
    let back: Vec<String> = broker
        .dead_letters("tb-redrive")
        .into_iter()
        .map(|d| d.code)
        .collect();
    assert_eq!(
        back,
        ["unknown-action"],
        "only the one no handler takes is back"
    );
}

#[tokio::test]
async fn a_handler_set_naming_an_unknown_action_fails_as_on_rabbitmq() {
    let broker = TestBroker::new();
    let err = broker
        .consume(ConsumeChannel::new("tb-set").actions(["TB_NOBODY"]))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownAction { .. }), "{err}");
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_fails_and_is_not_recorded() {
    let broker = TestBroker::new();
    let err = broker
        .publish("tb-nowhere", "", "TB_GOOD", &json!({}))
        .unwrap_err();
    assert!(
        matches!(err, Error::NoSuchExchange(ref x) if x == "tb-nowhere"),
        "{err}"
    );
    assert!(broker.published_to("tb-nowhere").is_empty());
}

#[consumer(action = "TB_QUORUM")]
async fn quorum_handled() {}

#[tokio::test]
async fn queue_options_are_accepted_and_recorded() {
    use eventrabbit::QueueType;
    let broker = TestBroker::new();
    broker
        .consume(
            ConsumeChannel::new("tb-quorum")
                .queue_type(QueueType::Quorum)
                .max_length(5)
                .single_active_consumer()
                .actions(["TB_QUORUM"]),
        )
        .unwrap();
    let args = broker.queue_arguments("tb-quorum").unwrap();
    let get = |k: &str| args.inner().get(k).cloned();
    assert_eq!(
        get("x-queue-type"),
        Some(lapin::types::AMQPValue::LongString("quorum".into()))
    );
    assert_eq!(
        get("x-max-length"),
        Some(lapin::types::AMQPValue::LongLongInt(5))
    );
    assert_eq!(
        get("x-single-active-consumer"),
        Some(lapin::types::AMQPValue::Boolean(true))
    );
    // Messages still flow: the arguments are recorded, not simulated.
    broker
        .publish("", "tb-quorum", "TB_QUORUM", &json!({}))
        .unwrap();
    assert_eq!(broker.run_until_idle().await.unwrap(), 1);
    // What RabbitMQ refuses, the test broker refuses alike.
    let e = broker
        .consume(
            ConsumeChannel::new("tb-quorum-excl")
                .quorum()
                .exclusive(true),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidQueue { .. }), "{e}");
}

/// A projection: users and how many e-mails each was sent, rebuilt from a log.
static PROJECTION: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());

#[consumer(action = "TB_LOG_EVENT")]
async fn log_event(user: String, ctx: MessageContext) -> Result<(), String> {
    let offset = ctx.stream_offset().expect("a log event has an offset");
    let attempt = ctx.retry_count();
    PROJECTION
        .lock()
        .unwrap()
        .push((user.clone(), offset, u64::from(attempt)));
    match user.as_str() {
        "flaky" if attempt < 1 => Err("first attempt fails".into()),
        "broken" => Err("never works".into()),
        _ => Ok(()),
    }
}

fn projected(from: usize) -> Vec<(String, u64, u64)> {
    PROJECTION.lock().unwrap()[from..].to_vec()
}

/// The test broker keeps a log and replays it with RabbitMQ's offset rules: first, last,
/// next, an offset, a time; a named consumer goes on after its stored position; failing
/// handlers are retried in place, then dead-lettered to `<log>.<name>.dlq`.
#[tokio::test]
async fn the_test_broker_keeps_and_replays_a_log() {
    use eventrabbit::{Binding, EventLog, StartAt, StreamConsumer};
    let broker = TestBroker::new();
    broker
        .declare_log(&EventLog::new("tb-log").bind(Binding::fanout("tb-log-x")))
        .unwrap();
    let publish = |user: &str| {
        broker
            .publish("tb-log-x", "", "TB_LOG_EVENT", &json!({"user": user}))
            .unwrap();
    };
    for user in ["ann", "bob", "cy"] {
        publish(user);
    }
    assert_eq!(broker.log_len("tb-log"), 3);
    let users =
        |v: Vec<(String, u64, u64)>| v.into_iter().map(|(u, o, _)| (u, o)).collect::<Vec<_>>();
    let pair = |u: &str, o: u64| (u.to_owned(), o);

    // A named consumer reads from the first, then goes on after its stored position.
    let named = || {
        StreamConsumer::new("tb-log")
            .name("counts")
            .actions(["TB_LOG_EVENT"])
    };
    let start = PROJECTION.lock().unwrap().len();
    assert_eq!(broker.replay(named()).await.unwrap(), 3);
    assert_eq!(
        users(projected(start)),
        [pair("ann", 0), pair("bob", 1), pair("cy", 2)]
    );
    publish("dee");
    let start = PROJECTION.lock().unwrap().len();
    assert_eq!(
        broker.replay(named()).await.unwrap(),
        1,
        "only what came since"
    );
    assert_eq!(users(projected(start)), [pair("dee", 3)]);

    // Unnamed consumers start where they are told, every time.
    let from = |at: StartAt| {
        StreamConsumer::new("tb-log")
            .start_at(at)
            .actions(["TB_LOG_EVENT"])
    };
    assert_eq!(broker.replay(from(StartAt::Offset(2))).await.unwrap(), 2);
    assert_eq!(broker.replay(from(StartAt::Last)).await.unwrap(), 1);
    assert_eq!(broker.replay(from(StartAt::Next)).await.unwrap(), 0);
    assert_eq!(broker.replay(from(StartAt::First)).await.unwrap(), 4);
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        broker
            .replay(from(StartAt::Timestamp(later)))
            .await
            .unwrap(),
        0
    );
    let earlier = std::time::SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(
        broker
            .replay(from(StartAt::Timestamp(earlier)))
            .await
            .unwrap(),
        4
    );

    // Failures: retried in place (in order), then a copy dead-lettered and the log goes on.
    publish("flaky");
    publish("broken");
    publish("eve");
    let start = PROJECTION.lock().unwrap().len();
    let retrying = named().retry(RetryConfig::default().with_max_retries(2));
    assert_eq!(broker.replay(retrying.clone()).await.unwrap(), 3);
    let attempts: Vec<(String, u64)> = projected(start)
        .into_iter()
        .map(|(u, _, a)| (u, a))
        .collect();
    assert_eq!(
        attempts,
        [
            pair("flaky", 0),
            pair("flaky", 1),
            pair("broken", 0),
            pair("broken", 1),
            pair("broken", 2),
            pair("eve", 0)
        ]
    );
    let dead = broker.stream_dead_letters(&retrying);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, "retries-exhausted");
    assert_eq!(broker.retry_delays("tb-log#counts").len(), 3);

    // A log nobody declared is an error naming it.
    let err = broker
        .replay(StreamConsumer::new("tb-no-log"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tb-no-log"), "{err}");
}

static NAIVE_TOTAL: AtomicU32 = AtomicU32::new(0);
static SAFE_TOTAL: AtomicU32 = AtomicU32::new(0);
static SAFE_SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds every delivery's amount: wrong as soon as a message comes twice.
#[consumer(action = "TB_CHAOS_NAIVE")]
async fn naive_credit(amount: u32) {
    NAIVE_TOTAL.fetch_add(amount, Ordering::SeqCst);
}

/// Adds each message once, recognised by its message id.
#[consumer(action = "TB_CHAOS_SAFE")]
async fn safe_credit(ctx: MessageContext, amount: u32) {
    let id = ctx.message_id().unwrap_or_default().to_owned();
    let mut seen = SAFE_SEEN.lock().unwrap();
    if !seen.contains(&id) {
        seen.push(id);
        SAFE_TOTAL.fetch_add(amount, Ordering::SeqCst);
    }
}

/// Under chaos (duplicates, lost acks, reordering), an idempotent handler still adds up
/// and a naive one does not: the test broker shows which handlers are safe.
#[tokio::test]
async fn chaos_shows_which_handlers_are_idempotent() {
    let broker = TestBroker::new().with_chaos(eventrabbit::testing::Chaos::all(42));
    broker
        .consume(
            ConsumeChannel::new("tb-chaos-credits").actions(["TB_CHAOS_NAIVE", "TB_CHAOS_SAFE"]),
        )
        .unwrap();
    for amount in 1..=50u32 {
        for action in ["TB_CHAOS_NAIVE", "TB_CHAOS_SAFE"] {
            broker
                .publish("", "tb-chaos-credits", action, &json!({"amount": amount}))
                .unwrap();
        }
    }
    broker.run_until_idle().await.unwrap();
    let report = broker.chaos_report().unwrap();
    assert!(
        report.duplicated > 0 && report.redelivered > 0 && report.reordered > 0,
        "{report:?}"
    );
    assert_eq!(
        SAFE_TOTAL.load(Ordering::SeqCst),
        1275,
        "the idempotent handler adds up"
    );
    assert!(
        NAIVE_TOTAL.load(Ordering::SeqCst) > 1275,
        "the naive one counts repeats: {} (seed 42, {report:?})",
        NAIVE_TOTAL.load(Ordering::SeqCst)
    );
}

static ORDER: Mutex<Vec<(u32, u32, bool)>> = Mutex::new(Vec::new());

#[consumer(action = "TB_CHAOS_ORDER")]
async fn chaos_order(ctx: MessageContext, run: u32, n: u32) {
    ORDER.lock().unwrap().push((run, n, ctx.redelivered()));
}

async fn chaos_run(run: u32, seed: u64) -> Vec<(u32, bool)> {
    let broker = TestBroker::new().with_chaos(eventrabbit::testing::Chaos::all(seed));
    let queue = format!("tb-chaos-order-{run}");
    broker
        .consume(ConsumeChannel::new(&queue).actions(["TB_CHAOS_ORDER"]))
        .unwrap();
    for n in 0..30u32 {
        broker
            .publish("", &queue, "TB_CHAOS_ORDER", &json!({"run": run, "n": n}))
            .unwrap();
    }
    broker.run_until_idle().await.unwrap();
    ORDER
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _, _)| *r == run)
        .map(|(_, n, again)| (*n, *again))
        .collect()
}

/// A seed replays the same disorder: the same deliveries in the same order, redeliveries
/// at the same places; another seed, another disorder.
#[tokio::test]
async fn a_chaos_seed_replays_exactly() {
    let first = chaos_run(1, 7).await;
    let again = chaos_run(2, 7).await;
    let other = chaos_run(3, 8).await;
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert!(first.len() > 30, "some deliveries repeated: {first:?}");
    let in_order: Vec<(u32, bool)> = (0..30).map(|n| (n, false)).collect();
    assert_ne!(first, in_order, "reordered");
}
