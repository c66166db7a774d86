//! Fault tests on a real local 3-node cluster (`scripts/cluster`, started on first use):
//! quorum queues keep every confirmed message when the node a client is connected to is
//! killed, when a consumer's node dies, when the queue leader's node stops, and when the
//! whole cluster is down for a while. Each test prints its figures (lost, duplicates,
//! time to resume). The tests take turns: they kill nodes.

use eventrabbit::{
    Config, ConsumeChannel, Error, Events, Handle, build_event_dependencies, consumer,
};
use eventrabbit_tests::cluster::*;
use eventrabbit_tests::{init_test_log, unique, wait_until};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a test body, failing it (rather than hanging CI) if it takes over 5 minutes.
async fn bounded(body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(300), body)
        .await
        .is_err()
    {
        panic!("the cluster test did not finish within 5 minutes");
    }
}

/// Starts every node that is down when dropped, even if the test panicked.
struct Heal;

impl Drop for Heal {
    fn drop(&mut self) {
        heal();
    }
}

/// A progress line on stderr with the time, so a stalled test shows where it stalled.
fn progress(what: &str) {
    eprintln!("[{:?}] {what}", std::time::SystemTime::now());
}

/// What a consumer saw, by queue: how many times each `n` was handled.
static SEEN: Mutex<Option<HashMap<String, HashMap<u64, u32>>>> = Mutex::new(None);

#[consumer(action = "T_CLUSTER")]
async fn seen(n: u64, ctx: eventrabbit::MessageContext) {
    let mut seen = SEEN.lock().unwrap();
    *seen
        .get_or_insert_with(HashMap::new)
        .entry(ctx.queue().to_owned())
        .or_default()
        .entry(n)
        .or_default() += 1;
}

/// Distinct messages handled on `queue`, and how many were handled more than once.
fn tally(queue: &str) -> (usize, u32) {
    let seen = SEEN.lock().unwrap();
    let map = seen
        .as_ref()
        .and_then(|s| s.get(queue))
        .cloned()
        .unwrap_or_default();
    (map.len(), map.values().map(|c| c - 1).sum())
}

fn config() -> Config {
    Config::default()
        .with_max_reconnect_delay(Duration::from_millis(500))
        .with_connect_timeout(Duration::from_secs(3))
        .with_heartbeat(Duration::from_secs(5))
        .with_publish_timeout(Duration::from_secs(30))
}

async fn connect(config: Config) -> (Events, Handle) {
    init_test_log();
    build_event_dependencies(cluster_urls(), config)
        .await
        .expect("build_event_dependencies")
}

/// Declares `queue` as a quorum queue, as eventrabbit does, through node `n`.
async fn declare_quorum(queue: &str, n: usize) {
    let conn = Connection::connect(&node_url(n), ConnectionProperties::default())
        .await
        .expect("a cluster node");
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(format!("{queue}.dlq").into()),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("quorum queue declared");
    let _ = conn.close(200, "done".into()).await;
}

/// The node `handle`'s connection goes to now.
async fn connected_node(handle: &Handle) -> usize {
    wait_until!(
        Duration::from_secs(30),
        handle.health().await.node.is_some()
    );
    node_of(&handle.health().await.node.expect("connected"))
}

