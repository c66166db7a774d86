//! A named stream consumer in a process of its own, for the test that kills it:
//! `stream_replayer <log> <name> <store every>` prints `n` of each event it handles.

use eventrabbit::{Config, StartAt, StreamConsumer, build_event_dependencies, consumer};
use std::io::Write;

#[consumer(action = "T_STREAM_CHILD")]
async fn handled(n: u64) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{n}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (log, name) = (args.next().expect("log"), args.next().expect("name"));
    let every: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let (_events, handle) =
        build_event_dependencies(eventrabbit_tests::amqp_addr(), Config::default())
            .await
            .expect("eventrabbit");
    handle
        .replay(
            StreamConsumer::new(log)
                .name(name)
                .start_at(StartAt::First)
                .store_every(every)
                .actions(["T_STREAM_CHILD"]),
        )
        .await
        .expect("replay");
}
