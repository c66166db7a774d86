//! Event sourcing with eventrabbit: bank accounts as aggregates kept as events in
//! PostgreSQL, published through the outbox in the same transaction, and a balance
//! projection updated exactly once from the published events, then rebuilt from the
//! store. Prints every check it makes and exits non-zero if one fails.
//!
//! ```sh
//! cargo run --example bank    # DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)
//!                             # and AMQP_ADDR pick the servers
//! ```

use eventrabbit::sourcing::{Aggregate, CommandError, EventStore, RecordedEvent, Repository};
use eventrabbit::{
    Config, ConsumeChannel, ExchangeKind, MessageContext, State, build_event_dependencies, consumer,
};
use eventrabbit_postgres::{PgEventStore, Projection, Projector, Relay, RelayConfig, migrate};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const SCHEMA: &str = "eventrabbit_bank";

/// An account, as the fold of its events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: i64,
}

/// Its events: each variant is the envelope `{"action": .., "data": {..}}` Python
/// eventrabbit services read.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "action", content = "data")]
enum AccountEvent {
    #[serde(rename = "ACCOUNT_OPENED")]
    Opened { owner: String },
    #[serde(rename = "ACCOUNT_DEPOSITED")]
    Deposited { amount: i64 },
    #[serde(rename = "ACCOUNT_WITHDRAWN")]
    Withdrawn { amount: i64 },
}

enum Command {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("amounts must be positive")]
    NotPositive,
    #[error("overdraft: the balance is {balance}, {amount} asked")]
    Overdraft { balance: i64, amount: i64 },
}

impl Aggregate for Account {
    const KIND: &'static str = "account";
    type Event = AccountEvent;
    type Command = Command;
    type Error = Refusal;

    fn handle(&self, command: &Command) -> Result<Vec<AccountEvent>, Refusal> {
        match command {
            Command::Open { .. } if self.owner.is_some() => Err(Refusal::AlreadyOpen),
            Command::Open { owner } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
            }]),
            _ if self.owner.is_none() => Err(Refusal::NotOpen),
            Command::Deposit { amount } | Command::Withdraw { amount } if *amount <= 0 => {
                Err(Refusal::NotPositive)
            }
            Command::Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
            Command::Withdraw { amount } if *amount > self.balance => Err(Refusal::Overdraft {
                balance: self.balance,
                amount: *amount,
            }),
            Command::Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount: *amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// The read model: a balance per account, in a table.
struct Balances;

