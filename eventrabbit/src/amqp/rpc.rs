//! The RPC client: requests carry `reply_to` (RabbitMQ direct reply-to) and a fresh
//! `correlation_id`; a consumer on the request's channel routes replies to the waiting
//! calls.
//!
//! Direct reply-to needs the request published on the channel that consumes the
//! replies. Calls through one exchange share a channel; each exchange has its own, so a
//! call the broker refuses (no such exchange) closes only the channel of calls the broker
//! refuses alike. Each channel has its own table of waiting calls, so the end of an old
//! channel never fails calls made on a new one.

use super::connection::Connector;
use super::reopen::{Live, Reopen};
use super::returns::{Returns, Ticket, Verdict, fingerprint};
use crate::config::TracePropagation;
use crate::error::{Error, Result};
use crate::telemetry::{metric, trace};
use crate::wire::envelope::decode_reply;
use crate::wire::limits;
use crate::wire::properties::{new_message_id, request_properties};
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// How long a call waits for its reply alone before it also watches the broker's confirm
/// of its request. A reply that comes first proves the request arrived, and the call
/// completes without anyone having been woken for the confirm: that wake-up cost calls
/// 7–14 % of their median on a 2-core machine (BENCHMARKS.md). A nack or a return fails
/// a call with no reply by then when it comes, or at the end of this wait if it came
/// sooner: not at the call's timeout.
const CONFIRM_GRACE: Duration = Duration::from_millis(2);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// A channel consuming direct replies, and the calls waiting on it.
struct ReplyChannel {
    channel: Channel,
    pending: Pending,
    /// Which call a returned request belongs to.
    returns: Arc<Returns>,
}

impl Live for ReplyChannel {
    fn is_live(&self) -> bool {
        self.channel.is_live()
    }
}

/// Calls in flight, by the exchange they go through.
pub(crate) struct RpcClient {
    connector: Arc<Connector>,
    lanes: RwLock<HashMap<Box<str>, Arc<Reopen<ReplyChannel>>>>,
    trace_propagation: TracePropagation,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").finish_non_exhaustive()
    }
}

/// Removes the pending entry when a call ends, however it ends.
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(self.id);
    }
}

impl RpcClient {
    pub(crate) fn new(connector: Arc<Connector>, trace_propagation: TracePropagation) -> Self {
        Self {
            trace_propagation,
            connector,
            lanes: RwLock::default(),
        }
    }

    fn lane(&self, exchange: &str) -> Arc<Reopen<ReplyChannel>> {
        if let Some(lane) = self.lanes.read().get(exchange) {
            return lane.clone();
        }
        self.lanes
            .write()
            .entry(exchange.into())
            .or_default()
            .clone()
    }

    /// The reply channel for calls through `exchange`, opened on first use and after a drop.
    async fn channel(&self, exchange: &str, deadline: Instant) -> Result<Arc<ReplyChannel>> {
        let lane = self.lane(exchange);
        if let Some(ch) = lane.live() {
            return Ok(ch);
        }
        Box::pin(lane.get_or_open(|| self.open(deadline))).await
    }

