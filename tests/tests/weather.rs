//! A nack is weather, not a verdict (issue 33), on the real broker: a retry or a dead letter
//! the broker does not take for a while is sent once it does; a delivery whose dead letter
//! is refused is given back again and again (never held, never pinning the acks of the
//! others) and named in health; a redriven crash-loop letter starts afresh; concurrent
//! poison makes exactly one dead letter each.
//!
//! The broker's refusals are made with policies (`max-length 0`, `reject-publish`) on this
//! test's own queues only: nothing else on the broker is touched.

use eventrabbit::{
    Config, ConsumeChannel, ConsumerState, MessageContext, Redrive, RetryConfig, consumer,
};
use eventrabbit_tests::*;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

static FLAKY: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
static FLAKY_DONE: Recorder = Recorder::new();

/// Fails its first attempt, succeeds after.
#[consumer(action = "T_W_FLAKY")]
async fn flaky(n: u64, ctx: MessageContext) -> Result<(), String> {
    let calls = {
        let mut map = FLAKY.lock().unwrap();
        let calls = map
            .get_or_insert_with(HashMap::new)
            .entry(ctx.queue().to_owned())
            .or_default();
        *calls += 1;
        *calls
    };
    if calls == 1 {
        return Err("first attempt fails".into());
    }
    FLAKY_DONE.record(json!({"queue": ctx.queue(), "n": n, "calls": calls}));
    Ok(())
}

/// A retry whose wait queue nacks every publish for a while (its queue full with
/// `reject-publish`) is sent once the broker takes it, and the message is handled: it is
/// neither dead-lettered as `retry-unpublishable` nor lost. (Before, three nacks within
/// about 300 ms dead-lettered it.)
#[tokio::test]
async fn a_retry_the_broker_nacks_for_a_while_goes_out_once_it_is_taken() {
    let queue = unique("q-w-nacked-retry");
    let wait_queue = format!("{queue}.retry.200ms");
    let refusing = Refusing::queues(&exactly(&wait_queue));
    let config = Config::default()
        .with_retry(RetryConfig::default().with_delay(Duration::from_millis(200)))
        .with_settle_timeout(Duration::from_secs(3));
    let (events, handle) = deps(config).await;
    let task = start(&handle, ConsumeChannel::new(&queue).actions(["T_W_FLAKY"])).await;
    events
        .publish("", &queue, "T_W_FLAKY", &json!({"n": 1}))
        .await
        .unwrap();
    // The first attempt failed and its retry is being nacked.
    wait_until!(
        WAIT,
        FLAKY
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|m| m.get(&queue).copied())
            .unwrap_or(0)
            >= 1
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refusing.lift();
    let done = FLAKY_DONE.wait_for(1, WAIT).await;
    assert!(
        done.iter().any(|v| v["queue"] == queue.as_str()),
        "{done:?}"
    );
    let (_c, ch) = raw_channel().await;
    assert_eq!(
        queue_len(&ch, &handle.dead_letter_queue(&queue)).await,
        0,
        "nothing dead-lettered"
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue, &wait_queue], &[]).await;
}

static GOOD: Recorder = Recorder::new();

#[consumer(action = "T_W_GOOD")]
async fn good(n: u64, ctx: MessageContext) {
    GOOD.record(json!({"queue": ctx.queue(), "n": n}));
}

fn good_of(queue: &str) -> usize {
    GOOD.values().iter().filter(|v| v["queue"] == queue).count()
}

/// A delivery whose dead letter the broker refuses is not held: it is given back to the
/// broker again and again (within `settle_timeout` plus a pause of at most 5 s, far below
/// the broker's `consumer_timeout`), health names it by message id, the good messages
/// around it are all handled and acknowledged, and a graceful shutdown leaves exactly the
/// stuck message in the queue. Once the dead-letter queue takes messages again, the next
/// consumer dead-letters it with its reason, without running a handler.
#[tokio::test]
async fn a_delivery_whose_dead_letter_is_refused_is_given_back_and_named_in_health() {
    let queue = unique("q-w-unsettleable");
    let dlq = format!("{queue}.dlq");
    let refusing = Refusing::queues(&exactly(&dlq));
    let config = Config::default().with_settle_timeout(Duration::from_millis(500));
    let (_events, handle) = deps(config.clone()).await;
    let task = start(
        &handle,
        ConsumeChannel::new(&queue)
            .prefetch(10)
            .actions(["T_W_GOOD"]),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    let poison = BasicProperties::default().with_message_id("poison-1".into());
    publish_raw(&ch, "", &queue, b"{not json", poison).await;
    for n in 0..300u64 {
        let body = serde_json::to_vec(&json!({"action": "T_W_GOOD", "data": {"n": n}})).unwrap();
        publish_raw(&ch, "", &queue, &body, BasicProperties::default()).await;
    }
    wait_until!(WAIT, good_of(&queue) >= 300);
    assert_eq!(good_of(&queue), 300, "every good message handled once");
    // The poison message keeps coming back, and health says which one it is.
    let stuck = || async {
        handle
            .health()
            .await
            .consumers
            .into_iter()
            .find(|c| c.queue == queue)
            .filter(|c| c.state == ConsumerState::Stuck)
            .and_then(|c| c.stuck.into_iter().next())
    };
    wait_until!(WAIT, stuck().await.is_some_and(|m| m.given_back >= 3));
    let named = stuck().await.expect("a stuck message");
    assert_eq!(named.message_id.as_deref(), Some("poison-1"));
    assert!(named.reason.contains("dead letter"), "{}", named.reason);
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    // Nothing finished was left unacknowledged: only the poison message is back.
    wait_until!(Duration::from_secs(10), queue_len(&ch, &queue).await == 1);
    assert_eq!(
        queue_len(&ch, &queue).await,
        1,
        "only the stuck message is left"
    );
    assert_eq!(good_of(&queue), 300, "no good message redelivered");
    // The dead-letter queue takes messages again: the next consumer moves it there.
    refusing.lift();
    let (_events, handle) = deps(config).await;
    let task = start(&handle, ConsumeChannel::new(&queue).actions(["T_W_GOOD"])).await;
    let m = get_message(&ch, &dlq, WAIT).await.expect("dead-lettered");
    assert_eq!(
        header(&m.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("not-json")
    );
    assert_eq!(queue_len(&ch, &queue).await, 0);
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue], &[]).await;
}

