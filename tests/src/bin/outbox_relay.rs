//! An outbox relay in a process of its own, for the tests that kill it:
//! `outbox_relay <schema> <batch size>` (AMQP_ADDR and DATABASE_URL pick the servers).

use eventrabbit::{Config, build_event_dependencies};
use eventrabbit_postgres::{Relay, RelayConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let schema = args
        .next()
        .expect("usage: outbox_relay <schema> <batch size>");
    let batch: usize = args.next().and_then(|b| b.parse().ok()).unwrap_or(500);
    let pool = eventrabbit_tests::pg_pool().await;
    let (events, _handle) =
        build_event_dependencies(eventrabbit_tests::amqp_addr(), Config::default())
            .await
            .expect("eventrabbit");
    let relay = Relay::new(
        pool,
        events,
        RelayConfig::default().schema(schema).batch_size(batch),
    )
    .expect("relay");
    println!("relay running");
    relay.run().await;
}
