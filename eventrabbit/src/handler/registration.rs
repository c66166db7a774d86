//! What the macros register: a handler per action.

use super::batch::{BatchFn, BatchSpec};
use super::input::{Failure, Input};
use super::schema::SchemaFn;
use crate::config::RetryOverride;
use crate::config::state::StateNeed;

pub use super::input::HandlerFuture;

/// A registered handler's entry point.
pub type HandlerFn = fn(Input) -> HandlerFuture;

/// Checks that a message's `data` fits a handler's parameters, without running it.
pub type ValidateFn = fn(&Input) -> Result<(), Failure>;

/// The state types a handler takes (`State<T>` parameters).
pub type StatesFn = fn() -> Vec<StateNeed>;

/// Where a `#[function]` publishes its result.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTarget {
    pub(crate) exchange: &'static str,
    pub(crate) action: &'static str,
    pub(crate) key: &'static str,
}

impl ReplyTarget {
    /// Publishes to `exchange` under `action` with routing key `key`.
    pub const fn new(exchange: &'static str, action: &'static str, key: &'static str) -> Self {
        Self {
            exchange,
            action,
            key,
        }
    }
}

/// One handler, as registered by `#[consumer]` or `#[function]`.
#[derive(Debug)]
pub struct Registration {
    pub(crate) action: &'static str,
    pub(crate) name: &'static str,
    pub(crate) publish: Option<ReplyTarget>,
    pub(crate) call: HandlerFn,
    pub(crate) validate: ValidateFn,
    pub(crate) retry: Option<RetryOverride>,
    pub(crate) batch: Option<(BatchSpec, BatchFn)>,
    pub(crate) shapes: Option<Shapes>,
    pub(crate) states: Option<StatesFn>,
}

/// The schemas of what a handler reads and answers, for the service's AsyncAPI document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shapes {
    pub(crate) data: SchemaFn,
    /// A handler returning `()` replies `"data": null`.
    pub(crate) reply: SchemaFn,
}

impl Registration {
    /// The handler `call` of `action`, named `name`; `validate` checks `data` alone.
    pub const fn new(
        action: &'static str,
        name: &'static str,
        call: HandlerFn,
        validate: ValidateFn,
    ) -> Self {
        Self {
            action,
            name,
            publish: None,
            call,
            validate,
            retry: None,
            batch: None,
            shapes: None,
            states: None,
        }
    }

    /// The handler takes `State<T>` parameters: the types `states` lists must be
    /// registered before its queue starts.
    #[must_use]
    pub const fn needing(mut self, states: StatesFn) -> Self {
        self.states = Some(states);
        self
    }

    /// The state types the handler takes.
    pub(crate) fn needs(&self) -> Vec<StateNeed> {
        self.states.map(|f| f()).unwrap_or_default()
    }

    /// The schemas of the handler's `data` and of the `data` of its replies.
    #[must_use]
    pub const fn describing(mut self, data: SchemaFn, reply: SchemaFn) -> Self {
        self.shapes = Some(Shapes { data, reply });
        self
    }

    /// `#[consumer(batch(..))]`: messages are handled `spec.max()` at a time by `call`.
    #[must_use]
    pub const fn batching(mut self, spec: BatchSpec, call: BatchFn) -> Self {
        self.batch = Some((spec, call));
        self
    }

    /// `#[consumer(retry(..))]`: the handler's own retry policy over the queue's.
    #[must_use]
    pub const fn retrying(mut self, retry: RetryOverride) -> Self {
        self.retry = Some(retry);
        self
    }

    /// A `#[function]`: its result is also published to `target`.
    #[must_use]
    pub const fn publishing(mut self, target: ReplyTarget) -> Self {
        self.publish = Some(target);
        self
    }

    /// The action this handler serves.
    #[must_use]
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The handler function's path.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }
}

inventory::collect!(Registration);

/// Every handler registered in the program.
pub(crate) fn registered() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}

/// A `#[producer]` function: where it publishes and what.
#[derive(Debug)]
pub struct ProducerRegistration {
    pub(crate) exchange: &'static str,
    pub(crate) key: &'static str,
    pub(crate) action: &'static str,
    pub(crate) name: &'static str,
    pub(crate) payload: SchemaFn,
}

impl ProducerRegistration {
    /// The producer `name` publishing `action` to `exchange` with routing key `key`, its
    /// `data` described by `payload`.
    pub const fn new(
        exchange: &'static str,
        key: &'static str,
        action: &'static str,
        name: &'static str,
        payload: SchemaFn,
    ) -> Self {
        Self {
            exchange,
            key,
            action,
            name,
            payload,
        }
    }
}

inventory::collect!(ProducerRegistration);

/// Every producer registered in the program.
pub(crate) fn producers() -> impl Iterator<Item = &'static ProducerRegistration> {
    inventory::iter::<ProducerRegistration>.into_iter()
}
