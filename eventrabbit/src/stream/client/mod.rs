//! Our client of RabbitMQ's stream protocol, for reading logs: one connection (TCP or
//! TLS), its handshake, requests answered by correlation id, heartbeats, and one
//! subscription whose chunks are read record by record ([`chunk`]). Requests are encoded
//! with `rabbitmq-stream-protocol`'s commands; every frame the broker sends is read by
//! our bounds-checked reader, so nothing a broker sends can panic the reader.
//!
//! Why not `rabbitmq-stream-client`: its releases from 0.5 on ask for the command
//! versions RabbitMQ 3.13 introduced and cannot talk to 3.10/3.12 brokers, and 0.4.4
//! brings rustls 0.21 (with RustSec advisories) and cannot read every record a stream
//! holds.

mod bytes;
pub(crate) mod chunk;
pub(crate) mod tls;

use bytes::Cursor;
use chunk::{Chunk, Record};
use parking_lot::Mutex;
use rabbitmq_stream_protocol::Request;
use rabbitmq_stream_protocol::ResponseCode;
use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::commands::close::CloseRequest;
use rabbitmq_stream_protocol::commands::credit::CreditCommand;
use rabbitmq_stream_protocol::commands::heart_beat::HeartBeatCommand;
use rabbitmq_stream_protocol::commands::metadata::MetadataCommand;
use rabbitmq_stream_protocol::commands::open::OpenCommand;
use rabbitmq_stream_protocol::commands::peer_properties::PeerPropertiesCommand;
use rabbitmq_stream_protocol::commands::query_offset::QueryOffsetRequest;
use rabbitmq_stream_protocol::commands::sasl_authenticate::SaslAuthenticateCommand;
use rabbitmq_stream_protocol::commands::sasl_handshake::SaslHandshakeCommand;
use rabbitmq_stream_protocol::commands::store_offset::StoreOffset;
use rabbitmq_stream_protocol::commands::subscribe::SubscribeCommand;
use rabbitmq_stream_protocol::commands::tune::TunesCommand;
use rabbitmq_stream_protocol::commands::unsubscribe::UnSubscribeCommand;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

/// Where a subscription starts.
pub(crate) use rabbitmq_stream_protocol::commands::subscribe::OffsetSpecification;

const DELIVER: u16 = 8;
const CREDIT: u16 = 9;
const METADATA_UPDATE: u16 = 16;
const TUNE: u16 = 20;
const CLOSE: u16 = 22;
const HEARTBEAT: u16 = 23;
const RESPONSE: u16 = 0x8000;

/// Response codes this client acts on.
pub(crate) mod code {
    /// Done.
    pub(crate) const OK: u16 = 1;
    /// No such stream.
    pub(crate) const STREAM_DOES_NOT_EXIST: u16 = 2;
    /// No offset stored for that name.
    pub(crate) const OFFSET_NOT_FOUND: u16 = 19;
}

/// The largest frame read: a length beyond it is a corrupt connection, not an allocation.
const MAX_FRAME: u32 = 256 * 1024 * 1024;
/// How long a request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The heartbeat this client asks for (the broker's is taken if it is shorter).
const HEARTBEAT_SECS: u32 = 20;
/// Chunks the broker may send ahead of the one being read.
const INITIAL_CREDIT: u16 = 2;
/// The only subscription of a connection.
const SUBSCRIPTION: u8 = 1;

/// One node's stream endpoint, as whom, and over TLS or not.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) vhost: String,
    pub(crate) tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a request or a connection failed.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The TCP connection could not be made.
    Connect(std::io::Error),
    /// The connection failed, closed, or did not answer in time.
    Lost(String),
    /// The broker answered with this response code.
    Refused(u16),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Lost(why) => f.write_str(why),
            Self::Refused(code) => {
                let name = ResponseCode::try_from(*code)
                    .map_or_else(|_| format!("code {code}"), |c| format!("{c:?}"));
                write!(f, "the broker refused: {name}")
            }
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// What reaches the subscription: a chunk, or the end of it (the connection lost, the
/// stream's members changed) with why.
#[derive(Debug)]
enum Incoming {
    Chunk(Chunk),
    Gone(String),
}

