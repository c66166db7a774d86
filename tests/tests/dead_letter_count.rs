//! Every dead-letter decision reaches the dead-letter queue exactly once: 5,000 poison
//! messages of every kind, and messages whose handler refuses them, consumed with many
//! deliveries in flight, leave exactly one dead letter each (counted by message id).

use eventrabbit::{Config, ConsumeChannel, Rejected, RetryConfig, consumer};
use eventrabbit_tests::*;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::collections::HashMap;
use std::time::Duration;

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

async fn count_dead_letters(retry: RetryConfig, quorum: bool) {
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
        let props = BasicProperties::default().with_message_id(format!("dup-{i}").into());
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
    while let Some(m) = get_message(&ch, &dlq, Duration::from_millis(500)).await {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        *copies.entry(id).or_default() += 1;
        let code = header(&m.delivery.properties, "x-dead-letter-code").unwrap_or_default();
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
