//! eventrabbit in a process with several tokio runtimes (as `cargo test` runs tests, one
//! runtime each): a connection belongs to the runtime `build_event_dependencies` ran on,
//! producers publish through their own runtime's instance, and nothing waits forever on a
//! connection attempt.

use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, producer};
use eventrabbit_tests::{bind_queue, cleanup, deps, init_test_log, queue_len, raw_channel, unique};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::runtime::{Builder, Runtime};

/// A runtime that keeps driving its connections between `block_on` calls.
fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn events_keep_their_connection_when_a_runtime_that_used_them_first_ends() {
    let home = runtime();
    let queue = unique("q-visited");
    let config = Config::default().with_publish_timeout(Duration::from_secs(5));
    let (events, _handle) = home.block_on(deps(config));
    home.block_on(async {
        let (_c, ch) = raw_channel().await;
        eventrabbit_tests::declare_queue(&ch, &queue, false).await;
    });
    // Another runtime is the first to publish, so it is the one that opens the connection.
    {
        let visitor = Builder::new_current_thread().enable_all().build().unwrap();
        visitor
            .block_on(events.publish("", &queue, "T_VISIT", &json!({"n": 1})))
            .expect("publish from the visiting runtime");
    }
    // The visitor is gone; the connection lives on the home runtime and still works.
    home.block_on(async {
        events
            .publish("", &queue, "T_VISIT", &json!({"n": 2}))
            .await
            .expect("publish after the visiting runtime ended");
        assert_eq!(
            events.connections_opened(),
            1,
            "the first connection kept working"
        );
        let (_c, ch) = raw_channel().await;
        assert_eq!(queue_len(&ch, &queue).await, 2);
        cleanup(&[&queue], &[]).await;
    });
}

const PRODUCED_EXCHANGE: &str = "eventrabbit-test-runtimes";

#[derive(Serialize)]
struct Produced {
    n: u32,
}

#[producer(exchange = "eventrabbit-test-runtimes", action = "T_PRODUCED_HERE")]
async fn produce(n: u32) -> Produced {
    Produced { n }
}

#[test]
fn producers_publish_through_the_instance_of_their_own_runtime() {
    let (good, bad) = (runtime(), runtime());
    let queue = unique("q-produced");
    let (_events, _handle) = good.block_on(async {
        let (_c, ch) = raw_channel().await;
        bind_queue(
            &ch,
            &queue,
            PRODUCED_EXCHANGE,
            lapin::ExchangeKind::Fanout,
            "",
        )
        .await;
        deps(Config::default()).await
    });
    // Set up later, on another runtime, towards a port where no broker listens.
    let (_bad_events, _bad_handle) = bad.block_on(async {
        build_event_dependencies(
            "amqp://guest:guest@127.0.0.1:1/%2f",
            Config::default().with_publish_timeout(Duration::from_millis(500)),
        )
        .await
        .expect("set up (connects lazily)")
    });
    good.block_on(async {
        produce(1)
            .await
            .expect("published through this runtime's instance");
        let (_c, ch) = raw_channel().await;
        assert_eq!(queue_len(&ch, &queue).await, 1);
    });
    let err = bad
        .block_on(produce(2))
        .err()
        .expect("this runtime's instance has no broker");
    assert!(matches!(err, eventrabbit::Error::Unavailable(..)), "{err}");
    good.block_on(cleanup(&[&queue], &[]));
}

#[tokio::test]
async fn a_connection_attempt_that_gets_no_answer_is_given_up_and_made_again() {
    init_test_log();
    let (port, accepted, silent) = silent_broker().await;
    let config = Config::default()
        .with_connect_timeout(Duration::from_millis(300))
        .with_max_reconnect_delay(Duration::from_millis(200));
    let (handle, consuming) = consume_from(port, config).await;
    // Each attempt is given up after the connect timeout and made again.
    eventrabbit_tests::wait_until!(
        Duration::from_secs(15),
        accepted.load(Ordering::SeqCst) >= 3
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 3,
        "connection attempts: {}",
        accepted.load(Ordering::SeqCst)
    );
    handle.shutdown().await;
    consuming.await.unwrap().unwrap();
    silent.abort();
}

/// A listener that accepts TCP connections and never says a word of AMQP; counts them.
async fn silent_broker() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    (port, accepted, task)
}

/// Sets eventrabbit up towards `port` and starts consuming a queue there.
async fn consume_from(
    port: u16,
    config: Config,
) -> (
    eventrabbit::Handle,
    tokio::task::JoinHandle<eventrabbit::Result<()>>,
) {
    let (_events, handle) =
        build_event_dependencies(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), config)
            .await
            .unwrap();
    let h = handle.clone();
    let consuming =
        tokio::spawn(async move { h.consume(ConsumeChannel::new(unique("q-silent"))).await });
    (handle, consuming)
}

#[tokio::test]
async fn health_answers_while_a_connection_attempt_hangs() {
    let (port, accepted, silent) = silent_broker().await;
    // One attempt may take a minute: health must not wait for it.
    let config = Config::default().with_connect_timeout(Duration::from_secs(60));
    let (handle, consuming) = consume_from(port, config).await;
    eventrabbit_tests::wait_until!(
        Duration::from_secs(10),
        accepted.load(Ordering::SeqCst) >= 1
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "an attempt is under way"
    );
    let health = tokio::time::timeout(Duration::from_secs(5), handle.health())
        .await
        .expect("health answers while connecting");
    assert!(!health.connected);
    assert!(!health.is_ready());
    handle.shutdown().await;
    consuming.await.unwrap().unwrap();
    silent.abort();
}