/// What the connection's tasks share with the client.
#[derive(Debug)]
struct Shared {
    pending: Mutex<HashMap<u32, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU32,
    heartbeat: AtomicU32,
    tune: Mutex<Option<oneshot::Sender<(u32, u32)>>>,
    incoming: mpsc::UnboundedSender<Incoming>,
    closed: Mutex<Option<String>>,
}

impl Shared {
    fn end(&self, why: String) {
        let mut closed = self.closed.lock();
        if closed.is_none() {
            let _ = self.incoming.send(Incoming::Gone(why.clone()));
            *closed = Some(why);
        }
        self.pending.lock().clear();
        self.tune.lock().take();
    }

    fn why_closed(&self) -> String {
        self.closed
            .lock()
            .clone()
            .unwrap_or_else(|| "the stream connection closed".to_owned())
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open, authenticated stream connection to one node.
#[derive(Debug)]
pub(crate) struct Client {
    out: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    tasks: [JoinHandle<()>; 2],
    /// The host and port the node advertises for itself.
    advertised: (String, u16),
}

impl Drop for Client {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The nodes holding a stream: its leader and its replicas, as advertised.
#[derive(Debug, Default)]
pub(crate) struct Members {
    pub(crate) leader: Option<(String, u16)>,
    pub(crate) replicas: Vec<(String, u16)>,
}

impl Client {
    /// Connects and opens the virtual host (TLS first if the endpoint says so).
    pub(crate) async fn connect(at: &Endpoint, connect_timeout: Duration) -> Result<Self> {
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect((&*at.host, at.port)))
            .await
            .map_err(|_| ClientError::Lost(format!("no connection within {connect_timeout:?}")))?
            .map_err(ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &at.tls {
            Some(config) => {
                let name = ServerName::try_from(at.host.clone()).map_err(|e| {
                    ClientError::Lost(format!("`{}` is not a TLS server name: {e}", at.host))
                })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone());
                let stream = tokio::time::timeout(connect_timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| ClientError::Lost("no TLS handshake in time".to_owned()))?
                    .map_err(|e| ClientError::Lost(format!("TLS handshake: {e}")))?;
                Box::new(stream)
            }
            None => Box::new(tcp),
        };
        let (rd, wr) = tokio::io::split(io);
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (tune_tx, tune_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            heartbeat: AtomicU32::new(HEARTBEAT_SECS),
            tune: Mutex::new(Some(tune_tx)),
            incoming: incoming_tx,
            closed: Mutex::new(None),
        });
        let (out, out_rx) = mpsc::channel(1024);
        let tasks = [
            tokio::spawn(read_loop(rd, shared.clone())),
            tokio::spawn(write_loop(wr, out_rx, shared.clone())),
        ];
        let mut client = Client {
            out,
            shared,
            incoming,
            tasks,
            advertised: (at.host.clone(), at.port),
        };
        client.handshake(at, tune_rx).await?;
        Ok(client)
    }

    async fn handshake(
        &mut self,
        at: &Endpoint,
        tune: oneshot::Receiver<(u32, u32)>,
    ) -> Result<()> {
        let properties = HashMap::from([
            ("product".to_owned(), "eventrabbit".to_owned()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ]);
        self.request(|id| PeerPropertiesCommand::new(id, properties))
            .await?;
        self.request(SaslHandshakeCommand::new).await?;
        let plain = format!("\u{0}{}\u{0}{}", at.user, at.password);
        let answer = self
            .request(|id| SaslAuthenticateCommand::new(id, "PLAIN".to_owned(), plain.into_bytes()))
            .await?;
        ok(&answer)?;
        let (frame_max, heartbeat) = tokio::time::timeout(REQUEST_TIMEOUT, tune)
            .await
            .map_err(|_| ClientError::Lost("the broker did not tune the connection".to_owned()))?
            .map_err(|_| ClientError::Lost(self.shared.why_closed()))?;
        let heartbeat = match heartbeat {
            0 => HEARTBEAT_SECS,
            theirs => theirs.min(HEARTBEAT_SECS),
        };
        self.shared.heartbeat.store(heartbeat, Ordering::Relaxed);
        self.send(TunesCommand::new(frame_max, heartbeat)).await?;
        let vhost = at.vhost.clone();
        let answer = self.request(|id| OpenCommand::new(id, vhost)).await?;
        ok(&answer)?;
        let mut c = Cursor::new(&answer);
        let properties = c
            .take(10)
            .and_then(|_| read_map(&mut c))
            .unwrap_or_default();
        if let Some(host) = properties.get("advertised_host") {
            let port = properties
                .get("advertised_port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(at.port);
            self.advertised = (host.clone(), port);
        }
        Ok(())
    }

    /// The host and port this node advertises for itself.
    pub(crate) fn advertised(&self) -> &(String, u16) {
        &self.advertised
    }

    /// The leader and replicas of `stream`; `Refused` with the stream's code if it has
    /// none (it does not exist).
    pub(crate) async fn members(&self, stream: &str) -> Result<Members> {
        let frame = self
            .request(|id| MetadataCommand::new(id, vec![stream.to_owned()]))
            .await?;
        read_members(&frame).map_err(|e| ClientError::Lost(format!("a metadata answer: {e}")))?
    }

    /// The offset stored for `name` on `stream`: `None` only for "no offset stored".
    pub(crate) async fn query_offset(&self, name: &str, stream: &str) -> Result<Option<u64>> {
        let frame = self
            .request(|id| QueryOffsetRequest::new(id, name.to_owned(), stream.to_owned()))
            .await?;
        let mut c = Cursor::new(&frame);
        let short = |_| ClientError::Lost("a query-offset answer cut short".to_owned());
        c.take(8).map_err(short)?;
        match c.u16().map_err(short)? {
            code::OK => Ok(Some(c.u64().map_err(short)?)),
            code::OFFSET_NOT_FOUND => Ok(None),
            other => Err(ClientError::Refused(other)),
        }
    }

    /// Subscribes to `stream` from `start`; this connection then serves that
    /// subscription only.
    pub(crate) async fn subscribe(
        self,
        stream: &str,
        start: OffsetSpecification,
    ) -> Result<Subscription> {
        let from = match start {
            OffsetSpecification::Offset(o) => Some(o),
            _ => None,
        };
        let answer = self
            .request(|id| {
                SubscribeCommand::new(
                    id,
                    SUBSCRIPTION,
                    stream.to_owned(),
                    start,
                    INITIAL_CREDIT,
                    HashMap::new(),
                )
            })
            .await?;
        ok(&answer)?;
        Ok(Subscription {
            client: self,
            stream: stream.to_owned(),
            buffered: VecDeque::new(),
            from,
        })
    }

    /// Closes the connection politely (best effort).
    pub(crate) async fn close(self) {
        let closing = self.request(|id| CloseRequest::new(id, ResponseCode::Ok, "done".to_owned()));
        let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
    }

    async fn send(&self, command: impl Into<Request>) -> Result<()> {
        let frame =
            encode(command).map_err(|e| ClientError::Lost(format!("encoding a request: {e}")))?;
        self.out
            .send(frame)
            .await
            .map_err(|_| ClientError::Lost(self.shared.why_closed()))
    }

    /// Sends the request `make` builds with a fresh correlation id; its answer's frame.
    async fn request<R: Into<Request>>(&self, make: impl FnOnce(u32) -> R) -> Result<Vec<u8>> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().insert(id, tx);
        if self.shared.closed.lock().is_some() {
            self.shared.pending.lock().remove(&id);
            return Err(ClientError::Lost(self.shared.why_closed()));
        }
        self.send(make(id)).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(ClientError::Lost(self.shared.why_closed())),
            Err(_) => {
                self.shared.pending.lock().remove(&id);
                Err(ClientError::Lost(format!(
                    "no answer within {REQUEST_TIMEOUT:?}"
                )))
            }
        }
    }
}

/// A subscription to one stream: its records in offset order.
#[derive(Debug)]
pub(crate) struct Subscription {
    client: Client,
    stream: String,
    buffered: VecDeque<Record>,
    /// The first offset wanted: a chunk starting before it is read from it.
    from: Option<u64>,
}

impl Subscription {
    /// The next record; an error once the subscription ended (with why).
    pub(crate) async fn next(&mut self) -> std::result::Result<Record, String> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Ok(record);
            }
            match self.client.incoming.recv().await {
                Some(incoming) => self.take(incoming)?,
                None => return Err(self.client.shared.why_closed()),
            }
        }
    }

    /// The next record if one was read already, without waiting.
    pub(crate) fn ready(&mut self) -> Option<std::result::Result<Record, String>> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Some(Ok(record));
            }
            match self.client.incoming.try_recv() {
                Ok(incoming) => {
                    if let Err(why) = self.take(incoming) {
                        return Some(Err(why));
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Some(Err(self.client.shared.why_closed()));
                }
            }
        }
    }

    /// Takes a chunk into the buffer (and credits the broker for one more).
    fn take(&mut self, incoming: Incoming) -> std::result::Result<(), String> {
        let chunk = match incoming {
            Incoming::Chunk(chunk) => chunk,
            Incoming::Gone(why) => return Err(why),
        };
        if chunk.subscription != SUBSCRIPTION {
            return Ok(());
        }
        let _ = self
            .client
            .out
            .try_send(frame_of(CreditCommand::new(SUBSCRIPTION, 1)));
        let from = self.from.unwrap_or(0);
        self.buffered
            .extend(chunk.records.into_iter().filter(|r| r.offset >= from));
        Ok(())
    }

    /// Stores `offset` as `name`'s position on the stream (no answer is given).
    pub(crate) async fn store_offset(&self, name: &str, offset: u64) -> Result<()> {
        self.client
            .send(StoreOffset::new(
                name.to_owned(),
                self.stream.clone(),
                offset,
            ))
            .await
    }

    /// Unsubscribes and closes the connection (best effort).
    pub(crate) async fn close(self) {
        let unsubscribing = self
            .client
            .request(|id| UnSubscribeCommand::new(id, SUBSCRIPTION));
        let _ = tokio::time::timeout(Duration::from_secs(1), unsubscribing).await;
        self.client.close().await;
    }
}

