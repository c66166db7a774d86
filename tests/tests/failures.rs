//! DESIGN §4 message failures on the real broker: delayed retries to the failing queue
//! only, dead-letter queues with reasons, poison input, redrive.

use eventrabbit::{
    Config, ConsumeChannel, ExchangeKind, MessageContext, RetryConfig, UnknownAction, consumer,
};
use eventrabbit_tests::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

static FLAKY: Recorder = Recorder::new();
static FLAKY_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

#[consumer(action = "T_FLAKY")]
async fn flaky(ctx: MessageContext) -> Result<(), String> {
    let start = *FLAKY_START.get_or_init(Instant::now);
    FLAKY.record(json!({"at_ms": start.elapsed().as_millis() as u64, "retry": ctx.retry_count()}));
    if ctx.retry_count() < 2 {
        Err(format!("attempt {} fails", ctx.retry_count() + 1))
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn failing_twice_then_succeeding_runs_three_times_after_real_delays() {
    let queue = unique("q-flaky");
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(300))
        .with_multiplier(2.0)
        .with_max_retries(5);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(&ch, "", &queue, "T_FLAKY", json!({})).await;
    let calls = FLAKY.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = if FLAKY.values().len() > calls.len() {
        FLAKY.values()
    } else {
        calls
    };
    assert_eq!(calls.len(), 3, "called exactly 3 times: {calls:?}");
    let at: Vec<u64> = calls.iter().map(|c| c["at_ms"].as_u64().unwrap()).collect();
    let retries: Vec<u64> = calls.iter().map(|c| c["retry"].as_u64().unwrap()).collect();
    assert_eq!(retries, vec![0, 1, 2], "x-retry-count counts the retries");
    assert!(
        at[1] - at[0] >= 300,
        "first retry waited the configured 300 ms: {at:?}"
    );
    assert!(
        at[2] - at[1] >= 600,
        "second retry waited 300 ms x 2: {at:?}"
    );
    assert_eq!(
        queue_len(&ch, &handle.dead_letter_queue(&queue)).await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(queue_len(&ch, &queue).await, 0);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static SIBLING: Recorder = Recorder::new();

#[consumer(action = "T_SIBLING")]
async fn sibling(ctx: MessageContext, failing_queue: String) -> Result<(), String> {
    SIBLING.record(json!({"queue": ctx.queue(), "retry": ctx.retry_count()}));
    if ctx.queue() == failing_queue && ctx.retry_count() == 0 {
        Err("first attempt fails".into())
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn a_retry_goes_back_to_the_failing_queue_only() {
    let exchange = unique("x-sibling");
    let (failing, other) = (unique("q-sib-fail"), unique("q-sib-ok"));
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(100))
        .with_max_retries(3);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    start(
        &handle,
        ConsumeChannel::new(&failing).exchange(&exchange, ExchangeKind::Fanout),
    )
    .await;
    start(
        &handle,
        ConsumeChannel::new(&other).exchange(&exchange, ExchangeKind::Fanout),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(
        &ch,
        &exchange,
        "",
        "T_SIBLING",
        json!({"failing_queue": failing}),
    )
    .await;
    SIBLING.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // room for a wrong extra copy to arrive
    let seen = SIBLING.values();
    let on = |q: &str| seen.iter().filter(|v| v["queue"] == q).count();
    assert_eq!(
        on(&failing),
        2,
        "failing queue: first attempt + one retry: {seen:?}"
    );
    assert_eq!(
        on(&other),
        1,
        "the sibling queue sees exactly one copy: {seen:?}"
    );
    handle.shutdown().await;
    cleanup(&[&failing, &other], &[&exchange]).await;
}

static PANICS: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_PANICS")]
async fn panics(ctx: MessageContext) {
    PANICS.fetch_add(1, Ordering::SeqCst);
    if ctx.retry_count() < 10 {
        panic!("handler bug on attempt {}", ctx.retry_count() + 1);
    }
}

#[tokio::test]
async fn a_panicking_handler_is_retried_then_dead_lettered_and_the_consumer_keeps_going() {
    let queue = unique("q-panics");
    let retry = RetryConfig::default()
        .with_delay(Duration::from_millis(50))
        .with_max_retries(2);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    let task = start(&handle, ConsumeChannel::new(&queue)).await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(&ch, "", &queue, "T_PANICS", json!({})).await;
    let dlq = handle.dead_letter_queue(&queue);
    let m = get_message(&ch, &dlq, WAIT)
        .await
        .expect("dead-lettered after the last retry");
    let props = &m.delivery.properties;
    assert_eq!(
        header(props, "x-dead-letter-code").as_deref(),
        Some("retries-exhausted")
    );
    assert!(
        header(props, "x-dead-letter-reason")
            .unwrap()
            .contains("handler bug on attempt 3")
    );
    assert_eq!(header(props, "x-attempts").as_deref(), Some("3"));
    assert_eq!(
        header(props, "x-original-queue").as_deref(),
        Some(queue.as_str())
    );
    assert_eq!(header(props, "x-original-exchange").as_deref(), Some(""));
    assert_eq!(
        header(props, "x-original-routing-key").as_deref(),
        Some(queue.as_str())
    );
    assert!(
        header(props, "x-first-failure-time")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 1_600_000_000_000
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 3);
    assert!(!task.is_finished(), "consumer still running");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static GOOD: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_POISON_GOOD")]
async fn good(user_id: i64, name: String) {
    assert!(user_id >= 0 && !name.is_empty());
    GOOD.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_at_once_with_their_reason() {
    let queue = unique("q-poison");
    let retry = RetryConfig::default().with_delay(Duration::from_secs(60));
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).max_message_size(4096)).await;
    let (_c, ch) = raw_channel().await;
    let cases = poison_cases("T_POISON_GOOD");
    for (body, _) in &cases {
        publish_raw(&ch, "", &queue, body, Default::default()).await;
    }
    let dlq = handle.dead_letter_queue(&queue);
    // Each delivery is dead-lettered by its own task: they may reach the queue in any order.
    let mut dead = Vec::new();
    for _ in &cases {
        let m = get_message(&ch, &dlq, WAIT).await;
        dead.push(
            m.unwrap_or_else(|| panic!("only {} of {} dead-lettered", dead.len(), cases.len())),
        );
    }
    for (body, code) in &cases {
        // Found by its body: the body is kept as it was.
        let at = dead
            .iter()
            .position(|m| &m.delivery.data == body)
            .unwrap_or_else(|| panic!("{code}: no dead letter with body {body:?}"));
        let m = dead.swap_remove(at);
        assert_eq!(
            header(&m.delivery.properties, "x-dead-letter-code").as_deref(),
            Some(*code)
        );
        let reason = header(&m.delivery.properties, "x-dead-letter-reason").unwrap();
        match *code {
            "invalid-data" if body.windows(7).any(|w| w == b"\"seven\"") => {
                assert!(reason.contains("field `user_id`"), "{reason}")
            }
            "invalid-data" => assert!(reason.contains("missing field `name`"), "{reason}"),
            "unknown-action" => assert!(reason.contains("T_NOBODY"), "{reason}"),
            "too-large" => assert!(reason.contains("4096"), "{reason}"),
            "duplicate-key" => assert!(reason.contains("duplicate field `action`"), "{reason}"),
            _ => {}
        }
    }
    // Never retried: nothing is waiting in a retry queue, and the consumer still works.
    publish_envelope(
        &ch,
        "",
        &queue,
        "T_POISON_GOOD",
        json!({"user_id": 1, "name": "ok"}),
    )
    .await;
    let before = GOOD.load(Ordering::SeqCst);
    wait_until!(WAIT, GOOD.load(Ordering::SeqCst) > before);
    assert!(
        GOOD.load(Ordering::SeqCst) > before,
        "consumer kept consuming after poison"
    );
    assert_eq!(queue_len(&ch, &format!("{queue}.retry.60000ms")).await, 0);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn unknown_actions_can_be_dropped_instead() {
    let queue = unique("q-drop-unknown");
    let (_events, handle) = deps(Config::default()).await;
    let _task = start(
        &handle,
        ConsumeChannel::new(&queue).unknown_action(UnknownAction::Drop),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(&ch, "", &queue, "T_NOBODY_EITHER", json!({})).await;
    publish_envelope(
        &ch,
        "",
        &queue,
        "T_POISON_GOOD",
        json!({"user_id": 2, "name": "b"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue_len(&ch, &queue).await, 0, "both acknowledged");
    assert_eq!(
        queue_len(&ch, &handle.dead_letter_queue(&queue)).await,
        0,
        "nothing dead-lettered"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static MIXED_GOOD: Recorder = Recorder::new();

#[consumer(action = "T_MIXED")]
async fn mixed(n: u64) {
    MIXED_GOOD.record(json!(n));
}

#[tokio::test]
async fn thousand_mixed_messages_none_lost() {
    let queue = unique("q-mixed");
    let (_events, handle) = deps(Config::default()).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).prefetch(50)).await;
    let (_c, ch) = raw_channel().await;
    let body = |n: u64| match n % 4 {
        0 => b"{broken".to_vec(),
        1 => serde_json::to_vec(&json!({"action": "T_MIXED", "data": {"n": "not a number"}}))
            .unwrap(),
        _ => serde_json::to_vec(&json!({"action": "T_MIXED", "data": {"n": n}})).unwrap(),
    };
    let poison = (0..1000u64).filter(|n| n % 4 < 2).count() as u32;
    let good = 1000 - poison as usize;
    publish_all(&ch, &queue, (0..1000u64).map(body)).await;
    let handled = MIXED_GOOD.wait_for(good, Duration::from_secs(60)).await;
    let mut ns: Vec<u64> = handled.iter().map(|v| v.as_u64().unwrap()).collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns.len(), good, "every good message handled once");
    let dlq = handle.dead_letter_queue(&queue);
    wait_until!(
        Duration::from_secs(30),
        queue_len(&ch, &dlq).await >= poison
    );
    assert_eq!(
        queue_len(&ch, &dlq).await,
        poison,
        "every poison message dead-lettered"
    );
    let (mut not_json, mut invalid) = (0, 0);
    while let Some(m) = get_message(&ch, &dlq, Duration::from_millis(200)).await {
        match header(&m.delivery.properties, "x-dead-letter-code").as_deref() {
            Some("not-json") => not_json += 1,
            Some("invalid-data") => invalid += 1,
            other => panic!("unexpected reason {other:?}"),
        }
    }
    assert_eq!((not_json, invalid), (250, 250));
    assert_eq!(queue_len(&ch, &queue).await, 0, "nothing left behind");
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static FIXED: AtomicBool = AtomicBool::new(false);
static REDRIVEN: Recorder = Recorder::new();

#[consumer(action = "T_REDRIVE")]
async fn redriven(id: u32, ctx: MessageContext) -> Result<(), String> {
    if !FIXED.load(Ordering::SeqCst) {
        return Err("downstream is down".into());
    }
    REDRIVEN.record(json!({"id": id, "retry": ctx.retry_count(), "reason": ctx.header_str("x-dead-letter-reason")}));
    Ok(())
}

#[tokio::test]
async fn dead_letters_can_be_moved_back_to_their_queue() {
    let queue = unique("q-redrive");
    let retry = RetryConfig::default().with_max_retries(0);
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let (_c, ch) = raw_channel().await;
    for id in 0..3 {
        publish_envelope(&ch, "", &queue, "T_REDRIVE", json!({"id": id})).await;
    }
    let dlq = handle.dead_letter_queue(&queue);
    wait_until!(WAIT, queue_len(&ch, &dlq).await >= 3);
    assert_eq!(queue_len(&ch, &dlq).await, 3);
    FIXED.store(true, Ordering::SeqCst);
    assert_eq!(handle.redrive_dead_letters(&queue, 100).await.unwrap(), 3);
    let got = REDRIVEN.wait_for(3, WAIT).await;
    for v in &got {
        assert_eq!(v["retry"], 0, "retry count reset");
        assert_eq!(
            v["reason"],
            serde_json::Value::Null,
            "dead-letter headers removed"
        );
    }
    assert_eq!(queue_len(&ch, &dlq).await, 0);
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}
