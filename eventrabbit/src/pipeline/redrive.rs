//! Redrive, whatever carries it: what to move back, what a dry run says of each dead
//! letter (would today's handlers take it?), and the report.

use super::dead_reason::DeadReason;
use super::decide::{Decision, decide};
use super::policy::QueuePolicy;
use crate::handler::context::Message;
use crate::handler::input::{Failure, Input};
use crate::wire::headers::{REASON_CODE_HEADER, header_text};
use std::sync::Arc;

/// How to move a queue's dead letters back to it.
///
/// ```
/// use eventrabbit::Redrive;
/// let dry_run = Redrive::new().max(100).dry_run(true);
/// # let _ = dry_run;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redrive {
    pub(crate) max: usize,
    pub(crate) dry_run: bool,
}

impl Default for Redrive {
    fn default() -> Self {
        Self::new()
    }
}

impl Redrive {
    /// Every dead letter that is in the dead-letter queue when the redrive starts (never
    /// those that arrive meanwhile, so a redrive always ends).
    #[must_use]
    pub fn new() -> Self {
        Self {
            max: usize::MAX,
            dry_run: false,
        }
    }

    /// At most `max` dead letters.
    #[must_use]
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Move nothing: look at each dead letter, say whether today's handlers would take it,
    /// and leave it where it is.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What a redrive did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// How many dead letters were in the dead-letter queue when the redrive started.
    pub found: usize,
    /// How many were looked at (at most `found`, and at most the `max` asked for).
    pub examined: usize,
    /// How many were moved back (0 in a dry run).
    pub moved: usize,
    /// Why the redrive stopped early, if it did; the dead letter it was moving stays in
    /// the dead-letter queue.
    pub error: Option<String>,
    /// The dead letters examined, grouped by their dead-letter code and action.
    pub groups: Vec<RedriveGroup>,
}

/// Dead letters of one dead-letter code and action.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveGroup {
    /// The `x-dead-letter-code` they were dead-lettered with.
    pub code: String,
    /// Their envelope's action, if the body is an envelope.
    pub action: Option<String>,
    /// How many.
    pub count: usize,
    /// How many today's handlers would take: right action, `data` fitting the parameters.
    pub would_pass: usize,
    /// Why one of the others would be dead-lettered again, if any would.
    pub failure: Option<String>,
}

impl RedriveReport {
    /// Counts one examined dead letter.
    pub(crate) fn add(&mut self, code: String, action: Option<String>, verdict: Verdict) {
        self.examined += 1;
        let group = match self
            .groups
            .iter_mut()
            .find(|g| g.code == code && g.action == action)
        {
            Some(g) => g,
            None => {
                self.groups.push(RedriveGroup {
                    code,
                    action,
                    count: 0,
                    would_pass: 0,
                    failure: None,
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        group.count += 1;
        match verdict {
            Verdict::Pass => group.would_pass += 1,
            Verdict::Fail(reason) => group.failure = Some(reason),
        }
    }
}

/// Whether today's handlers would take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Fail(String),
}

/// The dead-letter code a dead letter carries (`""` if none).
/// The code a dead letter carries: eventrabbit's `x-dead-letter-code`, or for what the
/// broker dead-lettered itself (a quorum queue's expired or over-limit messages)
/// `broker-<reason>` from its `x-first-death-reason`; `""` if neither.
pub(crate) fn dead_letter_code(message: &Message) -> String {
    let header = |key: &str| {
        message
            .headers()
            .and_then(|h| h.inner().get(key))
            .and_then(header_text)
    };
    header(REASON_CODE_HEADER)
        .or_else(|| header("x-first-death-reason").map(|r| format!("broker-{r}")))
        .unwrap_or_default()
}

/// The action of a dead letter's envelope, if it is one.
pub(crate) fn action_of(body: &[u8]) -> Option<String> {
    crate::wire::envelope::decode(body)
        .ok()
        .map(|e| e.action.into_owned())
}

/// Decides `message` as `policy`'s queue would now, and decodes its `data` into the
/// handler's parameters, without running the handler.
pub(crate) fn verdict(policy: &QueuePolicy, message: &Arc<Message>) -> Verdict {
    let decision = decide(
        &message.body,
        &policy.routes,
        policy.settings.max_message_size,
        policy.settings.unknown_action,
    );
    match decision {
        Decision::Handle(route, range) => {
            let input = Input::new(message.clone(), range, policy.state.clone());
            match (route.reg.validate)(&input) {
                Ok(()) => Verdict::Pass,
                Err(
                    Failure::Invalid(detail) | Failure::Failed(detail) | Failure::Rejected(detail),
                ) => Verdict::Fail(
                    DeadReason::InvalidData {
                        action: route.reg.action.to_owned(),
                        detail,
                    }
                    .to_string(),
                ),
            }
        }
        Decision::DeadLetter(reason) => Verdict::Fail(reason.to_string()),
        Decision::Drop(why) => Verdict::Fail(why),
    }
}
