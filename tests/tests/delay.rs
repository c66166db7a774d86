//! Waiting in the broker: retry wait queues keep their messages however late a retry
//! comes, and delayed publishes (`publish_after`, `publish_at`) arrive after their delay,
//! also across a restart of the node that holds them.

use eventrabbit::{Config, ConsumeChannel, RetryConfig, consumer};
use eventrabbit_tests::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Runs of each `n`; the first run of each fails.
static LATE_RUNS: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

#[consumer(action = "T_DELAY_FAILS_ONCE")]
async fn fails_once(n: u64) -> Result<(), String> {
    let mut runs = LATE_RUNS.lock().unwrap();
    let count = runs.get_or_insert_default().entry(n).or_default();
    *count += 1;
    if *count == 1 {
        return Err(format!("first run of {n}"));
    }
    Ok(())
}

fn runs_of(n: u64) -> u32 {
    LATE_RUNS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|r| r.get(&n).copied())
        .unwrap_or(0)
}

/// A wait queue is deleted by the broker once unused for its `x-expires` (its TTL plus a
/// minute), and publishing into it is not a use. A retry sent into it more than a minute
/// after it was declared must still come back: the wait queue's lease is renewed.
#[tokio::test]
async fn a_retry_sent_long_after_its_wait_queue_was_declared_comes_back() {
    let queue = unique("q-delay-lease");
    let (events, handle) = deps(Config::default().with_retry(
        RetryConfig::default()
            .with_delay(Duration::from_secs(5))
            .with_multiplier(1.0),
    ))
    .await;
    start(
        &handle,
        ConsumeChannel::new(&queue).actions(["T_DELAY_FAILS_ONCE"]),
    )
    .await;
    // The first failure declares `<queue>.retry.5000ms`.
    events
        .publish("", &queue, "T_DELAY_FAILS_ONCE", &json!({"n": 1}))
        .await
        .unwrap();
    wait_until!(WAIT, runs_of(1) == 2);
    assert_eq!(runs_of(1), 2, "the first retry came back");
    // 62 s after the declaration (beyond the lease of 5 s + 60 s unless renewed, before
    // the second retry is due), a second message fails into the same wait queue.
    tokio::time::sleep(Duration::from_secs(57)).await;
    events
        .publish("", &queue, "T_DELAY_FAILS_ONCE", &json!({"n": 2}))
        .await
        .unwrap();
    wait_until!(WAIT, runs_of(2) == 2);
    assert_eq!(
        runs_of(2),
        2,
        "the retry sent late came back (its wait queue was not deleted with it inside)"
    );
    handle.shutdown().await;
    cleanup(&[&queue, &format!("{queue}.retry.5000ms")], &[]).await;
}
