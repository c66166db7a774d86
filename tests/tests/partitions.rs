//! Keyed order at scale on the real broker: per-key lanes in one consumer, and partitions
//! shared by several instances (processes), with failover after `kill -9`.

use eventrabbit::{
    Config, ConsumeChannel, ConsumerState, Error, OrderKey, Partitions, RetryConfig, State,
    consumer,
};
use eventrabbit_tests::{cleanup, deps, unique, wait_until};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What keyed handlers saw: the order of each key, and how many ran at once.
#[derive(Default)]
struct Track {
    seen: Mutex<Vec<(String, u64)>>,
    running: Mutex<HashMap<String, u32>>,
    now: Mutex<u32>,
    most: Mutex<u32>,
    /// Keys seen running twice at once.
    overlaps: Mutex<u32>,
    /// `(key, seq)` that fail their first attempt.
    fail_once: Mutex<Vec<(String, u64)>>,
    attempts: Mutex<Vec<(String, u64)>>,
}

impl Track {
    fn enter(&self, key: &str) {
        let mut running = self.running.lock().unwrap();
        let n = running.entry(key.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            *self.overlaps.lock().unwrap() += 1;
        }
        let mut now = self.now.lock().unwrap();
        *now += 1;
        let mut most = self.most.lock().unwrap();
        *most = (*most).max(*now);
    }

    fn leave(&self, key: &str) {
        *self.running.lock().unwrap().get_mut(key).unwrap() -= 1;
        *self.now.lock().unwrap() -= 1;
    }

    fn seen(&self) -> Vec<(String, u64)> {
        self.seen.lock().unwrap().clone()
    }
}

#[consumer(action = "T_LANE_EVENT")]
async fn lane_event(key: String, seq: u64, track: State<Arc<Track>>) -> Result<(), String> {
    track.enter(&key);
    track.attempts.lock().unwrap().push((key.clone(), seq));
    tokio::time::sleep(Duration::from_micros(fastrand::u64(..5_000))).await;
    let fail = {
        let mut fail_once = track.fail_once.lock().unwrap();
        let at = fail_once.iter().position(|f| f.0 == key && f.1 == seq);
        at.map(|i| fail_once.remove(i)).is_some()
    };
    if !fail {
        track.seen.lock().unwrap().push((key.clone(), seq));
    }
    track.leave(&key);
    if fail {
        Err(format!("{key}#{seq} fails once"))
    } else {
        Ok(())
    }
}

/// Each key's sequence numbers, in the order they were handled.
fn by_key(seen: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, seq) in seen {
        keys.entry(key.clone()).or_default().push(*seq);
    }
    keys
}

fn bounded_retry() -> RetryConfig {
    RetryConfig::default()
        .with_max_retries(3)
        .with_delay(Duration::from_millis(50))
}

/// Publishes `per_key` events to each of `keys` keys, round robin, to `queue` through the
/// default exchange.
async fn publish_keys(events: &eventrabbit::Events, queue: &str, keys: u64, per_key: u64) {
    publish_keyed(events, "", |_| queue.to_owned(), keys, per_key).await;
}

/// Publishes `per_key` events to each of `keys` keys, round robin, to `exchange` with the
/// routing key `routing(key)`.
async fn publish_keyed(
    events: &eventrabbit::Events,
    exchange: &str,
    routing: impl Fn(&str) -> String,
    keys: u64,
    per_key: u64,
) {
    for seq in 0..per_key {
        for k in 0..keys {
            let key = format!("k{k}");
            events
                .publish(
                    exchange,
                    &routing(&key),
                    "T_LANE_EVENT",
                    &json!({"key": key, "seq": seq}),
                )
                .await
                .expect("publish");
        }
    }
}

