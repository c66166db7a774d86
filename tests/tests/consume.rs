//! Consuming by action on the real broker: parameters by name, typed `data`, context,
//! producers, functions, exchange kinds, handler sets and concurrency.

use eventrabbit::{
    Binding, Config, ConsumeChannel, ExchangeKind, MessageContext, consumer, function, producer,
};
use eventrabbit_tests::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

static BY_NAME: Recorder = Recorder::new();

#[consumer(action = "T_CONSUME_BY_NAME")]
async fn by_name(user_id: i64, name: String, nickname: Option<String>) {
    BY_NAME.record(json!({"user_id": user_id, "name": name, "nickname": nickname}));
}

#[tokio::test]
async fn handler_parameters_are_filled_from_data_by_name() {
    let queue = unique("q-by-name");
    let (_events, handle) = deps(Config::default()).await;
    let task = start(&handle, ConsumeChannel::new(&queue)).await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(
        &ch,
        "",
        &queue,
        "T_CONSUME_BY_NAME",
        json!({"user_id": 7, "name": "ann", "extra": [1, 2]}),
    )
    .await;
    let got = BY_NAME.wait_for(1, WAIT).await;
    assert_eq!(
        got[0],
        json!({"user_id": 7, "name": "ann", "nickname": null})
    );
    handle.shutdown().await;
    assert!(task.await.unwrap().is_ok());
    assert_eq!(queue_len(&ch, &queue).await, 0, "message was acknowledged");
    cleanup(&[&queue], &[]).await;
}

#[derive(Debug, Deserialize, Serialize)]
struct Order {
    order_id: u64,
    items: Vec<String>,
}

static TYPED: Recorder = Recorder::new();

#[consumer(action = "T_CONSUME_TYPED")]
async fn typed(#[data] order: Order, ctx: MessageContext) {
    TYPED.record(json!({
        "order_id": order.order_id,
        "items": order.items,
        "message_id": ctx.message_id(),
        "retry_count": ctx.retry_count(),
        "redelivered": ctx.redelivered(),
        "queue": ctx.queue(),
        "tenant": ctx.header_str("tenant"),
    }));
}

#[tokio::test]
async fn whole_data_as_struct_and_delivery_context() {
    let queue = unique("q-typed");
    let (_events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let (_c, ch) = raw_channel().await;
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "tenant".into(),
        lapin::types::AMQPValue::LongString("acme".into()),
    );
    let props = lapin::BasicProperties::default()
        .with_message_id("m-1".into())
        .with_headers(headers);
    let body = serde_json::to_vec(
        &json!({"action": "T_CONSUME_TYPED", "data": {"order_id": 3, "items": ["a", "b"]}}),
    )
    .unwrap();
    publish_raw(&ch, "", &queue, &body, props).await;
    let got = TYPED.wait_for(1, WAIT).await;
    assert_eq!(got[0]["order_id"], 3);
    assert_eq!(got[0]["items"], json!(["a", "b"]));
    assert_eq!(got[0]["message_id"], "m-1");
    assert_eq!(got[0]["retry_count"], 0);
    assert_eq!(got[0]["redelivered"], false);
    assert_eq!(got[0]["queue"], queue.as_str());
    assert_eq!(got[0]["tenant"], "acme");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct UserCreated {
    user_id: i64,
    name: String,
}

#[producer(
    exchange = "t-producer-direct",
    action = "T_USER_CREATED",
    key = "users.created"
)]
async fn create_user(user_id: i64, name: String) -> UserCreated {
    UserCreated { user_id, name }
}

struct Service {
    prefix: String,
}

impl Service {
    #[producer(
        exchange = "t-producer-direct",
        action = "T_USER_RENAMED",
        key = "users.renamed"
    )]
    async fn rename(&self, user_id: i64) -> Result<UserCreated, eventrabbit::Error> {
        Ok(UserCreated {
            user_id,
            name: format!("{}-{user_id}", self.prefix),
        })
    }
}

