//! Queue types and arguments on the real broker: quorum queues done right (their
//! dead-letter and retry wait queues too, at-least-once retries, the crash-loop
//! backstop), queue arguments and their conflicts, several bindings recovered together,
//! and single active consumers.

use eventrabbit::types::{AMQPValue, FieldTable};
use eventrabbit::{
    Binding, Config, ConsumeChannel, Error, MessageContext, Overflow, RetryConfig, consumer,
};
use eventrabbit_tests::*;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, ExchangeDeleteOptions, QueueDeclareOptions,
};
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// `rabbitmqctl list_queues name <item>` for one queue.
fn queue_info(queue: &str, item: &str) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", item])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{queue}\t")).map(str::to_owned))
        .unwrap_or_else(|| panic!("queue `{queue}` is not listed"))
}

static FLAKY: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

#[consumer(action = "T_Q_FLAKY")]
async fn flaky(ctx: MessageContext) -> Result<(), String> {
    FLAKY
        .lock()
        .unwrap()
        .push((ctx.queue().to_owned(), ctx.retry_count()));
    if ctx.retry_count() == 0 {
        Err("first attempt fails".into())
    } else {
        Ok(())
    }
}

/// A quorum queue's dead-letter queue and retry wait queues are quorum queues, and the
/// wait queue sends retries back with at-least-once dead-lettering (`reject-publish`
/// overflow); the retried message is handled.
#[tokio::test]
async fn a_quorum_queue_has_quorum_dead_letter_and_wait_queues() {
    let queue = unique("q-q-quorum");
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(200))
        .with_max_retries(3);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    start(
        &handle,
        ConsumeChannel::new(&queue).quorum().actions(["T_Q_FLAKY"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(&ch, "", &queue, "T_Q_FLAKY", json!({})).await;
    let retried = || {
        FLAKY
            .lock()
            .unwrap()
            .iter()
            .any(|(q, r)| *q == queue && *r == 1)
    };
    wait_until!(WAIT, retried());
    assert!(retried(), "retried through the wait queue");
    let dlq = handle.dead_letter_queue(&queue);
    let wait_queue = format!("{queue}.retry.200ms");
    assert_eq!(queue_info(&queue, "type"), "quorum");
    assert_eq!(queue_info(&dlq, "type"), "quorum");
    assert_eq!(queue_info(&wait_queue, "type"), "quorum");
    let args = queue_info(&wait_queue, "arguments");
    assert!(args.contains("at-least-once"), "{args}");
    assert!(args.contains("reject-publish"), "{args}");
    handle.shutdown().await;
    cleanup(&[&queue, &wait_queue], &[]).await;
}

static CRASHY: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[consumer(action = "T_Q_CRASHY")]
async fn crashy(ctx: MessageContext) {
    CRASHY.lock().unwrap().push(ctx.queue().to_owned());
}

/// A message a quorum queue delivered more than the crash-loop limit without it being
/// settled (here: given back by a consumer ten times, as when a handler keeps taking the
/// process down) is dead-lettered as `crash-loop`, its handler not run.
#[tokio::test]
async fn a_message_delivered_too_often_is_dead_lettered_as_a_crash_loop() {
    use futures_util::StreamExt;
    let queue = unique("q-q-crash");
    let (_c, ch) = raw_channel().await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // Declared as eventrabbit declares a quorum queue, so that `consume` agrees.
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(format!("{queue}.dlq").into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .unwrap();
    publish_envelope(&ch, "", &queue, "T_Q_CRASHY", json!({})).await;
    // A process that dies with the message in hand, ten times over.
    let crasher = raw_connection().await;
    let cch = crasher.create_channel().await.unwrap();
    let mut deliveries = cch
        .basic_consume(
            queue.as_str().into(),
            "crasher".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..10 {
        let d = deliveries.next().await.unwrap().unwrap();
        d.acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .unwrap();
    }
    drop(deliveries);
    let _ = cch.close(200, "done".into()).await;
    let (_events, handle) = deps(Config::default()).await;
    start(
        &handle,
        ConsumeChannel::new(&queue)
            .quorum()
            .crash_loop_limit(10)
            .actions(["T_Q_CRASHY"]),
    )
    .await;
    let m = get_message(&ch, &handle.dead_letter_queue(&queue), WAIT)
        .await
        .expect("dead-lettered");
    assert_eq!(
        header(&m.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("crash-loop")
    );
    assert!(
        !CRASHY.lock().unwrap().contains(&queue),
        "the handler was not run"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[consumer(action = "T_Q_ANY")]
async fn any(n: u64) {
    ANY.lock().unwrap().push(n);
}

static ANY: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Queue arguments take effect (a length limit that refuses new messages makes their
/// publishes fail), and a queue that exists with another value makes `consume` fail,
/// naming the queue and the argument.
#[tokio::test]
async fn queue_arguments_apply_and_a_conflict_names_the_queue_and_argument() {
    let queue = unique("q-q-limited");
    let (_events, declaring) = deps(Config::default()).await;
    let limited = ConsumeChannel::new(&queue)
        .max_length(3)
        .overflow(Overflow::RejectPublish)
        .message_ttl(Duration::from_secs(600))
        .actions(["T_Q_ANY"]);
    let task = start(&declaring, limited).await;
    declaring.shutdown().await; // the queue stays, with nobody consuming it
    task.await.unwrap().unwrap();
    // A nack is weather: each is sent again until the publish deadline, then reported as
    // the nack it still is, retryable.
    let config = Config::default().with_publish_timeout(Duration::from_millis(500));
    let (events, handle) = deps(config).await;
    let mut refused = 0;
    for n in 0..6u64 {
        if let Err(e) = events
            .publish("", &queue, "T_Q_ANY", &json!({"n": n}))
            .await
        {
            assert!(matches!(e, Error::Nacked { .. }), "{e}");
            assert!(e.is_retryable(), "{e}");
            refused += 1;
        }
    }
    assert_eq!(refused, 3, "the queue took 3, refused the others");
    let args = queue_info(&queue, "arguments");
    assert!(
        args.contains("x-max-length") && args.contains("x-message-ttl"),
        "{args}"
    );
    let e = tokio::time::timeout(
        WAIT,
        handle.consume(
            ConsumeChannel::new(&queue)
                .max_length(5)
                .overflow(Overflow::RejectPublish)
                .message_ttl(Duration::from_secs(600))
                .actions(["T_Q_ANY"]),
        ),
    )
    .await
    .expect("fails at once")
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&queue) && text.contains("x-max-length"),
        "{text}"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

/// A publish nacked by a full queue whose deadline passes while the fresh channel for its
/// next attempt is being opened (a slow link: every answer of the broker takes a second)
/// reports the nack that kept it out, not the channel it was waiting for.
#[tokio::test]
async fn a_nack_is_reported_when_the_deadline_passes_while_a_channel_reopens() {
    let (full, open) = (unique("q-q-full"), unique("q-q-open"));
    let (_c, ch) = raw_channel().await;
    declare_refusing_queue(&ch, &full, 0).await;
    declare_queue(&ch, &open, false).await;
    let proxy = Proxy::start().await;
    // Timeline with answers a second late: the nack at about 1 s, then a pause of 50 ms,
    // then a fresh channel whose open-ok comes at about 2 s and confirm-select-ok at about
    // 3 s. The deadline at 2.5 s falls while that channel is opened.
    let config = Config::default().with_publish_timeout(Duration::from_millis(2_500));
    let (events, handle) = deps_at(&proxy.url(), config).await;
    events
        .publish("", &open, "T_Q_ANY", &json!({"n": 0}))
        .await
        .expect("the channel to the default exchange is open");
    proxy.delay_replies(Duration::from_secs(1));
    let e = events
        .publish("", &full, "T_Q_ANY", &json!({"n": 1}))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Nacked { .. }), "{e}");
    assert!(e.to_string().contains(&full), "{e}");
    proxy.delay_replies(Duration::ZERO);
    handle.shutdown().await;
    cleanup(&[&full, &open], &[]).await;
}

/// One queue bound to two exchanges and to a topic exchange under two patterns: when the
/// connection drops, all of it is declared again together (here the exchanges were
/// deleted meanwhile), and each binding delivers.
#[tokio::test]
async fn several_bindings_are_declared_and_recovered_together() {
    let proxy = Proxy::start().await;
    let queue = unique("q-q-bindings");
    let (fanout, topic) = (unique("x-q-fan"), unique("x-q-topic"));
    let config = Config::default()
        .with_topology_check_interval(None)
        .with_max_reconnect_delay(Duration::from_millis(300));
    let (_events, handle) = deps_at(&proxy.url(), config).await;
    start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_Q_ANY"])
            .bind(Binding::fanout(&fanout))
            .bind(Binding::topic(&topic, "user.*.created"))
            .bind(Binding::topic(&topic, "order.#")),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    for x in [&fanout, &topic] {
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    proxy.cut_existing();
    wait_until!(
        WAIT,
        handle.health().await.is_ready() && proxy.connections() >= 2
    );
    assert!(handle.health().await.is_ready());
    publish_envelope(&ch, &fanout, "", "T_Q_ANY", json!({"n": 1001})).await;
    publish_envelope(
        &ch,
        &topic,
        "user.eu.created",
        "T_Q_ANY",
        json!({"n": 1002}),
    )
    .await;
    publish_envelope(
        &ch,
        &topic,
        "order.paid.late",
        "T_Q_ANY",
        json!({"n": 1003}),
    )
    .await;
    publish_envelope(
        &ch,
        &topic,
        "user.eu.deleted",
        "T_Q_ANY",
        json!({"n": 1004}),
    )
    .await;
    let seen = |n| ANY.lock().unwrap().contains(&n);
    wait_until!(WAIT, seen(1001) && seen(1002) && seen(1003));
    assert!(
        seen(1001) && seen(1002) && seen(1003),
        "every binding is back"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!seen(1004), "and only those");
    handle.shutdown().await;
    cleanup(&[&queue], &[&fanout, &topic]).await;
}

static ACTIVE: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[consumer(action = "T_Q_SAC")]
async fn sac(n: u64) {
    ACTIVE.lock().unwrap().push(n);
}

/// Two instances of a consumer on one queue with a single active consumer: only the
/// first receives (in order); when it goes, the other takes over.
#[tokio::test]
async fn a_single_active_consumer_keeps_order_across_instances_and_fails_over() {
    let queue = unique("q-q-sac");
    let channel = || {
        ConsumeChannel::new(&queue)
            .single_active_consumer()
            .actions(["T_Q_SAC"])
    };
    let (_e1, first) = deps(Config::default()).await;
    start(&first, channel()).await;
    let (_e2, second) = deps(Config::default()).await;
    start(&second, channel()).await;
    let (_c, ch) = raw_channel().await;
    let (consumers, active) = consumers_of(&queue);
    assert_eq!(
        (consumers, active),
        (2, 1),
        "two consumers, one of them active"
    );
    for n in 0..20u64 {
        publish_envelope(&ch, "", &queue, "T_Q_SAC", json!({"n": n})).await;
    }
    wait_until!(WAIT, ACTIVE.lock().unwrap().len() >= 20);
    let order: Vec<u64> = ACTIVE.lock().unwrap().clone();
    assert_eq!(order, (0..20).collect::<Vec<_>>(), "one consumer, in order");
    let first_active = active_consumer_connection(&queue);
    first.shutdown().await;
    for n in 20..40u64 {
        publish_envelope(&ch, "", &queue, "T_Q_SAC", json!({"n": n})).await;
    }
    wait_until!(WAIT, ACTIVE.lock().unwrap().len() >= 40);
    let order: Vec<u64> = ACTIVE.lock().unwrap().clone();
    assert_eq!(
        order,
        (0..40).collect::<Vec<_>>(),
        "the other took over, in order"
    );
    assert_ne!(
        active_consumer_connection(&queue),
        first_active,
        "a different consumer is active now"
    );
    second.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

/// How many consumers the queue has, and how many of them are active.
fn consumers_of(queue: &str) -> (usize, usize) {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "active",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.split('\t').next() == Some(queue))
        .collect();
    let active = mine
        .iter()
        .filter(|l| l.trim_end().ends_with("true"))
        .count();
    (mine.len(), active)
}

/// Which channel holds the queue's active consumer, as the broker lists it.
fn active_consumer_connection(queue: &str) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "channel_pid",
            "active",
        ])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let (q, pid, active) = (parts.next()?, parts.next()?, parts.next()?);
            (q == queue && active.trim() == "true").then(|| pid.to_owned())
        })
        .next()
        .unwrap_or_default()
}
