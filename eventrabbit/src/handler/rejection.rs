//! Permanent handler errors: [`Rejected`], the [`HandlerError`] trait, and how the macros
//! tell a permanent error from one worth retrying.
//!
//! A handler's `Err` is retried, unless the error says retrying cannot help. It says so
//! by being (or wrapping, anywhere in its `source()` chain) a [`Rejected`], or by its type
//! implementing [`HandlerError`]. Such a message is dead-lettered at once with the code
//! `rejected` and the error's text, without using the retry budget.

use super::input::Failure;
use std::error::Error as StdError;
use std::fmt::{self, Display};

/// A permanent handler error: the message is dead-lettered at once (code `rejected`),
/// never retried. For input the handler finds invalid, a business rule that refuses it,
/// anything a second attempt would refuse alike.
///
/// ```
/// use eventrabbit::{Rejected, consumer};
///
/// #[consumer(action = "ORDER_PLACED")]
/// async fn order_placed(quantity: i64) -> Result<(), Rejected> {
///     if quantity <= 0 {
///         return Err(Rejected::new(format!("quantity must be positive, got {quantity}")));
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(String);

impl Rejected {
    /// A rejection saying why.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    /// Why the message was rejected.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Rejected {}

/// An error type that knows whether retrying can help. Implement it on a handler's own
/// error type to mark some of its variants permanent:
///
/// ```
/// use eventrabbit::HandlerError;
///
/// #[derive(Debug)]
/// enum PaymentError { CardDeclined, GatewayDown }
///
/// impl std::fmt::Display for PaymentError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str(match self {
///             PaymentError::CardDeclined => "card declined",
///             PaymentError::GatewayDown => "payment gateway down",
///         })
///     }
/// }
///
/// impl HandlerError for PaymentError {
///     fn is_permanent(&self) -> bool {
///         matches!(self, PaymentError::CardDeclined)
///     }
/// }
/// ```
pub trait HandlerError: Display {
    /// Whether a second attempt would fail alike: the message is then dead-lettered at
    /// once with the code `rejected`.
    fn is_permanent(&self) -> bool;
}

impl HandlerError for Rejected {
    fn is_permanent(&self) -> bool {
        true
    }
}

/// A boxed error is permanent when a [`Rejected`] is anywhere in its chain.
impl HandlerError for Box<dyn StdError + Send + Sync> {
    fn is_permanent(&self) -> bool {
        chain_has_rejected(self.as_ref())
    }
}

/// A boxed error is permanent when a [`Rejected`] is anywhere in its chain.
impl HandlerError for Box<dyn StdError> {
    fn is_permanent(&self) -> bool {
        chain_has_rejected(self.as_ref())
    }
}

fn chain_has_rejected(e: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<Rejected>() {
            return true;
        }
        next = e.source();
    }
    false
}

fn failure(text: String, permanent: bool) -> Failure {
    if permanent {
        Failure::Rejected(text)
    } else {
        Failure::Failed(text)
    }
}

/// A handler's error, classified by the most specific way its type allows. The macros
/// call `(&&&Classify(&e)).failure()`: method resolution then picks [`ViaHandlerError`]
/// when the type implements [`HandlerError`], else [`ViaStdError`] for a
/// `std::error::Error` (a [`Rejected`] in its chain is permanent), else [`ViaDisplay`]
/// (retried).
#[doc(hidden)]
#[derive(Debug)]
pub struct Classify<'a, E>(pub &'a E);

#[doc(hidden)]
pub trait ViaHandlerError {
    fn failure(&self) -> Failure;
}

impl<E: HandlerError> ViaHandlerError for &&Classify<'_, E> {
    fn failure(&self) -> Failure {
        failure(self.0.to_string(), self.0.is_permanent())
    }
}

#[doc(hidden)]
pub trait ViaStdError {
    fn failure(&self) -> Failure;
}

impl<E: StdError + 'static> ViaStdError for &Classify<'_, E> {
    fn failure(&self) -> Failure {
        failure(self.0.to_string(), chain_has_rejected(self.0))
    }
}

#[doc(hidden)]
pub trait ViaDisplay {
    fn failure(&self) -> Failure;
}

impl<E: Display> ViaDisplay for Classify<'_, E> {
    fn failure(&self) -> Failure {
        Failure::Failed(self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Rejected);

    impl Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "wrapped: {}", self.0)
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    #[allow(
        clippy::needless_borrow,
        reason = "the borrows are the dispatch, as in generated code"
    )]
    fn the_most_specific_classification_wins() {
        let rejected = Rejected::new("no");
        assert_eq!(
            (&&&Classify(&rejected)).failure(),
            Failure::Rejected("no".into())
        );
        let wrapped = Wrapper(Rejected::new("inner"));
        assert_eq!(
            (&&&Classify(&wrapped)).failure(),
            Failure::Rejected("wrapped: inner".into())
        );
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(Wrapper(Rejected::new("x")));
        assert!(matches!(
            (&&&Classify(&boxed)).failure(),
            Failure::Rejected(_)
        ));
        let io = std::io::Error::other("disk");
        assert_eq!((&&&Classify(&io)).failure(), Failure::Failed("disk".into()));
        let text = "plain";
        assert_eq!(
            (&&&Classify(&text)).failure(),
            Failure::Failed("plain".into())
        );
    }
}