#[tokio::test]
async fn producer_publishes_the_result_to_its_exchange_and_key() {
    let created = unique("q-created");
    let renamed = unique("q-renamed");
    let (_c, ch) = raw_channel().await;
    // Two queues bound by key: each must get only its own action.
    for (q, key) in [(&created, "users.created"), (&renamed, "users.renamed")] {
        bind_queue(
            &ch,
            q,
            "t-producer-direct",
            lapin::ExchangeKind::Direct,
            key,
        )
        .await;
    }
    let (_events, _handle) = deps(Config::default()).await;
    let returned = create_user(7, "ann".into())
        .await
        .expect("publish confirmed");
    assert_eq!(
        returned,
        UserCreated {
            user_id: 7,
            name: "ann".into()
        }
    );
    let svc = Service { prefix: "p".into() };
    let renamed_value = svc.rename(8).await.expect("publish confirmed");
    assert_eq!(renamed_value.name, "p-8");

    let m = get_message(&ch, &created, WAIT)
        .await
        .expect("created message");
    let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(
        body,
        json!({"action": "T_USER_CREATED", "data": {"user_id": 7, "name": "ann"}})
    );
    let props = &m.delivery.properties;
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    assert!(uuid::Uuid::parse_str(props.message_id().as_ref().unwrap().as_str()).is_ok());

    let m = get_message(&ch, &renamed, WAIT)
        .await
        .expect("renamed message");
    let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(
        body,
        json!({"action": "T_USER_RENAMED", "data": {"user_id": 8, "name": "p-8"}})
    );
    assert_eq!(queue_len(&ch, &created).await, 0);
    assert_eq!(queue_len(&ch, &renamed).await, 0);
    cleanup(&[&created, &renamed], &[]).await;
}

/// `Events::publish` encodes its data when called: the data may be a temporary gone before
/// the publish is awaited (this would not compile if the future borrowed it). What goes
/// out carries the wire contract's properties: a uuid `message_id` (32 digits) and the time.
#[tokio::test]
async fn publish_encodes_its_data_when_called() {
    let queue = unique("q-publish-eager");
    let exchange = unique("t-publish-eager");
    let (_c, ch) = raw_channel().await;
    bind_queue(&ch, &queue, &exchange, lapin::ExchangeKind::Fanout, "").await;
    let (events, _handle) = deps(Config::default()).await;
    let publish = events.publish(&exchange, "", "T_EAGER", &json!({"user_id": 9}));
    publish.await.expect("publish confirmed");

    let m = get_message(&ch, &queue, WAIT).await.expect("the message");
    let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(body, json!({"action": "T_EAGER", "data": {"user_id": 9}}));
    let id = m
        .delivery
        .properties
        .message_id()
        .clone()
        .expect("a message id");
    assert_eq!(id.as_str().len(), 32, "{id}");
    assert_eq!(
        uuid::Uuid::parse_str(id.as_str())
            .unwrap()
            .get_version_num(),
        4
    );
    assert!(m.delivery.properties.timestamp().is_some());
    cleanup(&[&queue], &[&exchange]).await;
}

#[derive(Serialize)]
struct EmailSent {
    user_id: i64,
    status: &'static str,
}

#[function(
    action = "T_SEND_EMAIL",
    exchange = "t-function-fanout",
    action_reply = "T_EMAIL_SENT"
)]
async fn send_email(user_id: i64, email: String) -> Result<EmailSent, std::io::Error> {
    assert!(email.contains('@'));
    Ok(EmailSent {
        user_id,
        status: "sent",
    })
}

#[tokio::test]
async fn function_publishes_its_result_under_action_reply() {
    let queue = unique("q-function");
    let sink = unique("q-function-sink");
    let (_c, ch) = raw_channel().await;
    bind_queue(
        &ch,
        &sink,
        "t-function-fanout",
        lapin::ExchangeKind::Fanout,
        "",
    )
    .await;
    let (_events, handle) = deps(Config::default()).await;
    let _task = start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_SEND_EMAIL"]),
    )
    .await;
    publish_envelope(
        &ch,
        "",
        &queue,
        "T_SEND_EMAIL",
        json!({"user_id": 5, "email": "a@b.c"}),
    )
    .await;
    let m = get_message(&ch, &sink, WAIT)
        .await
        .expect("reply published");
    let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(
        body,
        json!({"action": "T_EMAIL_SENT", "data": {"user_id": 5, "status": "sent"}})
    );
    handle.shutdown().await;
    cleanup(&[&queue, &sink], &[]).await;
}

static ROUTED: Recorder = Recorder::new();

#[consumer(action = "T_ROUTED")]
async fn routed(n: u32, ctx: MessageContext) {
    ROUTED.record(json!({"n": n, "queue": ctx.queue()}));
}

/// Publishes `n` under T_ROUTED to `exchange`/`key` with `headers`.
async fn publish_routed(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    n: u32,
    headers: &[(&str, &str)],
) {
    let mut table = lapin::types::FieldTable::default();
    for (k, v) in headers {
        table.insert(
            (*k).into(),
            lapin::types::AMQPValue::LongString((*v).into()),
        );
    }
    let body = serde_json::to_vec(&json!({"action": "T_ROUTED", "data": {"n": n}})).unwrap();
    publish_raw(
        ch,
        exchange,
        key,
        &body,
        lapin::BasicProperties::default().with_headers(table),
    )
    .await;
}

