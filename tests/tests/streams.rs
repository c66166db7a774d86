//! Event logs on the real broker (RabbitMQ streams, `rabbitmq_stream` plugin): replaying
//! 10,000 events from the start in order, starting at an offset and at a time, resuming
//! after a `kill -9` with nothing missed, live events during a replay seen exactly once,
//! and failing handlers retried in place then dead-lettered.

use eventrabbit::{
    Binding, Config, ConsumerState, EventLog, Handle, MessageContext, RetryConfig, StartAt,
    StreamConsumer, UnknownAction, consumer,
};
use eventrabbit_tests::raw_stream::RawStream;
use eventrabbit_tests::*;
use rabbitmq_stream_protocol::message::Message;
use serde_json::json;
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

/// What a stream consumer saw of one event: (n, offset, has a timestamp).
type Seen = (u64, u64, bool);

/// What each stream consumer saw, by its label.
static SEEN: Mutex<Option<HashMap<String, Vec<Seen>>>> = Mutex::new(None);

#[consumer(action = "T_STREAM")]
async fn streamed(n: u64, ctx: MessageContext) {
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(ctx.queue().to_owned())
        .or_default()
        .push((
            n,
            ctx.stream_offset().expect("an offset"),
            ctx.timestamp().is_some(),
        ));
}

fn seen(label: &str) -> Vec<Seen> {
    SEEN.lock()
        .unwrap()
        .as_ref()
        .and_then(|s| s.get(label).cloned())
        .unwrap_or_default()
}

fn ns(label: &str) -> Vec<u64> {
    seen(label).into_iter().map(|(n, _, _)| n).collect()
}

async fn log_with_exchange() -> (String, String, eventrabbit::Events, Handle) {
    let (log, exchange) = (unique("log"), unique("x-log"));
    let (events, handle) = deps(Config::default()).await;
    handle
        .declare_log(
            &EventLog::new(&log)
                .bind(Binding::fanout(&exchange))
                .max_age(Duration::from_secs(3600)),
        )
        .await
        .expect("the log is declared (is the rabbitmq_stream plugin enabled?)");
    (log, exchange, events, handle)
}

fn replaying(
    handle: &Handle,
    consumer: StreamConsumer,
) -> tokio::task::JoinHandle<eventrabbit::Result<()>> {
    let handle = handle.clone();
    tokio::spawn(async move { handle.replay(consumer).await })
}

async fn publish_range(events: &eventrabbit::Events, exchange: &str, range: std::ops::Range<u64>) {
    for chunk in range.collect::<Vec<_>>().chunks(500) {
        let sends = chunk.iter().map(|n| async move {
            events
                .publish(exchange, "", "T_STREAM", &json!({"n": n}))
                .await
        });
        for r in futures_util::future::join_all(sends).await {
            r.expect("published");
        }
    }
}

/// 10,000 events published before anyone reads them are replayed from the first, in
/// order, with their offsets and timestamps.
#[tokio::test]
async fn ten_thousand_events_replay_from_the_start_in_order() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    publish_range(&events, &exchange, 0..10_000).await;
    let consumer = StreamConsumer::new(&log)
        .name("in-order")
        .actions(["T_STREAM"]);
    let label = consumer.label();
    let _task = replaying(&handle, consumer);
    wait_until!(WAIT, seen(&label).len() >= 10_000);
    let got = seen(&label);
    assert_eq!(got.len(), 10_000);
    assert_eq!(
        got.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        (0..10_000).collect::<Vec<_>>(),
        "in publish order"
    );
    assert!(got.windows(2).all(|w| w[1].1 > w[0].1), "offsets increase");
    assert!(got.iter().all(|(_, _, t)| *t), "each has its timestamp");
    handle.shutdown().await;
    cleanup(&[&log], &[&exchange]).await;
}

