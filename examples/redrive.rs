//! Moves dead-lettered messages back to their queue once the cause is fixed.
//!
//! ```sh
//! cargo run --example redrive -- <queue> [max]     # AMQP_ADDR picks the broker
//! ```

use eventrabbit::{Config, build_event_dependencies};

#[tokio::main]
async fn main() -> eventrabbit::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(queue) = args.next() else {
        eprintln!("usage: redrive <queue> [max]   (moves <queue>.dlq back to <queue>)");
        std::process::exit(2);
    };
    let max = args
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(usize::MAX);
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let (_events, handle) = build_event_dependencies(&url, Config::default()).await?;
    let moved = handle.redrive_dead_letters(&queue, max).await?;
    println!(
        "moved {moved} message(s) from {} back to {queue}",
        handle.dead_letter_queue(&queue)
    );
    handle.shutdown().await;
    Ok(())
}
