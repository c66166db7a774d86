//! Event sourcing on PostgreSQL and the real broker (issue 31): optimistic concurrency
//! with conflicts that name the stream and both versions, aggregates that lose no
//! update under 100 concurrent commands, invariants that append nothing when they
//! reject, snapshots equal to a full replay, upcasters, events published through the
//! outbox as a `#[producer]`'s envelopes in stream order (also across a relay killed
//! with `kill -9`), and projections applied exactly once and rebuilt equal, from the
//! store and from the event log.

use eventrabbit::sourcing::{
    CommandError, EventStore, ExpectedVersion, NewEvent, Projected, RecordedEvent, Repository,
    StoreError, Upcasters,
};
use eventrabbit::testing::{Chaos, TestBroker};
use eventrabbit::{
    Binding, Config, ConsumeChannel, EventLog, ExchangeKind, MessageContext, StartAt, State,
    StreamConsumer, consumer,
};
use eventrabbit_postgres::{PgEventStore, Projection, Projector, Relay, RelayConfig, migrate};
use eventrabbit_tests::bank::{
    Account, AccountCommand, AccountError, AccountEvent, fold_balance, publish_stored,
};
use eventrabbit_tests::{
    cleanup, deps, drop_schema, get_message, pg_pool, raw_channel, start, unique, wait_until,
};
use lapin::BasicProperties;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The balance read model, in a table of the test's schema.
struct Balances {
    schema: String,
}

impl Projection for Balances {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> eventrabbit_postgres::Result<()> {
        let amount = event.data["amount"].as_i64().unwrap_or(0);
        let delta = match event.action.as_str() {
            "T_ES_DEPOSITED" => amount,
            "T_ES_WITHDRAWN" => -amount,
            _ => 0,
        };
        sqlx::query(&format!(
            "INSERT INTO {}.balances (stream, balance, events) VALUES ($1, $2, 1) \
             ON CONFLICT (stream) DO UPDATE SET balance = balances.balance + $2, \
             events = balances.events + 1",
            self.schema
        ))
        .bind(&event.stream)
        .bind(delta)
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> eventrabbit_postgres::Result<()> {
        sqlx::query(&format!("DELETE FROM {}.balances", self.schema))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Every account event, handed to the projector (a pattern handler: one for all).
#[consumer(action = "T_ES_*")]
async fn project_balance(
    ctx: MessageContext,
    projector: State<Projector<Balances>>,
) -> Result<(), eventrabbit_postgres::Error> {
    projector.project(&ctx).await.map(|_| ())
}

/// A test's schema with the store's tables and the balances table.
struct Bank {
    pool: PgPool,
    schema: String,
    store: PgEventStore,
}

impl Bank {
    async fn new() -> Self {
        let pool = pg_pool().await;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        migrate(&pool, &schema).await.expect("migrate");
        sqlx::query(&format!(
            "CREATE TABLE {schema}.balances (stream TEXT PRIMARY KEY, balance BIGINT NOT NULL, \
             events BIGINT NOT NULL)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let store = PgEventStore::new(pool.clone(), &schema).unwrap();
        Self {
            pool,
            schema,
            store,
        }
    }

    /// A relay of the bank's outbox, running in a task of its own.
    fn relay(&self, events: eventrabbit::Events) -> (Relay, tokio::task::JoinHandle<()>) {
        let relay = Relay::new(
            self.pool.clone(),
            events,
            RelayConfig::default().schema(&self.schema),
        )
        .unwrap();
        let running = tokio::spawn({
            let relay = relay.clone();
            async move { relay.run().await }
        });
        (relay, running)
    }

    fn accounts(&self) -> Repository<Account, PgEventStore> {
        Repository::new(self.store.clone())
    }

    fn projector(&self) -> Projector<Balances> {
        Projector::new(
            self.store.clone(),
            "balances",
            Balances {
                schema: self.schema.clone(),
            },
        )
    }

    /// The balances read model.
    async fn balances(&self) -> BTreeMap<String, (i64, i64)> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT stream, balance, events FROM {}.balances",
            self.schema
        ))
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().map(|(s, b, n)| (s, (b, n))).collect()
    }

    /// The same model, folded from the store's global order.
    async fn folded(&self) -> BTreeMap<String, (i64, i64)> {
        let mut model = BTreeMap::new();
        for event in self.store.read_all(0, usize::MAX).await.unwrap() {
            fold_balance(&mut model, &event);
        }
        model
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}.{table}", self.schema))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn finish(self) {
        drop_schema(&self.pool, &self.schema).await;
    }
}

fn deposit(amount: i64) -> AccountCommand {
    AccountCommand::Deposit { amount }
}

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
    }
}