/// A consumer starting at an offset reads from there; one starting at a time reads what
/// was written from then on.
#[tokio::test]
async fn replay_starts_at_an_offset_or_a_time() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    publish_range(&events, &exchange, 0..100).await;
    let all = StreamConsumer::new(&log).name("all").actions(["T_STREAM"]);
    let all_label = all.label();
    let _all = replaying(&handle, all);
    wait_until!(WAIT, seen(&all_label).len() >= 100);
    let offset_of_50 = seen(&all_label)[50].1;
    let from_offset = StreamConsumer::new(&log)
        .name("from-offset")
        .start_at(StartAt::Offset(offset_of_50))
        .actions(["T_STREAM"]);
    let from_offset_label = from_offset.label();
    let _o = replaying(&handle, from_offset);
    wait_until!(WAIT, seen(&from_offset_label).len() >= 50);
    assert_eq!(ns(&from_offset_label), (50..100).collect::<Vec<_>>());
    // Chunks carry second-precision times: leave a clear gap before the second batch.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish_range(&events, &exchange, 100..150).await;
    let from_time = StreamConsumer::new(&log)
        .name("from-time")
        .start_at(StartAt::Timestamp(between))
        .actions(["T_STREAM"]);
    let from_time_label = from_time.label();
    let _t = replaying(&handle, from_time);
    wait_until!(WAIT, seen(&from_time_label).len() >= 50);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ns(&from_time_label), (100..150).collect::<Vec<_>>());
    handle.shutdown().await;
    cleanup(&[&log], &[&exchange]).await;
}

/// A named consumer killed (`kill -9`) in the middle of a replay goes on, in a new
/// process, after its last stored position: nothing is missed, and at most the events
/// since that position are handled again.
#[tokio::test]
async fn a_named_consumer_resumes_after_kill_9_with_nothing_missed() {
    const N: u64 = 5_000;
    const STORE_EVERY: u64 = 100;
    let (log, exchange, events, handle) = log_with_exchange().await;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let sends = chunk.iter().map(|n| {
            let (events, exchange) = (&events, &exchange);
            async move {
                events
                    .publish(exchange, "", "T_STREAM_CHILD", &json!({"n": n}))
                    .await
            }
        });
        for r in futures_util::future::join_all(sends).await {
            r.unwrap();
        }
    }
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stream_replayer"))
            .args([log.as_str(), "resumer", &STORE_EVERY.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the replayer starts")
    };
    let mut first = spawn();
    let mut lines = std::io::BufReader::new(first.stdout.take().unwrap()).lines();
    let mut handled: Vec<u64> = Vec::new();
    for line in lines.by_ref() {
        handled.push(line.unwrap().trim().parse().unwrap());
        if handled.len() >= 2_050 {
            break;
        }
    }
    first.kill().expect("kill -9");
    let _ = first.wait();
    // What it handled up to the kill, read or not: it prints each event (flushed) before
    // its position can be stored, and may be ahead of this reader by more than a store.
    for line in lines {
        handled.push(line.unwrap().trim().parse().unwrap());
    }
    let before_kill = handled.len();
    let mut second = spawn();
    // Read on a thread of its own, so that a second process that handles nothing (or
    // stops short) fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = second.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().parse::<u64>().unwrap()).is_err() {
                break;
            }
        }
    });
    let mut again = Vec::new();
    while let Ok(n) = rx.recv_timeout(Duration::from_secs(60)) {
        again.push(n);
        if n == N - 1 {
            break;
        }
    }
    second.kill().unwrap();
    let _ = second.wait();
    let resumed_at = *again.first().expect("the second process handled something");
    let mut all: Vec<u64> = handled.iter().chain(&again).copied().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    let repeated = total - all.len();
    println!(
        "stream kill -9: {before_kill} handled before the kill, resumed at {resumed_at}, {repeated} handled twice (positions stored every {STORE_EVERY})"
    );
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "nothing missed");
    assert!(
        repeated as u64 <= STORE_EVERY,
        "at most the events since the stored position again: {repeated}"
    );
    assert!(resumed_at > 0, "it did not start over");
    let _ = handle;
    cleanup(&[&log], &[&exchange]).await;
}

/// Events published while a consumer replays the history are seen exactly once, after it,
/// in order: no gap and no duplicate at the switch from history to live.
#[tokio::test]
async fn live_events_during_a_replay_are_seen_exactly_once() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    publish_range(&events, &exchange, 0..3_000).await;
    let consumer = StreamConsumer::new(&log).name("live").actions(["T_STREAM"]);
    let label = consumer.label();
    let _task = replaying(&handle, consumer);
    wait_until!(WAIT, !seen(&label).is_empty());
    publish_range(&events, &exchange, 3_000..4_000).await;
    wait_until!(WAIT, seen(&label).len() >= 4_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ns(&label),
        (0..4_000).collect::<Vec<_>>(),
        "each once, in order"
    );
    handle.shutdown().await;
    cleanup(&[&log], &[&exchange]).await;
}

