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

use crate::config::Config;
use crate::consume_channel::{ConsumeChannel, ExchangeKind};
use crate::context::Message;
use crate::delivery::{self, QueuePolicy};
use crate::publisher::properties;
use crate::registry;
use crate::routing;
use crate::sink;
use crate::telemetry;
use crate::{Error, Result, envelope, rpc};
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many deliveries [`TestBroker::run_until_idle`] handles before it gives up (a
/// handler failing forever with unbounded retries would otherwise never settle).
pub const MAX_DELIVERIES: usize = 100_000;

mod transport;

use transport::TestTransport;

const REPLY_PREFIX: &str = "eventrabbit.testing.reply.";

/// A message that went to a dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The reason code (`not-json`, `invalid-data`, `retries-exhausted`, ...).
    pub code: String,
    /// The reason, in words.
    pub reason: String,
    /// How many times a handler ran on it.
    pub attempts: u32,
    /// The body, as it was received.
    pub body: Vec<u8>,
}

/// A message published to an exchange, as routed by the broker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Published {
    /// The exchange (`""` for the default exchange).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The envelope's action, if the body is an envelope.
    pub action: Option<String>,
    /// The envelope's `data` (or the whole body if it is not an envelope), as JSON.
    pub data: serde_json::Value,
}

#[derive(Debug)]
struct Binding {
    exchange: String,
    queue: String,
    routing_key: String,
    arguments: FieldTable,
}

#[derive(Debug)]
pub(crate) struct QueueState {
    policy: Arc<QueuePolicy>,
    pub(crate) messages: VecDeque<Arc<Message>>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    exchanges: HashMap<String, ExchangeKind>,
    bindings: Vec<Binding>,
    pub(crate) queues: BTreeMap<String, QueueState>,
    pub(crate) dead_letters: HashMap<String, Vec<(Message, DeadLetter)>>,
    published: Vec<Published>,
    replies: HashMap<String, Vec<u8>>,
    pub(crate) retry_delays: Vec<(String, Duration)>,
}

/// The broker's shared state.
#[derive(Debug)]
pub(crate) struct Inner {
    config: Config,
    pub(crate) state: Mutex<State>,
}

/// The in-memory broker. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TestBroker {
    inner: Arc<Inner>,
}

tokio::task_local! {
    static SCOPED: Arc<Inner>;
}