/// Publishes `0..count` to `queue`, 100 at a time, each until the broker confirms it
/// (a publish that failed was not confirmed: it is sent again). Returns how many attempts
/// failed; `done` counts the confirmed ones.
async fn publish_all(events: &Events, queue: &str, count: u64, done: &AtomicU64) -> u64 {
    let mut failed = 0;
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let sends = chunk.iter().map(|n| async move {
            let mut failures = 0u64;
            loop {
                match events
                    .publish("", queue, "T_CLUSTER", &json!({"n": n}))
                    .await
                {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::SeqCst);
                        return failures;
                    }
                    Err(e) => {
                        failures += 1;
                        // 100 ms apart: a minute of failures is no fail-over any more.
                        assert!(
                            failures < 600,
                            "publish of {n} still failing after a minute: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        failed += futures_util::future::join_all(sends)
            .await
            .into_iter()
            .sum::<u64>();
    }
    failed
}

/// (a) 10,000 confirmed publishes to a quorum queue while the node the client is
/// connected to is killed hard and later restarted: every confirmed message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_publishes_survive_a_hard_kill_of_the_connected_node() {
    bounded(confirmed_publishes_survive_a_hard_kill_of_the_connected_node_body()).await;
}

async fn confirmed_publishes_survive_a_hard_kill_of_the_connected_node_body() {
    let _serial = SERIAL.lock().await;
    let _heal = Heal;
    heal();
    const N: u64 = 10_000;
    let queue = unique("q-cl-kill");
    let (events, handle) = connect(config()).await;
    // Connects; the queue does not exist yet, so this one goes nowhere.
    events
        .publish("", &queue, "T_CLUSTER", &json!({"n": N}))
        .await
        .expect("a first publish");
    let victim = connected_node(&handle).await;
    // Declared through the node the client is connected to, so that node is the queue's
    // leader: the kill takes the connection and the leader at once, and the publishes
    // resume on a node that has to find the newly elected leader.
    declare_quorum(&queue, victim).await;
    let done = AtomicU64::new(0);
    let publishing = publish_all(&events, &queue, N, &done);
    let killing = async {
        wait_until!(
            Duration::from_secs(60),
            done.load(Ordering::SeqCst) >= 2_000
        );
        tokio::task::block_in_place(|| kill_node(victim));
        progress(&format!(
            "killed node {victim} after {} confirmed",
            done.load(Ordering::SeqCst)
        ));
        Instant::now()
    };
    let (failed, killed_at) = tokio::join!(publishing, killing);
    let publish_time_after_kill = killed_at.elapsed();
    progress(&format!(
        "published all, {failed} failed attempts; restarting node {victim}"
    ));
    tokio::task::block_in_place(|| start_node(victim));
    progress("node restarted; consuming");
    let _task = {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(&queue).quorum().prefetch(200);
        tokio::spawn(async move { handle.consume(channel).await })
    };
    wait_until!(Duration::from_secs(120), tally(&queue).0 >= N as usize);
    let (distinct, duplicates) = tally(&queue);
    println!(
        "cluster (a): killed node {victim} after 2,000 of {N}; {failed} publish attempts failed and were sent again; \
         the rest took {publish_time_after_kill:?}; {distinct} distinct consumed (of {} confirmed), {duplicates} duplicates, \
         lost {}; {} connections opened",
        N,
        (N as usize).saturating_sub(distinct),
        events.connections_opened()
    );
    assert_eq!(distinct, N as usize, "no confirmed message lost");
    assert!(events.connections_opened() >= 2, "it did fail over");
    handle.shutdown_within(Duration::from_secs(10)).await;
}

/// (b) A consumer connected to a node that dies resumes on another node and finishes
/// the 10,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_on_another_node_when_its_node_dies() {
    bounded(a_consumer_resumes_on_another_node_when_its_node_dies_body()).await;
}

async fn a_consumer_resumes_on_another_node_when_its_node_dies_body() {
    let _serial = SERIAL.lock().await;
    let _heal = Heal;
    heal();
    const N: u64 = 10_000;
    let queue = unique("q-cl-consumer");
    declare_quorum(&queue, 1).await;
    let (loader, loader_handle) = connect(config()).await;
    let done = AtomicU64::new(0);
    publish_all(&loader, &queue, N, &done).await;
    loader_handle.shutdown().await;
    let (events, handle) = connect(config()).await;
    let _task = {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(&queue).quorum().prefetch(100);
        tokio::spawn(async move { handle.consume(channel).await })
    };
    wait_until!(Duration::from_secs(60), tally(&queue).0 >= 2_000);
    let victim = connected_node(&handle).await;
    let before = tally(&queue).0;
    kill_node(victim);
    let killed_at = Instant::now();
    // Beyond what was in flight at the kill (the prefetch window).
    wait_until!(Duration::from_secs(60), tally(&queue).0 > before + 300);
    let resumed_after = killed_at.elapsed();
    wait_until!(Duration::from_secs(120), tally(&queue).0 >= N as usize);
    let (distinct, duplicates) = tally(&queue);
    let now_on = connected_node(&handle).await;
    println!(
        "cluster (b): killed node {victim} after {before} of {N} handled; resumed on node {now_on} within {resumed_after:?}; \
         {distinct} distinct handled, {duplicates} duplicates, lost {}",
        (N as usize).saturating_sub(distinct)
    );
    assert_eq!(distinct, N as usize, "every message handled");
    assert_ne!(now_on, victim);
    start_node(victim);
    let _ = events;
    handle.shutdown_within(Duration::from_secs(10)).await;
}

/// (c) The node leading the quorum queue is stopped while messages are published and
/// consumed: nothing confirmed is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_confirmed_is_lost_when_the_leader_node_stops() {
    bounded(nothing_confirmed_is_lost_when_the_leader_node_stops_body()).await;
}