static ATTEMPTS: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

#[consumer(action = "T_STREAM_FLAKY")]
async fn flaky_on_stream(n: u64, ctx: MessageContext) -> Result<(), String> {
    ATTEMPTS.lock().unwrap().push((n, ctx.retry_count()));
    match n {
        // Fails twice, then succeeds: retried in place.
        1 if ctx.retry_count() < 2 => Err(format!("n=1 attempt {}", ctx.retry_count() + 1)),
        // Always fails: dead-lettered once retries are exhausted.
        3 => Err("n=3 never works".into()),
        _ => Ok(()),
    }
}

/// On a log a failing handler is retried in place after the retry delays (the events
/// behind it wait: order is kept); once its retries are exhausted a copy is dead-lettered
/// to `<log>.<name>.dlq` and the consumer moves on. No event is skipped silently.
#[tokio::test]
async fn a_failing_handler_on_a_log_is_retried_in_place_then_dead_lettered() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    for n in 0..6u64 {
        events
            .publish(&exchange, "", "T_STREAM_FLAKY", &json!({"n": n}))
            .await
            .unwrap();
    }
    let consumer = StreamConsumer::new(&log)
        .name("flaky")
        .retry(
            RetryConfig::default()
                .with_delay(Duration::from_millis(100))
                .with_max_retries(2),
        )
        .unknown_action(UnknownAction::Drop)
        .actions(["T_STREAM_FLAKY"]);
    let dlq = format!("{log}.flaky.dlq");
    let _task = replaying(&handle, consumer);
    // The replay declares its dead-letter queue before it reads the first event.
    wait_until!(WAIT, !ATTEMPTS.lock().unwrap().is_empty());
    let (_c, ch) = raw_channel().await;
    let dead = get_message(&ch, &dlq, WAIT)
        .await
        .expect("the always-failing event dead-lettered");
    assert_eq!(
        header(&dead.delivery.properties, "x-dead-letter-code").as_deref(),
        Some("retries-exhausted")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&dead.delivery.data).unwrap()["data"]["n"],
        3
    );
    wait_until!(WAIT, ATTEMPTS.lock().unwrap().iter().any(|(n, _)| *n == 5));
    let attempts = ATTEMPTS.lock().unwrap().clone();
    let order: Vec<u64> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        order,
        [0, 1, 1, 1, 2, 3, 3, 3, 4, 5],
        "retried in place, in order, each attempt once"
    );
    assert_eq!(
        attempts
            .iter()
            .filter(|(n, _)| *n == 3)
            .map(|(_, r)| *r)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    handle.shutdown().await;
    cleanup(&[&log, &dlq], &[&exchange]).await;
}

/// What a handler on a log sees of an event: what a queue consumer would, message id,
/// headers, exchange and routing key as published, plus its offset and timestamp.
type Meta = (Option<String>, Option<String>, String, String, bool);
static META: Mutex<Vec<Meta>> = Mutex::new(Vec::new());

#[consumer(action = "T_STREAM_META")]
async fn stream_meta(ctx: MessageContext) {
    META.lock().unwrap().push((
        ctx.message_id().map(str::to_owned),
        ctx.header_str("tenant"),
        ctx.exchange().to_owned(),
        ctx.routing_key().to_owned(),
        ctx.timestamp().is_some_and(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() > 1_700_000_000
        }),
    ));
}

#[tokio::test]
async fn an_event_from_a_log_keeps_its_message_id_headers_and_routing() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    for (id, tenant) in [("meta-1", "acme"), ("meta-2", "globex")] {
        events
            .publish_with(
                &exchange,
                "some.key",
                "T_STREAM_META",
                &json!({}),
                &eventrabbit::PublishOptions::new()
                    .message_id(id)
                    .header("tenant", tenant),
            )
            .await
            .unwrap();
    }
    let consumer = StreamConsumer::new(&log).actions(["T_STREAM_META"]);
    let _task = replaying(&handle, consumer);
    wait_until!(WAIT, META.lock().unwrap().len() >= 2);
    let meta = META.lock().unwrap().clone();
    let expect = |id: &str, tenant: &str| {
        (
            Some(id.to_owned()),
            Some(tenant.to_owned()),
            exchange.clone(),
            "some.key".to_owned(),
            true,
        )
    };
    assert_eq!(meta, [expect("meta-1", "acme"), expect("meta-2", "globex")]);
    handle.shutdown().await;
    cleanup(&[&log], &[&exchange]).await;
}

