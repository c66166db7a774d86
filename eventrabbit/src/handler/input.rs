//! What a generated handler receives ([`Input`]) and produces ([`Reply`] or [`Failure`]).

use super::context::{Message, MessageContext};
use crate::config::state::{State, StateMap, StateNeed};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::ops::Range;
use std::sync::Arc;

/// What a handler produced: the JSON of its result, `None` for `()`.
#[derive(Debug)]
pub struct Reply(pub(crate) Option<Box<RawValue>>);

impl Reply {
    /// No result: what a handler returning `()` produces. A layer that settles a message
    /// without running the handler (a duplicate it recognised) returns this.
    #[must_use]
    pub fn none() -> Self {
        Reply(None)
    }

    /// Whether there is a result to reply or publish.
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

/// The future a registered handler returns.
pub type HandlerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, Failure>> + Send>>;

/// Why a handler did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `data` does not fit the handler: dead-lettered at once, never retried.
    Invalid(String),
    /// The handler returned `Err` (or panicked): retried.
    Failed(String),
    /// The handler returned a permanent error ([`Rejected`](crate::Rejected) or a
    /// [`HandlerError`](crate::HandlerError) saying so): dead-lettered at once.
    Rejected(String),
}

/// A message handed to a generated handler: its `data`, its context and the application
/// state.
#[derive(Debug)]
pub struct Input {
    pub(crate) message: Arc<Message>,
    pub(crate) data: Range<usize>,
    pub(crate) state: StateMap,
}

impl Input {
    pub(crate) fn new(message: Arc<Message>, data: Range<usize>, state: StateMap) -> Self {
        Self {
            message,
            data,
            state,
        }
    }

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
            state: self.state.clone(),
        }
    }

    /// The registered state of type `T`. Its queue checked at start that every handler's
    /// state is registered, so this fails only for a handler called some other way.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<State<T>, Failure> {
        self.state.get::<T>().ok_or_else(|| {
            Failure::Failed(format!(
                "no state of type `{}` is registered",
                std::any::type_name::<T>()
            ))
        })
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
        let msg = crate::wire::envelope::strip_position(&inner.to_string());
        Failure::Invalid(if path == "." {
            format!("data does not fit the handler: {msg}")
        } else {
            format!("data does not fit the handler: field `{path}`: {msg}")
        })
    })
}

/// A handler parameter filled from the registered state (generated code): `State<T>`, or
/// an alias of it marked `#[state]`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `State<T>`: a `#[state]` parameter takes `State<YourType>`",
    label = "not a `State<..>`"
)]
pub trait StateParam: Sized {
    /// The type that must be registered.
    fn need() -> StateNeed;
    /// The registered value, from a message's input.
    fn take(input: &Input) -> Result<Self, Failure>;
}

impl<T: Send + Sync + 'static> StateParam for State<T> {
    fn need() -> StateNeed {
        StateNeed::of::<T>()
    }

    fn take(input: &Input) -> Result<Self, Failure> {
        input.state::<T>()
    }
}

/// The first message of a batch, which the batch's state is taken from (generated code).
#[doc(hidden)]
pub fn first_input(inputs: &[Input]) -> Result<&Input, Failure> {
    inputs
        .first()
        .ok_or_else(|| Failure::Failed("an empty batch has no state".to_owned()))
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
}
