//! What the macros register: a handler per action, and the helpers its generated code calls.

use crate::context::{Message, MessageContext};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::fmt::Display;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

/// The future a registered handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, Failure>> + Send>>;

/// A registered handler's entry point.
pub type HandlerFn = fn(Input) -> HandlerFuture;

/// What a handler produced: the JSON of its result, `None` for `()`.
#[derive(Debug)]
pub struct Reply(pub(crate) Option<Box<RawValue>>);

/// Why a handler did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `data` does not fit the handler: dead-lettered at once, never retried.
    Invalid(String),
    /// The handler returned `Err` (or panicked): retried.
    Failed(String),
}

/// A message handed to a generated handler: its `data` and its context.
#[derive(Debug)]
pub struct Input {
    pub(crate) message: Arc<Message>,
    pub(crate) data: Range<usize>,
}

impl Input {
    fn raw_data(&self) -> &str {
        // The range was produced by the envelope decoder from valid UTF-8 JSON.
        std::str::from_utf8(&self.message.body[self.data.clone()]).unwrap_or("{}")
    }

    /// Decodes `data` into the handler's parameters; the error names the field.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        decode_data(self.raw_data())
    }

    /// Decodes the whole of `data` into `T`; the error names the field.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        decode_data(self.raw_data())
    }

    /// The delivery's context.
    pub fn context(&self) -> MessageContext {
        MessageContext {
            message: self.message.clone(),
        }
    }
}

fn decode_data<T: DeserializeOwned>(raw: &str) -> Result<T, Failure> {
    // Fast path without path tracking; on failure decode again to name the field.
    if let Ok(value) = serde_json::from_str(raw) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = crate::envelope::strip_position(&inner.to_string());
        Failure::Invalid(if path == "." {
            format!("data does not fit the handler: {msg}")
        } else {
            format!("data does not fit the handler: field `{path}`: {msg}")
        })
    })
}

/// What a handler may return besides `Result`: anything serializable.
#[diagnostic::on_unimplemented(
    message = "handler return type `{Self}` must implement `serde::Serialize`",
    label = "the handler's result is sent as JSON",
    note = "return `()` for no result, a `T: Serialize`, or `Result<T, E>` with `E: Display`"
)]
pub trait HandlerReturn {}
impl<T: Serialize> HandlerReturn for T {}

/// A handler's `Result` return type: `Ok` must serialize, `Err` must display.
#[diagnostic::on_unimplemented(
    message = "handler return type `{Self}` must be `Result<T, E>` with `T: serde::Serialize` and `E: std::fmt::Display`",
    label = "`Ok` is sent as JSON, `Err` is logged and retried"
)]
pub trait HandlerResult {}
impl<T: Serialize, E: Display> HandlerResult for Result<T, E> {}

/// Compile-time check emitted by the macros on a plain return type.
pub const fn assert_value_return<T: HandlerReturn>() {}

/// Compile-time check emitted by the macros on a `Result` return type.
pub const fn assert_result_return<T: HandlerResult>() {}

/// Turns a handler's plain return value into its reply.
pub fn value_outcome<T: Serialize>(value: T) -> Result<Reply, Failure> {
    let raw = serde_json::value::to_raw_value(&value)
        .map_err(|e| Failure::Failed(format!("result does not serialize to JSON: {e}")))?;
    Ok(Reply((raw.get() != "null").then_some(raw)))
}

/// The reply of a handler that returns `()`: none, and nothing to serialize.
pub fn unit_outcome(_: ()) -> Result<Reply, Failure> {
    Ok(Reply(None))
}

/// Turns a handler's `Result<(), E>` into no reply or a retryable failure.
pub fn unit_result_outcome<E: Display>(result: Result<(), E>) -> Result<Reply, Failure> {
    match result {
        Ok(()) => Ok(Reply(None)),
        Err(e) => Err(Failure::Failed(e.to_string())),
    }
}

/// Turns a handler's `Result` into its reply or a retryable failure.
pub fn result_outcome<T: Serialize, E: Display>(result: Result<T, E>) -> Result<Reply, Failure> {
    match result {
        Ok(value) => value_outcome(value),
        Err(e) => Err(Failure::Failed(e.to_string())),
    }
}

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
}

impl Registration {
    /// A `#[consumer]`.
    pub const fn consumer(action: &'static str, name: &'static str, call: HandlerFn) -> Self {
        Self {
            action,
            name,
            publish: None,
            call,
        }
    }

    /// A `#[function]`: its result is also published to `publish`.
    pub const fn function(
        action: &'static str,
        name: &'static str,
        publish: ReplyTarget,
        call: HandlerFn,
    ) -> Self {
        Self {
            action,
            name,
            publish: Some(publish),
            call,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Args {
        user_id: i64,
        name: String,
    }

    #[test]
    fn names_the_missing_or_bad_field() {
        let Failure::Invalid(msg) = decode_data::<Args>(r#"{"user_id":1}"#).unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("missing field `name`"), "{msg}");
        let Failure::Invalid(msg) =
            decode_data::<Args>(r#"{"user_id":"x","name":"a"}"#).unwrap_err()
        else {
            panic!()
        };
        assert!(msg.contains("field `user_id`"), "{msg}");
    }

    #[test]
    fn unit_means_no_reply() {
        assert!(value_outcome(()).unwrap().0.is_none());
        assert_eq!(value_outcome(5).unwrap().0.unwrap().get(), "5");
        assert_eq!(
            result_outcome::<(), _>(Err("boom")).unwrap_err(),
            Failure::Failed("boom".into())
        );
        // The unit forms agree with the general ones.
        assert!(unit_outcome(()).unwrap().0.is_none());
        assert!(unit_result_outcome::<&str>(Ok(())).unwrap().0.is_none());
        assert_eq!(
            unit_result_outcome(Err("boom")).unwrap_err(),
            result_outcome::<(), _>(Err("boom")).unwrap_err()
        );
    }
}
