//! A raw client of RabbitMQ's stream protocol, written straight on
//! `rabbitmq-stream-protocol`'s commands and codec, with no eventrabbit code: for tests
//! that play another service writing a log over the stream protocol, and for the
//! benchmarks' "raw client" rows (the bench includes this file). One connection, no
//! heartbeats (it tunes them off), `guest`/`guest` on `/`; a reader decodes chunks in a
//! task of its own, handing messages over a channel, as the official client does.

use rabbitmq_stream_protocol::codec::{Decoder, Encoder};
use rabbitmq_stream_protocol::commands::credit::CreditCommand;
use rabbitmq_stream_protocol::commands::declare_publisher::DeclarePublisherCommand;
use rabbitmq_stream_protocol::commands::open::OpenCommand;
use rabbitmq_stream_protocol::commands::peer_properties::PeerPropertiesCommand;
use rabbitmq_stream_protocol::commands::publish::PublishCommand;
use rabbitmq_stream_protocol::commands::sasl_authenticate::SaslAuthenticateCommand;
use rabbitmq_stream_protocol::commands::sasl_handshake::SaslHandshakeCommand;
use rabbitmq_stream_protocol::commands::subscribe::{OffsetSpecification, SubscribeCommand};
use rabbitmq_stream_protocol::commands::tune::TunesCommand;
use rabbitmq_stream_protocol::message::Message;
use rabbitmq_stream_protocol::types::PublishedMessage;
use rabbitmq_stream_protocol::{Request, Response, ResponseKind};
use std::collections::HashMap;
use std::io::{Error, ErrorKind, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// An open stream connection.
#[derive(Debug)]
pub struct RawStream {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    next_id: u32,
}

fn refused(what: &str) -> Error {
    Error::other(format!("the broker refused {what}"))
}

impl RawStream {
    /// Connects to `host:port` as `guest` and opens `/`.
    pub async fn connect(host: &str, port: u16) -> Result<Self> {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let (rd, wr) = tcp.into_split();
        let mut s = Self {
            rd: BufReader::with_capacity(1 << 16, rd),
            wr,
            next_id: 1,
        };
        s.call(|id| PeerPropertiesCommand::new(id, HashMap::new()))
            .await?;
        s.call(SaslHandshakeCommand::new).await?;
        let plain = b"\0guest\0guest".to_vec();
        s.call(|id| SaslAuthenticateCommand::new(id, "PLAIN".to_owned(), plain))
            .await?;
        let tune = loop {
            if let ResponseKind::Tunes(t) = s.response().await?.kind() {
                break t;
            }
        };
        s.send(TunesCommand::new(*tune.max_frame_size(), 0)).await?;
        let open = s.call(|id| OpenCommand::new(id, "/".to_owned())).await?;
        match open {
            ResponseKind::Open(o) if o.is_ok() => Ok(s),
            _ => Err(refused("opening the virtual host")),
        }
    }

    async fn send(&mut self, command: impl Into<Request>) -> Result<()> {
        let request: Request = command.into();
        let mut frame = Vec::with_capacity(request.encoded_size() as usize + 4);
        request
            .encode(&mut frame)
            .map_err(|e| Error::new(ErrorKind::InvalidData, format!("{e:?}")))?;
        self.wr.write_all(&frame).await
    }

    async fn response(&mut self) -> Result<Response> {
        read_response(&mut self.rd).await
    }

    /// Sends the request `make` builds and reads frames until its answer.
    async fn call<R: Into<Request>>(
        &mut self,
        make: impl FnOnce(u32) -> R,
    ) -> Result<ResponseKind> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(make(id)).await?;
        loop {
            let r = self.response().await?;
            if r.correlation_id() == Some(id) {
                return Ok(r.kind());
            }
        }
    }

    /// Writes `messages` to `stream` and waits until the broker confirmed them all.
    pub async fn publish(&mut self, stream: &str, messages: Vec<Message>) -> Result<()> {
        let declared = self
            .call(|id| DeclarePublisherCommand::new(id, 1, None, stream.to_owned()))
            .await?;
        if !matches!(declared, ResponseKind::Generic(g) if g.is_ok()) {
            return Err(refused("declaring a publisher"));
        }
        let n = messages.len();
        let published = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| PublishedMessage::new(i as u64, m))
            .collect();
        self.send(PublishCommand::new(1, published)).await?;
        let mut confirmed = 0;
        while confirmed < n {
            match self.response().await?.kind() {
                ResponseKind::PublishConfirm(c) => confirmed += c.publishing_ids.len(),
                ResponseKind::PublishError(_) => return Err(refused("a published message")),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads `stream` from `start`, calling `each` with every message and its offset
    /// until it returns `false`. Credit as the official client gives it: one chunk ahead,
    /// one more per chunk received (two ahead measured no faster); chunks are read and
    /// decoded by a task of their own, with the protocol crate's `deliver` decoder, as
    /// the official client decodes them.
    pub async fn read(
        mut self,
        stream: &str,
        start: OffsetSpecification,
        mut each: impl FnMut(u64, &Message) -> bool,
    ) -> Result<()> {
        let subscribed = self
            .call(|id| SubscribeCommand::new(id, 1, stream.to_owned(), start, 1, HashMap::new()))
            .await?;
        if !matches!(subscribed, ResponseKind::Generic(g) if g.is_ok()) {
            return Err(refused("the subscription"));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Message)>(10_000);
        let reader = tokio::spawn(async move {
            loop {
                if let ResponseKind::Deliver(chunk) = self.response().await?.kind() {
                    self.send(CreditCommand::new(1, 1)).await?;
                    for (i, m) in chunk.messages.into_iter().enumerate() {
                        if tx
                            .send((chunk.chunk_first_offset + i as u64, m))
                            .await
                            .is_err()
                        {
                            return Ok::<(), Error>(());
                        }
                    }
                }
            }
        });
        while let Some((offset, message)) = rx.recv().await {
            if !each(offset, &message) {
                reader.abort();
                return Ok(());
            }
        }
        reader
            .await
            .map_err(|e| Error::other(format!("the reader task: {e}")))?
    }
}

async fn read_response(rd: &mut BufReader<OwnedReadHalf>) -> Result<Response> {
    let len = rd.read_u32().await?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.resize(4 + len as usize, 0);
    rd.read_exact(&mut frame[4..]).await?;
    Response::decode(&frame)
        .map(|(_, r)| r)
        .map_err(|e| Error::new(ErrorKind::InvalidData, format!("{e:?}")))
}