fn event(action: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(action, &data).unwrap()
}

/// Two appends at the same expected version: the one that commits second fails with a
/// conflict naming the stream, the version it expected and the one the stream is at;
/// each stream reads back in order, and the global order holds every event once.
#[tokio::test]
async fn a_second_append_at_the_same_version_conflicts_naming_stream_and_versions() {
    let bank = Bank::new().await;
    let mut first = bank.pool.begin().await.unwrap();
    bank.store
        .append_in(
            &mut first,
            "account-1",
            ExpectedVersion::Exact(0),
            vec![event("T_ES_OPENED", json!({"owner": "ann"}))],
        )
        .await
        .unwrap();
    // The second waits for the first's commit (the stream's lock), then sees version 1.
    let store = bank.store.clone();
    let second = tokio::spawn(async move {
        store
            .append(
                "account-1",
                ExpectedVersion::Exact(0),
                vec![event("T_ES_OPENED", json!({"owner": "bob"}))],
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second append waits for the first"
    );
    first.commit().await.unwrap();
    let err = second.await.unwrap().expect_err("a conflict");
    let StoreError::Conflict {
        stream,
        expected,
        actual,
    } = &err
    else {
        panic!("not a conflict: {err}");
    };
    assert_eq!(
        (stream.as_str(), *expected, *actual),
        ("account-1", ExpectedVersion::Exact(0), 1)
    );
    let text = err.to_string();
    assert!(
        text.contains("account-1") && text.contains("version 1") && text.contains('0'),
        "{text}"
    );
    assert!(err.is_transient(), "a conflict may pass after reloading");

    // More events on two streams: each stream in order, the whole store in one order.
    bank.store
        .append(
            "account-1",
            ExpectedVersion::Exact(1),
            vec![
                event("T_ES_DEPOSITED", json!({"amount": 5})),
                event("T_ES_DEPOSITED", json!({"amount": 6})),
            ],
        )
        .await
        .unwrap();
    bank.store
        .append(
            "account-2",
            ExpectedVersion::Any,
            vec![event("T_ES_OPENED", json!({"owner": "cy"}))],
        )
        .await
        .unwrap();
    let one = bank.store.read_stream("account-1", 0).await.unwrap();
    assert_eq!(
        one.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(one[2].data, json!({"amount": 6}));
    let later = bank.store.read_stream("account-1", 1).await.unwrap();
    assert_eq!(later.len(), 2, "read after version 1");
    let all = bank.store.read_all(0, 100).await.unwrap();
    let streams: Vec<(&str, u64)> = all.iter().map(|e| (e.stream.as_str(), e.version)).collect();
    assert_eq!(
        streams,
        vec![
            ("account-1", 1),
            ("account-1", 2),
            ("account-1", 3),
            ("account-2", 1)
        ]
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let after = bank.store.read_all(all[1].position, 2).await.unwrap();
    assert_eq!(after, all[2..4].to_vec(), "a page after a position");
    let by_id = bank
        .store
        .event(&all[3].metadata.message_id)
        .await
        .unwrap()
        .expect("found by message id");
    assert_eq!(by_id, all[3]);
    bank.finish().await;
}

/// 100 deposits at once on one account: every one ends in the serial outcome (each
/// conflict decided again on the new state), so the balance is the sum of them all and
/// the stream holds exactly 101 events, versions 1 to 101. With few attempts allowed,
/// the commands that give up report a conflict and append nothing: the balance is the sum
/// of those that went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_commands_on_one_account_end_in_the_serial_outcome() {
    let bank = Bank::new().await;
    let accounts = bank.accounts().attempts(1_000);
    accounts.execute("1", &open("ann")).await.unwrap();
    let runs: Vec<_> = (1..=100)
        .map(|amount| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.execute("1", &deposit(amount)).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().expect("retried until it went through");
    }
    let account = accounts.load("1").await.unwrap();
    assert_eq!((account.state.balance, account.version), (5050, 101));
    let versions: Vec<u64> = bank
        .store
        .read_stream("account-1", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=101).collect::<Vec<_>>());

    // Two attempts only: some give up, and what they report is what happened.
    let hasty = bank.accounts().attempts(2);
    hasty.execute("2", &open("bob")).await.unwrap();
    let runs: Vec<_> = (1..=100)
        .map(|amount| {
            let hasty = hasty.clone();
            tokio::spawn(async move { (amount, hasty.execute("2", &deposit(amount)).await) })
        })
        .collect();
    let (mut went, mut conflicts, mut sum) = (0, 0, 0);
    for run in runs {
        match run.await.unwrap() {
            (amount, Ok(_)) => {
                went += 1;
                sum += amount;
            }
            (
                _,
                Err(CommandError::Conflict {
                    stream, attempts, ..
                }),
            ) => {
                assert_eq!((stream.as_str(), attempts), ("account-2", 2));
                conflicts += 1;
            }
            (_, Err(e)) => panic!("unexpected: {e}"),
        }
    }
    let account = hasty.load("2").await.unwrap();
    println!("2 attempts: {went} went through, {conflicts} reported a conflict");
    assert_eq!(went + conflicts, 100);
    assert_eq!(
        (account.state.balance, account.version),
        (sum, 1 + went as u64),
        "no lost update, nothing appended by a command that gave up"
    );
    bank.finish().await;
}

/// An overdraft is rejected with the aggregate's own error, and nothing is appended.
#[tokio::test]
async fn an_overdraft_is_rejected_and_nothing_is_appended() {
    let bank = Bank::new().await;
    let accounts = bank.accounts();
    accounts.execute("9", &open("ann")).await.unwrap();
    accounts.execute("9", &deposit(30)).await.unwrap();
    let err = accounts
        .execute("9", &AccountCommand::Withdraw { amount: 31 })
        .await
        .expect_err("an overdraft");
    assert!(
        matches!(
            err,
            CommandError::Rejected(AccountError::Overdraft {
                balance: 30,
                amount: 31
            })
        ),
        "{err}"
    );
    assert_eq!(
        bank.count("eventrabbit_events").await,
        2,
        "nothing appended"
    );
    let done = accounts
        .execute("9", &AccountCommand::Withdraw { amount: 30 })
        .await
        .unwrap();
    assert_eq!((done.state.balance, done.version), (0, 3));
    bank.finish().await;
}

/// Loading from a snapshot gives the state a full replay gives, at 1,050 events with a
/// snapshot every 100; a snapshot of another revision (or that no longer decodes) is
/// ignored, not trusted.
#[tokio::test]
async fn a_snapshot_based_load_equals_a_full_replay() {
    let bank = Bank::new().await;
    let accounts = bank.accounts().snapshot_every(100);
    accounts.execute("s", &open("ann")).await.unwrap();
    for i in 1..1_050 {
        let command = if i % 7 == 0 {
            AccountCommand::Withdraw { amount: 3 }
        } else {
            deposit(i)
        };
        accounts.execute("s", &command).await.unwrap();
    }
    let snapshot = bank
        .store
        .snapshot("account-s")
        .await
        .unwrap()
        .expect("a snapshot was taken");
    assert_eq!(snapshot.version, 1_000, "the latest multiple of 100");
    let from_snapshot = accounts.load("s").await.unwrap();
    let replayed = accounts.load_from_events("s").await.unwrap();
    assert_eq!(from_snapshot, replayed);
    assert_eq!(replayed.version, 1_050);

    // A snapshot that lies about the state (another revision) is not used.
    sqlx::query(&format!(
        "UPDATE {}.eventrabbit_snapshots SET revision = 99, state = '{{\"balance\": -1}}'",
        bank.schema
    ))
    .execute(&bank.pool)
    .await
    .unwrap();
    assert_eq!(accounts.load("s").await.unwrap(), replayed);
    // Nor one of the current revision that no longer decodes.
    sqlx::query(&format!(
        "UPDATE {}.eventrabbit_snapshots SET revision = 1, state = '\"garbage\"'",
        bank.schema
    ))
    .execute(&bank.pool)
    .await
    .unwrap();
    assert_eq!(accounts.load("s").await.unwrap(), replayed);
    bank.finish().await;
}

/// Events stored in an old shape (revision 1 of `T_ES_DEPOSITED` had `cents`) load
/// through an upcaster (revision 2 calls it `amount`); new events are written at
/// revision 2 and read as they are. An upcaster that refuses an event names it.
#[tokio::test]
async fn old_events_load_through_upcasters() {
    let bank = Bank::new().await;
    bank.store
        .append(
            "account-u",
            ExpectedVersion::Exact(0),
            vec![
                event("T_ES_OPENED", json!({"owner": "ann"})),
                event("T_ES_DEPOSITED", json!({"cents": 700})),
            ],
        )
        .await
        .unwrap();
    let upcasters = Upcasters::new().upcast("T_ES_DEPOSITED", 1, |mut data| {
        let cents = data
            .as_object_mut()
            .and_then(|d| d.remove("cents"))
            .ok_or("no `cents`")?;
        data["amount"] = cents;
        Ok(data)
    });
    let store = bank.store.upcasting(upcasters);
    let accounts = Repository::<Account, _>::new(store.clone());
    // Without the upcaster, the old event does not decode as today's type.
    let err = bank.accounts().load("u").await.expect_err("old shape");
    assert!(
        matches!(&err, StoreError::Decode { stream, version: 2, .. } if stream == "account-u"),
        "{err}"
    );
    let done = accounts.execute("u", &deposit(5)).await.unwrap();
    assert_eq!((done.state.balance, done.version), (705, 3));
    let events = store.read_stream("account-u", 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![1, 2, 2]
    );
    let revisions: Vec<i32> = sqlx::query_scalar(&format!(
        "SELECT revision FROM {}.eventrabbit_events ORDER BY position",
        bank.schema
    ))
    .fetch_all(&bank.pool)
    .await
    .unwrap();
    assert_eq!(revisions, vec![1, 1, 2], "stored as written");
    // An event the upcaster cannot read is reported with its place, not a panic.
    bank.store
        .append(
            "account-u",
            ExpectedVersion::Exact(3),
            vec![event("T_ES_DEPOSITED", json!({"pennies": 1}))],
        )
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE {}.eventrabbit_events SET revision = 1 WHERE version = 4",
        bank.schema
    ))
    .execute(&bank.pool)
    .await
    .unwrap();
    let err = accounts.load("u").await.expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Upcast {
                version: 4,
                revision: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no `cents`"), "{err}");
    bank.finish().await;
}

/// What the relay publishes for appended events is what a `#[producer]` publishes: the
/// same body bytes, content type and delivery mode, with the event's message id; a
/// stream's events arrive in version order.
#[tokio::test]
async fn appended_events_are_published_as_producer_envelopes_in_stream_order() {
    let bank = Bank::new().await;
    let queue = unique("q-es-pub");
    let (conn, ch) = raw_channel().await;
    eventrabbit_tests::declare_queue(&ch, &queue, false).await;
    let store = bank.store.clone().publish_to("", &queue);
    let accounts = Repository::<Account, _>::new(store.clone());
    let (events, handle) = deps(Config::default()).await;
    let (relay, running) = bank.relay(events.clone());
    accounts.execute("a", &open("ann")).await.unwrap();
    for amount in 1..=5 {
        accounts.execute("a", &deposit(amount)).await.unwrap();
        accounts
            .execute("b", &open(&format!("b{amount}")))
            .await
            .ok();
    }
    let stored = store.read_all(0, 100).await.unwrap();
    let mut got = Vec::new();
    while got.len() < stored.len() {
        let m = get_message(&ch, &queue, WAIT).await.expect("published");
        got.push(m);
    }
    let by_id: HashMap<&str, &RecordedEvent> = stored
        .iter()
        .map(|e| (e.metadata.message_id.as_str(), e))
        .collect();
    let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
    for m in &got {
        let id = m
            .properties
            .message_id()
            .as_ref()
            .expect("a message id")
            .as_str();
        let event = by_id[id];
        versions
            .entry(&event.stream)
            .or_default()
            .push(event.version);
        let body: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(body, event.envelope());
    }
    assert_eq!(versions["account-a"], vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(versions["account-b"], vec![1], "opened once, refused after");

    // The same event from a #[producer]'s path (Events::publish): identical bytes.
    events
        .publish("", &queue, "T_ES_DEPOSITED", &json!({"amount": 1}))
        .await
        .unwrap();
    let produced = get_message(&ch, &queue, WAIT).await.expect("produced");
    let relayed = got
        .iter()
        .find(|m| by_id[m.properties.message_id().as_ref().unwrap().as_str()].version == 2)
        .unwrap();
    assert_eq!(relayed.data, produced.data, "same envelope bytes");
    assert_eq!(
        (
            relayed.properties.content_type(),
            relayed.properties.delivery_mode()
        ),
        (
            produced.properties.content_type(),
            produced.properties.delivery_mode()
        )
    );
    relay.stop();
    running.await.unwrap();
    handle.shutdown().await;
    drop(conn);
    cleanup(&[&queue], &[]).await;
    bank.finish().await;
}

/// A relay process killed with `kill -9` while commands keep appending: once another
/// relay runs, every appended event has been published (some twice: the killed one's
/// unmarked sends), and each stream's first deliveries are in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_no_appended_event() {
    const STREAMS: u64 = 10;
    const PER_STREAM: u64 = 150;
    let bank = Bank::new().await;
    let queue = unique("q-es-kill");
    let (conn, ch) = raw_channel().await;
    eventrabbit_tests::declare_queue(&ch, &queue, false).await;
    let store = bank.store.clone().publish_to("", &queue);
    let accounts = Repository::<Account, _>::new(store.clone());
    for s in 0..STREAMS {
        accounts
            .execute(&s.to_string(), &open("ann"))
            .await
            .unwrap();
    }
    let appending = tokio::spawn({
        let accounts = accounts.clone();
        async move {
            for i in 1..PER_STREAM {
                for s in 0..STREAMS {
                    accounts
                        .execute(&s.to_string(), &deposit(i as i64))
                        .await
                        .unwrap();
                }
            }
        }
    });
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox_relay"))
        .arg(&bank.schema)
        .arg("100")
        .kill_on_drop(true)
        .spawn()
        .expect("the relay process starts");
    let mut got = Vec::new();
    while got.len() < 200 {
        got.push(
            get_message(&ch, &queue, WAIT)
                .await
                .expect("the relay publishes"),
        );
    }
    child.kill().await.expect("kill -9");
    appending.await.unwrap();
    let (events, handle) = deps(Config::default()).await;
    let (relay, running) = bank.relay(events);
    let total = (STREAMS * PER_STREAM) as usize;
    let stored = store.read_all(0, total + 1).await.unwrap();
    assert_eq!(stored.len(), total);
    let ids = |got: &[lapin::message::BasicGetMessage]| -> HashSet<String> {
        got.iter()
            .filter_map(|m| m.properties.message_id().as_ref().map(|i| i.to_string()))
            .collect()
    };
    wait_until!(Duration::from_secs(60), {
        while let Some(m) = get_message(&ch, &queue, Duration::from_millis(200)).await {
            got.push(m);
        }
        ids(&got).len() >= total
    });
    let seen = ids(&got);
    let missing = stored
        .iter()
        .filter(|e| !seen.contains(&e.metadata.message_id))
        .count();
    assert_eq!(missing, 0, "every appended event was published");
    let by_id: HashMap<&str, &RecordedEvent> = stored
        .iter()
        .map(|e| (e.metadata.message_id.as_str(), e))
        .collect();
    let mut first_seen: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut once = HashSet::new();
    for m in &got {
        let id = m.properties.message_id().as_ref().unwrap().as_str();
        if once.insert(id.to_owned()) {
            let e = by_id[id];
            first_seen.entry(&e.stream).or_default().push(e.version);
        }
    }
    for (stream, versions) in &first_seen {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{stream}: {versions:?}"
        );
    }
    println!(
        "relay kill -9: {} events appended, {} deliveries, all {} published",
        total,
        got.len(),
        seen.len()
    );
    relay.stop();
    running.await.unwrap();
    handle.shutdown().await;
    drop(conn);
    cleanup(&[&queue], &[]).await;
    bank.finish().await;
}

