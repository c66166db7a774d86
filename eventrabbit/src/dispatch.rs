//! The decision taken for each delivery before any handler runs.

use crate::config::UnknownAction;
use crate::envelope::{self, EnvelopeError};
use crate::registry::{Route, Routes};
use std::ops::Range;

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

/// What to do with a delivery.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Run this route's handler on `data` at this range of the body.
    Handle(Route, Range<usize>),
    /// Dead-letter it at once.
    DeadLetter(DeadReason),
    /// Acknowledge and drop it.
    Drop(String),
}

/// Decides from the body alone, before any handler runs.
pub(crate) fn decide(
    body: &[u8],
    routes: &Routes,
    max_size: usize,
    unknown: UnknownAction,
) -> Decision {
    if body.len() > max_size {
        return Decision::DeadLetter(DeadReason::TooLarge {
            size: body.len(),
            limit: max_size,
        });
    }
    let env = match envelope::decode(body) {
        Ok(env) => env,
        Err(e) => return Decision::DeadLetter(DeadReason::Envelope(e)),
    };
    match routes.get(&env.action) {
        Some(route) => Decision::Handle(route, env.data),
        None => match unknown {
            UnknownAction::Drop => {
                Decision::Drop(format!("no handler for action `{}`", env.action))
            }
            _ => Decision::DeadLetter(DeadReason::UnknownAction(env.action.into_owned())),
        },
    }
}