/// A command's frame (its size, header and body).
fn encode(command: impl Into<Request>) -> std::result::Result<Vec<u8>, String> {
    let request: Request = command.into();
    let mut frame = Vec::with_capacity(request.encoded_size() as usize + 4);
    request.encode(&mut frame).map_err(|e| format!("{e:?}"))?;
    Ok(frame)
}

/// The frame of a fixed-size command (credit, heartbeat): encoding it into a `Vec`
/// cannot fail.
fn frame_of(command: impl Into<Request>) -> Vec<u8> {
    encode(command).unwrap_or_default()
}

/// The answer's response code (after key, version and correlation id) must be OK.
fn ok(frame: &[u8]) -> Result<()> {
    let mut c = Cursor::new(frame);
    let code = c
        .take(8)
        .and_then(|_| c.u16())
        .map_err(|_| ClientError::Lost("an answer cut short".to_owned()))?;
    match code {
        code::OK => Ok(()),
        other => Err(ClientError::Refused(other)),
    }
}

fn read_map(c: &mut Cursor<'_>) -> std::result::Result<HashMap<String, String>, bytes::Short> {
    let n = c.count()?;
    let mut map = HashMap::with_capacity(n);
    for _ in 0..n {
        let k = c.string()?;
        let v = c.string()?;
        map.insert(k, v);
    }
    Ok(map)
}