/// Readiness on a log (issue 29): `start_replay` returns once the reader is subscribed,
/// so with `StartAt::Next` (only events appended after the subscription) an event
/// published right after it returns is read, every time; a log that does not exist makes
/// it fail at once with the reason.
#[tokio::test]
async fn an_event_published_right_after_start_replay_is_read() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    let mut readers = Vec::new();
    for n in 0..10u64 {
        let consumer = StreamConsumer::new(&log)
            .name(format!("ready-{n}"))
            .start_at(StartAt::Next)
            .actions(["T_STREAM"]);
        let label = consumer.label();
        let reader = handle.start_replay(consumer).await.expect("subscribed");
        assert_eq!(reader.queue(), label);
        events
            .publish(&exchange, "", "T_STREAM", &json!({"n": 1000 + n}))
            .await
            .unwrap();
        wait_until!(WAIT, ns(&label).contains(&(1000 + n)));
        assert!(
            ns(&label).contains(&(1000 + n)),
            "reader {n} read the event published right after it started: {:?}",
            ns(&label)
        );
        readers.push(reader);
    }
    let missing = tokio::time::timeout(
        WAIT,
        handle.start_replay(StreamConsumer::new(unique("no-such-log")).actions(["T_STREAM"])),
    )
    .await
    .expect("refused at once, not a wait")
    .expect_err("no such log");
    assert!(
        missing.to_string().contains("no-such-log"),
        "names the log: {missing}"
    );
    handle.shutdown().await;
    for reader in readers {
        reader.join().await.expect("ended by the shutdown");
    }
    cleanup(&[&log], &[&exchange]).await;
}

/// A named reader whose stored position cannot be read (the query goes unanswered and
/// times out) does not start over from its configured
/// start: it waits, retries with backoff, says why in health, and once the position can
/// be read goes on after it, handling none of the events it handled before (issue 33,
/// item 5). (Before, any error of the query started it at `start_at`: with `First`, the
/// whole log again.)
#[tokio::test]
async fn an_unreadable_stored_position_is_retried_not_replaced_by_the_start() {
    let (log, exchange, events, handle) = log_with_exchange().await;
    publish_range(&events, &exchange, 0..20).await;
    let consumer = || {
        StreamConsumer::new(&log)
            .name("kept")
            .start_at(StartAt::First)
            .actions(["T_STREAM"])
    };
    let label = consumer().label();
    let first = handle.start_replay(consumer()).await.expect("subscribed");
    wait_until!(WAIT, seen(&label).len() >= 20);
    handle.shutdown().await; // stores the position
    first.join().await.expect("stopped");
    assert_eq!(ns(&label), (0..20).collect::<Vec<_>>());

    // The same reader again, through a stream endpoint that leaves the query of a stored
    // position (QueryOffset, 0x000b) unanswered.
    let proxy = Proxy::start_to("127.0.0.1:5552".to_owned()).await;
    proxy.mute_stream_command(Some(0x000b));
    let config = Config::default()
        .with_stream_port(proxy.port())
        .with_max_reconnect_delay(Duration::from_millis(500));
    let (events, second) = deps(config).await;
    let _reading = replaying(&second, consumer());
    let waiting = || async {
        second.health().await.consumers.iter().any(|c| {
            c.queue == label
                && c.state == ConsumerState::Recovering
                && c.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("stored position"))
        })
    };
    wait_until!(WAIT, waiting().await);
    assert!(waiting().await, "{:?}", second.health().await);
    assert_eq!(
        ns(&label),
        (0..20).collect::<Vec<_>>(),
        "nothing read again while the position is unknown"
    );

    // The endpoint answers again: the reader goes on after its stored position.
    proxy.mute_stream_command(None);
    publish_range(&events, &exchange, 20..25).await;
    wait_until!(WAIT, seen(&label).len() >= 25);
    assert_eq!(
        ns(&label),
        (0..25).collect::<Vec<_>>(),
        "each event handled once, in order"
    );
    second.shutdown().await;
    cleanup(&[&log], &[&exchange]).await;
}

