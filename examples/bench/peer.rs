//! The W2 workload written with a peer framework, RustStream 0.7 on RabbitMQ
//! (`ruststream-lapin`): 100,000 persistent publishes to the same fanout exchange, each
//! awaiting its broker confirm, 1,000 in flight, with the same envelope as eventrabbit's.
//! Built only with `--features peer-ruststream`.

use crate::broker::addr;
use crate::w2::W2_N;
use futures_util::StreamExt;
use ruststream_lapin::prelude::*;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
struct UserCreated {
    user_id: u64,
    name: String,
}

/// The envelope eventrabbit sends (`{"action": .., "data": {..}}`), so that both publish the
/// same bytes.
#[derive(Serialize, Outgoing)]
#[outgoing(name = "")]
struct Envelope {
    action: &'static str,
    data: UserCreated,
}

/// Messages per second.
pub async fn w2_ruststream(x: &str) -> f64 {
    let connected = LapinBroker::new(addr()).connect().await.unwrap();
    let events = connected.publisher(
        LapinPublish::default()
            .exchange(x)
            .persistent(true)
            .confirms(),
    );
    let envelope = |n: u64| Envelope {
        action: "USER_CREATED",
        data: UserCreated {
            user_id: n,
            name: format!("user-{n}"),
        },
    };
    // Its confirm channel opened, as eventrabbit's and lapin's are before the clock starts.
    events.message(&envelope(0)).publish().await.unwrap();
    let start = Instant::now();
    futures_util::stream::iter(1..=W2_N)
        .map(|n| {
            let events = events.clone();
            async move { events.message(&envelope(n)).publish().await }
        })
        .buffer_unordered(1000)
        .for_each(|r| async move { r.unwrap() })
        .await;
    let rate = W2_N as f64 / start.elapsed().as_secs_f64();
    let _ = ruststream::ConnectedBroker::shutdown(connected).await;
    rate
}