/// A metadata answer for one stream: its members, or its code when it has none.
fn read_members(frame: &[u8]) -> std::result::Result<Result<Members>, bytes::Short> {
    let mut c = Cursor::new(frame);
    c.take(8)?;
    let mut brokers = HashMap::new();
    for _ in 0..c.count()? {
        let reference = c.u16()?;
        let host = c.string()?;
        let port = u16::try_from(c.u32()?).unwrap_or(0);
        brokers.insert(reference, (host, port));
    }
    let streams = c.count()?;
    if streams == 0 {
        return Ok(Err(ClientError::Refused(code::STREAM_DOES_NOT_EXIST)));
    }
    let _name = c.string()?;
    let code = c.u16()?;
    if code != code::OK {
        return Ok(Err(ClientError::Refused(code)));
    }
    let leader = c.u16()?;
    let mut members = Members {
        leader: brokers.get(&leader).cloned(),
        replicas: Vec::new(),
    };
    for _ in 0..c.count()? {
        if let Some(b) = brokers.get(&c.u16()?) {
            members.replicas.push(b.clone());
        }
    }
    Ok(Ok(members))
}

async fn read_frame(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let len = rd.read_u32().await?;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (the connection is out of step)"),
        ));
    }
    let mut frame = vec![0u8; len as usize];
    rd.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Reads frames until the connection ends: answers go to their requests, chunks to the