    async fn open(&self, deadline: Instant) -> Result<Arc<ReplyChannel>> {
        let ch = self.connector.channel(Some(deadline), "RPC call").await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::amqp("enabling confirms for RPC"))?;
        let replies = ch
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("consuming RPC replies"))?;
        let pending = Pending::default();
        self.connector
            .spawn(route_replies(replies, pending.clone()));
        Ok(Arc::new(ReplyChannel {
            channel: ch,
            pending,
            returns: Arc::default(),
        }))
    }

    /// Whether calls are waiting for replies.
    pub(crate) fn busy(&self) -> bool {
        self.lanes
            .read()
            .values()
            .filter_map(|lane| lane.live())
            .any(|ch| !ch.pending.lock().is_empty())
    }

    /// Drops the reply channels (before the connection is closed for idleness).
    pub(crate) async fn forget(&self) {
        let lanes: Vec<_> = self.lanes.write().drain().map(|(_, lane)| lane).collect();
        for lane in lanes {
            lane.take_after_opening().await;
        }
    }

    /// Publishes `action`/`data` to `routing_key` on `exchange` and waits for the reply.
    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        exchange: &str,
        routing_key: &str,
        action: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<R> {
        limits::check_name("exchange", exchange)?;
        limits::check_name("routing key", routing_key)?;
        let target = if exchange.is_empty() {
            routing_key
        } else {
            exchange
        };
        let deadline = Instant::now() + timeout;
        let timed_out = || Error::Timeout {
            target: target.to_owned(),
            action: action.to_owned(),
            timeout,
        };
        // Only formatted when sending fails.
        let sending = |source| Error::Amqp {
            op: format!("sending `{action}` to `{target}`"),
            source,
        };
        let id = new_message_id();
        let work = async {
            let ch = self.channel(exchange, deadline).await?;
            let (tx, rx) = oneshot::channel();
            ch.pending.lock().insert(id.clone(), tx);
            let _guard = PendingGuard {
                pending: &ch.pending,
                id: &id,
            };
            let props = request_properties(
                trace::outgoing_trace(self.trace_propagation),
                ShortString::from(DIRECT_REPLY_TO),
                ShortString::from(id.as_str()),
            );
            let publishing = ch.channel.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                props,
            );
            let print = Some(fingerprint(exchange, routing_key, &body));
            let (ticket, sent) = ch.returns.send(print, true, publishing).await;
            let mut confirm = sent.map_err(sending)?;
            let mut rx = rx;
            let lost = || Error::ReplyLost {
                action: action.to_owned(),
            };
            // What the confirm says against the request, if anything: the broker refused
            // it (its channel closed), nacked it, or no queue took it (a return found by
            // its fingerprint: the confirm it came with may be another call's).
            let refused = async |confirmed: lapin::Result<lapin::Confirmation>| match confirmed {
                Err(e) => Some(sending(e)),
                Ok(c) => match ticket.verdict(c).await {
                    Verdict::Taken => None,
                    Verdict::Nacked => Some(Error::Nacked {
                        exchange: exchange.to_owned(),
                        routing_key: routing_key.to_owned(),
                    }),
                    Verdict::Returned(reply_text) => Some(Error::Unroutable {
                        exchange: exchange.to_owned(),
                        routing_key: routing_key.to_owned(),
                        reply_text,
                    }),
                },
            };
            // The reply proves the request arrived: the call completes on it, without
            // waiting for the broker's confirm. First the reply alone, for a moment:
            // the confirm is not even polled, so its coming wakes no one.
            let reply = tokio::select! {
                biased;
                reply = &mut rx => Some(reply),
                () = tokio::time::sleep(CONFIRM_GRACE) => None,
            };
            // Then the confirm too: it fails the call if the broker refused the request
            // or no queue took it.
            let reply = match reply {
                Some(reply) => reply,
                None => tokio::select! {
                    biased;
                    reply = &mut rx => reply,
                    confirmed = &mut confirm => {
                        if let Some(e) = refused(confirmed).await {
                            return Err(e);
                        }
                        return rx.await.map_err(|_| lost());
                    }
                },
            };
            match reply {
                Ok(reply) => {
                    settle(confirm, ticket);
                    Ok(reply)
                }
                // The reply channel ended. If that is the broker refusing this very
                // request, its confirm (failed by the channel's end) says so; a
                // connection that went away is a lost reply, as ever.
                Err(_) => Err(refused(confirm.await)
                    .await
                    .filter(|e| !e.is_transient())
                    .unwrap_or_else(lost)),
            }
        };
        let span = trace::call_span(target, action, &id);
        let started = std::time::Instant::now();
        let reply = tokio::time::timeout_at(deadline, work)
            .instrument(span)
            .await;
        let outcome = match &reply {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        metric::rpc(action, outcome, started.elapsed());
        let reply = reply.map_err(|_| timed_out())??;
        decode_reply(target, action, &reply)
    }
}

/// Lets the confirm of a request whose reply came go: looked at once (it has usually come
/// before the reply), else awaited in the background, as a confirm dropped unawaited would
/// be kept by lapin until someone waits for all confirms; what it carries is handed on.
fn settle(mut confirm: lapin::PublisherConfirm, ticket: Ticket) {
    // The confirm may carry another call's return: handed on to its owner.
    let hand_on = move |confirmed: lapin::Result<lapin::Confirmation>| {
        if let Ok(c) = confirmed {
            ticket.confirmed(c.take_message());
        }
    };
    match (&mut confirm).now_or_never() {
        Some(confirmed) => hand_on(confirmed),
        None => {
            tokio::spawn(async move { hand_on(confirm.await) });
        }
    }
}

/// Hands each reply on `replies` to the call waiting for it, until the channel is gone;
/// then fails every call still waiting on that channel at once rather than at its timeout.
async fn route_replies(mut replies: lapin::Consumer, pending: Pending) {
    while let Some(Ok(delivery)) = replies.next().await {
        let Some(id) = delivery.properties.correlation_id().as_ref() else {
            tracing::debug!("reply without correlation_id dropped");
            continue;
        };
        let waiter = pending.lock().remove(id.as_str());
        match waiter {
            Some(tx) => {
                let _ = tx.send(delivery.data);
            }
            None => tracing::info!(correlation_id = %id, "late or unknown RPC reply dropped"),
        }
    }
    pending.lock().clear();
}