/// Every one of `keys` keys was seen with its `per_key` events, each in order.
fn assert_each_key_in_order(seen: &[(String, u64)], keys: usize, per_key: u64) {
    let by = by_key(seen);
    assert_eq!(by.len(), keys);
    for (key, seqs) in &by {
        assert_eq!(seqs, &(0..per_key).collect::<Vec<_>>(), "key {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_lanes_keep_each_keys_order_while_keys_run_in_parallel() {
    let queue = unique("lanes");
    let track = Arc::new(Track::default());
    let config = Config::default().with_state(track.clone());
    let (events, handle) = deps(config).await;
    let channel = ConsumeChannel::new(&queue)
        .actions(["T_LANE_EVENT"])
        .prefetch(32)
        .durable(false)
        .retry(bounded_retry())
        .order_by(OrderKey::field("key"));
    let task = eventrabbit_tests::start(&handle, channel).await;
    publish_keys(&events, &queue, 20, 100).await;
    wait_until!(Duration::from_secs(60), track.seen().len() >= 2_000);
    let keys = by_key(&track.seen());
    assert_eq!(keys.len(), 20);
    for (key, seqs) in &keys {
        assert_eq!(
            seqs,
            &(0..100).collect::<Vec<_>>(),
            "key {key} out of order or incomplete"
        );
    }
    assert_eq!(
        *track.overlaps.lock().unwrap(),
        0,
        "a key ran twice at once"
    );
    let most = *track.most.lock().unwrap();
    assert!(
        most > 1,
        "keys never ran in parallel (at most {most} at once)"
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_waits_for_its_retried_message_while_other_keys_go_on() {
    let queue = unique("lanes-retry");
    let track = Arc::new(Track::default());
    track.fail_once.lock().unwrap().extend([
        ("k0".to_owned(), 3),
        ("k1".to_owned(), 0),
        ("k1".to_owned(), 7),
    ]);
    let config = Config::default().with_state(track.clone());
    let (events, handle) = deps(config).await;
    let channel = ConsumeChannel::new(&queue)
        .actions(["T_LANE_EVENT"])
        .prefetch(16)
        .durable(false)
        .retry(bounded_retry())
        .order_by(OrderKey::field("key"));
    let task = eventrabbit_tests::start(&handle, channel).await;
    publish_keys(&events, &queue, 4, 20).await;
    wait_until!(Duration::from_secs(60), track.seen().len() >= 80);
    let keys = by_key(&track.seen());
    for (key, seqs) in &keys {
        assert_eq!(
            seqs,
            &(0..20).collect::<Vec<_>>(),
            "key {key}: a retry reordered it"
        );
    }
    // The retried message ran again right after its failure, before its key's next one.
    let attempts = by_key(&track.attempts.lock().unwrap());
    let k0 = &attempts["k0"];
    let at = k0.iter().position(|s| *s == 3).unwrap();
    assert_eq!(&k0[at..at + 3], &[3, 3, 4], "k0: {k0:?}");
    let (_conn, ch) = eventrabbit_tests::raw_channel().await;
    let dlq = handle.dead_letter_queue(&queue);
    assert_eq!(
        eventrabbit_tests::queue_len(&ch, &dlq).await,
        0,
        "nothing dead-lettered"
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn a_keyed_consumer_refuses_a_retry_policy_that_would_hold_a_key_forever() {
    let queue = unique("lanes-unbounded");
    let (_events, handle) = deps(Config::default().with_state(Arc::new(Track::default()))).await;
    let unbounded = ConsumeChannel::new(&queue)
        .actions(["T_LANE_EVENT"])
        .durable(false)
        .order_by(OrderKey::RoutingKey);
    let e = handle.consume(unbounded).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::InvalidQueue { .. }), "{e:?}");
    assert!(
        text.contains(&queue) && text.contains("T_LANE_EVENT") && text.contains("without limit"),
        "{text}"
    );
    let long = ConsumeChannel::new(&queue)
        .actions(["T_LANE_EVENT"])
        .durable(false)
        .retry(
            RetryConfig::default()
                .with_max_retries(10)
                .with_delay(Duration::from_secs(120)),
        )
        .order_by(OrderKey::RoutingKey);
    let text = handle.consume(long).await.unwrap_err().to_string();
    assert!(text.contains("600 s"), "{text}");
}

/// Partition slots of `handle` that are consuming.
async fn held(handle: &eventrabbit::Handle, exchange: &str) -> usize {
    let prefix = format!("{exchange}.p");
    handle
        .health()
        .await
        .consumers
        .iter()
        .filter(|c| c.queue.starts_with(&prefix) && c.state == ConsumerState::Running)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_shared_by_instances_and_each_key_keeps_its_order() {
    let exchange = unique("parts");
    let track = Arc::new(Track::default());
    let partitions = Partitions::new(&exchange, 4)
        .rebalance_interval(Duration::from_millis(200))
        .configure(|channel| {
            channel
                .actions(["T_LANE_EVENT"])
                .prefetch(16)
                .durable(false)
                .retry(bounded_retry())
        });
    let (events, first) = deps(Config::default().with_state(track.clone())).await;
    let (_e2, second) = deps(Config::default().with_state(track.clone())).await;
    let a = first
        .start_partitions(partitions.clone())
        .await
        .expect("first instance");
    wait_until!(Duration::from_secs(10), held(&first, &exchange).await == 4);
    assert_eq!(
        held(&first, &exchange).await,
        4,
        "alone, it takes every partition: {:?}",
        first.health().await
    );
    let b = second
        .start_partitions(partitions.clone())
        .await
        .expect("second instance");
    wait_until!(
        Duration::from_secs(15),
        held(&first, &exchange).await == 2 && held(&second, &exchange).await == 2
    );
    assert_eq!(
        (
            held(&first, &exchange).await,
            held(&second, &exchange).await
        ),
        (2, 2),
        "spread evenly"
    );
    publish_keyed(&events, &exchange, str::to_owned, 40, 50).await;
    wait_until!(Duration::from_secs(60), track.seen().len() >= 2_000);
    assert_each_key_in_order(&track.seen(), 40, 50);
    assert_eq!(
        *track.overlaps.lock().unwrap(),
        0,
        "a key ran twice at once"
    );
    // Stopping one instance hands its partitions to the other.
    first.shutdown().await;
    a.join().await.unwrap();
    wait_until!(Duration::from_secs(15), held(&second, &exchange).await == 4);
    assert_eq!(
        held(&second, &exchange).await,
        4,
        "the survivor took every partition"
    );
    second.shutdown().await;
    b.join().await.unwrap();
    let queues: Vec<String> = (0..4).map(|i| partitions.queue(i)).collect();
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    cleanup(&names, &[&exchange]).await;
}

/// A member process writing what it handles to `file`.
fn member(exchange: &str, name: &str, file: &std::path::Path) -> tokio::process::Child {
    member_of(exchange, name, file, "queues")
}

/// A member process of partition queues (`queues`) or of a partitioned log (`log`).
fn member_of(
    exchange: &str,
    name: &str,
    file: &std::path::Path,
    kind: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_partition_member"))
        .args([exchange, "4", name, file.to_str().unwrap(), kind])
        .env("AMQP_ADDR", eventrabbit_tests::amqp_addr())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn partition_member")
}

async fn until_running(child: &mut tokio::process::Child) {
    use tokio::io::AsyncBufReadExt;
    let out = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(line, Ok(Ok(Some(ref l))) if l == "member running"),
        "{line:?}"
    );
}

/// `(instance, key, seq)` lines of the shared file.
fn lines(file: &std::path::Path) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Publishes `per_key` events to each of `keys` keys on `exchange` (the key as routing
/// key), a round of keys at a time with a pause between rounds, in a task.
fn publishing(
    events: eventrabbit::Events,
    exchange: &str,
    keys: u64,
    per_key: u64,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let exchange = exchange.to_owned();
    tokio::spawn(async move {
        for seq in 0..per_key {
            for k in 0..keys {
                events
                    .publish(
                        &exchange,
                        &format!("k{k}"),
                        "T_PART_EVENT",
                        &json!({"key": format!("k{k}"), "seq": seq}),
                    )
                    .await
                    .expect("publish");
            }
            tokio::time::sleep(pause).await;
        }
    })
}

/// Kills `child` with `kill -9` and reaps it.
async fn kill_9(child: &mut tokio::process::Child) {
    let pid = child.id().expect("the child runs");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = child.wait().await;
}

/// Whether `file` holds every event of `keys` keys × `per_key`.
fn complete(file: &std::path::Path, keys: u64, per_key: u64) -> bool {
    let mut have: HashMap<String, std::collections::HashSet<u64>> = HashMap::new();
    for (_, key, seq) in lines(file) {
        have.entry(key).or_default().insert(seq);
    }
    have.len() as u64 == keys && have.values().all(|s| s.len() as u64 == per_key)
}

/// Asserts that no event was handled before the one before it of its key (a redelivered
/// event may be handled again, never ahead of its predecessor); returns how many were
/// handled again.
fn assert_never_ahead(seen: &[(String, String, u64)]) -> usize {
    let mut done: HashMap<&str, std::collections::HashSet<u64>> = HashMap::new();
    let mut again = 0;
    for (who, key, seq) in seen {
        let had = done.entry(key.as_str()).or_default();
        assert!(
            *seq == 0 || had.contains(&(seq - 1)),
            "{who} handled {key}#{seq} before {key}#{}",
            seq - 1
        );
        if !had.insert(*seq) {
            again += 1;
        }
    }
    again
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_fails_over_when_its_process_is_killed_with_nothing_lost_and_order_kept() {
    let exchange = unique("parts-kill");
    let dir = std::env::temp_dir().join(unique("parts-kill"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("handled");
    let mut a = member(&exchange, "a", &file);
    until_running(&mut a).await;
    let mut b = member(&exchange, "b", &file);
    until_running(&mut b).await;
    let (events, _handle) = deps(Config::default()).await;
    const KEYS: u64 = 50;
    const PER_KEY: u64 = 80;
    let publisher = publishing(events, &exchange, KEYS, PER_KEY, Duration::from_millis(20));
    // Both instances handle events before one of them dies.
    let both = || {
        let seen = lines(&file);
        seen.iter().any(|l| l.0 == "a") && seen.iter().any(|l| l.0 == "b")
    };
    wait_until!(Duration::from_secs(30), both());
    assert!(
        both(),
        "the partitions were never spread over both instances"
    );
    kill_9(&mut a).await;
    let killed_at = lines(&file).len();
    publisher.await.unwrap();
    wait_until!(Duration::from_secs(60), complete(&file, KEYS, PER_KEY));
    assert!(
        complete(&file, KEYS, PER_KEY),
        "events were lost after the kill"
    );
    let seen = lines(&file);
    assert!(
        seen[killed_at..].iter().all(|l| l.0 == "b"),
        "only the survivor handles after the kill"
    );
    let a_keys: std::collections::HashSet<&str> = seen[..killed_at]
        .iter()
        .filter(|l| l.0 == "a")
        .map(|l| l.1.as_str())
        .collect();
    let taken_over = seen[killed_at..]
        .iter()
        .filter(|l| a_keys.contains(l.1.as_str()))
        .count();
    assert!(
        taken_over > 0,
        "the killed instance's partitions were never taken over"
    );
    assert_never_ahead(&seen);
    let _ = b.kill().await;
    let queues: Vec<String> = (0..4).map(|i| format!("{exchange}.p{i}")).collect();
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    cleanup(&names, &[&exchange]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_on_a_broker_without_the_consistent_hash_plugin_fail_at_start_naming_it() {
    // The local cluster's nodes run without plugins.
    let _ = eventrabbit_tests::cluster::cluster_urls();
    let url = eventrabbit_tests::cluster::node_url(1);
    let config = Config::default().with_state(Arc::new(Track::default()));
    let (_events, handle) = eventrabbit_tests::deps_at(&url, config).await;
    let partitions = Partitions::new(unique("parts-no-plugin"), 2).configure(|channel| {
        channel
            .actions(["T_LANE_EVENT"])
            .durable(false)
            .retry(bounded_retry())
    });
    let started =
        tokio::time::timeout(Duration::from_secs(30), handle.start_partitions(partitions)).await;
    let e = started
        .expect("it fails at once, it does not retry")
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"),
        "{text}"
    );
}

/// Partition readers of `handle` that are reading (`<log>.p<i>#<name>`).
async fn reading(handle: &eventrabbit::Handle, log: &str) -> usize {
    let prefix = format!("{log}.p");
    handle
        .health()
        .await
        .consumers
        .iter()
        .filter(|c| c.queue.starts_with(&prefix) && c.state == ConsumerState::Running)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_log_is_read_by_instances_sharing_its_partitions_each_key_in_order() {
    let log = unique("plog");
    let exchange = unique("plog-x");
    let track = Arc::new(Track::default());
    let (events, first) = deps(Config::default().with_state(track.clone())).await;
    let (_e2, second) = deps(Config::default().with_state(track.clone())).await;
    let partitioned = eventrabbit::EventLog::new(&log)
        .bind(eventrabbit::Binding::fanout(&exchange))
        .partitions(4);
    first
        .declare_log(&partitioned)
        .await
        .expect("declare the partitioned log");
    let reader = eventrabbit::StreamConsumer::new(&log)
        .name("proj")
        .partitions(4)
        .rebalance_interval(Duration::from_millis(200))
        .actions(["T_LANE_EVENT"])
        .retry(bounded_retry());
    let a = first
        .start_replay(reader.clone())
        .await
        .expect("first reader");
    let b = second
        .start_replay(reader.clone())
        .await
        .expect("second reader");
    wait_until!(
        Duration::from_secs(15),
        reading(&first, &log).await == 2 && reading(&second, &log).await == 2
    );
    assert_eq!(
        (reading(&first, &log).await, reading(&second, &log).await),
        (2, 2),
        "spread evenly"
    );
    publish_keyed(&events, &exchange, str::to_owned, 30, 20).await;
    wait_until!(Duration::from_secs(60), track.seen().len() >= 600);
    assert_each_key_in_order(&track.seen(), 30, 20);
    // An unnamed reader reads every partition itself, each key in order.
    let replayed = Arc::new(Track::default());
    let (_e3, third) = deps(Config::default().with_state(replayed.clone())).await;
    let all = eventrabbit::StreamConsumer::new(&log)
        .partitions(4)
        .actions(["T_LANE_EVENT"])
        .retry(bounded_retry());
    let c = third.start_replay(all).await.expect("unnamed reader");
    wait_until!(Duration::from_secs(60), replayed.seen().len() >= 600);
    for (key, seqs) in &by_key(&replayed.seen()) {
        assert_eq!(seqs, &(0..20).collect::<Vec<_>>(), "replayed key {key}");
    }
    for (handle, consumer) in [(first, a), (second, b), (third, c)] {
        handle.shutdown().await;
        consumer.join().await.unwrap();
    }
    let mut names: Vec<String> = (0..4).map(|i| partitioned.partition(i)).collect();
    names.extend((0..4).map(|i| format!("{}.proj.lease", partitioned.partition(i))));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cleanup(&refs, &[&log, &exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_log_reader_killed_with_kill_9_is_resumed_per_partition_from_stored_offsets()
{
    let log = unique("plog-kill");
    let dir = std::env::temp_dir().join(unique("plog-kill"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("handled");
    let (events, handle) = deps(Config::default()).await;
    let partitioned = eventrabbit::EventLog::new(&log).partitions(4);
    handle.declare_log(&partitioned).await.expect("declare");
    let mut a = member_of(&log, "a", &file, "log");
    until_running(&mut a).await;
    let mut b = member_of(&log, "b", &file, "log");
    until_running(&mut b).await;
    const KEYS: u64 = 40;
    const PER_KEY: u64 = 60;
    // Published to the log's own exchange (its name), keyed by the routing key.
    let publisher = publishing(events, &log, KEYS, PER_KEY, Duration::from_millis(25));
    let handled_by = |who: &str| lines(&file).iter().filter(|l| l.0 == who).count();
    wait_until!(
        Duration::from_secs(30),
        handled_by("a") >= 200 && handled_by("b") > 0
    );
    assert!(
        handled_by("a") >= 200 && handled_by("b") > 0,
        "both readers read"
    );
    kill_9(&mut a).await;
    let killed_at = lines(&file).len();
    publisher.await.unwrap();
    wait_until!(Duration::from_secs(60), complete(&file, KEYS, PER_KEY));
    assert!(
        complete(&file, KEYS, PER_KEY),
        "events were lost after the kill"
    );
    let seen = lines(&file);
    assert!(
        seen[killed_at..].iter().all(|l| l.0 == "b"),
        "only the survivor reads after the kill"
    );
    let again = assert_never_ahead(&seen);
    // Resumed from the killed reader's stored positions (every 5 events or 100 ms), not
    // from the start of its partitions: few events are read twice.
    let a_read = seen[..killed_at].iter().filter(|l| l.0 == "a").count();
    assert!(
        again < 100 && again < a_read / 2,
        "{again} events read twice (the killed reader had read {a_read})"
    );
    let _ = b.kill().await;
    let mut names: Vec<String> = (0..4).map(|i| partitioned.partition(i)).collect();
    names.extend((0..4).map(|i| format!("{}.proj.lease", partitioned.partition(i))));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cleanup(&refs, &[&log]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader name that makes the lease queue's name (`<log>.p<i>.<name>.lease`, two bytes
/// longer than its dead-letter queue's) too long for AMQP is refused at start, naming the
/// lease queue, before anything reaches the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_reader_whose_lease_queue_name_would_not_fit_is_refused_at_start() {
    let log = unique("plog-long");
    let (_events, handle) = deps(Config::default().with_state(Arc::new(Track::default()))).await;
    handle
        .declare_log(&eventrabbit::EventLog::new(&log).partitions(4))
        .await
        .expect("declare");
    let lease_len = |name: usize| log.len() + ".p3.".len() + name + ".lease".len();
    let name = "n".repeat(256 - lease_len(0));
    assert_eq!(lease_len(name.len()), 256);
    let reader = eventrabbit::StreamConsumer::new(&log)
        .name(name)
        .partitions(4)
        .actions(["T_LANE_EVENT"])
        .retry(bounded_retry());
    let started = tokio::time::timeout(Duration::from_secs(30), handle.start_replay(reader)).await;
    let e = started.expect("it fails at once").unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    assert!(e.to_string().contains("lease"), "{e}");
    let names: Vec<String> = (0..4).map(|i| format!("{log}.p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cleanup(&refs, &[&log]).await;
}
