//! Event sourcing without PostgreSQL (issue 31, item 6): the in-memory store has the
//! PostgreSQL store's API and rules (conflicts, order, snapshots, upcasters), so
//! aggregates and projections are unit-tested on it, beside the `TestBroker`.

use eventrabbit::sourcing::{
    Causation, CommandError, EventStore, ExpectedVersion, MemoryEventStore, MemoryProjection,
    NewEvent, Projected, Repository, StoreError, Upcasters,
};
use eventrabbit::testing::{Chaos, TestBroker};
use eventrabbit::{Config, ConsumeChannel, ExchangeKind, MessageContext, State, consumer};
use eventrabbit_tests::bank::{
    Account, AccountCommand, AccountError, fold_balance, publish_stored,
};
use lapin::BasicProperties;
use serde_json::json;
use std::collections::BTreeMap;

type Balances = MemoryProjection<BTreeMap<String, (i64, i64)>, MemoryEventStore>;

#[consumer(action = "T_ES_*")]
async fn project_balance(
    ctx: MessageContext,
    balances: State<Balances>,
) -> Result<(), eventrabbit::sourcing::StoreError> {
    balances.project(&ctx).await.map(|_| ())
}

/// Commands arrive as messages: the events they append carry the message's ids and trace.
#[consumer(action = "T_ES_CMD_DEPOSIT")]
async fn deposit_command(
    account: String,
    amount: i64,
    ctx: MessageContext,
    accounts: State<Repository<Account, MemoryEventStore>>,
) -> Result<(), CommandError<AccountError>> {
    let causation = Causation::from_message(&ctx);
    accounts
        .execute_caused(&account, &AccountCommand::Deposit { amount }, &causation)
        .await
        .map(|_| ())
}

fn deposit(amount: i64) -> AccountCommand {
    AccountCommand::Deposit { amount }
}

fn open() -> AccountCommand {
    AccountCommand::Open {
        owner: "ann".into(),
    }
}

async fn fold(store: &MemoryEventStore) -> BTreeMap<String, (i64, i64)> {
    let mut model = BTreeMap::new();
    for e in store.read_all(0, usize::MAX).await.unwrap() {
        fold_balance(&mut model, &e);
    }
    model
}

