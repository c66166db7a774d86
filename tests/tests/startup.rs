//! Start-up errors say what is wrong, fast (issue 29): a wrong password, a missing
//! virtual host, a host name that does not resolve are reported at once as
//! `Error::CannotConnect` naming the cause, by `start` and by a publish, with no retry
//! storm; a closed port is weather (the broker may be starting) and ends at the caller's
//! deadline with the connection error in the text. Each case prints the time it took.

use eventrabbit::{Config, ConsumeChannel, Error, build_event_dependencies};
use eventrabbit_tests::{amqp_addr, unique};
use serde_json::json;
use std::time::{Duration, Instant};

/// A hang guard, not a timing assertion: a start-up error that is not reported at all
/// fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(20);

/// `amqp_addr()` with its user info or vhost replaced.
fn url_with(userinfo: Option<&str>, vhost: Option<&str>, host: Option<&str>) -> String {
    let base = amqp_addr();
    let uri: lapin::uri::AMQPUri = base.parse().unwrap();
    let auth = userinfo.map_or_else(
        || {
            format!(
                "{}:{}",
                uri.authority.userinfo.username, uri.authority.userinfo.password
            )
        },
        str::to_owned,
    );
    format!(
        "amqp://{auth}@{}:{}/{}",
        host.unwrap_or(&uri.authority.host),
        uri.authority.port,
        vhost.unwrap_or("%2f")
    )
}

async fn start_fails(url: &str) -> Error {
    let (events, handle) = build_event_dependencies(url, Config::default())
        .await
        .expect("set up (connects lazily)");
    let began = Instant::now();
    let started = tokio::time::timeout(GUARD, handle.start(ConsumeChannel::new(unique("q-su"))))
        .await
        .expect("start reports the error instead of retrying");
    let e = started.expect_err("cannot start");
    eprintln!("start failed after {:?}: {e}", began.elapsed());
    let began = Instant::now();
    let published = tokio::time::timeout(GUARD, events.publish("", "q", "T_SU", &json!({})))
        .await
        .expect("the publish reports the error instead of retrying");
    let p = published.expect_err("cannot publish");
    eprintln!("publish failed after {:?}: {p}", began.elapsed());
    assert!(matches!(p, Error::CannotConnect { .. }), "{p}");
    assert!(!p.is_retryable());
    handle.shutdown().await;
    e
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_such() {
    let e = start_fails(&url_with(Some("guest:wrong-password"), None, None)).await;
    assert!(matches!(e, Error::CannotConnect { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("access refused for user `guest`"), "{text}");
    assert!(
        !text.contains("wrong-password"),
        "no password in the error: {text}"
    );
}

#[tokio::test]
async fn a_missing_vhost_is_reported_as_such() {
    let e = start_fails(&url_with(None, Some("no-such-vhost"), None)).await;
    let text = e.to_string();
    assert!(text.contains("virtual host `no-such-vhost`"), "{text}");
}

#[tokio::test]
async fn a_host_that_does_not_resolve_is_reported_as_such() {
    let e = start_fails(&url_with(None, None, Some("no-such-host.invalid"))).await;
    let text = e.to_string();
    assert!(text.contains("does not resolve"), "{text}");
}

/// A closed port is weather: the publish waits for its deadline, then says why, naming
/// the connection error.
#[tokio::test]
async fn a_closed_port_ends_at_the_deadline_naming_the_connection_error() {
    let config = Config::default().with_publish_timeout(Duration::from_secs(2));
    let (events, handle) = build_event_dependencies("amqp://guest:guest@127.0.0.1:1/%2f", config)
        .await
        .expect("set up (connects lazily)");
    let began = Instant::now();
    let e = tokio::time::timeout(GUARD, events.publish("", "q", "T_SU", &json!({})))
        .await
        .expect("bounded by the publish deadline")
        .expect_err("no broker there");
    eprintln!("publish failed after {:?}: {e}", began.elapsed());
    assert!(matches!(e, Error::Unavailable(..)), "{e}");
    assert!(e.to_string().contains("refused"), "names the cause: {e}");
    assert!(e.is_retryable());
    handle.shutdown().await;
}

/// A malformed URL (no `//`, a password holding `@`, `/` or `,`) fails without its password
/// in the error's text or `Debug` output. (Before, `amqp:user:pw@host` put the password
/// into the error text.)
#[tokio::test]
async fn a_malformed_url_never_shows_its_password() {
    for url in [
        "amqp:guest:s3cret-pw@127.0.0.1:5672",
        "amqp:/guest:s3cret-pw@127.0.0.1:5672/%2f",
        "guest:s3cret-pw@127.0.0.1:5672",
        "amqp://guest:s3cret/pw@127.0.0.1:1/%2f",
        "amqp://guest:s3cret,pw@127.0.0.1:1/%2f",
        "amqp://guest:s3cret-pw@127.0.0.1:99999/%2f",
    ] {
        let config = Config::default()
            .with_connect_timeout(Duration::from_secs(2))
            .with_publish_timeout(Duration::from_secs(2))
            .with_max_reconnect_delay(Duration::from_millis(200));
        let failing = async {
            match build_event_dependencies(url, config).await {
                Err(e) => e,
                // Built without connecting: the first publish says what is wrong.
                Ok((events, handle)) => {
                    let e = events
                        .publish("x", "", "A", &json!({}))
                        .await
                        .expect_err("no broker there");
                    handle.shutdown().await;
                    e
                }
            }
        };
        let e = tokio::time::timeout(GUARD, failing)
            .await
            .expect("fails in time");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cret"), "{url}: {shown}");
    }
}