/// The balance projection fed by a queue: events the relay publishes, and copies of
/// some published again (duplicates), are each applied once, so the read model equals
/// the fold of the store; rebuilt from the store's global order, and again from a replay
/// of the event log, it is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_applies_each_event_once_and_rebuilds_equal_from_store_and_log() {
    let bank = Bank::new().await;
    let (exchange, queue, log) = (unique("x-es"), unique("q-es-proj"), unique("log-es"));
    let projector = bank.projector();
    let (events, handle) = deps(Config::default().with_state(projector.clone())).await;
    handle
        .declare_log(&EventLog::new(&log).bind(Binding::fanout(&exchange)))
        .await
        .expect("the log is declared (is the rabbitmq_stream plugin enabled?)");
    let consuming = start(
        &handle,
        ConsumeChannel::new(&queue)
            .exchange(&exchange, ExchangeKind::Fanout)
            .prefetch(20),
    )
    .await;
    let store = bank.store.clone().publish_to(&exchange, "");
    let accounts = Repository::<Account, _>::new(store.clone());
    let (relay, relaying) = bank.relay(events.clone());
    for s in 0..5 {
        accounts
            .execute(&s.to_string(), &open("ann"))
            .await
            .unwrap();
    }
    for i in 1..=40 {
        let command = if i % 7 == 0 && i > 20 {
            AccountCommand::Withdraw { amount: 2 }
        } else {
            deposit(i)
        };
        accounts
            .execute(&(i % 5).to_string(), &command)
            .await
            .unwrap();
    }
    // Duplicates: ten published events sent again with their message ids.
    let (conn, ch) = raw_channel().await;
    for e in store.read_all(0, 10).await.unwrap() {
        eventrabbit_tests::publish_raw(
            &ch,
            &exchange,
            "",
            &serde_json::to_vec(&e.envelope()).unwrap(),
            BasicProperties::default().with_message_id(e.metadata.message_id.as_str().into()),
        )
        .await;
    }
    let folded = bank.folded().await;
    assert_eq!(folded.values().map(|(_, n)| n).sum::<i64>(), 45);
    wait_until!(WAIT, bank.balances().await == folded);
    let live = bank.balances().await;
    assert_eq!(projector.applied("account-1").await.unwrap(), 9);

    // Rebuilt from the store's global order (the live consumer stopped first: a late
    // duplicate would otherwise apply some events before the rebuild reads them).
    handle.shutdown().await;
    consuming.await.unwrap().unwrap();
    let applied = projector.rebuild().await.unwrap();
    assert_eq!(applied, 45, "every event once");
    assert_eq!(bank.balances().await, live);
    assert_eq!(
        projector
            .project_message(&store.read_all(0, 1).await.unwrap()[0].metadata.message_id)
            .await
            .unwrap(),
        Projected::AlreadyApplied
    );

    // Rebuilt from the event log, through the same handler.
    projector.reset().await.unwrap();
    assert!(bank.balances().await.is_empty());
    let (_events, replayer) = deps(Config::default().with_state(projector.clone())).await;
    let reader = replayer
        .start_replay(
            StreamConsumer::new(&log)
                .start_at(StartAt::First)
                .actions(["T_ES_*"]),
        )
        .await
        .expect("subscribed");
    wait_until!(WAIT, bank.balances().await == live);
    replayer.shutdown().await;
    reader.join().await.expect("stopped");
    relay.stop();
    relaying.await.unwrap();
    drop(conn);
    cleanup(&[&queue, &log], &[&exchange]).await;
    bank.finish().await;
}

