//! Why a message leaves its queue for the dead-letter queue.

use crate::wire::envelope::EnvelopeError;

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
}

impl DeadReason {
    /// A stable, machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            DeadReason::TooLarge { .. } => "too-large",
            DeadReason::Envelope(EnvelopeError::NotJson(_)) => "not-json",
            DeadReason::Envelope(EnvelopeError::NotObject) => "not-object",
            DeadReason::Envelope(EnvelopeError::DuplicateKey(_)) => "duplicate-key",
            DeadReason::Envelope(EnvelopeError::MissingAction) => "missing-action",
            DeadReason::Envelope(EnvelopeError::DataNotObject) => "data-not-object",
            DeadReason::UnknownAction(_) => "unknown-action",
            DeadReason::InvalidData { .. } => "invalid-data",
            DeadReason::RetriesExhausted { .. } => "retries-exhausted",
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
            DeadReason::Envelope(e) => e.fmt(f),
            DeadReason::UnknownAction(a) => write!(f, "no handler for action `{a}` on this queue"),
            DeadReason::InvalidData { action, detail } => write!(f, "action `{action}`: {detail}"),
            DeadReason::RetriesExhausted {
                action,
                attempts,
                error,
            } => {
                write!(
                    f,
                    "action `{action}` failed {attempts} times; last error: {error}"
                )
            }
        }
    }
}

impl DeadReason {
    /// How many times a handler ran on the message.
    pub(crate) fn attempts(&self) -> u32 {
        match self {
            DeadReason::RetriesExhausted { attempts, .. } => *attempts,
            DeadReason::InvalidData { .. } => 1,
            _ => 0,
        }
    }
}
