//! Event logs in the test broker: kept in memory, replayed with the same offset rules as
//! on RabbitMQ (first, last, next, an offset, a time; a named consumer goes on after its
//! stored position), through the same pipeline with the same in-place retries.

use super::broker::TestBroker;
use super::records::DeadLetter;
use super::transport::TestTransport;
use crate::config::{EventLog, StartAt, StreamConsumer};
use crate::error::{Error, Result};
use crate::handler::producers;
use crate::handler::registry;
use crate::pipeline::failure::retry_properties;
use crate::pipeline::handle::handle;
use crate::pipeline::in_place::InPlace;
use crate::pipeline::policy::QueuePolicy;
use std::sync::Arc;

impl TestBroker {
    /// Declares `log` and binds it as `Handle::declare_log` does: from now on, what is
    /// published to its exchanges (or to it through the default exchange) is kept.
    pub fn declare_log(&self, log: &EventLog) -> Result<()> {
        log.check()?;
        let mut state = self.state();
        state.logs.entry(log.name.clone()).or_default();
        state.bind(&log.name, &log.bindings);
        Ok(())
    }

    /// How many events `log` holds.
    #[must_use]
    pub fn log_len(&self, log: &str) -> usize {
        self.state().logs.get(log).map_or(0, Vec::len)
    }

    /// Reads `consumer`'s log from where it starts to the end, through the handlers, as
    /// `Handle::replay` would (retries in place, not delayed: their delays are recorded in
    /// [`TestBroker::retry_delays`] under the consumer's label). A named consumer stores
    /// its position after each event, and the next call goes on after it. Returns how many
    /// events were read.
    pub async fn replay(&self, consumer: StreamConsumer) -> Result<usize> {
        let label = consumer.label();
        let routes = registry::routes(&label, consumer.handling.actions())?;
        let settings = consumer.resolve(&self.inner.config.queue, &self.inner.config.retry);
        consumer.check(&settings)?;
        let policy = QueuePolicy::new(&label, routes, settings, self.inner.app_state())
            .with_layers(self.state().layers.clone());
        policy.check()?;
        let mut offset = self.first_offset(&consumer)?;
        let mut read = 0;
        loop {
            let entry = {
                let state = self.state();
                state
                    .logs
                    .get(&consumer.log)
                    .and_then(|log| log.get(offset as usize).cloned())
            };
            let Some(entry) = entry else { break };
            let mut message = Arc::new(crate::handler::context::Message {
                queue: policy.queue.clone(),
                ..entry.message
            });
            let transport = TestTransport(&self.inner);
            let mut attempts = 0;
            loop {
                let in_place = InPlace::new(&transport);
                producers::scope(self.sink(), handle(&policy, &in_place, &message)).await?;
                let Some(retry) = in_place.take_retry() else {
                    break;
                };
                attempts += 1;
                if attempts > super::broker::MAX_DELIVERIES {
                    return Err(Error::Unavailable(
                        std::time::Duration::ZERO,
                        format!(
                            "replaying `{label}`: an event still fails after {attempts} retries"
                        ),
                    ));
                }
                self.state().retry_delays.push((label.clone(), retry.delay));
                let mut next = (*message).clone();
                next.properties = retry_properties(&message, retry.retry, &retry.error);
                message = Arc::new(next);
            }
            if let Some(name) = &consumer.name {
                self.state()
                    .positions
                    .insert((consumer.log.clone(), name.clone()), offset);
            }
            offset += 1;
            read += 1;
        }
        Ok(read)
    }

    /// What `consumer` dead-lettered (to `<log>.<name>.dlq`), oldest first.
    #[must_use]
    pub fn stream_dead_letters(&self, consumer: &StreamConsumer) -> Vec<DeadLetter> {
        self.dead_letters_in(
            &consumer.dead_letter_queue(&self.inner.config.queue.dead_letter_suffix),
        )
    }

    fn first_offset(&self, consumer: &StreamConsumer) -> Result<u64> {
        let state = self.state();
        let log = state
            .logs
            .get(&consumer.log)
            .ok_or_else(|| Error::InvalidQueue {
                queue: consumer.log.clone(),
                reason: "the event log does not exist: declare it with `declare_log`".to_owned(),
            })?;
        if let Some(name) = &consumer.name
            && let Some(stored) = state.positions.get(&(consumer.log.clone(), name.clone()))
        {
            return Ok(stored + 1);
        }
        let len = log.len() as u64;
        Ok(match consumer.start {
            StartAt::First => 0,
            StartAt::Last => len.saturating_sub(1),
            StartAt::Next => len,
            StartAt::Offset(o) => o.min(len),
            StartAt::Timestamp(t) => log.iter().position(|e| e.at >= t).map_or(len, |i| i as u64),
        })
    }
}