/// The broker running handlers on this task, if any.
pub(crate) fn scoped() -> Option<Arc<Inner>> {
    SCOPED.try_with(Arc::clone).ok()
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBroker {
    /// A broker with the default [`Config`] (retry policy and queue defaults).
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    /// A broker with `config`'s retry policy and queue defaults.
    ///
    /// # Panics
    /// If two handlers are registered for one action, as `build_event_dependencies` would fail.
    #[must_use]
    pub fn with_config(config: Config) -> Self {
        if let Err(e) = registry::check_duplicates() {
            panic!("{e}");
        }
        let inner = Arc::new(Inner {
            config,
            state: Mutex::default(),
        });
        sink::register(sink::Sink::Test(Arc::downgrade(&inner)));
        Self { inner }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares `channel`'s queue (and exchange and binding), as `Handle::consume` would;
    /// fails the same way for an unknown action in its handler set.
    pub fn consume(&self, channel: ConsumeChannel) -> Result<()> {
        let routes = registry::routes(&channel.queue, channel.actions.as_deref())?;
        let settings = channel.resolve(&self.inner.config.queue, &self.inner.config.retry);
        let policy = Arc::new(QueuePolicy::new(&channel.queue, routes, settings));
        let mut state = self.state();
        state.queues.insert(
            channel.queue.clone(),
            QueueState {
                policy,
                messages: VecDeque::new(),
            },
        );
        if let Some(b) = &channel.binding {
            state.exchanges.insert(b.exchange.clone(), b.kind);
            let routing_key = if b.routing_key.is_empty() && b.kind == ExchangeKind::Direct {
                channel.queue.clone()
            } else {
                b.routing_key.clone()
            };
            state.bindings.push(Binding {
                exchange: b.exchange.clone(),
                queue: channel.queue.clone(),
                routing_key,
                arguments: b.arguments.clone(),
            });
        }
        Ok(())
    }

    /// Declares an exchange no consumed queue declares (one the service only publishes to).
    pub fn declare_exchange(&self, exchange: &str, kind: ExchangeKind) {
        self.state().exchanges.insert(exchange.to_owned(), kind);
    }

    /// Publishes `data` under `action`, as `Events::publish` does.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        exchange: &str,
        routing_key: &str,
        action: &str,
        data: &T,
    ) -> Result<()> {
        publish_into(&self.inner, exchange, routing_key, action, data)
    }

    /// Publishes a body as it is (to test poison input).
    pub fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8]) -> Result<()> {
        let trace = telemetry::outgoing_trace(self.inner.config.trace_propagation);
        self.publish_with(exchange, routing_key, body, properties(trace))
    }

    /// Publishes a body with the given properties (headers, reply_to, ...).
    pub fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        route(&self.inner, exchange, routing_key, body, properties)
    }

    /// Handles every queued message, and every message that handling publishes, until
    /// no queue holds any. Returns how many deliveries were handled.
    pub async fn run_until_idle(&self) -> Result<usize> {
        let mut handled = 0;
        while let Some((policy, message)) = self.next_message() {
            handled += 1;
            if handled > MAX_DELIVERIES {
                return Err(Error::Unavailable(
                    Duration::ZERO,
                    format!(
                        "settling: still busy after {MAX_DELIVERIES} deliveries (a handler failing forever?)"
                    ),
                ));
            }
            let transport = TestTransport(&self.inner);
            SCOPED
                .scope(
                    self.inner.clone(),
                    delivery::handle(&policy, &transport, &message),
                )
                .await?;
        }
        Ok(handled)
    }

    fn next_message(&self) -> Option<(Arc<QueuePolicy>, Arc<Message>)> {
        let mut state = self.state();
        state.queues.values_mut().find_map(|q| {
            let m = q.messages.pop_front()?;
            Some((q.policy.clone(), m))
        })
    }

    /// Runs `fut` (e.g. a `#[producer]` call) publishing into this broker, whatever else
    /// is registered in the program.
    pub async fn scope<F: std::future::Future>(&self, fut: F) -> F::Output {
        SCOPED.scope(self.inner.clone(), fut).await
    }

    /// Calls `action` on `queue` like `Events::call`, runs until idle, and decodes the reply.
    pub async fn call<R: DeserializeOwned>(
        &self,
        queue: &str,
        action: &str,
        data: impl Serialize,
    ) -> Result<R> {
        let body = rpc::request_body(action, &data)?;
        let id = uuid::Uuid::new_v4().to_string();
        let props = properties(telemetry::outgoing_trace(
            self.inner.config.trace_propagation,
        ))
        .with_reply_to(ShortString::from(format!("{REPLY_PREFIX}{id}")))
        .with_correlation_id(ShortString::from(id.as_str()));
        if !self.state().queues.contains_key(queue) {
            return Err(Error::Unroutable {
                exchange: String::new(),
                routing_key: queue.to_owned(),
                reply_text: "NO_ROUTE".to_owned(),
            });
        }
        self.publish_with("", queue, &body, props)?;
        self.run_until_idle().await?;
        let reply = self.state().replies.remove(&id);
        match reply {
            Some(reply) => rpc::decode_reply(queue, action, &reply),
            None => Err(Error::Timeout {
                target: queue.to_owned(),
                action: action.to_owned(),
                timeout: Duration::ZERO,
            }),
        }
    }

    /// What went to `queue`'s dead-letter queue, oldest first.
    #[must_use]
    pub fn dead_letters(&self, queue: &str) -> Vec<DeadLetter> {
        let dlq = format!("{queue}{}", self.inner.config.queue.dead_letter_suffix);
        self.state()
            .dead_letters
            .get(&dlq)
            .map(|v| v.iter().map(|(_, d)| d.clone()).collect())
            .unwrap_or_default()
    }

    /// Moves `queue`'s dead letters back to it, as `Handle::redrive_dead_letters` does.
    pub fn redrive_dead_letters(&self, queue: &str) -> usize {
        let dlq = format!("{queue}{}", self.inner.config.queue.dead_letter_suffix);
        let mut state = self.state();
        let letters = state.dead_letters.remove(&dlq).unwrap_or_default();
        let n = letters.len();
        if let Some(q) = state.queues.get_mut(queue) {
            for (message, _) in letters {
                let mut props = message.properties.clone();
                props = props.with_headers(crate::dead_letter::without_failure_headers(
                    message.headers().cloned().unwrap_or_default(),
                ));
                q.messages.push_back(Arc::new(Message {
                    properties: props,
                    exchange: "".into(),
                    routing_key: queue.into(),
                    ..message
                }));
            }
        }
        n
    }

    /// Everything published to `exchange` (`""`: the default exchange), oldest first.
    #[must_use]
    pub fn published_to(&self, exchange: &str) -> Vec<Published> {
        self.state()
            .published
            .iter()
            .filter(|p| p.exchange == exchange)
            .cloned()
            .collect()
    }

    /// How many messages wait in `queue`.
    #[must_use]
    pub fn queue_len(&self, queue: &str) -> usize {
        self.state()
            .queues
            .get(queue)
            .map_or(0, |q| q.messages.len())
    }

    /// The delay each retry would have waited on RabbitMQ, by queue, in order.
    #[must_use]
    pub fn retry_delays(&self, queue: &str) -> Vec<Duration> {
        self.state()
            .retry_delays
            .iter()
            .filter(|(q, _)| q == queue)
            .map(|(_, d)| *d)
            .collect()
    }
}

