//! The two halves returned by [`build_event_dependencies`]: [`Events`] publishes and calls,
//! [`Handle`] consumes.

use crate::config::Config;
use crate::connection::Connector;
use crate::consume_channel::ConsumeChannel;
use crate::envelope;
use crate::health::Health;
use crate::publisher::{Outgoing, properties};
use crate::registry;
use crate::rpc::request_body;
use crate::runtime::Shared;
use crate::{Error, Result, consumer, dead_letter, sink, telemetry, testing};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Publishing and RPC calls. Cheap to clone; every clone shares one connection.
#[derive(Clone, Debug)]
pub struct Events {
    shared: Arc<Shared>,
}

/// Runs consumers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// Connects the registered handlers to the broker at `url`.
///
/// Checks at once that no action is registered twice and that the URL parses. The
/// connection itself is opened on first use and reopened whenever it drops. The returned
/// [`Events`] also becomes the one `#[producer]` functions publish through.
///
/// ```no_run
/// # async fn run() -> eventrabbit::Result<()> {
/// use eventrabbit::{build_event_dependencies, Config, ConsumeChannel};
/// let (events, handle) = build_event_dependencies("amqp://guest:guest@127.0.0.1:5672/%2f", Config::default()).await?;
/// handle.consume(ConsumeChannel::new("my_queue")).await?;
/// # Ok(()) }
/// ```
pub async fn build_event_dependencies(
    url: impl AsRef<str>,
    config: Config,
) -> Result<(Events, Handle)> {
    registry::check_duplicates()?;
    // Everything eventrabbit runs in the background lives on this runtime.
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let connector = Arc::new(Connector::new(url.as_ref(), &config, runtime)?);
    let idle = config.idle_timeout;
    let shared = Arc::new(Shared::new(connector, config));
    sink::register(sink::Sink::Broker(Arc::downgrade(&shared)));
    if let Some(idle) = idle {
        shared
            .connector
            .spawn(close_when_idle(Arc::downgrade(&shared), idle));
    }
    Ok((
        Events {
            shared: shared.clone(),
        },
        Handle { shared },
    ))
}

/// Closes the publishing channel, and the connection when nothing consumes, once idle.
async fn close_when_idle(shared: Weak<Shared>, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.shutdown.is_cancelled() {
            return;
        }
        if shared.publisher.is_open() && shared.publisher.last_used().elapsed() >= idle {
            shared.publisher.close().await;
            if shared.consumers() == 0 && !shared.rpc.busy() {
                tracing::debug!("closing idle connection");
                shared.rpc.forget().await;
                shared.connector.close().await;
            }
        }
    }
}

impl Events {
    /// Publishes `data` under `action` to `exchange` with `routing_key`, and returns once
    /// the broker confirmed it. `data` must serialize to a JSON object.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        exchange: &str,
        routing_key: &str,
        action: &str,
        data: &T,
    ) -> Result<()> {
        publish_on(&self.shared, exchange, routing_key, action, data).await
    }

    /// Calls the handler of `action` behind `queue` and waits for its reply, up to the
    /// configured RPC timeout.
    pub async fn call<R: DeserializeOwned>(
        &self,
        queue: &str,
        action: &str,
        data: impl Serialize,
    ) -> Result<R> {
        self.call_with_timeout(queue, action, data, self.shared.config.rpc_timeout)
            .await
    }

    /// Like [`Events::call`] with its own deadline.
    pub async fn call_with_timeout<R: DeserializeOwned>(
        &self,
        queue: &str,
        action: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<R> {
        let body = request_body(action, &data)?;
        self.shared.rpc.call("", queue, action, body, timeout).await
    }

    /// Calls through `exchange` with `routing_key`; the first reply wins.
    pub async fn call_exchange<R: DeserializeOwned>(
        &self,
        exchange: &str,
        routing_key: &str,
        action: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<R> {
        let body = request_body(action, &data)?;
        self.shared
            .rpc
            .call(exchange, routing_key, action, body, timeout)
            .await
    }

    /// How many connections this instance has opened: 1 + reconnections (and reopenings
    /// after an idle close).
    #[must_use]
    pub fn connections_opened(&self) -> u64 {
        self.shared.connector.opened()
    }

    /// Why the broker blocks publishing on the connection (a memory or disk alarm), if it
    /// does. Publishes wait while blocked, up to the publish deadline.
    #[must_use]
    pub fn blocked(&self) -> Option<String> {
        self.shared.connector.blocked()
    }

    /// Whether the connection is open now.
    pub async fn is_connected(&self) -> bool {
        self.shared.connector.is_connected()
    }
}

async fn publish_on<T: Serialize + ?Sized>(
    shared: &Shared,
    exchange: &str,
    routing_key: &str,
    action: &str,
    data: &T,
) -> Result<()> {
    let body = envelope::encode_envelope(action, data)?;
    shared
        .publisher
        .publish(Outgoing {
            exchange,
            routing_key,
            body: &body,
            properties: properties(telemetry::outgoing_trace(shared.config.trace_propagation)),
            mandatory: false,
        })
        .await
}

/// Publishes a `#[producer]`'s result through the current [`Events`].
pub(crate) async fn publish_produced<T: Serialize + ?Sized>(
    exchange: &str,
    routing_key: &str,
    action: &str,
    data: &T,
) -> Result<()> {
    match sink::current().ok_or_else(|| Error::NotInitialized(action.to_owned()))? {
        sink::LiveSink::Broker(shared) => {
            publish_on(&shared, exchange, routing_key, action, data).await
        }
        sink::LiveSink::Test(broker) => {
            testing::publish_into(&broker, exchange, routing_key, action, data)
        }
    }
}

impl Handle {
    /// Declares and consumes `channel` until [`Handle::shutdown`]; reconnects by itself
    /// when the connection drops. Fails at once if its topology is refused or its handler
    /// set names an unknown action.
    pub async fn consume(&self, channel: ConsumeChannel) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        consumer::run(self.shared.clone(), channel).await
    }

    /// Stops every consumer: no new deliveries, in-flight handlers finish and are
    /// acknowledged, publishes in flight get their confirms, then the connection closes.
    /// Returns when done.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.consumers_stopped().await;
        // Publishes already sent get their confirms before the channel closes.
        self.shared.publisher.flushed().await;
        self.shared.publisher.close().await;
        self.shared.connector.close().await;
    }

    /// Like [`Handle::shutdown`], but gives up waiting for handlers after `deadline`.
    pub async fn shutdown_within(&self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?deadline, "shutdown deadline passed; closing anyway");
            self.shared.connector.close().await;
        }
    }

    /// The connection's and every consumer's state, for readiness probes.
    pub async fn health(&self) -> Health {
        Health {
            connected: self.shared.connector.is_connected(),
            blocked: self.shared.connector.blocked(),
            consumers: self.shared.consumer_health(),
        }
    }

    /// Moves up to `max` dead-lettered messages of `queue` back to it. Returns how many moved.
    pub async fn redrive_dead_letters(&self, queue: &str, max: usize) -> Result<usize> {
        let dlq = format!("{queue}{}", self.shared.config.queue.dead_letter_suffix);
        dead_letter::redrive(&self.shared.publisher, &dlq, queue, max).await
    }

    /// The name of the dead-letter queue of `queue`.
    #[must_use]
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.shared.config.queue.dead_letter_suffix)
    }
}