/// A reader whose stream port refuses connections before it ever read (the
/// `rabbitmq_stream` plugin off, a wrong port) does not wait forever: `start_replay`
/// fails at once, naming the port and the plugin. (Before, it retried as weather and
/// `start_replay` never returned.)
#[tokio::test]
async fn a_refused_stream_port_fails_start_replay_naming_the_plugin() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (_events, handle) = deps(Config::default().with_stream_port(port)).await;
    let log = unique("log-refused");
    handle
        .declare_log(&EventLog::new(&log))
        .await
        .expect("declared over AMQP");
    let started = tokio::time::timeout(
        WAIT,
        handle.start_replay(StreamConsumer::new(&log).actions(["T_STREAM"])),
    )
    .await
    .expect("start_replay answers instead of waiting forever");
    let Err(err) = started else {
        panic!("start_replay succeeded on a refused port");
    };
    let text = err.to_string();
    assert!(
        text.contains(&port.to_string()) && text.contains("rabbitmq_stream"),
        "{text}"
    );
    handle.shutdown().await;
    cleanup(&[&log], &[]).await;
}

#[derive(serde::Deserialize)]
struct Tick {
    n: u64,
}

/// The batches the log's batch handler was called with.
static LOG_BATCHES: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

#[consumer(action = "T_STREAM_BATCH", batch(max = 100, window = "2s"))]
async fn log_batch(ticks: Vec<Tick>) {
    LOG_BATCHES
        .lock()
        .unwrap()
        .push(ticks.into_iter().map(|t| t.n).collect());
}

/// A batch handler on a log gets the events already read together, at once: 300 events
/// with a 2 s window are handled in a few calls, each once, instead of one call (and one
/// window) per event (which would take 10 minutes). The events are written by another
/// service in one publish, so that the broker stores them in a few chunks whatever the
/// machine's load: how many calls there are then depends on this library alone (written
/// through an exchange by concurrent publishes, the broker made up to 51 small chunks on
/// a loaded machine, and the count of calls followed them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_on_a_log_takes_the_events_already_read_without_waiting_the_window_each() {
    let (log, exchange, _events, handle) = log_with_exchange().await;
    let mut writer = RawStream::connect("127.0.0.1", 5552)
        .await
        .expect("the stream port");
    let messages = (0..300u64)
        .map(|n| {
            let body = json!({"action": "T_STREAM_BATCH", "data": {"n": n}});
            Message::builder()
                .body(serde_json::to_vec(&body).unwrap())
                .build()
        })
        .collect();
    writer
        .publish(&log, messages)
        .await
        .expect("written to the log");
    let reader = replaying(
        &handle,
        StreamConsumer::new(&log).actions(["T_STREAM_BATCH"]),
    );
    let handled = || {
        LOG_BATCHES
            .lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum::<usize>()
    };
    wait_until!(WAIT, handled() >= 300);
    let batches = LOG_BATCHES.lock().unwrap().clone();
    let all: Vec<u64> = batches.iter().flatten().copied().collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..300).collect::<Vec<_>>(), "each event once");
    assert!(
        batches.iter().all(|b| b.len() <= 100),
        "at most max per call"
    );
    assert!(
        batches.len() <= 10,
        "{} calls for 300 events: the events read were not handed over together",
        batches.len()
    );
    handle.shutdown().await;
    reader.await.unwrap().unwrap();
    cleanup(&[&log], &[&exchange]).await;
}

/// With several broker URLs, a log is read through the first node whose stream port
/// answers: a node that cannot be reached (here a host name that does not resolve) is
/// passed over, not waited on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_is_read_through_the_next_node_when_the_first_cannot_be_reached() {
    let (log, exchange, events, _handle) = log_with_exchange().await;
    publish_range(&events, &exchange, 0..20).await;
    let urls = format!(
        "amqp://guest:guest@no-such-node.invalid:5672/%2f,{}",
        amqp_addr()
    );
    let (_events, handle) = deps_at(&urls, Config::default()).await;
    let consumer = StreamConsumer::new(&log).actions(["T_STREAM"]);
    let label = consumer.label();
    let reading =
        tokio::time::timeout(Duration::from_secs(30), handle.start_replay(consumer)).await;
    let reader = reading
        .expect("start_replay returns")
        .expect("the reader starts");
    wait_until!(WAIT, ns(&label).len() >= 20);
    let mut read = ns(&label);
    read.sort_unstable();
    assert_eq!(read, (0..20).collect::<Vec<_>>());
    handle.shutdown().await;
    reader.join().await.unwrap();
    cleanup(&[&log], &[&exchange]).await;
}
