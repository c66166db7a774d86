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
