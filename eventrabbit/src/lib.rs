//! # eventrabbit
//!
//! Event-driven services on RabbitMQ: decorate plain `async fn`s, run one consumer loop
//! per queue. Every message is a JSON envelope `{"action": .., "data": {..}}`,
//! wire-compatible with the Python library `eventrabbit`.
//!
//! ```no_run
//! use eventrabbit::{build_event_dependencies, consumer, producer, Config, ConsumeChannel, ExchangeKind};
//! use serde::Serialize;
//!
//! #[derive(Serialize)]
//! struct UserCreated { user_id: i64, name: String }
//!
//! #[consumer(action = "USER_CREATED")]
//! async fn on_user_created(user_id: i64, name: String) {
//!     println!("user {user_id} is {name}");
//! }
//!
//! #[producer(exchange = "user", action = "USER_CREATED")]
//! async fn create_user(user_id: i64, name: String) -> UserCreated {
//!     UserCreated { user_id, name }
//! }
//!
//! # async fn run() -> eventrabbit::Result<()> {
//! let (events, handle) =
//!     build_event_dependencies("amqp://guest:guest@127.0.0.1:5672/%2f", Config::default()).await?;
//! let consumer = handle.clone();
//! tokio::spawn(async move {
//!     consumer.consume(ConsumeChannel::new("users").exchange("user", ExchangeKind::Fanout)).await
//! });
//! create_user(7, "ann".into()).await?; // publishes {"action":"USER_CREATED","data":{..}}
//! # let _ = events; Ok(()) }
//! ```
//!
//! ## Why is my handler rejected?
//!
//! * **At compile time**: handlers must be `async fn`s without generics or `self`; each
//!   parameter a plain identifier of an owned type. The identifier is the key read from
//!   `data`; mark one parameter `#[data]` to receive the whole `data` as a struct, and give
//!   one the type [`MessageContext`] (any path ending so; mark an alias `#[context]`) to
//!   see the delivery's metadata. The return type is
//!   `()`, a `T: Serialize`, or a `Result<T, E>` with `E: Display`. A `Result` is known by
//!   its name, so aliases such as `anyhow::Result<T>` work; an alias named otherwise
//!   (`type AppResult<T> = ..`) is taken for a value to send, and the compiler then asks
//!   for `E: Serialize`: name it `Result` or spell out `Result<T, E>`.
//! * **At start-up**: [`build_event_dependencies`] fails with [`Error::DuplicateAction`]
//!   when two handlers claim one action, and [`Handle::consume`] with
//!   [`Error::UnknownAction`] when [`ConsumeChannel::actions`] names an action no handler
//!   serves.
//! * **At run time**: a message is moved to `<queue>.dlq`, with the reason in the
//!   `x-dead-letter-reason` header, when its body is not an envelope, its `data` does not fit
//!   the handler's parameters (the field is named), its action has no handler on the queue,
//!   it is larger than [`QueueConfig::max_message_size`], or its handler failed more than
//!   [`RetryConfig::max_retries`] times. [`Handle::redrive_dead_letters`] moves them back.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod amqp;
mod api;
mod config;
pub mod contract;
mod error;
mod handler;
mod pipeline;
pub mod sourcing;
mod stream;
mod telemetry;
pub mod testing;
mod wire;

/// Layers around handlers: see [`Middleware`](middleware::Middleware),
/// [`Handle::layer`] and [`Handle::consume_with`].
pub mod middleware {
    pub use crate::handler::input::{Failure, Reply};
    pub use crate::handler::middleware::{BoxOutcome, Layers, Middleware, Next, Outcome};
}

pub use api::build::build_event_dependencies;
pub use api::consumer::Consumer;
pub use api::events::Events;
pub use api::handle::Handle;
pub use api::service::Service;
pub use config::state::{State, StateMap};
pub use config::{
    Binding, Config, ConsumeChannel, DEFAULT_CRASH_LOOP_LIMIT, DeadLetterStrategy, EventLog,
    ExchangeKind, FailureEvents, OrderKey, Overflow, Partitions, PublishOptions, QueueConfig,
    QueueType, RetryConfig, RetryOverride, StartAt, StreamConsumer, TracePropagation,
    UnknownAction,
};
pub use error::{Error, ErrorKind, Result};
pub use handler::context::MessageContext;
pub use handler::rejection::{HandlerError, Rejected};
pub use pipeline::redrive::{Redrive, RedriveGroup, RedriveReport};
pub use telemetry::health::{ConsumerHealth, ConsumerState, Health, StuckMessage};
pub use wire::headers::{
    ATTEMPTS_HEADER, DELIVERY_COUNT_HEADER, FIRST_FAILURE_HEADER, LAST_ERROR_HEADER,
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_QUEUE_HEADER, ORIGINAL_ROUTING_KEY_HEADER,
    REASON_CODE_HEADER, REASON_HEADER, REDRIVE_COUNT_HEADER, REDRIVEN_ATTEMPTS_HEADER,
    REDRIVEN_CODE_HEADER, REDRIVEN_DELIVERY_COUNT_HEADER, RETRY_COUNT_HEADER, TRACEPARENT_HEADER,
};
pub use wire::redact::{redact_secrets, redact_url};

#[doc(inline)]
pub use eventrabbit_derive::{consumer, function, producer};

/// AMQP types used in the API (headers and their values), re-exported from lapin.
pub mod types {
    pub use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
}

/// Support for the code the macros generate. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::config::RetryOverride;
    pub use crate::config::state::StateNeed;
    pub use crate::handler::batch::{BatchFn, BatchSpec};
    pub use crate::handler::input::{Failure, Input, Reply};
    pub use crate::handler::input::{StateParam, first_input};
    pub use crate::handler::outcome::{
        HandlerResult, HandlerReturn, assert_result_return, assert_value_return, result_outcome,
        unit_outcome, unit_result_outcome, value_outcome,
    };
    pub use crate::handler::producers::publish_produced;
    pub use crate::handler::registration::{
        HandlerFn, HandlerFuture, ProducerRegistration, Registration, ReplyTarget, StatesFn,
        ValidateFn,
    };
    pub use crate::handler::rejection::{Classify, ViaDisplay, ViaHandlerError, ViaStdError};
    pub use crate::handler::schema::{
        FieldSchema, SchemaFn, SchemaProbe, ViaAnySchema, ViaJsonSchema, all_of, null_schema,
        object_schema, unknown_schema,
    };
    pub use inventory;
    pub use schemars;
    pub use serde;
}