fn received_by(queue: &str) -> Vec<u64> {
    let mut v: Vec<u64> = ROUTED
        .values()
        .iter()
        .filter(|r| r["queue"] == queue)
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn each_exchange_kind_routes_as_rabbitmq_does() {
    let fanout = unique("x-fanout");
    let direct = unique("x-direct");
    let topic = unique("x-topic");
    let headers = unique("x-headers");
    let (f1, f2, d1, t1, h1, h2) = (
        unique("q-f1"),
        unique("q-f2"),
        unique("q-d1"),
        unique("q-t1"),
        unique("q-h1"),
        unique("q-h2"),
    );
    let (_events, handle) = deps(Config::default()).await;
    let channels = [
        ConsumeChannel::new(&f1).exchange(&fanout, ExchangeKind::Fanout),
        ConsumeChannel::new(&f2).exchange(&fanout, ExchangeKind::Fanout),
        ConsumeChannel::new(&d1).bind(Binding::direct(&direct, "red")),
        ConsumeChannel::new(&t1).bind(Binding::topic(&topic, "user.*.created")),
        ConsumeChannel::new(&h1).bind(
            Binding::headers(&headers)
                .header("kind", "a")
                .header("region", "eu"),
        ),
        ConsumeChannel::new(&h2).bind(
            Binding::headers(&headers)
                .header("kind", "a")
                .header("region", "eu")
                .match_any(),
        ),
    ];
    for c in channels {
        start(&handle, c).await;
    }
    let (_c, ch) = raw_channel().await;
    publish_routed(&ch, &fanout, "ignored", 1, &[]).await;
    publish_routed(&ch, &direct, "red", 2, &[]).await;
    publish_routed(&ch, &direct, "blue", 3, &[]).await; // unroutable: dropped by the broker
    publish_routed(&ch, &topic, "user.eu.created", 4, &[]).await;
    publish_routed(&ch, &topic, "user.eu.deleted", 5, &[]).await;
    publish_routed(&ch, &topic, "user.eu.x.created", 6, &[]).await;
    publish_routed(&ch, &headers, "", 7, &[("kind", "a"), ("region", "eu")]).await;
    publish_routed(&ch, &headers, "", 8, &[("kind", "a"), ("region", "us")]).await;
    // 1 twice (fanout), 2, 4, 7 twice, 8 once (any) = 7 deliveries.
    ROUTED.wait_for(7, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let any wrong extra delivery show up
    assert_eq!(received_by(&f1), vec![1]);
    assert_eq!(received_by(&f2), vec![1]);
    assert_eq!(received_by(&d1), vec![2]);
    assert_eq!(received_by(&t1), vec![4]);
    assert_eq!(received_by(&h1), vec![7]);
    assert_eq!(received_by(&h2), vec![7, 8]);
    handle.shutdown().await;
    cleanup(
        &[&f1, &f2, &d1, &t1, &h1, &h2],
        &[&fanout, &direct, &topic, &headers],
    )
    .await;
}

static CONCURRENT: Recorder = Recorder::new();
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

#[consumer(action = "T_CONCURRENT")]
async fn concurrent(n: u32) {
    CONCURRENT.record(json!(n));
    // Blocks until the test opens the gate: only possible if all 5 run at once.
    GATE.acquire().await.unwrap().forget();
}

#[tokio::test]
async fn handlers_run_concurrently_up_to_the_prefetch_window() {
    let queue = unique("q-concurrent");
    let (_events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).prefetch(5)).await;
    let (_c, ch) = raw_channel().await;
    for n in 0..8 {
        publish_envelope(&ch, "", &queue, "T_CONCURRENT", json!({"n": n})).await;
    }
    // 5 handlers are blocked at once: the window is full and no sixth starts.
    CONCURRENT.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        CONCURRENT.values().len(),
        5,
        "prefetch 5 bounds the handlers in flight"
    );
    GATE.add_permits(8);
    CONCURRENT.wait_for(8, WAIT).await;
    handle.shutdown().await;
    assert_eq!(queue_len(&ch, &queue).await, 0);
    cleanup(&[&queue], &[]).await;
}

static ACKED: Recorder = Recorder::new();

