//! [`TestBroker`]: the registered handlers run in memory.

use super::chaos::{Chaos, ChaosReport, Disorder};
use super::records::{DeadLetter, Published};
use super::state::{Inner, QueueState, REPLY_PREFIX, State, route};
use super::transport::TestTransport;
use crate::config::{Config, ConsumeChannel, ExchangeKind};
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::handler::middleware::{Layers, Middleware};
use crate::handler::producers::{self, ProducerSink};
use crate::handler::registry;
use crate::pipeline::failure::without_failure_headers;
use crate::pipeline::handle::handle;
use crate::pipeline::policy::QueuePolicy;
use crate::pipeline::redrive::{Redrive, RedriveReport, Verdict, action_of, verdict};
use crate::telemetry::trace;
use crate::wire::envelope;
use crate::wire::properties::request_properties;
use futures_util::future::join_all;
use lapin::BasicProperties;
use lapin::types::ShortString;
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// How many deliveries [`TestBroker::run_until_idle`] handles before it gives up (a
/// handler failing forever with unbounded retries would otherwise never settle).
pub const MAX_DELIVERIES: usize = 100_000;

/// The in-memory broker. See the [module docs](crate::testing).
#[derive(Debug, Clone)]
pub struct TestBroker {
    pub(super) inner: Arc<Inner>,
    disorder: Option<Arc<Disorder>>,
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
        let sink: Arc<dyn ProducerSink> = inner.clone();
        producers::register(Arc::downgrade(&sink));
        Self {
            inner,
            disorder: None,
        }
    }

    /// This broker, handing `value` to every handler parameter of type
    /// [`State<T>`](crate::State), as [`Config::with_state`] does for a real service (one
    /// value per type; queues consumed from now on see it). Tests pass their own fakes.
    #[must_use]
    pub fn with_state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.with_state_arc(Arc::new(value))
    }

    /// Like [`TestBroker::with_state`], with a value the test keeps an `Arc` of, to look
    /// at what the handlers did to it.
    #[must_use]
    pub fn with_state_arc<T: Send + Sync + 'static>(self, value: Arc<T>) -> Self {
        {
            let mut app = self.inner.app_state();
            app.insert_arc(value);
            self.state().app = Some(app);
        }
        self
    }

    /// This broker, delivering with `chaos`'s disorder from now on: duplicates,
    /// redeliveries after lost acks, reordering within each queue's prefetch window, all
    /// drawn from its seed, so a failing run replays exactly. Print
    /// [`chaos_report`](Self::chaos_report) with the seed when a test fails.
    #[must_use]
    pub fn with_chaos(mut self, chaos: Chaos) -> Self {
        self.disorder = Some(Arc::new(Disorder::new(chaos)));
        self
    }

    /// What the chaos did so far (`None` without chaos).
    #[must_use]
    pub fn chaos_report(&self) -> Option<ChaosReport> {
        self.disorder.as_ref().map(|d| *d.report.lock())
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    /// Declares `channel`'s queue (and exchange and binding), as `Handle::consume` would;
    /// fails the same way for an unknown action in its handler set.
    pub fn consume(&self, channel: ConsumeChannel) -> Result<()> {
        self.consume_with(channel, Layers::default())
    }

    /// Like [`TestBroker::consume`], with `layers` around every handler of the queue, as
    /// `Handle::consume_with` does.
    pub fn consume_with(&self, channel: ConsumeChannel, layers: Layers) -> Result<()> {
        let routes = registry::routes(&channel.queue, channel.handling.actions())?;
        let settings = channel.resolve(&self.inner.config.queue, &self.inner.config.retry);
        channel.check(&settings)?;
        let layers = self.state().layers.around(&layers);
        let policy = QueuePolicy::new(&channel.queue, routes, settings, self.inner.app_state())
            .with_layers(layers);
        policy.check()?;
        let policy = Arc::new(policy);
        let mut state = self.state();
        state.queues.insert(
            channel.queue.clone(),
            QueueState {
                policy,
                messages: VecDeque::new(),
            },
        );
        state.bind(&channel.queue, &channel.bindings);
        Ok(())
    }

    /// Wraps every handler of every queue consumed from now on in `layer`, as
    /// `Handle::layer` does.
    pub fn layer(&self, layer: impl Middleware) {
        self.state().layers.push(Arc::new(layer));
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
        let body = envelope::encode_envelope(action, data)?;
        self.inner.publish_body(exchange, routing_key, &body, false)
    }

    /// Publishes as `Events::publish_after` does. The test broker has no clock: the
    /// message is routed at once (handled by the next [`run_until_idle`](Self::run_until_idle)),
    /// and the delay it would have waited on RabbitMQ (rounded up onto the same grid) is
    /// recorded for [`delayed`](Self::delayed). A delay RabbitMQ cannot hold fails alike.
    pub fn publish_after<T: Serialize + ?Sized>(
        &self,
        delay: Duration,
        exchange: &str,
        routing_key: &str,
        action: &str,
        data: &T,
    ) -> Result<()> {
        let delay = crate::wire::delay::on_grid(delay)?;
        let body = envelope::encode_envelope(action, data)?;
        self.state().delayed.push((exchange.to_owned(), delay));
        self.inner.publish_body(exchange, routing_key, &body, false)
    }

    /// The delays of the delayed publishes to `exchange`, in order (as RabbitMQ would have
    /// waited them, rounded up).
    #[must_use]
    pub fn delayed(&self, exchange: &str) -> Vec<Duration> {
        self.state()
            .delayed
            .iter()
            .filter(|(x, _)| x == exchange)
            .map(|(_, d)| *d)
            .collect()
    }

    /// Publishes a body as it is (to test poison input).
    pub fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8]) -> Result<()> {
        self.inner.publish_body(exchange, routing_key, body, false)
    }

    /// Publishes a body with the given properties (headers, reply_to, ...).
    pub fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        route(
            &self.inner,
            exchange,
            routing_key,
            body,
            properties,
            self.inner.config.mandatory,
        )
    }

    /// Handles every queued message, and every message that handling publishes, until
    /// no queue holds any. Returns how many deliveries were handled.
    pub async fn run_until_idle(&self) -> Result<usize> {
        let mut handled = 0;
        while let Some((policy, messages)) = self.next_messages() {
            handled += messages.len();
            if handled > MAX_DELIVERIES {
                return Err(Error::Unavailable(
                    Duration::ZERO,
                    format!(
                        "settling: still busy after {MAX_DELIVERIES} deliveries (a handler failing forever?)"
                    ),
                ));
            }
            let transport = TestTransport(&self.inner);
            let all = messages
                .iter()
                .map(|message| handle(&policy, &transport, message));
            let settled = producers::scope(self.sink(), join_all(all)).await;
            settled.into_iter().collect::<Result<Vec<()>>>()?;
            if let Some(disorder) = &self.disorder {
                for message in &messages {
                    if disorder.lose_ack() {
                        self.requeue(message, true);
                    }
                }
            }
        }
        Ok(handled)
    }

    pub(super) fn sink(&self) -> Arc<dyn ProducerSink> {
        self.inner.clone()
    }

    /// The next message of a queue; for a queue with a batch handler, up to its prefetch
    /// window of messages, handled together as the consumer would.
    fn next_messages(&self) -> Option<(Arc<QueuePolicy>, Vec<Arc<Message>>)> {
        let mut state = self.state();
        let disorder = self.disorder.as_deref();
        state.queues.values_mut().find_map(|q| {
            let prefetch = usize::from(q.policy.settings.prefetch);
            let taken: Vec<Arc<Message>> = if q.policy.has_batches() {
                let n = prefetch.min(q.messages.len());
                q.messages.drain(..n).collect()
            } else {
                let at = disorder.map_or(0, |d| d.pick(q.messages.len(), prefetch));
                q.messages.remove(at).into_iter().collect()
            };
            if taken.is_empty() {
                return None;
            }
            if let Some(d) = disorder {
                for m in &taken {
                    if d.duplicate() {
                        q.messages.push_back(Arc::new(Message::clone(m)));
                    }
                }
            }
            Some((q.policy.clone(), taken))
        })
    }

    /// Puts `message` back at the end of its queue, as a broker does with an unacknowledged
    /// delivery when the connection drops.
    fn requeue(&self, message: &Message, redelivered: bool) {
        let mut state = self.state();
        if let Some(q) = state.queues.get_mut(&*message.queue) {
            let mut again = message.clone();
            again.redelivered = redelivered;
            q.messages.push_back(Arc::new(again));
        }
    }

    /// Runs `fut` (e.g. a `#[producer]` call) publishing into this broker, whatever else
    /// is registered in the program.
    pub async fn scope<F: std::future::Future>(&self, fut: F) -> F::Output {
        producers::scope(self.sink(), fut).await
    }

    /// Calls `action` on `queue` like `Events::call`, runs until idle, and decodes the reply.
    pub async fn call<R: DeserializeOwned>(
        &self,
        queue: &str,
        action: &str,
        data: impl Serialize,
    ) -> Result<R> {
        let body = envelope::encode_envelope(action, &data)?;
        let id = crate::wire::properties::new_message_id();
        let props = request_properties(
            trace::outgoing_trace(self.inner.config.trace_propagation),
            ShortString::from(format!("{REPLY_PREFIX}{id}")),
            ShortString::from(id.as_str()),
        );
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
            Some(reply) => envelope::decode_reply(queue, action, &reply),
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
        self.dead_letters_in(&dlq)
    }

    pub(super) fn dead_letters_in(&self, dead_letter_queue: &str) -> Vec<DeadLetter> {
        self.state()
            .dead_letters
            .get(dead_letter_queue)
            .map(|v| v.iter().map(|(_, d)| d.clone()).collect())
            .unwrap_or_default()
    }

    /// Moves `queue`'s dead letters back to it, as `Handle::redrive_dead_letters` does.
    pub fn redrive_dead_letters(&self, queue: &str) -> usize {
        self.redrive(queue, Redrive::new()).moved
    }

    /// Moves `queue`'s dead letters back to it, or in a dry run says which of them today's
    /// handlers would take, as `Handle::redrive` does.
    pub fn redrive(&self, queue: &str, how: Redrive) -> RedriveReport {
        let dlq = format!("{queue}{}", self.inner.config.queue.dead_letter_suffix);
        let mut state = self.state();
        let letters = state.dead_letters.remove(&dlq).unwrap_or_default();
        let mut report = RedriveReport {
            found: letters.len(),
            ..RedriveReport::default()
        };
        let policy = state.queues.get(queue).map(|q| q.policy.clone());
        let mut kept = Vec::new();
        for (i, (message, letter)) in letters.into_iter().enumerate() {
            if i >= how.max {
                kept.push((message, letter));
                continue;
            }
            let message = Arc::new(message);
            let verdict = match &policy {
                Some(policy) => verdict(policy, &message),
                None => Verdict::Fail(format!("queue `{queue}` is not consumed")),
            };
            report.add(letter.code.clone(), action_of(&message.body), verdict);
            let target = state.queues.get_mut(queue).filter(|_| !how.dry_run);
            match target {
                Some(q) => {
                    let props = message
                        .properties
                        .clone()
                        .with_headers(without_failure_headers(
                            message.headers().cloned().unwrap_or_default(),
                        ));
                    q.messages.push_back(Arc::new(Message {
                        queue: message.queue.clone(),
                        exchange: "".into(),
                        routing_key: queue.into(),
                        redelivered: false,
                        offset: None,
                        properties: props,
                        body: message.body.clone(),
                    }));
                    report.moved += 1;
                }
                None => kept.push((Arc::unwrap_or_clone(message), letter)),
            }
        }
        if !kept.is_empty() {
            state
                .dead_letters
                .entry(dlq)
                .or_default()
                .splice(0..0, kept);
        }
        report
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

    /// The arguments `queue` was declared with (`x-queue-type`, `x-max-length`, ...), as
    /// `Handle::consume` would declare them on RabbitMQ. They are recorded, not simulated:
    /// the test broker has no length limits, TTLs, priorities or single active consumer.
    #[must_use]
    pub fn queue_arguments(&self, queue: &str) -> Option<lapin::types::FieldTable> {
        self.state()
            .queues
            .get(queue)
            .map(|q| q.policy.settings.arguments.clone())
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
