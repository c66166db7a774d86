//! Broker faults on the real broker: forced disconnects (`rabbitmqctl
//! close_all_connections`), a node restart (`stop_app`/`start_app`), RPC calls cut off,
//! and shutdown under load. The tests in this file run one at a time (they close every
//! connection) and restore the broker whatever happens.

use eventrabbit::{Config, ConsumeChannel, Error, consumer};
use eventrabbit_tests::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static METRICS: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
    std::sync::OnceLock::new();

/// A metrics recorder for this test binary; its snapshots drain the counters.
fn metrics() -> &'static metrics_util::debugging::Snapshotter {
    METRICS.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("one recorder");
        snapshotter
    })
}

fn reconnects_counted(snap: &metrics_util::debugging::Snapshotter) -> u64 {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "eventrabbit_reconnects_total")
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// Starts the broker app again when dropped, even if the test panicked.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["await_startup", "--timeout", "120"])
            .output();
    }
}

static SEEN: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

#[consumer(action = "T_FAULT")]
async fn fault(n: u64) {
    *SEEN
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(n)
        .or_default() += 1;
}

fn distinct_seen() -> (usize, u32) {
    let seen = SEEN.lock().unwrap();
    let map = seen.as_ref().cloned().unwrap_or_default();
    let dups: u32 = map.values().map(|c| c - 1).sum();
    (map.len(), dups)
}

