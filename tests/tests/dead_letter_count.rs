//! Every dead-letter decision reaches the dead-letter queue exactly once: 5,000 poison
//! messages of every kind, and messages whose handler refuses them, consumed with many
//! deliveries in flight, leave exactly one dead letter each (counted by message id); and
//! a dead letter whose confirm comes late is not sent twice.

use eventrabbit::{Config, ConsumeChannel, Rejected, RetryConfig, State, consumer};
use eventrabbit_tests::*;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(serde::Deserialize)]
struct Job {
    #[allow(dead_code)]
    user_id: i64,
    #[allow(dead_code)]
    name: String,
}

#[consumer(action = "T_DUP_GOOD")]
async fn refuses(job: Job) -> Result<(), Rejected> {
    std::hint::black_box(job);
    Err(Rejected::new("this job is never taken"))
}

#[consumer(action = "T_DUP_FLAKY")]
async fn always_fails(job: Job) -> Result<(), String> {
    std::hint::black_box(job);
    Err("fails every time".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_poison_load_leaves_exactly_one_dead_letter_per_decision() {
    let retry = RetryConfig::default().with_max_retries(0);
    count_dead_letters(retry, false).await;
}

/// The same on a quorum queue, with failing handlers retried twice through the wait
/// queues before they are dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_then_dead_lettered_messages_on_a_quorum_queue_leave_one_dead_letter_each() {
    let retry = RetryConfig::default()
        .with_max_retries(2)
        .with_delay(Duration::from_millis(20));
    count_dead_letters(retry, true).await;
}

/// The same with every message asking for an answer in a queue that is gone: each error
/// reply is returned unroutable, and lapin hands a return to whichever confirm comes next
/// on the channel, often a dead letter's, which was then taken for unroutable and sent
/// again (issue 33's duplicates: identical headers, one decision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_answering_a_gone_caller_leaves_one_dead_letter_each() {
    let retry = RetryConfig::default().with_max_retries(0);
    count_dead_letters_replying(retry, false, Some("eventrabbit-test-no-such-reply-queue")).await;
}

async fn count_dead_letters(retry: RetryConfig, quorum: bool) {
    count_dead_letters_replying(retry, quorum, None).await;
}

async fn count_dead_letters_replying(retry: RetryConfig, quorum: bool, reply_to: Option<&str>) {
    let queue = unique("q-dup-dlq");
    let (_events, handle) = deps(Config::default().with_retry(retry)).await;
    let mut channel = ConsumeChannel::new(&queue)
        .actions(["T_DUP_GOOD", "T_DUP_FLAKY"])
        .prefetch(500)
        .max_message_size(4096);
    if quorum {
        channel = channel.quorum();
    }
    let task = start(&handle, channel).await;
    let (_c, ch) = raw_channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut cases = poison_cases("T_DUP_GOOD");
    cases.push((
        br#"{"action":"T_DUP_GOOD","data":{"user_id":1,"name":"a"}}"#.to_vec(),
        "rejected",
    ));
    cases.push((
        br#"{"action":"T_DUP_FLAKY","data":{"user_id":1,"name":"a"}}"#.to_vec(),
        "retries-exhausted",
    ));
    const N: usize = 5_000;
    let mut confirms = Vec::new();
    for i in 0..N {
        let (body, _) = &cases[i % cases.len()];
        let mut props = BasicProperties::default().with_message_id(format!("dup-{i}").into());
        if let Some(reply_to) = reply_to {
            props = props.with_reply_to(reply_to.into());
        }
        confirms.push(
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish"),
        );
    }
    for confirm in confirms {
        assert!(confirm.await.expect("confirm").is_ack());
    }
    let dlq = handle.dead_letter_queue(&queue);
    wait_until!(
        Duration::from_secs(120),
        queue_len(&ch, &dlq).await as usize >= N
    );
    // Everything settled: the queue is empty and nothing is unacknowledged.
    wait_until!(
        Duration::from_secs(30),
        unacked(&queue) == 0 && queue_len(&ch, &queue).await == 0
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut codes: HashMap<String, usize> = HashMap::new();
    for (id, code) in drain_dead_letters(&ch, &dlq).await {
        *copies.entry(id).or_default() += 1;
        *codes.entry(code).or_default() += 1;
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "dead-lettered more than once: {duplicated:?}"
    );
    assert_eq!(copies.len(), N, "one dead letter per message ({codes:?})");
    cleanup(&[&queue], &[]).await;
    let (_c2, ch2) = raw_channel().await;
    for delay in [20u64, 40] {
        let _ = ch2
            .queue_delete(
                format!("{queue}.retry.{delay}ms").as_str().into(),
                Default::default(),
            )
            .await;
    }
}

/// Lets the test decide when a handler finishes.
struct Gate {
    entered: Semaphore,
    open: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: Semaphore::new(0),
            open: Semaphore::new(0),
        }
    }
}

impl Gate {
    /// In a handler: says it started, then waits to be let through.
    async fn pass(&self) {
        self.entered.add_permits(1);
        self.open.acquire().await.expect("gate open").forget();
    }

    /// Waits until a handler has started (one not waited for before).
    async fn entered(&self) {
        let entered = tokio::time::timeout(Duration::from_secs(30), self.entered.acquire());
        entered.await.expect("a handler starts").unwrap().forget();
    }
}

