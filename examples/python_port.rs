//! A port of the "Full Example" of the Python eventrabbit README: three queues on fanout
//! exchanges, one direct queue, producers as methods. The Python version loops forever
//! (each handler publishes again); this one stops after `LIMIT` handled events or Ctrl-C,
//! shutting down gracefully either way.
//!
//! ```sh
//! cargo run --example python_port
//! ```

use eventrabbit::{
    Config, ConsumeChannel, ExchangeKind, Service, State, build_event_dependencies, consumer,
    producer,
};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

const LIMIT: usize = 10;

/// The Python version's module-level `count_call`, as application state: made in `main`,
/// handed to the handlers taking `State<Calls>`.
#[derive(Default)]
struct Calls {
    count: AtomicUsize,
    done: Notify,
}

impl Calls {
    /// Counts one handled event; whether the chain goes on.
    fn count(&self) -> bool {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        println!("count {n}");
        if n >= LIMIT {
            self.done.notify_one();
        }
        n < LIMIT
    }
}

#[derive(Serialize)]
struct Tracker {
    b: String,
}

struct Retro;

impl Retro {
    #[producer(exchange = "GOOGLE_FANOUT_EXCHANGE", action = "TRACKERS_INFO")]
    async fn abc(&self) -> Tracker {
        Tracker { b: "12".into() }
    }

    #[producer(exchange = "PROFILE_FANOUT_EXCHANGE", action = "TRACKERS_INFO_1")]
    async fn abc1(&self) -> Tracker {
        Tracker { b: "12".into() }
    }
}

#[consumer(action = "TRACKERS_INFO")]
async fn a1(b: String, calls: State<Calls>) -> eventrabbit::Result<String> {
    println!("{b} 23");
    if calls.count() {
        Retro.abc().await?;
    }
    Ok(b)
}

#[consumer(action = "TRACKERS_INFO_1")]
async fn a2(b: String, calls: State<Calls>) -> eventrabbit::Result<String> {
    println!("{b} 23");
    if calls.count() {
        Retro.abc1().await?;
    }
    Ok(b)
}

#[tokio::main]
async fn main() -> eventrabbit::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let calls = Arc::new(Calls::default());
    let config = Config::default().with_state_arc(calls.clone());
    let (_events, handle) = build_event_dependencies(&url, config).await?;

    let queues_exchanges = [
        ("calendar_user_sync", "PROFILE_FANOUT_EXCHANGE"),
        ("calendar_google_sync", "GOOGLE_FANOUT_EXCHANGE"),
        ("calendar_user_status_sync", "USER_STATUS_FANOUT_EXCHANGE"),
    ];
    // `Service` starts every consumer, then runs until its stop completes (`run()` stops
    // on Ctrl-C or SIGTERM), shuts down gracefully and returns the first consumer error.
    let service = queues_exchanges
        .iter()
        .map(|(queue, exchange)| {
            ConsumeChannel::new(*queue).exchange(*exchange, ExchangeKind::Fanout)
        })
        .chain([ConsumeChannel::new("tracker_info")])
        .fold(Service::new(&handle), Service::consume);
    service
        .run_until(async {
            // Every consumer is consuming once the stop is awaited: the chain can begin.
            if let Err(e) = Retro.abc().await {
                println!("could not start the chain: {e}");
                return;
            }
            tokio::select! {
                _ = calls.done.notified() => println!("handled {LIMIT} events"),
                _ = tokio::signal::ctrl_c() => println!("Ctrl-C"),
            }
        })
        .await
}