/// The projector under the test broker's chaos (duplicates, redeliveries after lost
/// acks, reordering within the prefetch window): the read model equals the store's fold.
#[tokio::test]
async fn a_projection_under_chaos_equals_the_stores_fold() {
    let bank = Bank::new().await;
    let accounts = bank.accounts();
    for s in 0..4 {
        accounts
            .execute(&s.to_string(), &open("ann"))
            .await
            .unwrap();
    }
    for i in 1..=60 {
        accounts
            .execute(&(i % 4).to_string(), &deposit(i))
            .await
            .unwrap();
    }
    let broker = TestBroker::with_config(Config::default().with_state(bank.projector()))
        .with_chaos(Chaos::all(31));
    broker
        .consume(
            ConsumeChannel::new("balances")
                .exchange("bank", ExchangeKind::Fanout)
                .prefetch(10),
        )
        .unwrap();
    publish_stored(
        &broker,
        "bank",
        &bank.store.read_all(0, 1000).await.unwrap(),
    );
    broker.run_until_idle().await.unwrap();
    let report = broker.chaos_report().unwrap();
    println!("chaos: {report:?}");
    assert!(
        report.duplicated > 0 && report.redelivered > 0 && report.reordered > 0,
        "{report:?}"
    );
    assert_eq!(bank.balances().await, bank.folded().await);

    // What is not an event of the store is dead-lettered at once, with the reason.
    let body =
        serde_json::to_vec(&json!({"action": "T_ES_DEPOSITED", "data": {"amount": 1}})).unwrap();
    broker
        .publish_with(
            "bank",
            "",
            &body,
            BasicProperties::default().with_message_id("nope".into()),
        )
        .unwrap();
    broker.publish_raw("bank", "", &body).unwrap();
    broker.run_until_idle().await.unwrap();
    // (The test broker gives the second an id of its own; chaos may duplicate either.)
    let letters = broker.dead_letters("balances");
    assert!(letters.len() >= 2, "{letters:?}");
    assert!(
        letters
            .iter()
            .any(|l| l.reason.contains("no event with message id `nope`")),
        "{letters:?}"
    );
    assert!(
        letters.iter().all(|l| l.code == "rejected"
            && l.attempts == 1
            && l.reason.contains("no event with message id")),
        "at once, with the reason: {letters:?}"
    );
    assert!(broker.retry_delays("balances").is_empty(), "not retried");
    bank.finish().await;
}

