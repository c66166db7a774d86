//! The broker's state, and how it routes a published message into its queues.

use super::records::{DeadLetter, Published};
use crate::config::{Config, ExchangeKind};
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::handler::middleware::Layers;
use crate::handler::producers::{ProducerSink, PublishFuture};
use crate::pipeline::policy::QueuePolicy;
use crate::telemetry::{metric, trace};
use crate::wire::envelope;
use crate::wire::limits;
use crate::wire::properties::properties;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Where replies to the test broker's own calls go.
pub(super) const REPLY_PREFIX: &str = "eventrabbit.testing.reply.";

#[derive(Debug)]
pub(super) struct Binding {
    pub(super) exchange: String,
    pub(super) queue: String,
    pub(super) routing_key: String,
    pub(super) arguments: FieldTable,
}

#[derive(Debug)]
pub(crate) struct QueueState {
    pub(super) policy: Arc<QueuePolicy>,
    pub(crate) messages: VecDeque<Arc<Message>>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(super) exchanges: HashMap<String, ExchangeKind>,
    pub(super) bindings: Vec<Binding>,
    pub(crate) queues: BTreeMap<String, QueueState>,
    pub(crate) dead_letters: HashMap<String, Vec<(Message, DeadLetter)>>,
    pub(super) published: Vec<Published>,
    pub(super) replies: HashMap<String, Vec<u8>>,
    pub(crate) retry_delays: Vec<(String, Duration)>,
    /// Delayed publishes: exchange and the delay on the grid.
    pub(crate) delayed: Vec<(String, Duration)>,
    /// Layers around the handlers of queues consumed from now on.
    pub(crate) layers: Layers,
    /// Event logs, by name: every message routed there, in order (offset = index).
    pub(super) logs: BTreeMap<String, Vec<LogEntry>>,
    /// The stored position of each named stream consumer, by log and name.
    pub(super) positions: HashMap<(String, String), u64>,
    /// Application state registered with `TestBroker::with_state`, over the config's.
    pub(super) app: Option<crate::config::state::StateMap>,
}

impl State {
    /// Binds `queue` (or a log) to each exchange of `bindings`, declaring the exchanges.
    pub(super) fn bind(&mut self, queue: &str, bindings: &[crate::config::Binding]) {
        for b in bindings {
            self.exchanges.insert(b.exchange.clone(), b.kind);
            self.bindings.push(Binding {
                exchange: b.exchange.clone(),
                queue: queue.to_owned(),
                routing_key: b.key_for(queue).to_owned(),
                arguments: b.arguments.clone(),
            });
        }
    }
}

/// A message kept in an event log, and when it was appended.
#[derive(Debug, Clone)]
pub(super) struct LogEntry {
    pub(super) message: Message,
    pub(super) at: std::time::SystemTime,
}

/// The broker's shared state.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(super) config: Config,
    pub(crate) state: Mutex<State>,
}

impl Inner {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The application state handed to handlers: the config's and what the tests added.
    pub(super) fn app_state(&self) -> crate::config::state::StateMap {
        self.state()
            .app
            .clone()
            .unwrap_or_else(|| self.config.state.clone())
    }

    /// Routes an encoded envelope published from outside a handler or by one; with
    /// `mandatory` (or `Config::mandatory`), a message no queue takes is an error.
    pub(super) fn publish_body(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        mandatory: bool,
    ) -> Result<()> {
        let trace = trace::outgoing_trace(self.config.trace_propagation);
        let mandatory = mandatory || self.config.mandatory;
        route(
            self,
            exchange,
            routing_key,
            body,
            properties(trace),
            mandatory,
        )
    }
}

impl ProducerSink for Inner {
    fn is_live(&self) -> bool {
        true
    }

    fn publish_envelope<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        body: Vec<u8>,
        mandatory: bool,
    ) -> PublishFuture<'a> {
        Box::pin(std::future::ready(self.publish_body(
            exchange,
            routing_key,
            &body,
            mandatory,
        )))
    }
}

/// Routes a message as RabbitMQ would; a message no queue takes is dropped, or with
/// `mandatory` refused as [`Error::Unroutable`].
pub(super) fn route(
    inner: &Inner,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<()> {
    limits::check_name("exchange", exchange)?;
    limits::check_name("routing key", routing_key)?;
    limits::check_properties(&properties, limits::DEFAULT_FRAME_MAX)?;
    let mut state = inner.state();
    let (action, data) = match envelope::decode(body) {
        Ok(env) => (
            Some(env.action.into_owned()),
            serde_json::from_slice(&body[env.data]).unwrap_or_default(),
        ),
        Err(_) => (None, serde_json::from_slice(body).unwrap_or_default()),
    };
    let targets = match targets(&state, exchange, routing_key, &properties) {
        Some(targets) => targets,
        None => return Err(Error::NoSuchExchange(exchange.to_owned())),
    };
    let reply = exchange
        .is_empty()
        .then(|| routing_key.strip_prefix(REPLY_PREFIX))
        .flatten();
    if targets.is_empty() && reply.is_none() {
        metric::unroutable(exchange);
        if mandatory {
            return Err(Error::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply_text: "NO_ROUTE".to_owned(),
            });
        }
    }
    state.published.push(Published {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        action,
        data,
    });
    if let Some(id) = reply {
        state.replies.insert(id.to_owned(), body.to_vec());
        return Ok(());
    }
    deliver(&mut state, targets, exchange, routing_key, body, properties);
    Ok(())
}

/// The queues a message goes to; `None` if its exchange does not exist.
fn targets(
    state: &State,
    exchange: &str,
    routing_key: &str,
    properties: &BasicProperties,
) -> Option<Vec<String>> {
    if exchange.is_empty() {
        let known = state.queues.contains_key(routing_key) || state.logs.contains_key(routing_key);
        return Some(known.then(|| routing_key.to_owned()).into_iter().collect());
    }
    let kind = *state.exchanges.get(exchange)?;
    let headers = properties.headers().as_ref();
    let mut targets: Vec<String> = state
        .bindings
        .iter()
        .filter(|b| b.exchange == exchange)
        .filter(|b| {
            super::routing::matches(kind, &b.routing_key, &b.arguments, routing_key, headers)
        })
        .map(|b| b.queue.clone())
        .collect();
    targets.sort();
    targets.dedup();
    if kind == ExchangeKind::ConsistentHash {
        super::routing::pick_by_hash(&mut targets, routing_key);
    }
    Some(targets)
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
        let message = |queue: Arc<str>, offset: Option<u64>| Message {
            queue,
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            redelivered: false,
            offset,
            properties: properties.clone(),
            body: body.to_vec(),
        };
        if let Some(q) = state.queues.get_mut(&name) {
            q.messages
                .push_back(Arc::new(message(q.policy.queue.clone(), None)));
        } else if let Some(log) = state.logs.get_mut(&name) {
            let offset = log.len() as u64;
            log.push(LogEntry {
                message: message(name.as_str().into(), Some(offset)),
                at: std::time::SystemTime::now(),
            });
        }
    }
}