#[consumer(action = "T_LATE_DLQ")]
async fn refuses_when_let_through(user_id: i64, gate: State<Arc<Gate>>) -> Result<(), Rejected> {
    std::hint::black_box(user_id);
    gate.pass().await;
    Err(Rejected::new("this job is never taken"))
}

#[consumer(action = "T_LATE_RETRY")]
async fn fails_when_let_through(user_id: i64, gate: State<Arc<Gate>>) -> Result<(), String> {
    std::hint::black_box(user_id);
    gate.pass().await;
    Err("fails every time".into())
}

/// The retry wait queue's delay in [`late_confirms_send_once`].
const LATE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A dead letter the broker takes but confirms only after `Config::settle_timeout` (a
/// slow disk, a busy node; here the confirm held in a proxy): the delivery is given back,
/// and when it comes again the late confirm says the dead letter is there. It is not
/// sent a second time (before, the redelivery sent the dead letter decided for it again:
/// two identical dead letters for one decision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_confirmed_late_is_not_sent_twice() {
    late_confirms_send_once("T_LATE_DLQ", 1).await;
}

/// The same for a retry: its copy in the wait queue confirmed late, the redelivered
/// message is acknowledged instead of run again (before, the handler ran again and sent a
/// second copy; both came back and were dead-lettered: two dead letters with the same
/// headers, the duplicates of issue 33).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_confirmed_late_is_not_sent_twice() {
    late_confirms_send_once("T_LATE_RETRY", 2).await;
}

/// Runs a message of `action` whose first run's retry or dead letter is confirmed late,
/// and counts the dead letters: one per message. `runs` is how often the handler runs for
/// a message before it is dead-lettered.
async fn late_confirms_send_once(action: &str, runs: u32) {
    let queue = unique("q-late-confirm");
    let proxy = Proxy::start().await;
    let gate = Arc::new(Gate::default());
    let retry = RetryConfig::default()
        .with_max_retries(runs - 1)
        .with_delay(LATE_RETRY_DELAY);
    let config = Config::default()
        .with_settle_timeout(Duration::from_millis(300))
        .with_retry(retry)
        .with_state(gate.clone());
    let (_events, handle) = deps_at(&proxy.url(), config).await;
    let task = start(&handle, ConsumeChannel::new(&queue).actions([action])).await;
    let (_c, ch) = raw_channel().await;
    let dlq = handle.dead_letter_queue(&queue);
    let wait_queue = format!("{queue}.retry.{}ms", LATE_RETRY_DELAY.as_millis());
    let body = format!(r#"{{"action":"{action}","data":{{"user_id":1}}}}"#);
    let send = |id: &'static str| {
        let ch = ch.clone();
        let queue = queue.clone();
        let body = body.clone();
        async move {
            let props = BasicProperties::default().with_message_id(id.into());
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish");
        }
    };
    // A first message, its retry and dead letter confirmed in time: the queues are
    // declared and the publishing channel open.
    gate.open.add_permits(runs as usize);
    send("late-0").await;
    for _ in 0..runs {
        gate.entered().await;
    }
    wait_until!(Duration::from_secs(30), queue_len(&ch, &dlq).await == 1);
    assert_eq!(queue_len(&ch, &dlq).await, 1);
    // The second: its first run's retry or dead letter reaches the broker, the confirm
    // waits in the proxy beyond the settle timeout, and the delivery is given back (after
    // a 1 s pause).
    send("late-1").await;
    gate.entered().await;
    proxy.hold_replies(true);
    gate.open.add_permits(1);
    let sent_to = if runs == 1 { &dlq } else { &wait_queue };
    let before = if runs == 1 { 1 } else { 0 };
    wait_until!(
        Duration::from_secs(30),
        queue_len(&ch, sent_to).await > before
    );
    assert!(
        queue_len(&ch, sent_to).await > before,
        "the broker has the first run's {}",
        if runs == 1 { "dead letter" } else { "retry" }
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.hold_replies(false);
    gate.open.add_permits(100);
    // The confirm arrives, then the delivery again; the retry comes back and is
    // dead-lettered.
    wait_until!(
        Duration::from_secs(30),
        queue_len(&ch, &dlq).await >= 2
            && queue_len(&ch, &queue).await == 0
            && unacked(&queue) == 0
            && (runs == 1 || queue_len(&ch, &wait_queue).await == 0)
    );
    assert_eq!(unacked(&queue), 0, "every delivery is settled");
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    let mut ids: Vec<String> = drain_dead_letters(&ch, &dlq)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["late-0", "late-1"], "one dead letter per message");
    cleanup(&[&queue, &dlq, &wait_queue], &[]).await;
}

/// Takes every message of `dlq`: its message id and dead-letter code.
async fn drain_dead_letters(ch: &lapin::Channel, dlq: &str) -> Vec<(String, String)> {
    let mut taken = Vec::new();
    while let Some(m) = get_message(ch, dlq, Duration::from_millis(500)).await {
        let props = &m.delivery.properties;
        let id = props
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        taken.push((id, header(props, "x-dead-letter-code").unwrap_or_default()));
    }
    taken
}