/// An event that is not an envelope, or a message the store holds no event for, is an
/// error that names it, not a panic.
#[tokio::test]
async fn what_is_not_an_event_of_the_store_is_refused_by_name() {
    let bank = Bank::new().await;
    let err = NewEvent::from_envelope(&json!([1, 2])).expect_err("not an object");
    assert!(err.to_string().contains("action"), "{err}");
    let err = NewEvent::new("T_ES_DEPOSITED", &5).expect_err("data not an object");
    assert!(err.to_string().contains("T_ES_DEPOSITED"), "{err}");
    let long = "é".repeat(5000);
    let err = bank
        .projector()
        .project_message(&long)
        .await
        .expect_err("unknown");
    assert!(
        err.to_string().contains("no event with message id"),
        "{err}"
    );
    // A message id taken twice.
    let e = event("T_ES_OPENED", json!({"owner": long}));
    bank.store
        .append(&long, ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    let err = bank
        .store
        .append("other", ExpectedVersion::Any, vec![e.clone()])
        .await
        .expect_err("taken");
    assert!(
        matches!(&err, StoreError::DuplicateMessageId(id) if *id == e.meta().message_id),
        "{err}"
    );
    let _ = AccountEvent::Opened { owner: long };
    bank.finish().await;
}

/// A reader following the global order while 8 writers append to 40 streams misses no
/// event and never sees a position below one it already read: an append in flight
/// cannot commit behind the reader's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_the_global_order_misses_nothing_under_concurrent_appends() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 60;
    let bank = Bank::new().await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = bank.store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let stream = format!("s-{}", (w * PER_WRITER + i) % 40);
                    let e = event("T_ES_DEPOSITED", json!({"amount": i}));
                    store
                        .append(&stream, ExpectedVersion::Any, vec![e])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = bank.store.read_all(after, 7).await.unwrap();
        if let Some(last) = page.last() {
            after = last.position;
            read.extend(page);
        } else if writers.iter().all(|w| w.is_finished()) && read.len() >= WRITERS * PER_WRITER {
            break;
        } else if writers.iter().all(|w| w.is_finished()) {
            let rest = bank.store.read_all(after, usize::MAX).await.unwrap();
            assert!(
                !rest.is_empty() || read.len() == WRITERS * PER_WRITER,
                "the reader stopped short: {} of {}",
                read.len(),
                WRITERS * PER_WRITER
            );
        } else {
            tokio::task::yield_now().await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let all = bank.store.read_all(0, usize::MAX).await.unwrap();
    assert_eq!(
        read, all,
        "the follower read exactly the store, in its order"
    );
    bank.finish().await;
}
