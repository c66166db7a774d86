//! A TCP proxy in front of the broker, for fault tests: connections through it can be
//! frozen (bytes are swallowed both ways while the sockets stay open, as when a NAT entry
//! is dropped) or cut, while new connections pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One proxied connection's switches.
#[derive(Debug, Default)]
struct Switches {
    frozen: AtomicBool,
    cut: AtomicBool,
    cut_now: Notify,
}

/// A proxy listening on a free local port, forwarding to the broker (or another server).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    connections: Arc<std::sync::Mutex<Vec<Arc<Switches>>>>,
    refusing: Arc<AtomicBool>,
    /// When non-zero, new connections drop the client's frames of this command.
    muted_command: Arc<std::sync::atomic::AtomicUsize>,
    /// While set, nothing the server sends is passed on (it waits, in order).
    holding: Arc<AtomicBool>,
    /// How long, in milliseconds, what the server sends is kept before it is passed on.
    reply_delay: Arc<AtomicU64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to the broker of `AMQP_ADDR`.
    pub async fn start() -> Self {
        Self::start_to(upstream_addr()).await
    }

    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start_to(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("local addr").port();
        let connections: Arc<std::sync::Mutex<Vec<Arc<Switches>>>> = Arc::default();
        let registry = connections.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = refusing.clone();
        let muted_command = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let muting = muted_command.clone();
        let holding = Arc::new(AtomicBool::new(false));
        let hold = holding.clone();
        let reply_delay = Arc::new(AtomicU64::new(0));
        let delay = reply_delay.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let switches = Arc::new(Switches::default());
                registry.lock().unwrap().push(switches.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                match u16::try_from(muting.load(Ordering::SeqCst)) {
                    Ok(key) if key != 0 => tokio::spawn(pump_frames(cr, sw, key)),
                    _ => tokio::spawn(pump(cr, Out::Direct(sw), switches.clone(), None)),
                };
                let (delayed, later) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(pass_on_later(later, cw));
                let out = Out::Delayed(delayed, delay.clone());
                tokio::spawn(pump(sr, out, switches, Some(hold.clone())));
            }
        });
        Self {
            port,
            connections,
            refusing,
            muted_command,
            holding,
            reply_delay,
            accepting,
        }
    }

    /// While `Some(key)`, each new connection drops the requests of that command of the
    /// RabbitMQ stream protocol (e.g. 0x000b, QueryOffset) and passes the rest: those
    /// requests go unanswered while everything else works. `None`: new connections pass
    /// everything.
    pub fn mute_stream_command(&self, key: Option<u16>) {
        self.muted_command
            .store(key.map_or(0, usize::from), Ordering::SeqCst);
    }

    /// The AMQP URL through the proxy.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// How many connections went through the proxy so far.
    pub fn connections(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// Every connection open now goes silent: what either side sends is swallowed, and
    /// neither side learns that anything is wrong. Later connections pass.
    pub fn freeze_existing(&self) {
        for c in self.connections.lock().unwrap().iter() {
            c.frozen.store(true, Ordering::SeqCst);
        }
    }

    /// While `true`, what the server sends on any connection waits in the proxy (in
    /// order, nothing lost): the client's frames still reach the server, its answers
    /// (confirms, close-ok) come when this goes back to `false`.
    pub fn hold_replies(&self, holding: bool) {
        self.holding.store(holding, Ordering::SeqCst);
    }

    /// From now on, what the server sends on any connection reaches the client `delay`
    /// later (in order, nothing lost), as over a slow link: each answer the client waits
    /// for (a channel's open-ok, a confirm) takes that much longer.
    pub fn delay_replies(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.reply_delay.store(ms, Ordering::SeqCst);
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// While `true`, new connections are closed as soon as they are accepted (the server
    /// looks down); those open stay as they are.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Closes every connection open now. Later connections pass.
    pub fn cut_existing(&self) {
        for c in self.connections.lock().unwrap().iter() {
            c.cut.store(true, Ordering::SeqCst);
            c.cut_now.notify_waiters();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut_existing();
    }
}

/// Where a pump writes: straight to a socket, or through [`pass_on_later`] after a delay
/// (in milliseconds) read when each chunk arrives.
enum Out {
    Direct(tokio::net::tcp::OwnedWriteHalf),
    Delayed(
        tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>,
        Arc<AtomicU64>,
    ),
}

impl Out {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Direct(to) => to.write_all(bytes).await,
            Out::Delayed(later, delay) => {
                let due = tokio::time::Instant::now()
                    + Duration::from_millis(delay.load(Ordering::SeqCst));
                later
                    .send((due, bytes.to_vec()))
                    .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
            }
        }
    }
}

/// Writes each chunk to `to` once it is due, in the order they came.
async fn pass_on_later(
    mut chunks: tokio::sync::mpsc::UnboundedReceiver<(tokio::time::Instant, Vec<u8>)>,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    while let Some((due, bytes)) = chunks.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: Out,
    switches: Arc<Switches>,
    hold: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if switches.cut.load(Ordering::SeqCst) {
            return;
        }
        if hold.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = switches.cut_now.notified() => return,
        };
        if switches.frozen.load(Ordering::SeqCst) {
            continue;
        }
        // Read while not holding, but held meanwhile: it waits too.
        while hold.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            if switches.cut.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Forwards the stream protocol frames from `from` to `to` (a 4-byte length, then a
/// payload starting with the command's 2-byte key), except those of command `muted`.
async fn pump_frames(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    muted: u16,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 4 {
            let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
            if pending.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = pending.drain(..4 + len).collect();
            let key = if len >= 2 {
                u16::from_be_bytes([frame[4], frame[5]])
            } else {
                0
            };
            if key != muted && to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}

/// `host:port` of the broker in `AMQP_ADDR`.
fn upstream_addr() -> String {
    let url = crate::amqp_addr();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}