async fn nothing_confirmed_is_lost_when_the_leader_node_stops_body() {
    let _serial = SERIAL.lock().await;
    let _heal = Heal;
    heal();
    const N: u64 = 5_000;
    let queue = unique("q-cl-leader");
    declare_quorum(&queue, 1).await;
    let leader = leader_of(&queue, 1).expect("the queue has a leader");
    let (events, handle) = connect(config()).await;
    let _task = {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(&queue).quorum().prefetch(100);
        tokio::spawn(async move { handle.consume(channel).await })
    };
    let done = AtomicU64::new(0);
    let publishing = publish_all(&events, &queue, N, &done);
    let stopping = async {
        wait_until!(
            Duration::from_secs(60),
            done.load(Ordering::SeqCst) >= 1_000
        );
        tokio::task::block_in_place(|| stop_node(leader));
    };
    let (failed, ()) = tokio::join!(publishing, stopping);
    let survivor = (1..=3).find(|n| *n != leader).unwrap();
    let new_leader = leader_of(&queue, survivor);
    wait_until!(Duration::from_secs(120), tally(&queue).0 >= N as usize);
    let (distinct, duplicates) = tally(&queue);
    println!(
        "cluster (c): stopped leader node {leader} after 1,000 of {N}; new leader {new_leader:?}; {failed} publish attempts \
         failed and were sent again; {distinct} distinct handled, {duplicates} duplicates, lost {}",
        (N as usize).saturating_sub(distinct)
    );
    assert_eq!(distinct, N as usize, "no confirmed message lost");
    start_node(leader);
    handle.shutdown_within(Duration::from_secs(10)).await;
}

/// (d) While the whole cluster is down a publish fails by its deadline; once the cluster
/// is back, the same instance publishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_in_a_total_outage_fails_by_its_deadline_then_succeeds() {
    bounded(a_publish_in_a_total_outage_fails_by_its_deadline_then_succeeds_body()).await;
}

async fn a_publish_in_a_total_outage_fails_by_its_deadline_then_succeeds_body() {
    let _serial = SERIAL.lock().await;
    let _heal = Heal;
    heal();
    let queue = unique("q-cl-outage");
    declare_quorum(&queue, 1).await;
    let (events, handle) = connect(config().with_publish_timeout(Duration::from_secs(3))).await;
    events
        .publish("", &queue, "T_CLUSTER", &json!({"n": 0}))
        .await
        .expect("before the outage");
    for n in 1..=3 {
        stop_node(n);
    }
    let started = Instant::now();
    let during = tokio::time::timeout(
        Duration::from_secs(10),
        events.publish("", &queue, "T_CLUSTER", &json!({"n": 1})),
    )
    .await
    .expect("the publish returns by its deadline");
    let failed_after = started.elapsed();
    assert!(matches!(during, Err(Error::Unavailable(..))), "{during:?}");
    heal();
    let healed_at = Instant::now();
    let mut after = events
        .publish("", &queue, "T_CLUSTER", &json!({"n": 2}))
        .await;
    while after.is_err() && healed_at.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = events
            .publish("", &queue, "T_CLUSTER", &json!({"n": 2}))
            .await;
    }
    println!(
        "cluster (d): during the outage the publish failed after {failed_after:?} (deadline 3 s); \
         after the cluster came back it succeeded within {:?}",
        healed_at.elapsed()
    );
    after.expect("published once the cluster is back");
    handle.shutdown_within(Duration::from_secs(5)).await;
}