#[consumer(action = "T_ACKED")]
async fn acked(n: u32, wait: bool) {
    if wait {
        // Waits, so the delivery gets a task of its own and reports its ack from there.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ACKED.record(json!(n));
}

#[tokio::test]
async fn finished_deliveries_are_acknowledged_while_the_consumer_runs() {
    let queue = unique("q-acked");
    let (_events, handle) = deps(Config::default()).await;
    // Prefetch 10: acks go out in batches of 5, or a few milliseconds after a delivery
    // finished when no batch fills up, as with these 3.
    let _task = start(&handle, ConsumeChannel::new(&queue).prefetch(10)).await;
    let (_c, ch) = raw_channel().await;
    for (n, wait) in [(0, false), (1, true), (2, false)] {
        publish_envelope(&ch, "", &queue, "T_ACKED", json!({"n": n, "wait": wait})).await;
    }
    ACKED.wait_for(3, WAIT).await;
    wait_until!(WAIT, unacked(&queue) == 0);
    assert_eq!(
        unacked(&queue),
        0,
        "acknowledged without waiting for shutdown"
    );
    assert_eq!(queue_len(&ch, &queue).await, 0);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static ORDERED: Recorder = Recorder::new();

#[consumer(action = "T_ORDERED")]
async fn ordered(n: u32) {
    // Later messages sleep less: only one-at-a-time handling keeps them in order.
    tokio::time::sleep(Duration::from_millis(u64::from(20 - n))).await;
    ORDERED.record(json!(n));
}

#[tokio::test]
async fn prefetch_one_handles_in_order() {
    let queue = unique("q-ordered");
    let (_events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).prefetch(1)).await;
    let (_c, ch) = raw_channel().await;
    for n in 0..20 {
        publish_envelope(&ch, "", &queue, "T_ORDERED", json!({"n": n})).await;
    }
    let got = ORDERED.wait_for(20, WAIT).await;
    assert_eq!(got, (0..20).map(|n| json!(n)).collect::<Vec<_>>());
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn explicit_handler_set_naming_an_unknown_action_fails_at_start() {
    let (_events, handle) = deps(Config::default()).await;
    let err = handle
        .consume(ConsumeChannel::new(unique("q-unknown-set")).actions(["T_NOBODY_HANDLES_THIS"]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("T_NOBODY_HANDLES_THIS") && msg.contains("q-unknown-set"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_queue_declared_differently_is_a_clear_error_not_a_retry_loop() {
    let queue = unique("q-mismatch");
    let (_c, ch) = raw_channel().await;
    // Declared non-durable by someone else; we want it durable.
    declare_queue(&ch, &queue, false).await;
    let (_events, handle) = deps(Config::default()).await;
    let err = tokio::time::timeout(WAIT, handle.consume(ConsumeChannel::new(&queue)))
        .await
        .expect("fails instead of retrying forever")
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&queue) && msg.contains("PRECONDITION_FAILED"),
        "{msg}"
    );
    cleanup(&[&queue], &[]).await;
}

static CASES: Recorder = Recorder::new();

#[consumer(action = "T_ROUTING_CASE")]
async fn routing_case(case: usize) {
    CASES.record(json!(case));
}

/// The shared routing table, on RabbitMQ (the test broker runs the same table).
#[tokio::test]
async fn routing_cases_hold_on_rabbitmq() {
    let (_events, handle) = deps(Config::default()).await;
    let (_c, ch) = raw_channel().await;
    let cases = routing_cases();
    let mut names = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (queue, exchange) = (unique("q-case"), unique("x-case"));
        start(
            &handle,
            case.channel(&queue, &exchange).actions(["T_ROUTING_CASE"]),
        )
        .await;
        let body =
            serde_json::to_vec(&json!({"action": "T_ROUTING_CASE", "data": {"case": i}})).unwrap();
        publish_raw(
            &ch,
            &exchange,
            case.key,
            &body,
            lapin::BasicProperties::default().with_headers(case.header_table()),
        )
        .await;
        names.push((queue, exchange));
    }
    let expected: Vec<usize> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.routed)
        .map(|(i, _)| i)
        .collect();
    CASES.wait_for(expected.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: Vec<usize> = CASES
        .values()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    got.sort();
    assert_eq!(got, expected);
    handle.shutdown().await;
    for (q, x) in &names {
        cleanup(&[q], &[x]).await;
    }
}

#[tokio::test]
async fn exclusive_auto_delete_queues_are_private_and_go_away_after_shutdown() {
    let queue = unique("q-exclusive");
    let (_events, handle) = deps(Config::default()).await;
    let channel = ConsumeChannel::new(&queue)
        .durable(false)
        .exclusive(true)
        .auto_delete(true)
        .actions(["T_CONSUME_BY_NAME"]);
    let h = handle.clone();
    let task = tokio::spawn(async move { h.consume(channel).await });
    // Other connections cannot even look at an exclusive queue: wait through health.
    let running = || async {
        handle
            .health()
            .await
            .consumers
            .iter()
            .any(|c| c.queue == queue && c.state == eventrabbit::ConsumerState::Running)
    };
    wait_until!(WAIT, running().await);
    assert!(running().await, "consumer running");
    // Another connection may not consume an exclusive queue.
    let (_c, ch) = raw_channel().await;
    let err = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RESOURCE_LOCKED"), "{err}");
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    // Auto-deleted (and exclusive: gone with its connection).
    let (_c2, ch2) = raw_channel().await;
    let gone = ch2
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    assert!(gone.is_err(), "queue still exists");
    cleanup(&[&queue], &[]).await;
}