static REDRIVEN: Recorder = Recorder::new();

#[consumer(action = "T_W_REDRIVEN")]
async fn redriven(n: u64, ctx: MessageContext) {
    REDRIVEN.record(json!({
        "queue": ctx.queue(),
        "n": n,
        "delivery_count": ctx.header_str("x-delivery-count"),
        "redrives": ctx.header_str("x-redrive-count"),
        "was": ctx.header_str("x-redriven-code"),
        "deliveries_before": ctx.header_str("x-redriven-delivery-count"),
    }));
}

/// A crash-loop dead letter moved back once the bug is fixed runs its handler: the
/// `x-delivery-count` it carries from the quorum dead-letter queue (3 after an operator
/// looked at it three times) is not counted again by the crash-loop check (it is kept as
/// `x-redriven-delivery-count`, with `x-redrive-count` and `x-redriven-code`). Before,
/// the redriven letter was dead-lettered again at once as `crash-loop`.
#[tokio::test]
async fn a_redriven_crash_loop_letter_gets_a_fresh_start() {
    let queue = unique("q-w-redrive");
    let (_events, handle) = deps(Config::default()).await;
    let spec = ConsumeChannel::new(&queue)
        .quorum()
        .crash_loop_limit(3)
        .actions(["T_W_REDRIVEN"]);
    let task = start(&handle, spec).await;
    // A dead letter as the consumer wrote it after a crash loop.
    let (_c, ch) = raw_channel().await;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-dead-letter-code".into(),
        AMQPValue::LongString(LongString::from("crash-loop")),
    );
    headers.insert("x-attempts".into(), AMQPValue::LongLongInt(0));
    let body = serde_json::to_vec(&json!({"action": "T_W_REDRIVEN", "data": {"n": 7}})).unwrap();
    let dlq = handle.dead_letter_queue(&queue);
    publish_raw(
        &ch,
        "",
        &dlq,
        &body,
        BasicProperties::default().with_headers(headers),
    )
    .await;
    // Looked at three times by an operator (each look gives it back to the quorum
    // dead-letter queue, which counts a delivery each time): its `x-delivery-count` is 3.
    for _ in 0..3 {
        let got = ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("the dead letter");
        got.delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .unwrap();
    }
    // The quorum queue counts a message given back only once it has it again.
    wait_until!(WAIT, queue_len(&ch, &dlq).await == 1);
    let report = handle.redrive(&queue, Redrive::new()).await.unwrap();
    assert_eq!(report.moved, 1, "{report:?}");
    let seen = REDRIVEN.wait_for(1, WAIT).await;
    let seen = seen
        .iter()
        .find(|v| v["queue"] == queue.as_str())
        .expect("the handler ran");
    assert_eq!(seen["delivery_count"], json!(null), "{seen}");
    assert_eq!(seen["redrives"], "1", "{seen}");
    assert_eq!(seen["was"], "crash-loop", "{seen}");
    assert_eq!(seen["deliveries_before"], "3", "{seen}");
    assert_eq!(queue_len(&ch, &dlq).await, 0, "not dead-lettered again");
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue], &[]).await;
}

/// Under concurrent poison load (two consumers of one queue, wide prefetch), every poison
/// message makes exactly one dead letter: the dead-letter queue holds as many messages as
/// there were dead-letter decisions, and each message id once.
#[tokio::test]
async fn concurrent_poison_makes_exactly_one_dead_letter_each() {
    const N: usize = 3_000;
    let queue = unique("q-w-poison-load");
    let config =
        Config::default().with_queue(eventrabbit::QueueConfig::default().with_prefetch(200));
    let (_e1, first) = deps(config.clone()).await;
    let (_e2, second) = deps(config).await;
    let spec = || ConsumeChannel::new(&queue).actions(["T_W_GOOD"]);
    let t1 = start(&first, spec()).await;
    let t2 = start(&second, spec()).await;
    let (_c, ch) = raw_channel().await;
    let bodies = (0..N).map(|n| format!("{{poison {n}").into_bytes());
    publish_all(&ch, &queue, bodies).await;
    let dlq = first.dead_letter_queue(&queue);
    wait_until!(WAIT, queue_len(&ch, &dlq).await as usize >= N);
    // Let any second copy arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.shutdown().await;
    second.shutdown().await;
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
    let mut bodies = std::collections::HashSet::new();
    let mut copies = 0;
    while let Some(m) = get_message(&ch, &dlq, Duration::from_millis(300)).await {
        copies += 1;
        bodies.insert(m.delivery.data);
    }
    assert_eq!(bodies.len(), N, "every poison message dead-lettered");
    assert_eq!(copies, N, "one dead letter per decision, no duplicates");
    assert_eq!(queue_len(&ch, &queue).await, 0);
    cleanup(&[&queue], &[]).await;
}