/// Fails the first attempt of each message, succeeds on its retry.
#[consumer(action = "T_CLUSTER_FLAKY")]
async fn flaky(n: u64, ctx: eventrabbit::MessageContext) -> Result<(), String> {
    if ctx.retry_count() == 0 {
        return Err("the first attempt fails".into());
    }
    seen(n, ctx).await;
    Ok(())
}

/// Delayed publishes and retries go on while the node leading their wait queues is
/// stopped: on a cluster (quorum queues) the wait queues are quorum queues too. Before,
/// the wait queues were classic queues homed on one node, and with that node stopped every
/// delayed publish failed with `NOT_FOUND - home node .. down or inaccessible`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_publishes_and_retries_go_on_with_a_node_stopped() {
    bounded(delayed_publishes_and_retries_go_on_with_a_node_stopped_body()).await;
}

async fn delayed_publishes_and_retries_go_on_with_a_node_stopped_body() {
    let _serial = SERIAL.lock().await;
    let _heal = Heal;
    heal();
    let queue = unique("q-cl-delay");
    let quorum =
        eventrabbit::QueueConfig::default().with_queue_type(eventrabbit::QueueType::Quorum);
    let config = config()
        .with_queue(quorum)
        .with_retry(eventrabbit::RetryConfig::default().with_delay(Duration::from_millis(500)));
    let (events, handle) = connect(config).await;
    let consuming = {
        let handle = handle.clone();
        let spec = ConsumeChannel::new(&queue).actions(["T_CLUSTER", "T_CLUSTER_FLAKY"]);
        tokio::spawn(async move { handle.consume(spec).await })
    };
    wait_until!(
        Duration::from_secs(60),
        handle
            .health()
            .await
            .consumers
            .iter()
            .any(|c| c.state == eventrabbit::ConsumerState::Running)
    );
    // Both wait queues exist (declared by a first delayed publish and a first retry).
    let delay = Duration::from_secs(1);
    events
        .publish_after(delay, "", &queue, "T_CLUSTER", &json!({"n": 0}))
        .await
        .expect("a delayed publish with every node up");
    events
        .publish("", &queue, "T_CLUSTER_FLAKY", &json!({"n": 1}))
        .await
        .unwrap();
    wait_until!(Duration::from_secs(60), tally(&queue).0 >= 2);
    let delay_queue = format!("eventrabbit.delay.quorum.1000ms::{queue}");
    let retry_queue = format!("{queue}.retry.500ms");
    let via = (1..=3)
        .find(|n| leader_of(&delay_queue, *n).is_some())
        .unwrap_or(1);
    let leader = leader_of(&delay_queue, via).expect("the delay queue is a quorum queue");
    progress(&format!("stopping node {leader}, leader of {delay_queue}"));
    stop_node(leader);
    // Delayed publishes and retries while that node is down.
    for n in 10..20u64 {
        events
            .publish_after(delay, "", &queue, "T_CLUSTER", &json!({"n": n}))
            .await
            .unwrap_or_else(|e| panic!("delayed publish {n} with node {leader} down: {e}"));
    }
    for n in 20..25u64 {
        events
            .publish("", &queue, "T_CLUSTER_FLAKY", &json!({"n": n}))
            .await
            .unwrap_or_else(|e| panic!("publish {n} with node {leader} down: {e}"));
    }
    wait_until!(Duration::from_secs(90), tally(&queue).0 >= 17);
    let (distinct, _) = tally(&queue);
    assert_eq!(distinct, 17, "every delayed and retried message handled");
    let retry_leader = (1..=3)
        .filter(|n| *n != leader)
        .find_map(|n| leader_of(&retry_queue, n));
    assert!(
        retry_leader.is_some(),
        "the retry wait queue is a quorum queue"
    );
    start_node(leader);
    handle.shutdown().await;
    consuming.await.unwrap().unwrap();
}
