//! `eventrabbit`: the operator's command line for eventrabbit services. Reads the broker
//! address from `AMQP_ADDR` (or `--url`).
//!
//! Exit codes a script can rely on: 0 done; 1 the operation failed (the broker refused
//! it, a call failed remotely or timed out, a redrive stopped early, a contract check
//! found a breaking change); 2 a usage error (as clap reports it, or an unreadable
//! document); 3 no broker at the address; 4 no database (`outbox` commands); 5 the
//! broker refused access (user name or password, virtual host).

mod contract;
mod dlq;
mod headers;
mod outbox;
mod tail;

use clap::{Parser, Subcommand};
use eventrabbit::{Config, Events, Handle, build_event_dependencies};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Operate eventrabbit services on RabbitMQ: dead letters, publishing, watching, calling.
#[derive(Debug, Parser)]
#[command(name = "eventrabbit", version, about)]
struct Cli {
    /// The broker, as an AMQP URL.
    #[arg(
        long,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        global = true
    )]
    url: String,
    /// Machine-readable output: JSON (one object per line where a command prints several),
    /// for `dlq list`, `dlq peek`, `tail` and `outbox list`.
    #[arg(long = "json", global = true)]
    json_output: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead letters of a queue (its `<queue>.dlq`).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Publishes `{"action": ACTION, "data": JSON}` to EXCHANGE and waits for the broker's
    /// confirm ("" is the default exchange: the routing key names a queue).
    Publish {
        /// The exchange.
        exchange: String,
        /// The envelope's action.
        action: String,
        /// The envelope's data: a JSON object.
        json: String,
        /// The routing key.
        #[arg(long, short = 'k', default_value = "")]
        routing_key: String,
    },
    /// Prints the envelopes passing through EXCHANGE, from a temporary queue bound to it,
    /// until Ctrl-C (or `--count` messages).
    Tail {
        /// The exchange to watch.
        exchange: String,
        /// The binding key (`#` for a topic exchange, ignored by fanout; required for a
        /// direct exchange).
        #[arg(long, short = 'k', default_value = "#")]
        key: String,
        /// Stop after this many messages.
        #[arg(long, short = 'n')]
        count: Option<usize>,
    },
    /// Compares and renders AsyncAPI documents (no broker needed).
    Contract {
        #[command(subcommand)]
        command: ContractCommand,
    },
    /// Outbox rows the broker refused for good (eventrabbit-postgres), in the service's
    /// database.
    Outbox {
        /// The service's PostgreSQL database.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// The schema the outbox lives in.
        #[arg(long, default_value = "public")]
        schema: String,
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Calls ACTION behind QUEUE with JSON as its data and prints the reply.
    Call {
        /// The queue serving the action.
        queue: String,
        /// The action.
        action: String,
        /// The data: a JSON object.
        json: String,
        /// How long to wait for the reply, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ContractCommand {
    /// Breaking changes from OLD to NEW, two AsyncAPI documents (JSON or YAML) of one
    /// service: an action no longer received or sent, a received field newly required, a
    /// sent field dropped or made optional, a changed type. Exit 1 if any.
    Diff {
        /// The document of the version peers were built against (`-`: standard input).
        old: PathBuf,
        /// The document of the new version.
        new: PathBuf,
    },
    /// Whether what PRODUCER sends fits what CONSUMER receives, for each action both
    /// name: a field the consumer requires that the producer does not always send, or a
    /// field of another type. Exit 1 if any.
    Check {
        /// The sending service's document.
        producer: PathBuf,
        /// The receiving service's document.
        consumer: PathBuf,
    },
    /// Renders a document as one self-contained HTML page.
    Html {
        /// The document (`-`: standard input).
        document: PathBuf,
        /// Where to write the page (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Lists the failed rows: id, ordering key, exchange, action, attempts and why.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Sends failed rows again (the ids given, or all with `--all`), once the cause is fixed.
    Retry {
        /// The rows' ids.
        ids: Vec<i64>,
        /// Every failed row.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// How many dead letters QUEUE has, by reason code and action.
    List {
        /// The consumed queue (its dead letters are in `<queue>.dlq`).
        queue: String,
    },
    /// Shows the first N dead letters (headers and body, the body cut at 512 bytes),
    /// leaving them where they are.
    Peek {
        /// The consumed queue.
        queue: String,
        /// How many.
        #[arg(default_value_t = 5)]
        n: usize,
    },
    /// Moves dead letters back to QUEUE (those there when it starts), reporting progress.
    Redrive {
        /// The consumed queue.
        queue: String,
        /// At most this many.
        #[arg(long)]
        max: Option<usize>,
        /// Move nothing: say what would be moved.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What went wrong, and the exit code it maps to.
#[derive(Debug)]
enum Failure {
    /// The operation failed (exit 1).
    Failed(String),
    /// Bad input the parser could not see (exit 2).
    Usage(String),
    /// No broker (exit 3).
    NoBroker(String),
    /// No database (exit 4).
    NoDatabase(String),
    /// The broker refused access: login or virtual host (exit 5).
    AccessRefused(String),
}

impl Failure {
    /// The same failure, its text passed through `f`.
    fn map(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Failure::Failed(e) => Failure::Failed(f(e)),
            Failure::Usage(e) => Failure::Usage(f(e)),
            Failure::NoBroker(e) => Failure::NoBroker(f(e)),
            Failure::NoDatabase(e) => Failure::NoDatabase(f(e)),
            Failure::AccessRefused(e) => Failure::AccessRefused(f(e)),
        }
    }
}

impl Cli {
    /// The database URL, for the commands that take one.
    fn database_url(&self) -> Option<String> {
        match &self.command {
            Command::Outbox { database_url, .. } => Some(database_url.clone()),
            _ => None,
        }
    }
}

impl From<eventrabbit::Error> for Failure {
    fn from(e: eventrabbit::Error) -> Self {
        match e {
            eventrabbit::Error::Unavailable(..) => Failure::NoBroker(e.to_string()),
            e => Failure::Failed(e.to_string()),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whatever an error says (a parser or the broker may echo the URL), never its
    // passwords: the broker's URL's and the database's.
    let secrets = [cli.url.clone(), cli.database_url().unwrap_or_default()];
    let hide = |e: String| {
        secrets
            .iter()
            .fold(e, |e, url| eventrabbit::redact_secrets(&e, url))
    };
    let outcome = run(cli).await.map_err(|f| f.map(hide));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::NoBroker(e)) => {
            eprintln!("error: no broker: {e}");
            ExitCode::from(3)
        }
        Err(Failure::NoDatabase(e)) => {
            eprintln!("error: no database: {e}");
            ExitCode::from(4)
        }
        Err(Failure::AccessRefused(e)) => {
            eprintln!("error: access refused: {e}");
            ExitCode::from(5)
        }
    }
}

/// Connects once, failing fast (no broker is exit 3, not a long retry).
async fn connect(url: &str) -> Result<(Events, Handle), Failure> {
    // eventrabbit connects lazily and retries; an operator wants to hear at once.
    let probe = lapin::Connection::connect(url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "probe".into()).await;
        }
        Ok(Err(e)) if refused_access(&e) => {
            return Err(Failure::AccessRefused(format!("{}: {e}", redacted(url))));
        }
        Ok(Err(e)) => return Err(Failure::NoBroker(format!("{}: {e}", redacted(url)))),
        Err(_) => {
            return Err(Failure::NoBroker(format!(
                "{}: no answer within 5 s",
                redacted(url)
            )));
        }
    }
    let config = Config::default()
        .with_connect_timeout(Duration::from_secs(5))
        .with_connection_name("eventrabbit-cli");
    build_event_dependencies(url, config)
        .await
        .map_err(|e| match e.kind() {
            eventrabbit::ErrorKind::Transient => Failure::NoBroker(e.to_string()),
            _ => Failure::Failed(e.to_string()),
        })
}

/// Whether the broker refused the login or the virtual host (not: no broker there).
fn refused_access(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp) if matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        )
    )
}

