//! The properties of what eventrabbit publishes.

use super::trace_context::{TraceContext, with_traceparent};
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};

/// Properties of everything eventrabbit publishes: JSON, persistent, with a fresh
/// `message_id`, the time (whole seconds) and, if given, a `traceparent`.
pub(crate) fn properties(trace: Option<TraceContext>) -> BasicProperties {
    Plain::new(trace).build()
}

/// The delivery mode of an RPC request: transient (1), where everything else eventrabbit
/// publishes is persistent (2).
///
/// A request is worth something only while its caller waits on the channel the reply
/// goes to. Nothing the broker keeps across a restart can be answered: the restart ends
/// that channel, and with it the call. Persisting it would only let a handler run, after
/// the restart, for nobody. And it costs every call: the broker confirms a persistent
/// message in a classic queue once it has synced it to disk, and that sync holds up the
/// queue's next delivery. With RabbitMQ 3.10 the bench measured raw lapin's calls at a
/// median 391 µs persistent and 302 µs transient, both on a channel in confirm mode
/// (`bench w3-transient`). Quorum queues keep every message on disk whatever its mode.
pub(crate) const TRANSIENT: u8 = 1;

/// The properties of an RPC request: eventrabbit's own (see [`properties`]) but
/// transient (see [`TRANSIENT`]), with where to reply and the call's correlation id.
pub(crate) fn request_properties(
    trace: Option<TraceContext>,
    reply_to: ShortString,
    correlation_id: ShortString,
) -> BasicProperties {
    properties(trace)
        .with_delivery_mode(TRANSIENT)
        .with_reply_to(reply_to)
        .with_correlation_id(correlation_id)
}

/// The properties of one publish, as the publisher needs them: built afresh for each
/// attempt, as lapin takes them by value.
///
/// eventrabbit's own ([`Plain`]) are kept as the few values they are made of: building
/// them per attempt costs what copying built ones would (two small strings), and saves
/// building them once more and dropping them (about 900 instructions of a confirmed
/// publish, a sixth of what it cost beyond raw lapin). Others (a message sent on again
/// with its original's identity, a caller's headers) are kept built, boxed so that
/// every publish's future stays small.
#[derive(Debug)]
pub(crate) enum Properties {
    Plain(Plain),
    Given(Box<BasicProperties>),
}

/// eventrabbit's own properties (see [`properties`]), with a correlation id on a reply.
#[derive(Debug)]
pub(crate) struct Plain {
    message_id: uuid::Uuid,
    timestamp: u64,
    trace: Option<TraceContext>,
    correlation_id: Option<ShortString>,
}

impl Plain {
    /// A fresh message id and the time now.
    pub(crate) fn new(trace: Option<TraceContext>) -> Self {
        Self {
            message_id: uuid::Uuid::new_v4(),
            timestamp: now_secs(),
            trace,
            correlation_id: None,
        }
    }

    pub(crate) fn with_correlation_id(mut self, id: ShortString) -> Self {
        self.correlation_id = Some(id);
        self
    }

    fn build(&self) -> BasicProperties {
        let mut id = [0u8; uuid::fmt::Simple::LENGTH];
        let id = self.message_id.simple().encode_lower(&mut id);
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(&*id))
            .with_timestamp(self.timestamp);
        if let Some(trace) = &self.trace {
            props = props.with_headers(with_traceparent(FieldTable::default(), trace));
        }
        if let Some(c) = &self.correlation_id {
            props = props.with_correlation_id(c.clone());
        }
        props
    }
}

impl Properties {
    /// The properties to send (for one attempt).
    pub(crate) fn build(&self) -> BasicProperties {
        match self {
            Self::Plain(plain) => plain.build(),
            Self::Given(props) => (**props).clone(),
        }
    }

    /// The properties to send, once.
    pub(crate) fn into_built(self) -> BasicProperties {
        match self {
            Self::Plain(plain) => plain.build(),
            Self::Given(props) => *props,
        }
    }

    /// Fails unless the properties fit in one content header frame of `frame_max`
    /// bytes. eventrabbit's own always do (a few dozen bytes, where no frame may be
    /// smaller than 4,096), so only given ones are measured.
    pub(crate) fn check(&self, frame_max: usize) -> crate::error::Result<()> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Given(props) => super::limits::check_properties(props, frame_max),
        }
    }
}

impl From<Plain> for Properties {
    fn from(plain: Plain) -> Self {
        Self::Plain(plain)
    }
}

impl From<BasicProperties> for Properties {
    fn from(props: BasicProperties) -> Self {
        Self::Given(Box::new(props))
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh uuid v4 in its 32-digit form (lowercase hex, no hyphens).
///
/// Not the hyphenated form: with it, the properties of a plain publish (content type,
/// delivery mode, message id, timestamp) take 65 bytes, and RabbitMQ keeps properties
/// over 64 bytes in an off-heap binary, which cost it about a quarter of its confirmed
/// publishing rate in the benchmark (W2: 16-18k against 23-24k msg/s for the same
/// publishes with 4 bytes less). Any uuid parser reads both forms.
pub(crate) fn new_message_id() -> String {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut buf)
        .to_owned()
}

/// The same identity as `original` (message and correlation ids, reply_to), as JSON
/// and persistent, with `headers`: a message sent on again after a failure.
pub(crate) fn republished(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(id) = original.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(c) = original.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    if let Some(r) = original.reply_to() {
        props = props.with_reply_to(r.clone());
    }
    if let Some(t) = original.timestamp() {
        props = props.with_timestamp(*t);
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::limits::properties_size;

    /// The properties of a plain publish stay within the 64 bytes that RabbitMQ keeps
    /// on the heap of the processes handling the message (the 2 bytes of property flags
    /// included); beyond that the broker publishes markedly slower (see `new_message_id`).
    #[test]
    fn a_plain_publish_has_at_most_64_bytes_of_properties() {
        let size = 2 + properties_size(&properties(None));
        assert!(size <= 64, "{size} bytes of properties");
    }

    /// What the publisher sends for eventrabbit's own properties is what
    /// [`properties`] describes, and stays within the smallest frame.
    #[test]
    fn plain_properties_build_as_described_and_fit_any_frame() {
        let trace = TraceContext::root();
        let plain = Plain::new(Some(trace)).with_correlation_id("c-1".into());
        let props = Properties::from(plain);
        let built = props.build();
        assert_eq!(
            built.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*built.delivery_mode(), Some(2));
        assert_eq!(built.correlation_id().as_ref().unwrap().as_str(), "c-1");
        let id = built.message_id().as_ref().unwrap().as_str().to_owned();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        assert!(
            built
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .contains_key("traceparent")
        );
        // Every attempt sends the same identity.
        let again = props.build();
        assert_eq!(again.message_id(), built.message_id());
        assert_eq!(again.timestamp(), built.timestamp());
        assert!(props.check(4096).is_ok());
        assert!(2 + properties_size(&built) + 8 <= 4096);
    }

    /// An RPC request is transient, and otherwise carries what every publish does.
    #[test]
    fn a_request_is_transient_with_its_reply_address() {
        let props = request_properties(None, "amq.rabbitmq.reply-to".into(), "c-2".into());
        assert_eq!(*props.delivery_mode(), Some(1));
        assert_eq!(
            props.reply_to().as_ref().unwrap().as_str(),
            "amq.rabbitmq.reply-to"
        );
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "c-2");
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert!(props.message_id().is_some() && props.timestamp().is_some());
    }

    #[test]
    fn the_message_id_is_a_uuid() {
        let id = new_message_id();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        assert_ne!(id, new_message_id());
    }
}