/// subscription; nothing heard for three heartbeats ends it.
async fn read_loop(mut rd: impl AsyncRead + Unpin, shared: Arc<Shared>) {
    let why = loop {
        let silence = Duration::from_secs(u64::from(shared.heartbeat.load(Ordering::Relaxed)) * 3);
        let frame = match tokio::time::timeout(silence, read_frame(&mut rd)).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => break format!("the stream connection failed: {e}"),
            Err(_) => break format!("the stream connection was silent for {silence:?}"),
        };
        let mut c = Cursor::new(&frame);
        let Ok(key) = c.u16() else {
            break "a frame without a key".to_owned();
        };
        let body = frame.get(4..).unwrap_or_default();
        match (key & !RESPONSE, key & RESPONSE != 0) {
            (DELIVER, false) => match chunk::read(body) {
                Ok(chunk) => {
                    let _ = shared.incoming.send(Incoming::Chunk(chunk));
                }
                Err(e) => break format!("a chunk's header: {e}"),
            },
            (TUNE, false) => {
                let mut c = Cursor::new(body);
                if let (Ok(frame_max), Ok(heartbeat)) = (c.u32(), c.u32())
                    && let Some(tune) = shared.tune.lock().take()
                {
                    let _ = tune.send((frame_max, heartbeat));
                }
            }
            (CLOSE, false) => {
                let mut c = Cursor::new(body);
                let reason = c.take(6).and_then(|_| c.string()).unwrap_or_default();
                break format!("the broker closed the stream connection: {reason}");
            }
            (METADATA_UPDATE, false) => {
                let _ = shared.incoming.send(Incoming::Gone(
                    "the log's members changed (a leader moved, a node left, or it was deleted)"
                        .to_owned(),
                ));
            }
            (HEARTBEAT, _) | (CREDIT, true) => {}
            (_, true) => {
                if let Ok(id) = Cursor::new(body).u32()
                    && let Some(waiting) = shared.pending.lock().remove(&id)
                {
                    let _ = waiting.send(frame);
                }
            }
            _ => {}
        }
    };
    shared.end(why);
}

/// Writes frames as they come, and a heartbeat whenever nothing was written for half
/// the heartbeat.
async fn write_loop(
    mut wr: impl AsyncWrite + Unpin,
    mut out: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let beat = frame_of(HeartBeatCommand::default());
    let why = loop {
        let half =
            Duration::from_secs(u64::from(shared.heartbeat.load(Ordering::Relaxed) / 2).max(1));
        let frame = match tokio::time::timeout(half, out.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(_) => beat.clone(),
        };
        let written = async {
            wr.write_all(&frame).await?;
            wr.flush().await
        };
        if let Err(e) = written.await {
            break format!("the stream connection failed: {e}");
        }
    };
    shared.end(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_answers_are_read_and_a_missing_stream_is_its_code() {
        let mut f = vec![0x80, 15, 0, 1, 0, 0, 0, 7];
        f.extend(2i32.to_be_bytes());
        for (r, host, port) in [(0u16, "a", 5552u32), (1, "b", 5553)] {
            f.extend(r.to_be_bytes());
            f.extend(1i16.to_be_bytes());
            f.extend(host.as_bytes());
            f.extend(port.to_be_bytes());
        }
        f.extend(1i32.to_be_bytes());
        f.extend(3i16.to_be_bytes());
        f.extend(b"log");
        f.extend(1u16.to_be_bytes());
        f.extend(1u16.to_be_bytes());
        f.extend(1i32.to_be_bytes());
        f.extend(0u16.to_be_bytes());
        let m = read_members(&f).unwrap().unwrap();
        assert_eq!(m.leader, Some(("b".to_owned(), 5553)));
        assert_eq!(m.replicas, vec![("a".to_owned(), 5552)]);
        // Cut anywhere: an error, never a panic.
        for cut in 0..f.len() {
            let _ = read_members(&f[..cut]);
        }
        let mut missing = f[..8].to_vec();
        missing.extend(0i32.to_be_bytes());
        missing.extend(1i32.to_be_bytes());
        missing.extend(3i16.to_be_bytes());
        missing.extend(b"log");
        missing.extend(2u16.to_be_bytes());
        assert!(matches!(
            read_members(&missing).unwrap(),
            Err(ClientError::Refused(code::STREAM_DOES_NOT_EXIST))
        ));
    }
}
