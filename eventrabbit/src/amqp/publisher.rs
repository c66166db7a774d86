//! Confirmed publishing: concurrent publishes pipeline their confirms on one channel per
//! exchange. A publish the broker refuses closes its channel, failing every publish in
//! flight on it; with a channel per exchange those are publishes the broker refuses alike
//! (no such exchange, access refused), never a publish to another exchange, an RPC reply
//! or a retry. What the broker would refuse for a single message (a name over 255 bytes,
//! properties larger than a frame, a body over the size limit) is refused here, before
//! anything is sent.

use super::connection::Connector;
use super::deadlines::Deadlines;
use super::in_doubt::{DoubtSlot, InDoubt};
use super::reopen::{Live, Reopen};
use super::returns::{Returns, Ticket, Verdict, fingerprint};
use crate::error::{Error, Result};
use crate::pipeline::transport::Outgoing;
use crate::telemetry::{metric, trace};
use crate::wire::limits;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, PublisherConfirm};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// The pause before a publish that was not taken (nacked, or its channel lost) is sent
/// again; doubled each time up to [`MAX_NACK_PAUSE`].
const FIRST_NACK_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between two attempts of one publish.
const MAX_NACK_PAUSE: Duration = Duration::from_secs(1);

/// Publishes with confirms, reopening its channels (and the connection) when needed.
pub(crate) struct Publisher {
    connector: Arc<Connector>,
    /// One confirm-mode channel per exchange published to (looked up on every publish:
    /// foldhash, not SipHash, which took about 1.4 % of a confirmed publish's instructions).
    lanes: RwLock<HashMap<Box<str>, Arc<Reopen<Lane>>, foldhash::fast::RandomState>>,
    timeout: Duration,
    /// Every publish's deadline, watched by one task (not a timer per publish).
    deadlines: Deadlines,
    max_size: usize,
    /// Whether a publish started since [`Publisher::take_used`] last looked (a flag, not
    /// a time: reading the clock and storing it took about 100 instructions of each publish).
    used: AtomicBool,
    in_flight: AtomicUsize,
    flushed: tokio::sync::Notify,
    confirms: metrics::Counter,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(connector: Arc<Connector>, timeout: Duration, max_size: usize) -> Self {
        Self {
            deadlines: Deadlines::new(connector.runtime().clone()),
            connector,
            lanes: RwLock::default(),
            timeout,
            max_size,
            used: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            flushed: tokio::sync::Notify::new(),
            confirms: metric::confirms(),
        }
    }

    /// The channel publishes to `exchange` go on.
    fn lane(&self, exchange: &str) -> Arc<Reopen<Lane>> {
        if let Some(lane) = self.lanes.read().get(exchange) {
            return lane.clone();
        }
        self.lanes
            .write()
            .entry(exchange.into())
            .or_default()
            .clone()
    }

