//! The shared broker connection: opened lazily, reopened with backoff when it drops, to
//! the broker's nodes in turn.

use super::reopen::Reopen;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::telemetry::metric;
use crate::wire::limits::DEFAULT_FRAME_MAX;
use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// One node of the broker: its URL, parsed (never printed), and how it is shown.
struct Endpoint {
    uri: AMQPUri,
    redacted: String,
}

/// Owns the broker's URLs (never printed) and the one connection every channel comes from.
///
/// The connection and the connector's tasks live on the runtime the connector was made on,
/// whichever runtime asks for a channel: a connection bound to a caller's runtime would go
/// dead with it (its socket registered with that runtime's driver).
pub(crate) struct Connector {
    /// The nodes, in a random order; attempts go to them in turn.
    endpoints: Vec<Endpoint>,
    /// The node the next attempt goes to.
    next: AtomicUsize,
    /// The node of the live connection.
    node: Mutex<Option<String>>,
    name: String,
    tls_ca_pem: Option<String>,
    max_delay: Duration,
    connect_timeout: Duration,
    runtime: Handle,
    connection: Reopen<Connection>,
    opened: AtomicU64,
    /// The largest frame the broker takes on the current connection.
    frame_max: AtomicU32,
    blocked: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.redacted.as_str()).collect();
        f.debug_struct("Connector")
            .field("urls", &urls)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector to the nodes in `urls` (comma-separated), each connection requesting
    /// `config.heartbeat` unless its URL sets one.
    pub(crate) fn new(urls: &str, config: &Config, runtime: Handle) -> Result<Self> {
        let mut endpoints = crate::wire::redact::split_urls(urls)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|url| {
                let mut uri = url
                    .parse::<AMQPUri>()
                    .map_err(|e| Error::InvalidUrl(crate::wire::redact::redact_text(&e, url)))?;
                // A password the parser did not see as one (`amqp:/user:pw@host` parses as a
                // virtual host holding it) would be sent, echoed and logged in the clear.
                // (The parser's own default, guest, takes the place of a password it missed.)
                let written = crate::wire::redact::password(url)
                    .filter(|p| !p.is_empty())
                    .map(crate::wire::redact::percent_decoded);
                if written.is_some_and(|p| p != uri.authority.userinfo.password) {
                    return Err(Error::InvalidUrl(format!(
                        "`{}`: write the user and password as amqp://user:password@host:port/vhost",
                        crate::wire::redact::redact_url(url)
                    )));
                }
                if uri.query.heartbeat.is_none() {
                    let secs = config.heartbeat.as_secs().clamp(1, u64::from(u16::MAX));
                    uri.query.heartbeat = Some(secs as u16);
                }
                Ok(Endpoint {
                    uri,
                    redacted: crate::wire::redact::redact_url(url),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(Error::InvalidUrl("no broker URL given".to_owned()));
        }
        fastrand::shuffle(&mut endpoints);
        Ok(Self {
            endpoints,
            next: AtomicUsize::new(0),
            node: Mutex::new(None),
            name: config.connection_name.clone(),
            tls_ca_pem: config.tls_ca_pem.clone(),
            max_delay: config.max_reconnect_delay,
            connect_timeout: config.connect_timeout,
            runtime,
            connection: Reopen::default(),
            opened: AtomicU64::new(0),
            frame_max: AtomicU32::new(DEFAULT_FRAME_MAX as u32),
            blocked: Arc::default(),
        })
    }

    /// The runtime the connection and the connector's tasks live on.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// Runs `task` on the connector's runtime.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// The live connection, opening one if there is none: one attempt, to the next node,
    /// given up after `timeout`.
    pub(crate) async fn connect_once(&self, timeout: Duration) -> Result<Arc<Connection>> {
        self.connection.get_or_open(|| self.open(timeout)).await
    }

    async fn open(&self, timeout: Duration) -> Result<Arc<Connection>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let endpoint = &self.endpoints[n];
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: self.tls_ca_pem.clone(),
        };
        let runtime = async_rs::Runtime::tokio_with_handle(self.runtime.clone());
        let connecting =
            Connection::connect_uri_with_config(endpoint.uri.clone(), props, tls, runtime);
        let url = &endpoint.redacted;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                // Before any connection was made, what no retry fixes is said at once.
                if self.opened.load(Ordering::Relaxed) == 0 {
                    let userinfo = &endpoint.uri.authority.userinfo;
                    let vhost = &endpoint.uri.vhost;
                    // A host that does not resolve, or TLS, may be one node's trouble: with
                    // several nodes the next is tried. A refused login is the cluster's.
                    let cause =
                        crate::error::start_failure(&e, &userinfo.username, vhost).filter(|_| {
                            self.endpoints.len() == 1
                                || matches!(e.kind(), lapin::ErrorKind::ProtocolError(_))
                        });
                    if let Some(cause) = cause {
                        tracing::error!(%url, %cause, "cannot connect to the broker");
                        return Err(Error::CannotConnect {
                            url: url.clone(),
                            cause,
                        });
                    }
                }
                tracing::warn!(%url, error = %e, "cannot connect to the broker");
                return Err(Error::Connection(e));
            }
            Err(_) => {
                tracing::warn!(%url, ?timeout, "connecting to the broker timed out");
                return Err(Error::Unavailable(
                    timeout,
                    format!("connecting to the broker at {url}"),
                ));
            }
        };
        // The next attempt, after this connection is lost, goes to another node first.
        let opened = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        if opened > 1 {
            metric::reconnected();
        }
        tracing::info!(%url, connections = opened, "connected to the broker");
        let frame_max = conn.configuration().frame_max();
        if frame_max > 0 {
            self.frame_max.store(frame_max, Ordering::Relaxed);
        }
        let conn = Arc::new(conn);
        *self.blocked.lock() = None;
        *self.node.lock() = Some(url.clone());
        self.spawn(watch_events(
            conn.events_listener(),
            Arc::downgrade(&conn),
            self.blocked.clone(),
            url.clone(),
        ));
        Ok(conn)
    }

    /// The live connection, retrying with exponential backoff until `deadline` (forever if `None`).
    pub(crate) async fn connect(
        &self,
        deadline: Option<Instant>,
        what: &str,
    ) -> Result<Arc<Connection>> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let started = Instant::now();
        loop {
            // An attempt never outlives the caller's deadline (nor waits past it for
            // another caller's attempt).
            let attempt = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Unavailable(started.elapsed(), what.to_owned()));
                    }
                    tokio::time::timeout(left, self.connect_once(self.connect_timeout.min(left)))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::Unavailable(started.elapsed(), what.to_owned()))
                        })
                }
                None => self.connect_once(self.connect_timeout).await,
            };
            match attempt {
                Ok(conn) => return Ok(conn),
                // A wrong password, a missing virtual host, an unknown host or a TLS
                // failure before any connection was made: no retry storm.
                Err(e @ Error::CannotConnect { .. }) => return Err(e),
                Err(e) => {
                    let delay = delays.next().unwrap_or(self.max_delay);
                    if let Some(deadline) = deadline
                        && Instant::now() + delay >= deadline
                    {
                        return match e {
                            Error::Connection(e) => Err(Error::Unavailable(
                                started.elapsed(),
                                format!("{what} (the last attempt failed: {e})"),
                            )),
                            other => Err(other),
                        };
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// A new channel on the live connection.
    pub(crate) async fn channel(&self, deadline: Option<Instant>, what: &str) -> Result<Channel> {
        loop {
            let conn = self.connect(deadline, what).await?;
            match conn.create_channel().await {
                Ok(ch) => return Ok(ch),
                Err(e) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(Error::amqp(format!("opening a channel for {what}"))(e));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "channel open failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs `op` on a channel of its own, closed afterwards: an operation the broker may
    /// refuse (a declaration, a `basic.get`) then closes only that channel, never one that
    /// other operations share.
    pub(crate) async fn with_channel<T, F, Fut>(
        &self,
        deadline: Instant,
        what: &str,
        op: F,
    ) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let ch = self.channel(Some(deadline), what).await?;
        let result = op(ch.clone()).await;
        if ch.status().connected() {
            // Closed before returning: what the operation left unacknowledged is back in
            // its queue when the caller goes on.
            let closing = ch.close(200, "done".into());
            let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        }
        result
    }

    /// The largest frame the broker takes (the negotiated `frame_max`).
    pub(crate) fn frame_max(&self) -> usize {
        self.frame_max.load(Ordering::Relaxed) as usize
    }

    /// Why the broker blocks publishing on the connection (memory or disk alarm), if it does.
    pub(crate) fn blocked(&self) -> Option<String> {
        self.blocked.lock().clone()
    }

    /// How many connections have been opened so far (1 + reconnections).
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Whether a connection is open now. Never waits on a connection being opened.
    pub(crate) fn is_connected(&self) -> bool {
        self.connection.live().is_some()
    }

    /// The node the live connection goes to, if there is one.
    pub(crate) fn node(&self) -> Option<String> {
        self.connection.live()?;
        self.node.lock().clone()
    }

    /// Drops `conn` without waiting on the broker (it stopped answering), if it is still
    /// the current connection; the next use opens a new one.
    pub(crate) fn abandon(&self, conn: &Arc<Connection>) {
        if let Some(conn) = self.connection.take_if(conn) {
            tracing::warn!(node = ?self.node.lock(), "abandoning an unresponsive connection");
            self.spawn(async move {
                let close = conn.close(320, "eventrabbit: connection unresponsive".into());
                let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
            });
        }
    }

    /// Closes the connection, if open.
    pub(crate) async fn close(&self) {
        if let Some(conn) = self.connection.take()
            && conn.status().connected()
        {
            let _ = conn.close(200, "eventrabbit closing".into()).await;
        }
    }
}

/// Follows the broker's notifications on one connection (blocked / unblocked) until the
/// connection is gone.
async fn watch_events(
    events: impl futures_util::Stream<Item = lapin::Event> + Send + 'static,
    conn: std::sync::Weak<Connection>,
    blocked: Arc<Mutex<Option<String>>>,
    url: String,
) {
    use futures_util::StreamExt;
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(lapin::Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(url = %url, %reason, "broker blocked publishing on the connection");
                    *blocked.lock() = Some(reason);
                }
                Some(lapin::Event::ConnectionUnblocked) => {
                    tracing::info!(url = %url, "broker unblocked the connection");
                    *blocked.lock() = None;
                }
                Some(_) => {}
                None => return,
            },
            _ = tick.tick() => {
                if !conn.upgrade().is_some_and(|c| c.status().connected()) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_has_no_password() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let c = Connector::new(
            "amqp://guest:hunter2@127.0.0.1:5672/%2f",
            &Config::default(),
            rt.handle().clone(),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
