//! Why a message leaves its queue for the dead-letter queue. Every text a reason quotes
//! from a message or a handler (an action, a field path, an error) is bounded, so a reason
//! always fits in a header.

use crate::wire::envelope::EnvelopeError;
use crate::wire::limits::{MAX_HEADER_TEXT, MAX_QUOTED, cap};

/// The most bytes of a detail or an error a reason quotes.
const MAX_DETAIL: usize = MAX_HEADER_TEXT - 2 * MAX_QUOTED;

/// Why a message went to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeadReason {
    TooLarge {
        size: usize,
        limit: usize,
    },
    Envelope(EnvelopeError),
    UnknownAction(String),
    InvalidData {
        action: String,
        detail: String,
    },
    RetriesExhausted {
        action: String,
        attempts: u32,
        error: String,
    },
    /// The handler returned a permanent error: not retried.
    Rejected {
        action: String,
        attempts: u32,
        error: String,
    },
    /// The handler failed and its retry could not be sent (the wait queue is refused).
    RetryUnpublishable {
        action: String,
        attempts: u32,
        error: String,
        cause: String,
    },
    /// A quorum queue delivered the message `deliveries` times without it being settled.
    CrashLoop {
        deliveries: u32,
        limit: u32,
    },
    /// An event of a log the stream client cannot read (decode): set aside so that the
    /// reader goes on; the dead letter has no body.
    Unreadable {
        offset: u64,
        detail: String,
    },
    /// The message cannot be sent on as it is (its headers leave no room in a frame): its
    /// own headers are dropped from the dead letter.
    Unpublishable {
        first: Box<DeadReason>,
        detail: String,
    },
}

impl DeadReason {
    /// A stable, machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            DeadReason::TooLarge { .. } => "too-large",
            DeadReason::Envelope(EnvelopeError::NotUtf8(_)) => "not-utf8",
            DeadReason::Envelope(EnvelopeError::NotJson(_)) => "not-json",
            DeadReason::Envelope(EnvelopeError::NotObject) => "not-object",
            DeadReason::Envelope(EnvelopeError::DuplicateKey(_)) => "duplicate-key",
            DeadReason::Envelope(EnvelopeError::MissingAction) => "missing-action",
            DeadReason::Envelope(EnvelopeError::DataNotObject) => "data-not-object",
            DeadReason::UnknownAction(_) => "unknown-action",
            DeadReason::InvalidData { .. } => "invalid-data",
            DeadReason::RetriesExhausted { .. } => "retries-exhausted",
            DeadReason::Rejected { .. } => "rejected",
            DeadReason::RetryUnpublishable { .. } => "retry-unpublishable",
            DeadReason::Unpublishable { .. } => "unpublishable",
            DeadReason::Unreadable { .. } => "unreadable",
            DeadReason::CrashLoop { .. } => "crash-loop",
        }
    }

    /// How many times a handler ran on the message.
    pub(crate) fn attempts(&self) -> u32 {
        match self {
            DeadReason::RetriesExhausted { attempts, .. }
            | DeadReason::Rejected { attempts, .. }
            | DeadReason::RetryUnpublishable { attempts, .. } => *attempts,
            DeadReason::InvalidData { .. } => 1,
            DeadReason::CrashLoop { deliveries, .. } => *deliveries,
            DeadReason::Unpublishable { first, .. } => first.attempts(),
            _ => 0,
        }
    }

    /// The last handler error, if a handler failed.
    pub(crate) fn last_error(&self) -> Option<&str> {
        match self {
            DeadReason::RetriesExhausted { error, .. }
            | DeadReason::Rejected { error, .. }
            | DeadReason::RetryUnpublishable { error, .. } => Some(error),
            DeadReason::Unpublishable { first, .. } => first.last_error(),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadReason::TooLarge { size, limit } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {limit} bytes"
                )
            }
            DeadReason::Envelope(e) => write!(f, "{}", cap(&e.to_string(), MAX_DETAIL)),
            DeadReason::UnknownAction(a) => write!(
                f,
                "no handler for action `{}` on this queue",
                cap(a, MAX_QUOTED)
            ),
            DeadReason::InvalidData { action, detail } => write!(
                f,
                "action `{}`: {}",
                cap(action, MAX_QUOTED),
                cap(detail, MAX_DETAIL)
            ),
            DeadReason::RetriesExhausted {
                action,
                attempts,
                error,
            } => write!(
                f,
                "action `{}` failed {attempts} times; last error: {}",
                cap(action, MAX_QUOTED),
                cap(error, MAX_DETAIL)
            ),
            DeadReason::Rejected { action, error, .. } => write!(
                f,
                "action `{}` rejected the message: {}",
                cap(action, MAX_QUOTED),
                cap(error, MAX_DETAIL)
            ),
            DeadReason::RetryUnpublishable {
                action,
                attempts,
                error,
                cause,
            } => write!(
                f,
                "action `{}` failed (attempt {attempts}: {}) and its retry could not be sent: {}",
                cap(action, MAX_QUOTED),
                cap(error, MAX_DETAIL / 2),
                cap(cause, MAX_DETAIL / 2)
            ),
            DeadReason::CrashLoop { deliveries, limit } => write!(
                f,
                "delivered {deliveries} times without being settled (the limit is {limit}): its handler keeps crashing the process"
            ),
            DeadReason::Unreadable { offset, detail } => write!(
                f,
                "the event at offset {offset} could not be read from the log: {}",
                cap(detail, MAX_DETAIL)
            ),
            DeadReason::Unpublishable { first, detail } => write!(
                f,
                "{}; the message's own headers were dropped: {}",
                cap(&first.to_string(), MAX_DETAIL / 2),
                cap(detail, MAX_QUOTED)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_quoting_huge_texts_stay_bounded() {
        let huge = "x".repeat(200_000);
        for reason in [
            DeadReason::UnknownAction(huge.clone()),
            DeadReason::InvalidData {
                action: huge.clone(),
                detail: huge.clone(),
            },
            DeadReason::RetriesExhausted {
                action: huge.clone(),
                attempts: 3,
                error: huge.clone(),
            },
            DeadReason::RetryUnpublishable {
                action: huge.clone(),
                attempts: 1,
                error: huge.clone(),
                cause: huge.clone(),
            },
            DeadReason::Rejected {
                action: huge.clone(),
                attempts: 1,
                error: huge.clone(),
            },
            DeadReason::Envelope(EnvelopeError::NotJson(huge.clone())),
        ] {
            let text = reason.to_string();
            assert!(
                text.len() <= MAX_HEADER_TEXT,
                "{}: {}",
                reason.code(),
                text.len()
            );
        }
    }
}
