//! The bank account the event-sourcing tests use: open, deposit, withdraw, never below 0.

use eventrabbit::sourcing::{Aggregate, RecordedEvent};
use eventrabbit::testing::TestBroker;
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An account's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub balance: i64,
    pub operations: u64,
}

/// Its events, as envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "data")]
pub enum AccountEvent {
    #[serde(rename = "T_ES_OPENED")]
    Opened { owner: String },
    #[serde(rename = "T_ES_DEPOSITED")]
    Deposited { amount: i64 },
    #[serde(rename = "T_ES_WITHDRAWN")]
    Withdrawn { amount: i64 },
}

/// What can be asked of it.
#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

/// Why it says no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("amounts must be positive")]
    NotPositive,
    #[error("overdraft: balance {balance}, withdrawal {amount}")]
    Overdraft { balance: i64, amount: i64 },
}

impl Aggregate for Account {
    const KIND: &'static str = "account";
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand::*;
        match command {
            Open { .. } if self.owner.is_some() => Err(AccountError::AlreadyOpen),
            Open { owner } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
            }]),
            _ if self.owner.is_none() => Err(AccountError::NotOpen),
            Deposit { amount } | Withdraw { amount } if *amount <= 0 => {
                Err(AccountError::NotPositive)
            }
            Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
            Withdraw { amount } if *amount > self.balance => Err(AccountError::Overdraft {
                balance: self.balance,
                amount: *amount,
            }),
            Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount: *amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.operations += 1;
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// The balance projection's fold: per stream, the balance and how many events it folds.
pub fn fold_balance(model: &mut BTreeMap<String, (i64, i64)>, event: &RecordedEvent) {
    let entry = model.entry(event.stream.clone()).or_insert((0, 0));
    let amount = event.data["amount"].as_i64().unwrap_or(0);
    match event.action.as_str() {
        "T_ES_DEPOSITED" => entry.0 += amount,
        "T_ES_WITHDRAWN" => entry.0 -= amount,
        _ => {}
    }
    entry.1 += 1;
}

/// Publishes stored events into the test broker as the relay would: each event's
/// envelope with its message id, to `exchange`.
pub fn publish_stored(broker: &TestBroker, exchange: &str, events: &[RecordedEvent]) {
    for e in events {
        broker
            .publish_with(
                exchange,
                "",
                &serde_json::to_vec(&e.envelope()).expect("an envelope is JSON"),
                BasicProperties::default().with_message_id(e.metadata.message_id.as_str().into()),
            )
            .expect("published to the test broker");
    }
}
