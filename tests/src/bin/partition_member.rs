//! One instance of a partitioned consumer, in a process of its own, for the test that
//! kills it: `partition_member <exchange> <partitions> <name> <file>` appends
//! `<name> <key> <seq>` to `<file>` for each event it handles (after a random 0–5 ms).

use eventrabbit::{Config, Partitions, RetryConfig, State, build_event_dependencies, consumer};
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
    let mut file = log.file.lock().expect("log file");
    writeln!(file, "{} {key} {seq}", log.name).expect("write");
}

#[tokio::main]
async fn main() {
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
