//! Connections of the stream protocol, to the nodes of the AMQP URLs (same hosts,
//! credentials and virtual host; the stream port of the configuration): the node that
//! answered last first, then the others in the list's order.

use crate::config::Config;
use crate::error::{Error, Result};
use lapin::uri::AMQPUri;
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::{Client, ClientOptions, Environment};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One node's stream endpoint, and as whom.
#[derive(Clone)]
struct Node {
    host: String,
    user: String,
    password: String,
    vhost: String,
}

/// Where the stream protocol is reached: one node per AMQP URL.
pub(crate) struct Streams {
    nodes: Vec<Node>,
    port: u16,
    /// The node tried first: the one that answered last.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self.nodes.iter().map(|n| n.host.as_str()).collect();
        f.debug_struct("Streams")
            .field("hosts", &hosts)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// The stream endpoints of `urls` (comma-separated AMQP URLs).
    pub(crate) fn new(urls: &str, config: &Config) -> Result<Self> {
        let mut nodes = Vec::new();
        for url in crate::wire::redact::split_urls(urls)
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let uri: AMQPUri = url
                .parse()
                .map_err(|_| Error::InvalidUrl("the broker URL does not parse".to_owned()))?;
            nodes.push(Node {
                host: uri.authority.host.clone(),
                user: uri.authority.userinfo.username.clone(),
                password: uri.authority.userinfo.password.clone(),
                vhost: uri.vhost.clone(),
            });
        }
        if nodes.is_empty() {
            return Err(Error::InvalidUrl("no broker URL given".to_owned()));
        }
        Ok(Self {
            nodes,
            port: config.stream_port,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The nodes in the order to try them: the preferred one, then the others.
    fn order(&self) -> impl Iterator<Item = (usize, &Node)> {
        let first = self.preferred.load(Ordering::Relaxed) % self.nodes.len();
        (0..self.nodes.len()).map(move |i| {
            let at = (first + i) % self.nodes.len();
            (at, &self.nodes[at])
        })
    }

    /// A new environment (its locator connection is opened now), on the first node that
    /// answers. Every node refusing the connection is [`Error::CannotConnect`]: before a
    /// reader ever read, it ends the reader at once (the plugin is off, or the port is
    /// wrong); afterwards it is weather like any other.
    pub(crate) async fn environment(&self) -> Result<Environment> {
        let mut refused = 0;
        let mut last = None;
        for (at, node) in self.order() {
            let built = Environment::builder()
                .host(&node.host)
                .port(self.port)
                .username(&node.user)
                .password(&node.password)
                .virtual_host(&node.vhost)
                .build()
                .await;
            match built {
                Ok(env) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(env);
                }
                Err(ClientError::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    refused += 1;
                    last = Some(self.unavailable(node, io));
                }
                Err(e) => last = Some(self.unavailable(node, e)),
            }
        }
        if refused == self.nodes.len() {
            let hosts: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{}:{}", n.host, self.port))
                .collect();
            return Err(Error::CannotConnect {
                url: format!("{} (the stream protocol)", hosts.join(", ")),
                cause: format!(
                    "connection refused: is the rabbitmq_stream plugin enabled \
                     (`rabbitmq-plugins enable rabbitmq_stream`), and is {} the stream port?",
                    self.port
                ),
            });
        }
        Err(last.expect("at least one node was tried"))
    }

    /// A plain client, for asking a named consumer's stored position, on the first node
    /// that answers.
    pub(crate) async fn client(&self) -> Result<Client> {
        let mut last = None;
        for (at, node) in self.order() {
            let options = ClientOptions::builder()
                .host(&node.host)
                .port(self.port)
                .user(&node.user)
                .password(&node.password)
                .v_host(&node.vhost)
                .build();
            match Client::connect(options).await {
                Ok(client) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(client);
                }
                Err(e) => last = Some(self.unavailable(node, e)),
            }
        }
        Err(last.expect("at least one node was tried"))
    }

    fn unavailable(&self, node: &Node, e: impl std::fmt::Display) -> Error {
        Error::Stream(format!(
            "the stream protocol at {}:{} (is the rabbitmq_stream plugin enabled?): {e}",
            node.host, self.port
        ))
    }
}
