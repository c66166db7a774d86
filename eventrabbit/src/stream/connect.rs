//! Connections of the stream protocol, to the nodes of the AMQP URLs (same hosts,
//! credentials and virtual host; TLS for `amqps://` URLs, trusting the same CA, on the
//! stream TLS port): the node that answered last first, then the others in the list's
//! order. A reader then moves to a node that holds the log (a replica, or the leader).

use super::client::{Client, ClientError, Endpoint, Members};
use crate::config::Config;
use crate::error::{Error, Result};
use lapin::uri::{AMQPScheme, AMQPUri};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where the stream protocol is reached: one node per AMQP URL.
pub(crate) struct Streams {
    nodes: Vec<Endpoint>,
    connect_timeout: Duration,
    /// The node tried first: the one that answered last.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// The stream endpoints of `urls` (comma-separated AMQP URLs).
    pub(crate) fn new(urls: &str, config: &Config) -> Result<Self> {
        let mut nodes = Vec::new();
        let mut tls = None;
        for url in crate::wire::redact::split_urls(urls)
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let uri: AMQPUri = url
                .parse()
                .map_err(|_| Error::InvalidUrl("the broker URL does not parse".to_owned()))?;
            let secure = uri.scheme == AMQPScheme::AMQPS;
            if secure && tls.is_none() {
                let made = super::client::tls::client_config(config.tls_ca_pem.as_deref())
                    .map_err(|e| Error::InvalidUrl(format!("TLS for the stream protocol: {e}")))?;
                tls = Some(made);
            }
            nodes.push(Endpoint {
                host: uri.authority.host.clone(),
                port: match secure {
                    true => config.stream_tls_port,
                    false => config.stream_port,
                },
                user: uri.authority.userinfo.username.clone(),
                password: uri.authority.userinfo.password.clone(),
                vhost: uri.vhost.clone(),
                tls: if secure { tls.clone() } else { None },
            });
        }
        if nodes.is_empty() {
            return Err(Error::InvalidUrl("no broker URL given".to_owned()));
        }
        Ok(Self {
            nodes,
            connect_timeout: config.connect_timeout,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The nodes in the order to try them: the preferred one, then the others.
    fn order(&self) -> impl Iterator<Item = (usize, &Endpoint)> {
        let first = self.preferred.load(Ordering::Relaxed) % self.nodes.len();
        (0..self.nodes.len()).map(move |i| {
            let at = (first + i) % self.nodes.len();
            (at, &self.nodes[at])
        })
    }

    /// A connection to the first node that answers. Every node refusing the connection
    /// is [`Error::CannotConnect`]: before a reader ever read, it ends the reader at once
    /// (the plugin is off, or the port is wrong); afterwards it is weather like any other.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let mut refused = 0;
        let mut last = None;
        for (at, node) in self.order() {
            match Client::connect(node, self.connect_timeout).await {
                Ok(client) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(client);
                }
                Err(ClientError::Connect(io))
                    if io.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    refused += 1;
                    last = Some(unavailable(node, &io));
                }
                Err(e) => last = Some(unavailable(node, &e)),
            }
        }
        if refused == self.nodes.len() {
            let hosts: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{}:{}", n.host, n.port))
                .collect();
            return Err(Error::CannotConnect {
                url: format!("{} (the stream protocol)", hosts.join(", ")),
                cause: "connection refused: is the rabbitmq_stream plugin enabled \
                        (`rabbitmq-plugins enable rabbitmq_stream`), and is that the stream \
                        port (`Config::with_stream_port`, or `with_stream_tls_port` for \
                        `amqps://`)?"
                    .to_owned(),
            });
        }
        Err(last.unwrap_or_else(|| Error::Stream("no stream node to try".to_owned())))
    }

    /// A connection to a node that holds `log` (a replica if it has any, else its
    /// leader): the node first reached if it holds it, else the member's advertised
    /// host and port, reached with the same credentials and TLS.
    pub(crate) async fn connect_member(&self, log: &str) -> Result<Client> {
        let client = self.connect().await?;
        let members = client.members(log).await.map_err(|e| match e {
            ClientError::Refused(super::client::code::STREAM_DOES_NOT_EXIST) => missing_log(log),
            e => Error::Stream(format!("the members of log `{log}`: {e}")),
        })?;
        let Members { leader, replicas } = members;
        let here = client.advertised().clone();
        if leader.as_ref() == Some(&here) || replicas.contains(&here) {
            return Ok(client);
        }
        let choices: Vec<(String, u16)> = match replicas.is_empty() {
            true => leader.into_iter().collect(),
            false => replicas,
        };
        if choices.is_empty() {
            return Err(Error::Stream(format!(
                "log `{log}` has no member available (a leader election may be under way)"
            )));
        }
        let template = &self.nodes[self.preferred.load(Ordering::Relaxed) % self.nodes.len()];
        let start = fastrand::usize(..choices.len());
        let mut last = None;
        for i in 0..choices.len() {
            let (host, port) = &choices[(start + i) % choices.len()];
            let member = Endpoint {
                host: host.clone(),
                port: *port,
                ..template.clone()
            };
            match Client::connect(&member, self.connect_timeout).await {
                Ok(member) => {
                    client.close().await;
                    return Ok(member);
                }
                Err(e) => last = Some(unavailable(&member, &e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::Stream(format!("no member of log `{log}` answered"))))
    }
}

fn unavailable(node: &Endpoint, e: &dyn std::fmt::Display) -> Error {
    Error::Stream(format!(
        "the stream protocol at {}:{} (is the rabbitmq_stream plugin enabled?): {e}",
        node.host, node.port
    ))
}

/// The error of a log that does not exist: permanent (declaring it is the user's call).
pub(crate) fn missing_log(log: &str) -> Error {
    Error::InvalidQueue {
        queue: log.to_owned(),
        reason: "the event log does not exist: declare it with `Handle::declare_log`".to_owned(),
    }
}
