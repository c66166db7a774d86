//! Aggregates: state folded from events, commands deciding new events.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An aggregate: its state is the fold of its events ([`apply`](Self::apply)), and a
/// command is decided on the current state ([`handle`](Self::handle)), either rejected
/// or turned into new events. Both are plain, synchronous and free of side effects:
/// the [`Repository`](super::Repository) may run `handle` again after a conflict.
///
/// Events are an enum tagged `#[serde(tag = "action", content = "data")]`: each variant
/// serializes to the envelope `{"action": .., "data": {..}}` that is stored and published,
/// exactly what a `#[producer]` sends, so Python eventrabbit services read it unchanged.
///
/// ```
/// use eventrabbit::sourcing::Aggregate;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Account { open: bool, balance: i64 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// #[serde(tag = "action", content = "data")]
/// enum AccountEvent {
///     #[serde(rename = "ACCOUNT_OPENED")]
///     Opened { owner: String },
///     #[serde(rename = "DEPOSITED")]
///     Deposited { amount: i64 },
/// }
///
/// enum AccountCommand { Open { owner: String }, Deposit { amount: i64 } }
///
/// impl Aggregate for Account {
///     const KIND: &'static str = "account";
///     type Event = AccountEvent;
///     type Command = AccountCommand;
///     type Error = String;
///
///     fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, String> {
///         match command {
///             AccountCommand::Open { .. } if self.open => Err("already open".into()),
///             AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened { owner: owner.clone() }]),
///             AccountCommand::Deposit { .. } if !self.open => Err("not open".into()),
///             AccountCommand::Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
///         }
///     }
///
///     fn apply(&mut self, event: &AccountEvent) {
///         match event {
///             AccountEvent::Opened { .. } => self.open = true,
///             AccountEvent::Deposited { amount } => self.balance += amount,
///         }
///     }
/// }
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind of aggregate: the prefix of its streams (`account` → `account-<id>`).
    const KIND: &'static str;
    /// The shape of the serialized state: snapshots of another revision are ignored
    /// (raise it when the state's fields change).
    const SNAPSHOT_REVISION: u32 = 1;
    /// Its events, serializing to `{"action": .., "data": {..}}`.
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// The commands it decides.
    type Command: Send + Sync;
    /// Why it rejects a command.
    type Error: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static;

    /// The events `command` makes on the current state, or why it is rejected.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// The stream holding the aggregate `id`.
    #[must_use]
    fn stream(id: &str) -> String {
        format!("{}-{id}", Self::KIND)
    }
}
