//! A service run by `eventrabbit::Service` in a process of its own, for the test that
//! stops it with SIGTERM: `service_runner <queue>` (AMQP_ADDR picks the broker). Its
//! handler prints `started <n>`, takes 500 ms, then prints `handled <n>`.

use eventrabbit::{Config, ConsumeChannel, Service, build_event_dependencies, consumer};
use std::io::Write;
use std::time::Duration;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[consumer(action = "T_SERVICE")]
async fn slow(n: u64) {
    say(format!("started {n}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    say(format!("handled {n}"));
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let queue = std::env::args()
        .nth(1)
        .expect("usage: service_runner <queue>");
    let (_events, handle) =
        build_event_dependencies(eventrabbit_tests::amqp_addr(), Config::default())
            .await
            .expect("eventrabbit");
    let ran = Service::new(&handle)
        .consume(ConsumeChannel::new(queue).actions(["T_SERVICE"]))
        .shutdown_within(Duration::from_secs(10))
        .run()
        .await;
    match ran {
        Ok(()) => {
            say("stopped".into());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            say(format!("failed: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}
