//! [`build_event_dependencies`]: the registered handlers connected to a broker.

use super::events::Events;
use super::handle::Handle;
use crate::amqp::client::Client;
use crate::amqp::connection::Connector;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::handler::producers::{self, ProducerSink};
use crate::handler::registry;
use crate::stream::connect::Streams;
use std::sync::{Arc, Weak};
use std::time::Duration;

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
    let shared = Arc::new(Client::new(connector, config));
    let sink: Arc<dyn ProducerSink> = shared.clone();
    producers::register(Arc::downgrade(&sink));
    if let Some(idle) = idle {
        shared
            .connector
            .spawn(close_when_idle(Arc::downgrade(&shared), idle));
    }
    let streams = Arc::new(Streams::new(url.as_ref(), &shared.config)?);
    Ok((Events::new(shared.clone()), Handle::new(shared, streams)))
}

/// Closes the publishing channel, and the connection when nothing consumes, once idle
/// (for `idle` at least, and at most a quarter of it more).
async fn close_when_idle(shared: Weak<Client>, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut last_used = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.shutdown.is_cancelled() {
            return;
        }
        if shared.publisher.take_used() {
            last_used = tokio::time::Instant::now();
        }
        if shared.publisher.is_open() && last_used.elapsed() >= idle {
            shared.publisher.close().await;
            if shared.consumers() == 0 && !shared.rpc.busy() {
                tracing::debug!("closing idle connection");
                shared.rpc.forget().await;
                shared.connector.close().await;
            }
        }
    }
}
