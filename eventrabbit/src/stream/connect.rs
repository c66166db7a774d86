//! Connections of the stream protocol, to the broker of the first AMQP URL (same host,
//! credentials and virtual host; the stream port of the configuration).

use crate::config::Config;
use crate::error::{Error, Result};
use lapin::uri::AMQPUri;
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::{Client, ClientOptions, Environment};

/// Where the stream protocol is reached, and as whom.
#[derive(Clone)]
pub(crate) struct Streams {
    host: String,
    port: u16,
    user: String,
    password: String,
    vhost: String,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// The stream endpoint of the first of `urls` (comma-separated AMQP URLs).
    pub(crate) fn new(urls: &str, config: &Config) -> Result<Self> {
        let first = crate::wire::redact::split_urls(urls)
            .map(str::trim)
            .find(|u| !u.is_empty())
            .unwrap_or("");
        let uri: AMQPUri = first
            .parse()
            .map_err(|_| Error::InvalidUrl("the broker URL does not parse".to_owned()))?;
        Ok(Self {
            host: uri.authority.host.clone(),
            port: config.stream_port,
            user: uri.authority.userinfo.username.clone(),
            password: uri.authority.userinfo.password.clone(),
            vhost: uri.vhost.clone(),
        })
    }

    /// A new environment (its locator connection is opened now). A refused connection is
    /// [`Error::CannotConnect`]: before a reader ever read, it ends the reader at once (the
    /// plugin is off, or the port is wrong); afterwards it is weather like any other.
    pub(crate) async fn environment(&self) -> Result<Environment> {
        Environment::builder()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(&self.password)
            .virtual_host(&self.vhost)
            .build()
            .await
            .map_err(|e| match &e {
                ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Error::CannotConnect {
                        url: format!("{}:{} (the stream protocol)", self.host, self.port),
                        cause: format!(
                            "connection refused: is the rabbitmq_stream plugin enabled \
                             (`rabbitmq-plugins enable rabbitmq_stream`), and is {} the stream port?",
                            self.port
                        ),
                    }
                }
                _ => self.unavailable(e),
            })
    }

    /// A plain client, for asking a named consumer's stored position.
    pub(crate) async fn client(&self) -> Result<Client> {
        let options = ClientOptions::builder()
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .v_host(&self.vhost)
            .build();
        Client::connect(options)
            .await
            .map_err(|e| self.unavailable(e))
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::Stream(format!(
            "the stream protocol at {}:{} (is the rabbitmq_stream plugin enabled?): {e}",
            self.host, self.port
        ))
    }
}