/// 10,000 confirmed publishes while every connection is force-closed three times: all
/// handled, none lost; duplicates are allowed (at-least-once) and reported.
#[tokio::test]
async fn ten_thousand_messages_survive_three_forced_disconnects() {
    let _serial = SERIAL.lock().await;
    let snap = metrics();
    let _ = reconnects_counted(snap); // drain what earlier tests counted
    const N: u64 = 10_000;
    let queue = unique("q-fault");
    let config = Config::default()
        .with_max_reconnect_delay(Duration::from_millis(500))
        .with_publish_timeout(Duration::from_secs(30));
    let (events, handle) = deps(config).await;
    let _task = start(&handle, ConsumeChannel::new(&queue).prefetch(100)).await;
    let publisher = {
        let events = events.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
                let sends = chunk.iter().map(|n| {
                    let events = events.clone();
                    let queue = queue.clone();
                    async move {
                        // A publish that failed was not confirmed: send it again.
                        let mut attempts = 0u32;
                        loop {
                            match events
                                .publish("", &queue, "T_FAULT", &json!({"n": n}))
                                .await
                            {
                                Ok(()) => return attempts,
                                Err(_) => {
                                    attempts += 1;
                                    tokio::time::sleep(Duration::from_millis(50)).await
                                }
                            }
                        }
                    }
                });
                failures += futures_util::future::join_all(sends)
                    .await
                    .iter()
                    .sum::<u32>();
            }
            failures
        })
    };
    for i in 1..=3u64 {
        // Close only once the previous close was recovered from, so each one counts.
        wait_until!(
            Duration::from_secs(30),
            events.connections_opened() >= i && events.is_connected().await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        rabbitmqctl(&["close_all_connections", "eventrabbit fault test"]);
    }
    let failed_publishes = publisher.await.unwrap();
    wait_until!(Duration::from_secs(60), distinct_seen().0 >= N as usize);
    wait_until!(Duration::from_secs(60), events.connections_opened() >= 4);
    let (distinct, duplicates) = distinct_seen();
    println!(
        "fault test: {distinct} of {N} distinct messages handled, {duplicates} duplicates, {failed_publishes} publishes failed and were resent, {} connections opened",
        events.connections_opened()
    );
    assert_eq!(distinct, N as usize, "no message lost");
    assert!(
        reconnects_counted(snap) >= 3,
        "reconnects are counted in metrics"
    );
    assert!(
        events.connections_opened() >= 4,
        "the connection really was closed and reopened 3 times"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static RESTART: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

#[consumer(action = "T_RESTART")]
async fn restart(n: u64) {
    *RESTART
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(n)
        .or_default() += 1;
}

fn restart_seen() -> usize {
    RESTART.lock().unwrap().as_ref().map_or(0, HashMap::len)
}

async fn wait_restart_seen(n: usize) {
    wait_until!(Duration::from_secs(60), restart_seen() >= n);
}

#[tokio::test]
async fn consumer_and_publisher_resume_after_the_node_restarts() {
    let _serial = SERIAL.lock().await;
    let queue = unique("q-restart");
    let config = Config::default().with_max_reconnect_delay(Duration::from_millis(500));
    let (events, handle) = deps(config).await;
    let task = start(&handle, ConsumeChannel::new(&queue)).await;
    for n in 0..10u64 {
        events
            .publish("", &queue, "T_RESTART", &json!({"n": n}))
            .await
            .unwrap();
    }
    wait_restart_seen(10).await;
    assert_eq!(restart_seen(), 10);
    {
        let _guard = RestartGuard;
        rabbitmqctl(&["stop_app"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
    } // start_app + await_startup
    // The same Events publishes again (it reconnects), and the consumer resumed by itself.
    for n in 10..20u64 {
        events
            .publish("", &queue, "T_RESTART", &json!({"n": n}))
            .await
            .unwrap();
    }
    wait_restart_seen(20).await;
    assert_eq!(restart_seen(), 20, "consumer resumed after the restart");
    assert!(events.connections_opened() >= 2);
    assert!(!task.is_finished());
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[consumer(action = "T_SLOW_RPC")]
async fn slow_rpc(ms: u64) -> serde_json::Value {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    json!({"slept": ms})
}

#[tokio::test]
async fn calls_in_flight_fail_with_a_connection_error_when_it_drops_and_later_calls_work() {
    let _serial = SERIAL.lock().await;
    let queue = unique("q-rpc-drop");
    let config = Config::default().with_max_reconnect_delay(Duration::from_millis(500));
    let (events, handle) = deps(config).await;
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    let call = {
        let events = events.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            events
                .call_with_timeout::<serde_json::Value>(
                    &queue,
                    "T_SLOW_RPC",
                    json!({"ms": 3000}),
                    Duration::from_secs(60),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    rabbitmqctl(&["close_all_connections", "eventrabbit rpc drop test"]);
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ReplyLost { .. }),
        "a connection error, not a timeout: {err}"
    );
    wait_for_consumer(&queue).await;
    let reply: serde_json::Value = events
        .call(&queue, "T_SLOW_RPC", json!({"ms": 1}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"slept": 1}));
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

static STARTED: AtomicU32 = AtomicU32::new(0);
static FINISHED: AtomicU32 = AtomicU32::new(0);

#[consumer(action = "T_SHUTDOWN_LOAD")]
async fn under_load(n: u64) {
    assert!(n < 2000);
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    FINISHED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn shutdown_under_load_finishes_in_flight_handlers_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const N: u32 = 2000;
    let queue = unique("q-shutdown");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, true).await;
    let bodies = (0..N).map(|n| {
        serde_json::to_vec(&json!({"action": "T_SHUTDOWN_LOAD", "data": {"n": n}})).unwrap()
    });
    publish_all(&ch, &queue, bodies).await;
    let (_events, handle) = deps(Config::default()).await;
    let task = start(&handle, ConsumeChannel::new(&queue).prefetch(50)).await;
    while FINISHED.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await;
    assert!(task.await.unwrap().is_ok());
    let started = STARTED.load(Ordering::SeqCst);
    let finished = FINISHED.load(Ordering::SeqCst);
    assert_eq!(
        started, finished,
        "every handler that started was allowed to finish"
    );
    let left = queue_len(&ch, &queue).await;
    println!("shutdown test: {finished} handled before shutdown, {left} left in the queue");
    assert_eq!(
        finished + left,
        N,
        "handled + still queued = all: nothing lost, nothing unacked"
    );
    cleanup(&[&queue], &[]).await;
}

/// Restores the memory watermark when dropped, even if the test panicked.
struct WatermarkGuard(String);

impl Drop for WatermarkGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["set_vm_memory_high_watermark", &self.0])
            .output();
    }
}

fn current_watermark() -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text.lines().last().unwrap_or("0.4").trim().to_string();
    if value.parse::<f64>().is_ok() {
        value
    } else {
        "0.4".into()
    }
}

