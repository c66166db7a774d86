//! Turning what a handler returned into its [`Reply`] or [`Failure`], and the compile-time
//! checks of return types the macros emit.

use super::input::{Failure, Reply};
use serde::Serialize;
use std::fmt::Display;

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

/// Turns a handler's `Result<(), E>`, its error already classified (see
/// [`Classify`](super::rejection::Classify)), into no reply or a failure.
pub fn unit_result_outcome(result: Result<(), Failure>) -> Result<Reply, Failure> {
    result.map(|()| Reply(None))
}

/// Turns a handler's `Result`, its error already classified, into its reply or a failure.
pub fn result_outcome<T: Serialize>(result: Result<T, Failure>) -> Result<Reply, Failure> {
    result.and_then(value_outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_means_no_reply() {
        assert!(value_outcome(()).unwrap().0.is_none());
        assert_eq!(value_outcome(5).unwrap().0.unwrap().get(), "5");
        let boom = || Failure::Failed("boom".into());
        assert_eq!(result_outcome::<()>(Err(boom())).unwrap_err(), boom());
        // The unit forms agree with the general ones.
        assert!(unit_outcome(()).unwrap().0.is_none());
        assert!(unit_result_outcome(Ok(())).unwrap().0.is_none());
        assert_eq!(
            unit_result_outcome(Err(boom())).unwrap_err(),
            result_outcome::<()>(Err(boom())).unwrap_err()
        );
    }
}
