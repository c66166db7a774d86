//! One instance of a partitioned consumer, in a process of its own, for the tests that
//! kill it: `partition_member <exchange> <partitions> <name> <file> [log]` appends
//! `<name> <key> <seq>` to `<file>` for each event it handles (after a random 0–5 ms).
//! With `log`, it reads the partitioned event log `<exchange>` as consumer `proj`
//! (positions stored every 5 events) instead of consuming partition queues.

use eventrabbit::{
    Config, Partitions, RetryConfig, StartAt, State, StreamConsumer, build_event_dependencies,
    consumer,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where handled events are written, and under which instance name.
struct Log {
    name: String,
    file: Mutex<std::fs::File>,
}

#[consumer(action = "T_PART_EVENT")]
async fn record(key: String, seq: u64, log: State<Arc<Log>>) {
    tokio::time::sleep(Duration::from_micros(fastrand::u64(..5_000))).await;
    // One `write` of the whole line on an O_APPEND file: a process killed with `kill -9`
    // never leaves half a line for the other's to run into.
    let line = format!("{} {key} {seq}\n", log.name);
    let mut file = log.file.lock().expect("log file");
    file.write_all(line.as_bytes()).expect("write");
}

#[tokio::main]
async fn main() {
    if let Ok(filter) = std::env::var("EVENTRABBIT_TEST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let mut args = std::env::args().skip(1);
    let usage = "usage: partition_member <exchange> <partitions> <name> <file>";
    let exchange = args.next().expect(usage);
    let count: u16 = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let name = args.next().expect(usage);
    let path = args.next().expect(usage);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log file");
    let log = Arc::new(Log {
        name,
        file: Mutex::new(file),
    });
    let config = Config::default().with_state(log);
    let (_events, handle) = build_event_dependencies(eventrabbit_tests::amqp_addr(), config)
        .await
        .expect("eventrabbit");
    let as_log = args.next().as_deref() == Some("log");
    if as_log {
        let reader = StreamConsumer::new(exchange)
            .name("proj")
            .partitions(count)
            .start_at(StartAt::First)
            .store_every(5)
            .store_interval(Duration::from_millis(100))
            .rebalance_interval(Duration::from_millis(200))
            .actions(["T_PART_EVENT"]);
        let consumer = handle.start_replay(reader).await.expect("replay");
        println!("member running");
        let _ = consumer.join().await;
        return;
    }
    let partitions = Partitions::new(exchange, count)
        .rebalance_interval(Duration::from_millis(200))
        .configure(|channel| {
            channel
                .prefetch(16)
                .durable(false)
                .retry(RetryConfig::default().with_max_retries(2))
        });
    let consumer = handle
        .start_partitions(partitions)
        .await
        .expect("partitions");
    println!("member running");
    let _ = consumer.join().await;
}
