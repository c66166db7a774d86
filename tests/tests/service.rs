//! The service runner (issue 29): `Service` starts its consumers, runs until SIGTERM and
//! shuts down gracefully (the handler in flight finishes and is acknowledged), in a child
//! process; a consumer that cannot start makes `run` return its error.

use eventrabbit::{Config, ConsumeChannel, Error, Service};
use eventrabbit_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A hang guard for the child's lines and its exit, not a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sigterm_stops_the_service_gracefully() {
    let queue = unique("q-service");
    let mut child = Command::new(env!("CARGO_BIN_EXE_service_runner"))
        .arg(&queue)
        .env("AMQP_ADDR", amqp_addr())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the service runs");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_line = |want: &str| loop {
        let line = lines
            .recv_timeout(GUARD)
            .unwrap_or_else(|_| panic!("the service did not print `{want}`"));
        if line == want {
            return;
        }
    };
    wait_for_consumer(&queue).await;
    let (_c, ch) = raw_channel().await;
    publish_envelope(&ch, "", &queue, "T_SERVICE", serde_json::json!({"n": 1})).await;
    next_line("started 1");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    next_line("handled 1");
    next_line("stopped");
    let status = child.wait().expect("the service exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        queue_len(&ch, &queue).await,
        0,
        "acknowledged, not given back"
    );
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn a_consumer_that_cannot_start_makes_run_fail_with_its_error() {
    let (_events, handle) = deps(Config::default()).await;
    let ran = tokio::time::timeout(
        GUARD,
        Service::new(&handle)
            .consume(ConsumeChannel::new(unique("q-service-bad")).actions(["T_NOBODY_SERVES"]))
            .run_until(std::future::pending()),
    )
    .await
    .expect("run returns instead of waiting");
    assert!(matches!(ran, Err(Error::UnknownAction { .. })), "{ran:?}");
}

/// What the service's partition handler saw.
static PARTITIONED: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

#[eventrabbit::consumer(action = "T_SERVICE_PART")]
async fn service_part(key: String, seq: u64) {
    PARTITIONED.lock().unwrap().push((key, seq));
}

/// A service takes part in a partitioned topology like in its queues: `run_until` polls
/// its stop once the partitions are taken, so what it publishes there is handled, each
/// key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_consumes_partitions() {
    let exchange = unique("svc-parts");
    let (events, handle) = deps(Config::default()).await;
    let partitions = eventrabbit::Partitions::new(&exchange, 3).configure(|channel| {
        channel
            .actions(["T_SERVICE_PART"])
            .durable(false)
            .retry(eventrabbit::RetryConfig::default().with_max_retries(1))
    });
    let stop = async {
        for seq in 0..20u64 {
            for key in ["a", "b", "c", "d"] {
                events
                    .publish(
                        &exchange,
                        key,
                        "T_SERVICE_PART",
                        &serde_json::json!({"key": key, "seq": seq}),
                    )
                    .await
                    .expect("publish");
            }
        }
        wait_until!(GUARD, PARTITIONED.lock().unwrap().len() >= 80);
    };
    Service::new(&handle)
        .partitions(partitions.clone())
        .shutdown_within(Duration::from_secs(10))
        .run_until(stop)
        .await
        .expect("the service ran");
    let seen = PARTITIONED.lock().unwrap().clone();
    for key in ["a", "b", "c", "d"] {
        let seqs: Vec<u64> = seen
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "key {key}");
    }
    let queues: Vec<String> = (0..3).map(|i| partitions.queue(i)).collect();
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    cleanup(&names, &[&exchange]).await;
}
