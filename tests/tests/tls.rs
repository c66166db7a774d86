//! `amqps://` end to end: a TLS terminator in front of the local broker, with a private CA
//! that the client is told to trust through `Config::with_tls_ca_pem`.

use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, consumer};
use eventrabbit_tests::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// A CA, a server certificate for `localhost` signed by it, and a TLS proxy to 127.0.0.1:5672.
async fn tls_proxy() -> (u16, String) {
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
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let mut broker = TcpStream::connect("127.0.0.1:5672")
                    .await
                    .expect("broker on 5672");
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    (port, ca.pem())
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
