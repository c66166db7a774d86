//! The decision taken for each delivery before any handler runs.

use super::dead_reason::DeadReason;
use crate::config::UnknownAction;
use crate::handler::registry::{Route, Routes};
use crate::wire::envelope;
use std::ops::Range;

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