    /// The confirm-mode channel for `exchange`, opened if needed (given up at `deadline`;
    /// the error then states how long the publish begun at `start` waited).
    async fn channel(
        &self,
        exchange: &str,
        start: Instant,
        deadline: Instant,
    ) -> Result<Arc<Lane>> {
        // Looked up under the map's read lock, without cloning the lane's `Arc`.
        let live = self.lanes.read().get(exchange).and_then(|lane| lane.live());
        if let Some(ch) = live {
            return Ok(ch);
        }
        let lane = self.lane(exchange);
        // Boxed: opening is rare, and its large future would otherwise inflate every publish.
        let opening = Box::pin(tokio::time::timeout_at(
            deadline,
            lane.get_or_open(|| self.open(deadline)),
        ));
        opening.await.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                Instant::now().saturating_duration_since(start),
                format!("opening a channel to publish to exchange `{exchange}`"),
            ))
        })
    }

    async fn open(&self, deadline: Instant) -> Result<Arc<Lane>> {
        let ch = self.connector.channel(Some(deadline), "publishing").await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::amqp("enabling publisher confirms"))?;
        Ok(Arc::new(Lane {
            ch,
            returns: Arc::default(),
        }))
    }

    /// Refuses what the broker would refuse for this message alone, before sending it.
    fn check(&self, msg: &Outgoing<'_>) -> Result<()> {
        limits::check_name("exchange", msg.exchange)?;
        limits::check_name("routing key", msg.routing_key)?;
        if msg.body.len() > self.max_size {
            return Err(Error::TooLarge {
                what: "message body",
                size: msg.body.len(),
                limit: self.max_size,
            });
        }
        msg.properties.check(self.connector.frame_max())
    }

    /// Publishes and waits for the broker's confirm; retries weather (a lost channel or
    /// connection, a nack) until the publish deadline (`Config::publish_timeout`).
    pub(crate) fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send {
        self.publish_until(msg, None)
    }

    /// [`Publisher::publish`], giving up at `deadline` if one is given and sooner than the
    /// publish deadline (the clock is read once per publish).
    ///
    /// A plain function returning the future (not an `async fn`): `msg` is then stored in
    /// the future once, not copied from an argument slot into a local, which keeps the
    /// future of every publish small.
    pub(crate) fn publish_until(
        &self,
        msg: Outgoing<'_>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<()>> + Send {
        self.publish_with(msg, deadline, None)
    }

    /// [`Publisher::publish_until`] for a message that must not be sent twice when its
    /// confirm is late (a retry, a dead letter): if the deadline passes while the confirm
    /// is awaited, the confirm is watched on and put in `doubt`, so that whoever sends the
    /// message again can first ask whether the broker took it.
    pub(crate) fn publish_tracked(
        &self,
        msg: Outgoing<'_>,
        deadline: Instant,
        doubt: &DoubtSlot,
    ) -> impl Future<Output = Result<()>> + Send {
        self.publish_with(msg, Some(deadline), Some(doubt))
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store `msg` twice in its future"
    )]
    fn publish_with(
        &self,
        msg: Outgoing<'_>,
        deadline: Option<Instant>,
        doubt: Option<&DoubtSlot>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            // Counted down however the publish ends, even if its future is dropped.
            let _in_flight = InFlight(self);
            // The clock is read once per publish: the start, and both deadlines from it.
            let start = Instant::now();
            let publish_deadline = start + self.timeout;
            let deadline = deadline.map_or(publish_deadline, |d| d.min(publish_deadline));
            // No span at all while no tracing subscriber is set: making a disabled one
            // (and offering it to `log`) took about 200 instructions of each publish, and
            // dropping even `Span::none()` shows in a profile.
            if tracing::dispatcher::has_been_set() {
                let span = trace::publish_span(msg.exchange, msg.routing_key);
                if !span.is_disabled() {
                    return self
                        .publish_in_span(&msg, start, deadline, doubt)
                        .instrument(span)
                        .await;
                }
            }
            self.publish_in_span(&msg, start, deadline, doubt).await
        }
    }

    /// Waits until no publish waits for its confirm.
    pub(crate) async fn flushed(&self) {
        loop {
            let notified = self.flushed.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    async fn publish_in_span(
        &self,
        msg: &Outgoing<'_>,
        start: Instant,
        deadline: Instant,
        doubt: Option<&DoubtSlot>,
    ) -> Result<()> {
        self.check(msg)?;
        // Read before written: publishes on many threads then share the flag's cache
        // line instead of taking it from each other.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        let waited = |start: Instant| Instant::now().saturating_duration_since(start);
        let mut pause = FIRST_NACK_PAUSE;
        // The weather met by the last attempt, if any: what the publish reports should the
        // deadline pass while a fresh channel is opened for the next one.
        let mut weather: Option<Error> = None;
        loop {
            let ch = match self.channel(msg.exchange, start, deadline).await {
                Ok(ch) => ch,
                Err(e) => return Err(weather.map_or(e, |w| gave_up(msg, w, waited(start)))),
            };
            let mut unconfirmed = None;
            let attempt = self
                .deadlines
                .within(deadline, publish_once(&ch, msg, &mut unconfirmed))
                .await;
            let Ok(attempt) = attempt else {
                // No confirm in time: never report success, say why. The broker may
                // still take the message: a tracked publish watches its confirm on.
                if let (Some(slot), Some((confirm, ticket))) = (doubt, unconfirmed) {
                    slot.put(InDoubt::watch(self.connector.runtime(), confirm, ticket));
                }
                return Err(match self.connector.blocked() {
                    Some(reason) => Error::Blocked {
                        exchange: msg.exchange.to_owned(),
                        reason,
                        waited: waited(start),
                    },
                    None => Error::Unavailable(
                        waited(start),
                        format!(
                            "waiting for the broker to confirm a publish to exchange `{}`",
                            msg.exchange
                        ),
                    ),
                });
            };
            let e = match attempt {
                Ok(()) => {
                    self.confirms.increment(1);
                    return Ok(());
                }
                Err(PublishError::Final(e)) => {
                    if !matches!(e, Error::Nacked { .. }) {
                        return Err(e);
                    }
                    // A nack is weather (a leader change, a full queue): a fresh channel
                    // finds a new leader; the message is sent again after a pause.
                    self.retire(msg.exchange, &ch);
                    e
                }
                Err(PublishError::Channel(e)) => {
                    let e = Error::amqp(format!(
                        "publishing to exchange `{}` with routing key `{}`",
                        msg.exchange, msg.routing_key
                    ))(e);
                    if !e.is_retryable() {
                        // The broker refused this very publish (e.g. no such exchange).
                        return Err(e);
                    }
                    e
                }
            };
            // Weather: not this message's fault, so send it again until the deadline.
            if Instant::now() + pause >= deadline {
                return Err(gave_up(msg, e, waited(start)));
            }
            tracing::debug!(error = %e, ?pause, "publish not taken, sending it again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_NACK_PAUSE);
            weather = Some(e);
        }
    }

    /// Stops using `ch` for new publishes after the broker refused one on it: the next
    /// publish to `exchange` opens a fresh channel. The broker keeps routing state per
    /// channel, and a channel that published to a quorum queue while its leader died can
    /// go on refusing every publish to that queue although a new leader serves it (seen
    /// on RabbitMQ 3.10); a new channel finds the new leader. Publishes still waiting on
    /// `ch` keep it until their confirms arrive; it closes when the last one ends.
    fn retire(&self, exchange: &str, ch: &Arc<Lane>) {
        if self.lane(exchange).take_if(ch).is_some() {
            tracing::debug!(
                exchange,
                "the broker refused a publish; later publishes go on a new channel"
            );
        }
    }

    /// Whether a publish started since the last call.
    pub(crate) fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    /// Closes the channels if open; the next publish reopens one.
    pub(crate) async fn close(&self) {
        let lanes: Vec<_> = self.lanes.write().drain().map(|(_, lane)| lane).collect();
        for lane in lanes {
            if let Some(lane) = lane.take()
                && lane.ch.status().connected()
            {
                let _ = lane.ch.close(200, "idle".into()).await;
            }
        }
    }

    /// Whether a channel is open.
    pub(crate) fn is_open(&self) -> bool {
        self.lanes.read().values().any(|lane| lane.live().is_some())
    }
}

/// A confirm-mode channel and the book of its publishes' returns.
#[derive(Debug)]
pub(crate) struct Lane {
    ch: Channel,
    returns: Arc<Returns>,
}

impl Live for Lane {
    fn is_live(&self) -> bool {
        self.ch.is_live()
    }
}

struct InFlight<'a>(&'a Publisher);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.flushed.notify_waiters();
        }
    }
}

