//! `amqps://` end to end: TLS terminators in front of the local broker (its AMQP port,
//! and its stream port), with a private CA that the client is told to trust through
//! `Config::with_tls_ca_pem`.

use eventrabbit::{
    Binding, Config, ConsumeChannel, EventLog, StartAt, StreamConsumer, build_event_dependencies,
    consumer,
};
use eventrabbit_tests::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// A CA, a server certificate for `localhost` signed by it, and a TLS proxy to 127.0.0.1:5672.
async fn tls_proxy() -> (u16, String) {
    let (acceptor, ca_pem) = tls_acceptor();
    let (port, _) = tls_proxy_to(acceptor, 5672).await;
    (port, ca_pem)
}

/// A TLS acceptor for `localhost` with a certificate signed by a new CA, and that CA's PEM.
fn tls_acceptor() -> (TlsAcceptor, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "eventrabbit test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca.pem())
}

/// A TLS terminator in front of 127.0.0.1:`target`: its port, and how many TLS
/// handshakes it completed.
async fn tls_proxy_to(acceptor: TlsAcceptor, target: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut broker = TcpStream::connect(("127.0.0.1", target))
                    .await
                    .expect("the broker's port");
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    (port, handshakes)
}

static TLS_SEEN: Recorder = Recorder::new();

#[consumer(action = "T_TLS")]
async fn over_tls(n: u32) -> serde_json::Value {
    TLS_SEEN.record(json!(n));
    json!({ "n": n })
}

#[tokio::test]
async fn amqps_urls_work_with_a_trusted_private_ca() {
    let _ = raw_connection().await; // loud failure if the broker is down
    let (port, ca_pem) = tls_proxy().await;
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let queue = unique("q-tls");
    let (events, handle) =
        build_event_dependencies(&url, Config::default().with_tls_ca_pem(ca_pem))
            .await
            .unwrap();
    let _task = start(&handle, ConsumeChannel::new(&queue)).await;
    events
        .publish("", &queue, "T_TLS", &json!({"n": 1}))
        .await
        .unwrap();
    TLS_SEEN.wait_for(1, Duration::from_secs(10)).await;
    let reply: serde_json::Value = events.call(&queue, "T_TLS", json!({"n": 2})).await.unwrap();
    assert_eq!(reply, json!({"n": 2}));
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

#[tokio::test]
async fn amqps_refuses_a_server_it_does_not_trust() {
    let (port, _ca_pem) = tls_proxy().await;
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let (events, _handle) = build_event_dependencies(
        &url,
        Config::default().with_publish_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(
        events
            .publish("", "q", "T_TLS", &json!({"n": 1}))
            .await
            .is_err()
    );
    assert!(!events.is_connected().await);
}

/// PostgreSQL over TLS on the same stack (rustls on *ring*): a pool for the outbox made
/// from a `sslmode=require` URL connects, its session is encrypted, and the outbox's
/// tables migrate through it. (Skipped with a message when the server has TLS off.)
#[tokio::test]
async fn postgres_over_tls_uses_the_same_stack() {
    let plain = pg_pool().await;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&plain)
        .await
        .unwrap();
    if ssl != "on" {
        eprintln!("SKIPPED: this PostgreSQL has ssl = {ssl}");
        return;
    }
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/eventrabbit_test".into());
    let separator = if url.contains('?') { '&' } else { '?' };
    let pool = sqlx::PgPool::connect(&format!("{url}{separator}sslmode=require"))
        .await
        .expect("PostgreSQL over TLS");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted, "the session is encrypted");
    let schema = pg_schema(&pool).await;
    drop_schema(&pool, &schema).await;
}

static TLS_LOG_SEEN: Recorder = Recorder::new();

#[consumer(action = "T_TLS_LOG")]
async fn replayed_over_tls(n: u32) {
    TLS_LOG_SEEN.record(json!(n));
}

/// Event logs over TLS: with an `amqps://` URL the stream connection is TLS too (on the
/// stream TLS port, trusting the same CA): a replay through TLS terminators in front of
/// both ports reads every event, and the stream terminator saw the reader's handshakes.
/// Without the CA, the stream connection refuses the server (nothing is read in clear).
#[tokio::test]
async fn a_log_replays_over_tls_with_the_same_ca() {
    let _ = raw_connection().await;
    let (acceptor, ca_pem) = tls_acceptor();
    let (amqp_port, _) = tls_proxy_to(acceptor.clone(), 5672).await;
    let (stream_port, stream_handshakes) = tls_proxy_to(acceptor, 5552).await;
    let url = format!("amqps://guest:guest@localhost:{amqp_port}/%2f");
    let log = unique("log-tls");
    let config = Config::default()
        .with_tls_ca_pem(ca_pem)
        .with_stream_tls_port(stream_port);
    let (events, handle) = build_event_dependencies(&url, config).await.unwrap();
    handle
        .declare_log(&EventLog::new(&log).bind(Binding::fanout(&log)))
        .await
        .expect("the log is declared (is the rabbitmq_stream plugin enabled?)");
    for n in 0..20u32 {
        events
            .publish(&log, "", "T_TLS_LOG", &json!({ "n": n }))
            .await
            .unwrap();
    }
    let reader = tokio::time::timeout(
        Duration::from_secs(30),
        handle.start_replay(
            StreamConsumer::new(&log)
                .start_at(StartAt::First)
                .actions(["T_TLS_LOG"]),
        ),
    )
    .await
    .expect("the reader subscribes over TLS within 30 s")
    .expect("the reader subscribes over TLS");
    TLS_LOG_SEEN.wait_for(20, Duration::from_secs(20)).await;
    assert!(stream_handshakes.load(Ordering::SeqCst) >= 1);
    handle.shutdown().await;
    let _ = reader;

    // A client that does not trust the CA never reads: it refuses the stream server (no
    // handshake completes, nothing is read in clear).
    let before = stream_handshakes.load(Ordering::SeqCst);
    let (_untrusting_events, untrusting) = build_event_dependencies(
        &url,
        Config::default()
            .with_stream_tls_port(stream_port)
            .with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        untrusting.start_replay(StreamConsumer::new(&log).start_at(StartAt::First)),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a replay through an untrusted TLS server must not start"
    );
    assert_eq!(stream_handshakes.load(Ordering::SeqCst), before);
    untrusting.shutdown().await;
    cleanup(&[&log, &format!("{log}.dlq")], &[&log]).await;
}