/// `url` without its password (eventrabbit's one redactor, also for malformed URLs).
pub(crate) fn redacted(url: &str) -> String {
    eventrabbit::redact_url(url)
}

fn json_object(text: &str) -> Result<serde_json::Value, Failure> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Failure::Usage(format!("`{text}` is not a JSON object"))),
        Err(e) => Err(Failure::Usage(format!("`{text}` is not JSON: {e}"))),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Publish {
            exchange,
            action,
            json,
            routing_key,
        } => {
            let data = json_object(&json)?;
            let (events, handle) = connect(&cli.url).await?;
            let published = events
                .publish_mandatory(&exchange, &routing_key, &action, &data)
                .await;
            handle.shutdown().await;
            published?;
            println!(
                "published {action} to exchange `{exchange}` with routing key `{routing_key}`"
            );
            Ok(())
        }
        Command::Call {
            queue,
            action,
            json,
            timeout,
        } => {
            let data = json_object(&json)?;
            let (events, handle) = connect(&cli.url).await?;
            let reply = events
                .call_with_timeout::<serde_json::Value>(
                    &queue,
                    &action,
                    data,
                    Duration::from_secs(timeout),
                )
                .await;
            handle.shutdown().await;
            println!(
                "{}",
                serde_json::to_string_pretty(&reply?).unwrap_or_default()
            );
            Ok(())
        }
        Command::Contract { command } => match command {
            ContractCommand::Diff { old, new } => contract::diff(&old, &new),
            ContractCommand::Check { producer, consumer } => contract::check(&producer, &consumer),
            ContractCommand::Html { document, output } => {
                contract::html(&document, output.as_deref())
            }
        },
        Command::Tail {
            exchange,
            key,
            count,
        } => tail::tail(&cli.url, &exchange, &key, count, cli.json_output).await,
        Command::Outbox {
            database_url,
            schema,
            command,
        } => match command {
            OutboxCommand::List { limit } => {
                outbox::list(&database_url, &schema, limit, cli.json_output).await
            }
            OutboxCommand::Retry { ids, all } => {
                if ids.is_empty() && !all {
                    return Err(Failure::Usage(
                        "name the rows to retry, or pass --all".to_owned(),
                    ));
                }
                outbox::retry(&database_url, &schema, &ids).await
            }
        },
        Command::Dlq { command } => {
            let (_events, handle) = connect(&cli.url).await?;
            let done = match command {
                DlqCommand::List { queue } => dlq::list(&handle, &queue, cli.json_output).await,
                DlqCommand::Peek { queue, n } => {
                    dlq::peek(
                        &cli.url,
                        &handle.dead_letter_queue(&queue),
                        n,
                        cli.json_output,
                    )
                    .await
                }
                DlqCommand::Redrive {
                    queue,
                    max,
                    dry_run,
                } => dlq::redrive(&handle, &queue, max, dry_run).await,
            };
            handle.shutdown().await;
            done
        }
    }
}