enum PublishError {
    Final(Error),
    Channel(lapin::Error),
}

/// The error of a publish whose deadline passed after `weather` (a nack, a lost channel)
/// kept the broker from taking it: the nack itself, so that its cause is not hidden
/// behind the channel that was being opened for the next attempt, or the broker named
/// unavailable for as long as the publish waited.
fn gave_up(msg: &Outgoing<'_>, weather: Error, waited: Duration) -> Error {
    match weather {
        Error::Nacked { .. } => weather,
        _ => Error::Unavailable(
            waited,
            format!("publishing to exchange `{}`: {weather}", msg.exchange),
        ),
    }
}

/// Whether `msg` is an RPC reply to a direct reply-to (`amq.rabbitmq.reply-to.*`) address.
fn is_direct_reply(msg: &Outgoing<'_>) -> bool {
    msg.exchange.is_empty() && msg.routing_key.starts_with("amq.rabbitmq.reply-to")
}

/// Sends `msg` and awaits its confirm, which waits in `unconfirmed` meanwhile (left there,
/// with the publish's ticket, if this future is dropped at its deadline).
async fn publish_once(
    lane: &Lane,
    msg: &Outgoing<'_>,
    unconfirmed: &mut Option<(PublisherConfirm, Ticket)>,
) -> std::result::Result<(), PublishError> {
    let returnable = !is_direct_reply(msg);
    let print = returnable.then(|| fingerprint(msg.exchange, msg.routing_key, msg.body));
    let publishing = lane.ch.basic_publish(
        msg.exchange.into(),
        msg.routing_key.into(),
        // Asked for on the wire, so that an unroutable message is seen (and counted)
        // whether or not this publish treats it as an error; except for an RPC reply to a
        // direct reply-to address, which RabbitMQ 3.10 delivers and yet returns as
        // unroutable when mandatory.
        BasicPublishOptions {
            mandatory: returnable,
            immediate: false,
        },
        msg.body,
        msg.properties.build(),
    );
    // Only a mandatory publish waits to learn whether it was returned (its error); one
    // that is not learns at its own confirm, and a return for it is counted and logged
    // by the book.
    let (ticket, sent) = lane.returns.send(print, msg.mandatory, publishing).await;
    let sent = sent.map_err(PublishError::Channel)?;
    let (confirm, _) = unconfirmed.insert((sent, ticket));
    let confirmed = confirm.await;
    let (_, ticket) = unconfirmed.take().expect("put there above");
    // The return this confirm carries may be another publish's; this one's may come
    // with another's confirm.
    match ticket
        .verdict(confirmed.map_err(PublishError::Channel)?)
        .await
    {
        Verdict::Taken => {}
        Verdict::Nacked => {
            metric::nacked(msg.exchange);
            return Err(PublishError::Final(Error::Nacked {
                exchange: msg.exchange.to_owned(),
                routing_key: msg.routing_key.to_owned(),
            }));
        }
        // Only a mandatory publish learns this (another's return was counted and logged
        // by the book).
        Verdict::Returned(reply_text) => {
            metric::unroutable(msg.exchange);
            return Err(PublishError::Final(Error::Unroutable {
                exchange: msg.exchange.to_owned(),
                routing_key: msg.routing_key.to_owned(),
                reply_text,
            }));
        }
    }
    Ok(())
}
