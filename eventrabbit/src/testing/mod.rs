//! An in-memory broker for unit tests: the registered handlers, run with the same
//! envelope decoding, dispatch, retry policy, dead-lettering decisions and replies as on
//! RabbitMQ (the same code: `delivery::handle`), with RabbitMQ's routing for the default,
//! fanout, direct, topic and headers exchanges. No broker, no network, deterministic.
//!
//! ```
//! use eventrabbit::testing::TestBroker;
//! use eventrabbit::{consumer, ConsumeChannel, ExchangeKind};
//! use serde_json::json;
//!
//! #[consumer(action = "DOC_GREET")]
//! async fn greet(name: String) -> String {
//!     format!("hello {name}")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventrabbit::Result<()> {
//! let broker = TestBroker::new();
//! broker.consume(ConsumeChannel::new("greeter").exchange("people", ExchangeKind::Fanout))?;
//! let reply: String = broker.call("greeter", "DOC_GREET", json!({"name": "ann"})).await?;
//! assert_eq!(reply, "hello ann");
//!
//! broker.publish_raw("people", "", b"not json")?;
//! broker.run_until_idle().await?;
//! assert_eq!(broker.dead_letters("greeter")[0].code, "not-json");
//! # Ok(()) }
//! ```
//!
//! Retries are not delayed: a failed message goes back to its queue at once, with its
//! `x-retry-count` raised, and the delay it would have waited is recorded
//! ([`TestBroker::retry_delays`]).

mod broker;
mod chaos;
mod log;
mod records;
mod routing;
mod state;
mod transport;

pub use broker::{MAX_DELIVERIES, TestBroker};
pub use chaos::{Chaos, ChaosReport};
pub use records::{DeadLetter, Published};
