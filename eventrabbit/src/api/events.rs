//! [`Events`]: publishing and RPC calls.

use crate::amqp::client::Client;
use crate::config::PublishOptions;
use crate::error::Result;
use crate::wire::envelope::encode_envelope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Publishing and RPC calls. Cheap to clone; every clone shares one connection.
///
/// ```no_run
/// use eventrabbit::{Config, build_event_dependencies};
/// use serde_json::json;
/// # async fn f() -> eventrabbit::Result<()> {
/// let (events, _handle) = build_event_dependencies("amqp://127.0.0.1:5672/%2f", Config::default()).await?;
/// events.publish("user", "", "USER_CREATED", &json!({"user_id": 7, "name": "ann"})).await?;
/// let sent: serde_json::Value = events
///     .call("email_queue", "SEND_EMAIL", json!({"user_id": 7, "email": "ann@example.com"}))
///     .await?;
/// # let _ = sent; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    shared: Arc<Client>,
}

impl Events {
    pub(crate) fn new(shared: Arc<Client>) -> Self {
        Self { shared }
    }

    /// Publishes `data` under `action` to `exchange` with `routing_key`, and returns once
    /// the broker confirmed it. `data` must serialize to a JSON object.
    ///
    /// `data` is encoded when this is called: the returned future does not borrow it (nor
    /// `action`), so `data` can be a temporary dropped before the publish is awaited.
    pub fn publish<'a, T: Serialize + ?Sized>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        action: &str,
        data: &T,
    ) -> impl Future<Output = Result<()>> + Send + use<'a, T> {
        self.send(exchange, routing_key, encode_envelope(action, data), false)
    }

    /// Like [`Events::publish`], as `options` say: a message id of the caller's (the same
    /// on every send of one event, so that receivers recognise a repeat), headers,
    /// mandatory.
    ///
    /// `data` is encoded when this is called, as with [`Events::publish`].
    pub fn publish_with<'a, T: Serialize + ?Sized>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        action: &str,
        data: &T,
        options: &'a PublishOptions,
    ) -> impl Future<Output = Result<()>> + Send + use<'a, T> {
        let body = encode_envelope(action, data);
        async move {
            self.shared
                .publish_envelope_with(exchange, routing_key, &body?, options)
                .await
        }
    }

    /// Like [`Events::publish`], but a message no queue receives is an
    /// [`Error::Unroutable`](crate::Error::Unroutable), whatever `Config::mandatory` says.
    ///
    /// `data` is encoded when this is called, as with [`Events::publish`].
    pub fn publish_mandatory<'a, T: Serialize + ?Sized>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        action: &str,
        data: &T,
    ) -> impl Future<Output = Result<()>> + Send + use<'a, T> {
        self.send(exchange, routing_key, encode_envelope(action, data), true)
    }

    /// Sends an envelope encoded by the caller (or the error of encoding it).
    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Result<Vec<u8>>,
        mandatory: bool,
    ) -> Result<()> {
        self.shared
            .publish_envelope(exchange, routing_key, &body?, mandatory)
            .await
    }

    /// Publishes `data` under `action` to `exchange` with `routing_key` once `delay` has
    /// passed, without a broker plugin: the message waits in a durable wait queue of the
    /// broker (it survives a broker restart and this process ending) and the broker
    /// publishes it when its time comes. Returns once the broker confirmed it holds the
    /// message.
    ///
    /// Precision: the delay is rounded up (10 ms below 10 s, 1 s below 10 min, 10 s
    /// below 6 h, 1 min beyond), and the broker may take a little longer to move it; it is
    /// never early. At most about 24.8 days ([`Error::InvalidDelay`](crate::Error::InvalidDelay)
    /// beyond). When it is due, the message is routed like any publish: if `exchange` is
    /// gone or nothing is bound for `routing_key` then, it is dropped (no one is left to
    /// tell). A zero delay publishes at once.
    ///
    /// ```no_run
    /// # async fn f(events: eventrabbit::Events) -> eventrabbit::Result<()> {
    /// use std::time::Duration;
    /// events
    ///     .publish_after(Duration::from_secs(15 * 60), "reminders", "", "CART_REMINDER", &serde_json::json!({"cart": 7}))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_after<T: Serialize + ?Sized>(
        &self,
        delay: Duration,
        exchange: &str,
        routing_key: &str,
        action: &str,
        data: &T,
    ) -> Result<()> {
        let body = encode_envelope(action, data)?;
        self.shared
            .publish_envelope_after(delay, exchange, routing_key, &body)
            .await
    }

    /// Like [`Events::publish_after`], at `at` (a time in the past publishes at once).
    pub async fn publish_at<T: Serialize + ?Sized>(
        &self,
        at: SystemTime,
        exchange: &str,
        routing_key: &str,
        action: &str,
        data: &T,
    ) -> Result<()> {
        let delay = at.duration_since(SystemTime::now()).unwrap_or_default();
        self.publish_after(delay, exchange, routing_key, action, data)
            .await
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
        let body = encode_envelope(action, &data)?;
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
        let body = encode_envelope(action, &data)?;
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
