//! Unroutable messages are told apart from routed ones under concurrency: a broker's
//! `basic.return` carries no delivery tag, and lapin hands it to the next confirm it
//! resolves, which with a multiple ack can be another publish's.

use eventrabbit::{Config, Error};
use eventrabbit_tests::*;
use futures_util::StreamExt;
use serde_json::json;

/// 2,000 mandatory publishes from four tasks, 500 in flight, to one exchange: every third
/// routing key has no queue bound. Each publish's result says whether its own message was
/// routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mandatory_publish_learns_its_own_fate_under_concurrency() {
    let (_c, ch) = raw_channel().await;
    let x = unique("x-returns");
    let queue = unique("q-returns");
    bind_queue(&ch, &queue, &x, lapin::ExchangeKind::Direct, "routed").await;
    let (events, _handle) = deps(Config::default()).await;
    const N: usize = 2_000;
    // Four tasks at once (on both worker threads), 125 in flight each.
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let events = events.clone();
            let x = x.clone();
            tokio::spawn(async move {
                futures_util::stream::iter((t..N).step_by(4))
                    .map(|i| {
                        let events = events.clone();
                        let x = x.clone();
                        async move {
                            let key = if i % 3 == 0 { "nowhere" } else { "routed" };
                            let r = events
                                .publish_mandatory(&x, key, "T_RETURNS", &json!({"i": i}))
                                .await;
                            (i, r)
                        }
                    })
                    .buffer_unordered(125)
                    .collect::<Vec<_>>()
                    .await
            })
        })
        .collect();
    let mut results: Vec<(usize, eventrabbit::Result<()>)> = Vec::new();
    for task in tasks {
        results.extend(task.await.unwrap());
    }
    let mut wrong = Vec::new();
    for (i, r) in &results {
        let unroutable = matches!(r, Err(Error::Unroutable { .. }));
        if unroutable != (i % 3 == 0) {
            wrong.push((*i, format!("{r:?}")));
        }
    }
    let routed = results.iter().filter(|(i, _)| i % 3 != 0).count();
    wait_until!(
        std::time::Duration::from_secs(10),
        queue_len(&ch, &queue).await as usize >= routed
    );
    let in_queue = queue_len(&ch, &queue).await as usize;
    cleanup(&[&queue], &[&x]).await;
    assert!(
        wrong.is_empty(),
        "{} publishes told another's fate, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(
        in_queue, routed,
        "every routed message is in the queue once"
    );
}

#[eventrabbit::consumer(action = "T_RETURNS_ECHO")]
async fn slow_echo(i: u32) -> serde_json::Value {
    // Slower than a confirm: each call looks at its confirm before its reply comes.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    json!({ "i": i })
}

/// 600 RPC calls, 200 at once, through one reply channel: every third to a queue that
/// does not exist. Each gets its own fate: the reply for a routed one, `Unroutable` at
/// once for the others (a return taken by another call's confirm failed that call and
/// left the unroutable one waiting for its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rpc_call_learns_its_own_fate_under_concurrency() {
    let queue = unique("q-returns-rpc");
    let (events, handle) = deps(Config::default()).await;
    let task = start(
        &handle,
        eventrabbit::ConsumeChannel::new(&queue).prefetch(300),
    )
    .await;
    let missing = unique("q-returns-missing");
    const N: u32 = 600;
    let results: Vec<(u32, eventrabbit::Result<serde_json::Value>)> =
        futures_util::stream::iter(0..N)
            .map(|i| {
                let events = events.clone();
                let target = if i % 3 == 0 {
                    missing.clone()
                } else {
                    queue.clone()
                };
                async move {
                    let r = events
                        .call_with_timeout(
                            &target,
                            "T_RETURNS_ECHO",
                            json!({ "i": i }),
                            std::time::Duration::from_secs(20),
                        )
                        .await;
                    (i, r)
                }
            })
            .buffer_unordered(200)
            .collect()
            .await;
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    cleanup(&[&queue], &[]).await;
    let wrong: Vec<_> = results
        .iter()
        .filter(|(i, r)| match r {
            Ok(v) => i % 3 == 0 || *v != json!({ "i": i }),
            Err(Error::Unroutable { .. }) => i % 3 != 0,
            Err(_) => true,
        })
        .map(|(i, r)| (*i, format!("{r:?}")))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} calls told another's fate, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
