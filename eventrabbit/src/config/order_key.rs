//! [`OrderKey`]: what a keyed consumer orders its messages by.

/// Where a keyed consumer ([`ConsumeChannel::order_by`](crate::ConsumeChannel::order_by))
/// finds each message's key. Messages of one key are handled one at a time, in the order
/// the queue delivers them; messages of different keys run concurrently, up to the
/// prefetch.
///
/// A message without the key (no such header, no such field, a body that is not an
/// envelope) goes to the lane of the empty key: such messages keep their order among
/// themselves.
///
/// ```
/// use eventrabbit::{ConsumeChannel, OrderKey};
/// let by_account = ConsumeChannel::new("ledger").order_by(OrderKey::field("account_id"));
/// let by_header = ConsumeChannel::new("audit").order_by(OrderKey::header("x-tenant"));
/// let by_route = ConsumeChannel::new("orders").order_by(OrderKey::RoutingKey);
/// # let _ = (by_account, by_header, by_route);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderKey {
    /// The routing key the message was published with.
    RoutingKey,
    /// The value of this header (text as is, numbers in decimal).
    Header(String),
    /// A field of the envelope's `data`; a dotted path (`"customer.id"`) reaches into
    /// nested objects. A string is taken as is, any other JSON value as its JSON text.
    Field(String),
}

impl OrderKey {
    /// [`OrderKey::Header`].
    #[must_use]
    pub fn header(name: impl Into<String>) -> Self {
        Self::Header(name.into())
    }

    /// [`OrderKey::Field`].
    #[must_use]
    pub fn field(path: impl Into<String>) -> Self {
        Self::Field(path.into())
    }
}
