//! [`Handling`]: what a consumer does with the messages it reads, the settings that
//! [`ConsumeChannel`](crate::ConsumeChannel) and [`StreamConsumer`](crate::StreamConsumer)
//! share; their setters are written once, in [`handling_setters`].

use super::{QueueConfig, RetryConfig, UnknownAction};

/// The handler settings of one consumer (of a queue or of a log); `None` takes the
/// connection-wide default.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Handling {
    pub(crate) actions: Option<Vec<String>>,
    pub(crate) retry: Option<RetryConfig>,
    pub(crate) unknown_action: Option<UnknownAction>,
    pub(crate) max_message_size: Option<usize>,
}

impl Handling {
    /// The actions served, when limited.
    pub(crate) fn actions(&self) -> Option<&[String]> {
        self.actions.as_deref()
    }

    /// The retry policy: this consumer's, else `default`.
    pub(crate) fn retry_or(&self, default: &RetryConfig) -> RetryConfig {
        self.retry.clone().unwrap_or_else(|| default.clone())
    }

    /// The size limit: this consumer's, else the queue defaults'.
    pub(crate) fn max_message_size_or(&self, defaults: &QueueConfig) -> usize {
        self.max_message_size.unwrap_or(defaults.max_message_size)
    }

    /// What unknown actions get: this consumer's policy, else the queue defaults'.
    pub(crate) fn unknown_action_or(&self, defaults: &QueueConfig) -> UnknownAction {
        self.unknown_action.unwrap_or(defaults.unknown_action)
    }
}

/// The setters of [`Handling`], for a builder with a `handling` field: one definition
/// for the queue consumer and the log reader.
macro_rules! handling_setters {
    () => {
        /// Handles only these actions (each must have a registered handler); the others
        /// are dealt with as [`unknown_action`](Self::unknown_action) says.
        #[must_use]
        pub fn actions<I, S>(mut self, actions: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.handling.actions = Some(actions.into_iter().map(Into::into).collect());
            self
        }

        /// Overrides the retry policy (`Config::retry`) for this consumer (a handler's
        /// own `retry(..)` still applies over it). On a log, and on a keyed queue, retries
        /// happen in place.
        #[must_use]
        pub fn retry(mut self, retry: $crate::config::RetryConfig) -> Self {
            self.handling.retry = Some(retry);
            self
        }

        /// What happens to messages whose action no handler serves (by default as
        /// `QueueConfig::unknown_action` says: dead-lettered). A log often holds events a
        /// projection does not care about: `UnknownAction::Drop` skips them (they stay
        /// in the log).
        #[must_use]
        pub fn unknown_action(mut self, policy: $crate::config::UnknownAction) -> Self {
            self.handling.unknown_action = Some(policy);
            self
        }

        /// Overrides the size limit of a message (`QueueConfig::max_message_size`).
        #[must_use]
        pub fn max_message_size(mut self, bytes: usize) -> Self {
            self.handling.max_message_size = Some(bytes);
            self
        }
    };
}
pub(crate) use handling_setters;