#[tokio::test]
async fn the_memory_store_refuses_a_stale_version_by_name_and_reads_in_order() {
    let store = MemoryEventStore::new();
    let opened = NewEvent::new("T_ES_OPENED", &json!({"owner": "ann"})).unwrap();
    store
        .append("account-1", ExpectedVersion::Exact(0), vec![opened.clone()])
        .await
        .unwrap();
    let again = NewEvent::new("T_ES_OPENED", &json!({"owner": "bob"})).unwrap();
    let err = store
        .append("account-1", ExpectedVersion::Exact(0), vec![again])
        .await
        .expect_err("stale");
    assert!(
        matches!(&err, StoreError::Conflict { stream, expected: ExpectedVersion::Exact(0), actual: 1 } if stream == "account-1"),
        "{err}"
    );
    let err = store
        .append("account-2", ExpectedVersion::Any, vec![opened.clone()])
        .await
        .expect_err("a message id taken");
    assert!(matches!(err, StoreError::DuplicateMessageId(_)), "{err}");
    for i in 0..3 {
        let e = NewEvent::new("T_ES_DEPOSITED", &json!({"amount": i})).unwrap();
        store
            .append(&format!("account-{}", i % 2), ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    let all = store.read_all(0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let one = store.read_stream("account-1", 1).await.unwrap();
    assert_eq!(one.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2]);
    assert_eq!(store.read_all(2, 1).await.unwrap(), all[2..3].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_snapshots_and_an_overdraft_in_memory() {
    let store = MemoryEventStore::new();
    let accounts = Repository::<Account, _>::new(store.clone())
        .attempts(1_000)
        .snapshot_every(10);
    accounts.execute("1", &open()).await.unwrap();
    let runs: Vec<_> = (1..=100)
        .map(|amount| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.execute("1", &deposit(amount)).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let loaded = accounts.load("1").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (5050, 101));
    assert_eq!(loaded, accounts.load_from_events("1").await.unwrap());
    assert_eq!(
        store.snapshot("account-1").await.unwrap().unwrap().version,
        100
    );
    let err = accounts
        .execute("1", &AccountCommand::Withdraw { amount: 6000 })
        .await
        .expect_err("overdraft");
    assert!(
        matches!(err, CommandError::Rejected(AccountError::Overdraft { .. })),
        "{err}"
    );
    assert_eq!(store.len(), 101, "nothing appended");
}

#[tokio::test]
async fn upcasters_apply_to_the_memory_store_alike() {
    let store = MemoryEventStore::new();
    store
        .append(
            "account-u",
            ExpectedVersion::Exact(0),
            vec![
                NewEvent::new("T_ES_OPENED", &json!({"owner": "ann"})).unwrap(),
                NewEvent::new("T_ES_DEPOSITED", &json!({"cents": 40})).unwrap(),
            ],
        )
        .await
        .unwrap();
    let upcast = store.upcasting(Upcasters::new().upcast("T_ES_DEPOSITED", 1, |mut d| {
        d["amount"] = d["cents"].take();
        Ok(d)
    }));
    let accounts = Repository::<Account, _>::new(upcast);
    let done = accounts.execute("u", &deposit(2)).await.unwrap();
    assert_eq!(done.state.balance, 42);
    assert_eq!(done.events[0].revision, 2);
}

/// The in-memory projection fed by the test broker under chaos (duplicates, redeliveries
/// after lost acks, reordering): its model equals the store's fold, and a rebuild gives
/// the same model.
#[tokio::test]
async fn a_memory_projection_under_chaos_equals_the_stores_fold() {
    let store = MemoryEventStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());
    for s in 0..5 {
        accounts.execute(&s.to_string(), &open()).await.unwrap();
    }
    for i in 1..=80 {
        accounts
            .execute(&(i % 5).to_string(), &deposit(i))
            .await
            .unwrap();
    }
    let balances: Balances = MemoryProjection::new(store.clone(), fold_balance);
    let broker = TestBroker::with_config(Config::default().with_state(balances.clone()))
        .with_chaos(Chaos::all(7));
    broker
        .consume(
            ConsumeChannel::new("balances")
                .exchange("bank", ExchangeKind::Fanout)
                .actions(["T_ES_*"])
                .prefetch(10),
        )
        .unwrap();
    publish_stored(&broker, "bank", &store.read_all(0, 1000).await.unwrap());
    broker.run_until_idle().await.unwrap();
    let report = broker.chaos_report().unwrap();
    assert!(
        report.duplicated > 0 && report.redelivered > 0 && report.reordered > 0,
        "{report:?}"
    );
    let expected = fold(&store).await;
    assert_eq!(balances.read(Clone::clone), expected);
    assert_eq!(
        balances
            .project_message(&store.read_all(0, 1).await.unwrap()[0].metadata.message_id)
            .await
            .unwrap(),
        Projected::AlreadyApplied
    );
    assert_eq!(balances.rebuild().await.unwrap(), 85);
    assert_eq!(balances.read(Clone::clone), expected);
}

/// A command handled from a message appends events whose metadata names that message
/// (causation id), its conversation (correlation id) and its trace; a rejected command is
/// dead-lettered at once with the aggregate's reason and appends nothing.
#[tokio::test]
async fn events_of_a_command_message_carry_its_ids_and_trace() {
    let store = MemoryEventStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts.execute("7", &open()).await.unwrap();
    let broker = TestBroker::with_config(Config::default().with_state(accounts.clone()));
    broker
        .consume(ConsumeChannel::new("commands").actions(["T_ES_CMD_DEPOSIT"]))
        .unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace}-00f067aa0ba902b7-01").into()),
    );
    let command = |amount: i64| {
        serde_json::to_vec(
            &json!({"action": "T_ES_CMD_DEPOSIT", "data": {"account": "7", "amount": amount}}),
        )
        .unwrap()
    };
    broker
        .publish_with(
            "",
            "commands",
            &command(25),
            BasicProperties::default()
                .with_message_id("cmd-1".into())
                .with_correlation_id("conversation-9".into())
                .with_headers(headers),
        )
        .unwrap();
    broker
        .publish_with(
            "",
            "commands",
            &command(-5),
            BasicProperties::default().with_message_id("cmd-2".into()),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let events = store.read_stream("account-7", 1).await.unwrap();
    assert_eq!(events.len(), 1, "the refused command appended nothing");
    let meta = &events[0].metadata;
    assert_eq!(meta.causation_id.as_deref(), Some("cmd-1"));
    assert_eq!(meta.correlation_id.as_deref(), Some("conversation-9"));
    let traceparent = meta.traceparent.as_deref().expect("a trace");
    assert_eq!(traceparent.split('-').nth(1), Some(trace), "{traceparent}");
    assert_ne!(meta.message_id, "cmd-1", "an event has an id of its own");
    let letters = broker.dead_letters("commands");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].code, "rejected");
    assert!(
        letters[0].reason.contains("amounts must be positive"),
        "{letters:?}"
    );
}