#[tokio::test]
async fn a_blocked_broker_is_reported_and_publishes_wait_instead_of_failing() {
    let _serial = SERIAL.lock().await;
    let queue = unique("q-blocked");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, false).await;
    let (events, _handle) =
        deps(Config::default().with_publish_timeout(Duration::from_secs(60))).await;
    let (short, _h2) = deps(Config::default().with_publish_timeout(Duration::from_secs(2))).await;
    events
        .publish("", &queue, "T_BLOCKED", &json!({"n": 1}))
        .await
        .unwrap();
    short
        .publish("", &queue, "T_BLOCKED", &json!({"n": 2}))
        .await
        .unwrap();
    {
        let _guard = WatermarkGuard(current_watermark());
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0000001"]);
        let waiting = {
            let events = events.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                events
                    .publish("", &queue, "T_BLOCKED", &json!({"n": 3}))
                    .await
            })
        };
        // A publish with a short deadline gives up with a clear error, not a hang.
        let err = short
            .publish("", &queue, "T_BLOCKED", &json!({"n": 4}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Blocked { .. }), "{err}");
        assert!(err.to_string().contains("memory"), "{err}");
        wait_until!(Duration::from_secs(20), events.blocked().is_some());
        let reason = events.blocked().expect("the block is reported");
        assert!(reason.contains("memory"), "{reason}");
        assert!(
            !waiting.is_finished(),
            "the long-deadline publish waits while blocked"
        );
        drop(_guard); // alarm cleared
        waiting
            .await
            .unwrap()
            .expect("the waiting publish completes once unblocked");
    }
    wait_until!(Duration::from_secs(20), events.blocked().is_none());
    assert_eq!(events.blocked(), None, "unblocked is reported too");
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn a_publish_while_the_broker_is_away_waits_for_it_or_fails_at_its_deadline() {
    let _serial = SERIAL.lock().await;
    let queue = unique("q-away");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &queue, true).await;
    drop(ch);
    let config = Config::default().with_max_reconnect_delay(Duration::from_millis(300));
    let (patient, _h1) = deps(config.clone().with_publish_timeout(Duration::from_secs(60))).await;
    let (hasty, _h2) = deps(config.with_publish_timeout(Duration::from_millis(800))).await;
    patient
        .publish("", &queue, "T_AWAY", &json!({"n": 0}))
        .await
        .unwrap();
    hasty
        .publish("", &queue, "T_AWAY", &json!({"n": 1}))
        .await
        .unwrap();
    let waiting = {
        let _guard = RestartGuard;
        rabbitmqctl(&["stop_app"]);
        let waiting = {
            let patient = patient.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                patient
                    .publish("", &queue, "T_AWAY", &json!({"n": 2}))
                    .await
            })
        };
        let err = hasty
            .publish("", &queue, "T_AWAY", &json!({"n": 3}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(..)), "{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "the patient publish is still waiting for the broker"
        );
        waiting
    }; // start_app + await_startup
    waiting
        .await
        .unwrap()
        .expect("confirmed once the broker is back");
    let (_c, ch) = raw_channel().await;
    assert_eq!(
        queue_len(&ch, &queue).await,
        3,
        "n = 0, 1, 2; the failed one was never sent"
    );
    cleanup(&[&queue], &[]).await;
}

/// A publish waiting for its confirm is not sent twice when the idle check closes its
/// channel meanwhile (an `idle_timeout` shorter than a confirm takes: the confirm held in
/// a proxy while the broker has the message): the confirm comes before the channel's
/// close-ok, so the publish succeeds once. (A suspect for the duplicate dead letters of
/// issue 33, cleared by this test.)
#[tokio::test]
async fn a_publish_waiting_for_its_confirm_is_not_sent_twice_by_the_idle_check() {
    let (_c, ch) = raw_channel().await;
    let queue = unique("q-idle-confirm");
    declare_queue(&ch, &queue, true).await;
    let proxy = Proxy::start().await;
    let (events, _handle) = deps_at(
        &proxy.url(),
        Config::default()
            .with_idle_timeout(Some(Duration::from_millis(200)))
            .with_publish_timeout(Duration::from_secs(10)),
    )
    .await;
    // The connection and the publishing channel are open (one publish confirmed).
    events
        .publish("", &queue, "T_IDLE", &json!({"n": 0}))
        .await
        .unwrap();
    proxy.hold_replies(true);
    let publishing = {
        let events = events.clone();
        let queue = queue.clone();
        tokio::spawn(async move { events.publish("", &queue, "T_IDLE", &json!({"n": 1})).await })
    };
    // The broker has it; its confirm waits in the proxy while the idle check runs (it
    // looks every 50 ms and finds no publish started for longer than 200 ms).
    wait_until!(Duration::from_secs(10), queue_len(&ch, &queue).await == 2);
    assert_eq!(queue_len(&ch, &queue).await, 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.hold_replies(false);
    publishing.await.unwrap().expect("the publish is confirmed");
    // Whatever the idle check did meanwhile, the message is there once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue_len(&ch, &queue).await, 2, "no copy sent again");
    cleanup(&[&queue], &[]).await;
}