/// Publishes an envelope into the broker.
pub(crate) fn publish_into<T: Serialize + ?Sized>(
    inner: &Arc<Inner>,
    exchange: &str,
    routing_key: &str,
    action: &str,
    data: &T,
) -> Result<()> {
    let body = envelope::encode_envelope(action, data)?;
    let trace = telemetry::outgoing_trace(inner.config.trace_propagation);
    route(inner, exchange, routing_key, &body, properties(trace))
}

/// Routes a message as RabbitMQ would; a message no queue takes is dropped.
pub(crate) fn route(
    inner: &Arc<Inner>,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<()> {
    let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let (action, data) = match envelope::decode(body) {
        Ok(env) => (
            Some(env.action.into_owned()),
            serde_json::from_slice(&body[env.data]).unwrap_or_default(),
        ),
        Err(_) => (None, serde_json::from_slice(body).unwrap_or_default()),
    };
    if !exchange.is_empty() && !state.exchanges.contains_key(exchange) {
        return Err(Error::NoSuchExchange(exchange.to_owned()));
    }
    state.published.push(Published {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        action,
        data,
    });
    if exchange.is_empty() {
        if let Some(id) = routing_key.strip_prefix(REPLY_PREFIX) {
            state.replies.insert(id.to_owned(), body.to_vec());
            return Ok(());
        }
        let targets = if state.queues.contains_key(routing_key) {
            vec![routing_key.to_owned()]
        } else {
            Vec::new()
        };
        deliver(&mut state, targets, exchange, routing_key, body, properties);
        return Ok(());
    }
    let Some(kind) = state.exchanges.get(exchange).copied() else {
        return Err(Error::NoSuchExchange(exchange.to_owned()));
    };
    let headers = properties.headers().clone();
    let mut targets: Vec<String> = state
        .bindings
        .iter()
        .filter(|b| b.exchange == exchange)
        .filter(|b| {
            routing::matches(
                kind,
                &b.routing_key,
                &b.arguments,
                routing_key,
                headers.as_ref(),
            )
        })
        .map(|b| b.queue.clone())
        .collect();
    targets.sort();
    targets.dedup();
    deliver(&mut state, targets, exchange, routing_key, body, properties);
    Ok(())
}

fn deliver(
    state: &mut State,
    queues: Vec<String>,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    for name in queues {
        if let Some(q) = state.queues.get_mut(&name) {
            q.messages.push_back(Arc::new(Message {
                queue: q.policy.queue.clone(),
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                redelivered: false,
                properties: properties.clone(),
                body: body.to_vec(),
            }));
        }
    }
}