impl Projection for Balances {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> eventrabbit_postgres::Result<()> {
        let delta = match event.decode::<AccountEvent>()? {
            AccountEvent::Opened { .. } => 0,
            AccountEvent::Deposited { amount } => amount,
            AccountEvent::Withdrawn { amount } => -amount,
        };
        sqlx::query(&format!(
            "INSERT INTO {SCHEMA}.balances (account, balance) VALUES ($1, $2) \
             ON CONFLICT (account) DO UPDATE SET balance = balances.balance + $2"
        ))
        .bind(&event.stream)
        .bind(delta)
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> eventrabbit_postgres::Result<()> {
        sqlx::query(&format!("DELETE FROM {SCHEMA}.balances"))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// How many deliveries the projection has finished, so that the demo waits for them.
struct Progress(watch::Sender<usize>);

/// Every account event updates the balances, once (the projector's checkpoint commits
/// with the read model).
#[consumer(action = "ACCOUNT_*")]
async fn project_balance(
    ctx: MessageContext,
    projector: State<Projector<Balances>>,
    progress: State<Progress>,
) -> Result<(), eventrabbit_postgres::Error> {
    projector.project(&ctx).await?;
    progress.0.send_modify(|n| *n += 1);
    Ok(())
}

/// Tallies the checks.
#[derive(Default)]
struct Checks(usize, usize);

impl Checks {
    fn check(&mut self, what: &str, ok: bool) {
        println!(
            "{} {what}",
            if ok { "check ok:    " } else { "CHECK FAILED:" }
        );
        self.0 += 1;
        self.1 += usize::from(!ok);
    }
}

async fn balances(pool: &PgPool) -> sqlx::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as(&format!("SELECT account, balance FROM {SCHEMA}.balances"))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

async fn set_up(pool: &PgPool) -> eventrabbit_postgres::Result<()> {
    migrate(pool, SCHEMA).await?;
    for sql in [
        format!("DROP TABLE IF EXISTS {SCHEMA}.balances"),
        format!(
            "CREATE TABLE {SCHEMA}.balances (account TEXT PRIMARY KEY, balance BIGINT NOT NULL)"
        ),
        format!(
            "TRUNCATE {SCHEMA}.eventrabbit_events, {SCHEMA}.eventrabbit_streams, {SCHEMA}.eventrabbit_snapshots, \
             {SCHEMA}.eventrabbit_projections, {SCHEMA}.eventrabbit_outbox"
        ),
    ] {
        sqlx::query(&sql).execute(pool).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let amqp = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let pool = PgPool::connect(&db).await?;
    set_up(&pool).await?;
    let mut checks = Checks::default();

    // The store publishes what it appends, through the outbox, to the `bank` exchange.
    let store = PgEventStore::new(pool.clone(), SCHEMA)?.publish_to("bank", "");
    let accounts = Repository::<Account, _>::new(store.clone())
        .snapshot_every(20)
        .attempts(100);
    let projector = Projector::new(store.clone(), "balances", Balances);
    let progress = Arc::new(Progress(watch::Sender::new(0)));
    let config = Config::default()
        .with_state(projector.clone())
        .with_state_arc(progress.clone());
    let (events, handle) = build_event_dependencies(&amqp, config).await?;
    let consumer = handle
        .start(ConsumeChannel::new("bank_balances").exchange("bank", ExchangeKind::Fanout))
        .await?;
    let relay = Relay::new(pool.clone(), events, RelayConfig::default().schema(SCHEMA))?;
    let relaying = tokio::spawn({
        let relay = relay.clone();
        async move { relay.run().await }
    });

    accounts
        .execute(
            "ann",
            &Command::Open {
                owner: "Ann".into(),
            },
        )
        .await?;
    accounts
        .execute("ann", &Command::Deposit { amount: 100 })
        .await?;
    accounts
        .execute(
            "bob",
            &Command::Open {
                owner: "Bob".into(),
            },
        )
        .await?;

    // The invariant: an overdraft is refused, and nothing is appended.
    let before = accounts.load("ann").await?.version;
    let overdraft = accounts
        .execute("ann", &Command::Withdraw { amount: 500 })
        .await;
    println!(
        "withdraw 500 from ann: {}",
        match &overdraft {
            Ok(_) => "accepted".to_owned(),
            Err(e) => e.to_string(),
        }
    );
    checks.check(
        "an overdraft is rejected",
        matches!(
            overdraft,
            Err(CommandError::Rejected(Refusal::Overdraft { .. }))
        ),
    );
    checks.check(
        "the rejected command appended nothing",
        accounts.load("ann").await?.version == before,
    );

    // 50 deposits on one account at once: each conflict is decided again on the new
    // state, so none is lost.
    let deposits: Vec<_> = (1..=50)
        .map(|amount| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.execute("bob", &Command::Deposit { amount }).await })
        })
        .collect();
    for deposit in deposits {
        deposit.await??;
    }
    let bob = accounts.load("bob").await?;
    println!(
        "bob after 50 concurrent deposits: balance {}, version {}",
        bob.state.balance, bob.version
    );
    checks.check(
        "50 concurrent deposits: no update lost (balance 1275)",
        bob.state.balance == 1275,
    );
    checks.check(
        "a snapshot-based load equals a full replay",
        bob == accounts.load_from_events("bob").await?,
    );

    // The projection: every published event applied once.
    let appended = store.read_all(0, 10_000).await?.len();
    let mut finished = progress.0.subscribe();
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        finished.wait_for(|n| *n >= appended),
    )
    .await;
    checks.check(
        &format!("the projection handled the {appended} published events"),
        waited.is_ok(),
    );
    let live = balances(&pool).await?;
    println!("balances, live: {live:?}");
    let expected = BTreeMap::from([
        ("account-ann".to_owned(), 100),
        ("account-bob".to_owned(), 1275),
    ]);
    checks.check("the live balances equal the aggregates'", live == expected);

    // Rebuilt from the store's global order: the same read model.
    let applied = projector.rebuild().await?;
    let rebuilt = balances(&pool).await?;
    println!("balances, rebuilt from {applied} stored events: {rebuilt:?}");
    checks.check(
        "the rebuilt read model equals the live one",
        rebuilt == live,
    );

    handle.shutdown_within(Duration::from_secs(5)).await;
    consumer.join().await?;
    relay.stop();
    relaying.await?;
    println!("{} checks, {} failed", checks.0, checks.1);
    if checks.1 > 0 {
        std::process::exit(1);
    }
    Ok(())
}
