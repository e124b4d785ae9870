//! A master's connections to its server: opened and authenticated as a
//! client's would be ([`Opener`]), lent to one client at a time and given
//! back when the client left them idle ([`Pool`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio::time::{self, Instant};
use tokio_util::codec::Decoder;
use tracing::{info, warn};
use wiresh_proto::codec::{encode_frame, LEN_PREFIX};
use wiresh_proto::{ErrorCode, Frame, FrameCodec, Limits, Message, Preamble, PROTOCOL_VERSION};

use super::POOL_IDLE_MAX;
use crate::client::{Endpoint, Security, CONNECT_TIMEOUT};
use crate::tls::PinCheck;

/// The stream of a connection to the server.
pub(super) enum Stream {
    /// Plain TCP (a loopback server with `--allow-plaintext`).
    Plain(TcpStream),
    /// TLS, with the pinned fingerprint checked.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// An authenticated connection to the server, idle or lent.
pub(super) struct Upstream {
    /// The connection.
    pub stream: Stream,
    /// The server's `hello` frame, as it sent it: what a client is told.
    pub hello: Vec<u8>,
    /// What the server accepts from a client (from its `hello`).
    pub limits: Limits,
    /// Its number, for the log.
    pub serial: u64,
    /// When it was last given back.
    idle_since: Instant,
}

impl Upstream {
    /// The local end of the connection, as the server's log names its
    /// peer.
    pub(super) fn local(&self) -> String {
        self.stream
            .tcp()
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string())
    }

    /// Whether it can be lent: the server has sent nothing since (an idle
    /// server sends only to close: an error, a TLS alert, its end), and it
    /// has not been idle so long that the server might close it now.
    fn usable(&self) -> Result<(), &'static str> {
        use rustix::net::RecvFlags;
        if self.idle_since.elapsed() > POOL_IDLE_MAX {
            return Err("idle too long");
        }
        let mut byte = [0u8; 1];
        let peeked = rustix::net::recv(
            self.stream.tcp(),
            &mut byte,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        );
        match peeked {
            Err(rustix::io::Errno::AGAIN) => Ok(()),
            Ok((0, _)) => Err("closed by the server"),
            Ok(_) => Err("the server is closing it"),
            Err(_) => Err("broken"),
        }
    }
}

/// Why no connection could be opened.
#[derive(Debug, Clone)]
pub(super) enum OpenError {
    /// The server refused these credentials, or presented another
    /// fingerprint than the pinned one: the master must not go on.
    Refused(String),
    /// Anything else (unreachable, busy, timed out): perhaps later.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused(why) | OpenError::Failed(why) => f.write_str(why),
        }
    }
}

/// Opens connections to the server as a client would.
pub(super) struct Opener {
    /// The server, credentials and pinning (the fingerprint fixed to the
    /// one the master started with).
    pub endpoint: Endpoint,
}

impl Opener {
    /// A new authenticated connection, within the client's connect timeout.
    pub(super) async fn open(&self, serial: u64) -> Result<Upstream, OpenError> {
        let target = &self.endpoint.target;
        match time::timeout(CONNECT_TIMEOUT, self.open_now(serial)).await {
            Ok(result) => result,
            Err(_) => Err(OpenError::Failed(format!(
                "no answer from {target} within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    async fn open_now(&self, serial: u64) -> Result<Upstream, OpenError> {
        let target = &self.endpoint.target;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| OpenError::Failed(format!("cannot connect to {target}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.endpoint.security {
            Security::Plaintext => Stream::Plain(tcp),
            Security::Tls(pinning) => {
                let host = target.to_string();
                let (config, check) = pinning
                    .client_config(&host)
                    .map_err(|e| OpenError::Failed(e.to_string()))?;
                let connector = tokio_rustls::TlsConnector::from(config);
                match connector.connect(PinCheck::server_name(), tcp).await {
                    Ok(tls) => Stream::Tls(Box::new(tls)),
                    Err(e) if check.changed() => return Err(OpenError::Refused(check.explain(&e))),
                    Err(e) => return Err(OpenError::Failed(check.explain(&e))),
                }
            }
        };
        let (stream, hello, limits) = match stream {
            Stream::Plain(mut tcp) => {
                let (hello, limits) = self.authenticate(&mut tcp).await?;
                (Stream::Plain(tcp), hello, limits)
            }
            Stream::Tls(mut tls) => {
                let (hello, limits) = self.authenticate(&mut tls).await?;
                (Stream::Tls(tls), hello, limits)
            }
        };
        Ok(Upstream {
            stream,
            hello,
            limits,
            serial,
            idle_since: Instant::now(),
        })
    }

    /// The wiresh handshake: the server's `hello` as it sent it, and the
    /// limits it announces.
    async fn authenticate<S>(&self, stream: &mut S) -> Result<(Vec<u8>, Limits), OpenError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let failed = |e: std::io::Error| OpenError::Failed(format!("during the handshake: {e}"));
        let mut opening = Preamble::new(PROTOCOL_VERSION).encode().to_vec();
        let auth = Frame::new(Message::Auth {
            token: self.endpoint.token.clone(),
        });
        opening
            .extend_from_slice(&encode_frame(&auth).map_err(|e| OpenError::Failed(e.to_string()))?);
        stream.write_all(&opening).await.map_err(failed)?;
        stream.flush().await.map_err(failed)?;
        let (hello_raw, hello) = read_bare_frame(stream).await?;
        let Message::Hello(hello) = hello else {
            return Err(unexpected(hello, "hello"));
        };
        match read_bare_frame(stream).await?.1 {
            Message::AuthOk => {}
            other => return Err(unexpected(other, "auth_ok")),
        }
        let limits = Limits {
            max_header: hello.max_header as usize,
            max_body: hello.max_body as usize,
        };
        Ok((hello_raw, limits))
    }
}

/// The error for a frame other than the `expected` one.
fn unexpected(message: Message, expected: &str) -> OpenError {
    match message {
        Message::Error {
            code: code @ ErrorCode::AuthFailed,
            message,
        } => OpenError::Refused(format!("server error ({code}): {message}")),
        Message::Error { code, message } => {
            OpenError::Failed(format!("server error ({code}): {message}"))
        }
        other => OpenError::Failed(format!(
            "expected `{expected}`, got `{}`",
            other.type_name()
        )),
    }
}

/// Reads one frame without a body, byte-exact (nothing past it is read),
/// and returns its bytes with it.
async fn read_bare_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Vec<u8>, Message), OpenError> {
    let failed = |e: std::io::Error| OpenError::Failed(format!("during the handshake: {e}"));
    let mut raw = vec![0u8; LEN_PREFIX];
    stream.read_exact(&mut raw).await.map_err(failed)?;
    if raw == b"WIRE" {
        let mut line = Vec::new();
        let _ = stream.take(512).read_to_end(&mut line).await;
        let line = String::from_utf8_lossy(&line);
        return Err(OpenError::Failed(format!(
            "the server refused the connection: WIRE{}",
            line.lines().next().unwrap_or_default()
        )));
    }
    let len = u32::from_be_bytes(raw[..].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > Limits::DEFAULT_MAX_HEADER {
        return Err(OpenError::Failed(format!(
            "a handshake frame header of {len} bytes"
        )));
    }
    raw.resize(LEN_PREFIX + len, 0);
    stream
        .read_exact(&mut raw[LEN_PREFIX..])
        .await
        .map_err(failed)?;
    let mut buf = BytesMut::from(&raw[..]);
    match FrameCodec::default().decode(&mut buf) {
        Ok(Some(frame)) if buf.is_empty() => Ok((raw, frame.message)),
        Ok(_) => Err(OpenError::Failed("a handshake frame with a body".into())),
        Err(e) => Err(OpenError::Failed(e.to_string())),
    }
}

/// Why no connection was lent.
#[derive(Debug)]
pub(super) enum Shortage {
    /// All are lent, and none came back in time.
    Busy,
    /// A new one could not be opened.
    Open(OpenError),
}

/// What flows back to the clients waiting: connections given back or
/// newly opened, and failures to open one.
type Returned = Result<Upstream, OpenError>;

/// The master's connections: at most `bound`, lent one per client.
pub(super) struct Pool {
    opener: Arc<Opener>,
    bound: usize,
    /// Connections that exist or are being opened.
    count: Arc<AtomicUsize>,
    /// Connections lent to clients now.
    lent: AtomicUsize,
    serial: Arc<AtomicU64>,
    give: mpsc::Sender<Returned>,
    /// Clients wait for a connection here, first come first served.
    take: Mutex<mpsc::Receiver<Returned>>,
}

impl Pool {
    /// A pool of at most `bound` connections, none open yet.
    pub(super) fn new(opener: Opener, bound: usize) -> Pool {
        let bound = bound.max(1);
        // Never more in the queue than connections exist or are opened.
        let (give, take) = mpsc::channel(bound);
        Pool {
            opener: Arc::new(opener),
            bound,
            count: Arc::new(AtomicUsize::new(0)),
            lent: AtomicUsize::new(0),
            serial: Arc::new(AtomicU64::new(0)),
            give,
            take: Mutex::new(take),
        }
    }

    /// Opens the first connection, to know that the server takes these
    /// credentials, and keeps it.
    pub(super) async fn open_first(&self) -> Result<Upstream, OpenError> {
        self.count.fetch_add(1, Ordering::AcqRel);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let opened = self.opener.open(serial).await;
        if opened.is_err() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        opened
    }

    /// Opens a connection and closes it again: whether the server still
    /// takes these credentials (a reload may have revoked them; the
    /// connections held were let in before).
    pub(super) async fn recheck(&self) -> Result<(), OpenError> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let checked = self.opener.open(serial).await?;
        drop(checked);
        Ok(())
    }

    /// How many connections exist, and how many are lent.
    pub(super) fn usage(&self) -> (usize, usize) {
        (
            self.count.load(Ordering::Acquire),
            self.lent.load(Ordering::Acquire),
        )
    }

    /// The most connections it holds.
    pub(super) fn bound(&self) -> usize {
        self.bound
    }

    /// A connection for a client: an idle one, else a new one if the bound
    /// allows, else the first given back before `deadline`.
    pub(super) async fn take(&self, deadline: Instant) -> Result<Upstream, Shortage> {
        let mut queue = time::timeout_at(deadline, self.take.lock())
            .await
            .map_err(|_| Shortage::Busy)?;
        loop {
            let returned = match queue.try_recv() {
                Ok(returned) => returned,
                Err(_) => {
                    self.open_one_if_allowed();
                    match time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(returned)) => returned,
                        Ok(None) | Err(_) => return Err(Shortage::Busy),
                    }
                }
            };
            match returned {
                Ok(up) => match up.usable() {
                    Ok(()) => {
                        self.lent.fetch_add(1, Ordering::AcqRel);
                        return Ok(up);
                    }
                    Err(why) => {
                        info!("connection {} dropped: {why}", up.serial);
                        self.count.fetch_sub(1, Ordering::AcqRel);
                    }
                },
                Err(e) => return Err(Shortage::Open(e)),
            }
        }
    }

    /// Starts opening a connection in the background if fewer than the
    /// bound exist; it goes to the first client waiting.
    fn open_one_if_allowed(&self) {
        let grown = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.bound).then_some(n + 1)
            });
        if grown.is_err() {
            return;
        }
        let (opener, give, count) = (self.opener.clone(), self.give.clone(), self.count.clone());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(async move {
            let opened = opener.open(serial).await;
            match &opened {
                Ok(up) => info!("connection {serial} opened from {}", up.local()),
                Err(e) => {
                    warn!("cannot open a connection: {e}");
                    count.fetch_sub(1, Ordering::AcqRel);
                }
            }
            let _ = give.send(opened).await;
        });
    }

    /// Takes back a connection that was lent (or opened first) and left
    /// idle.
    pub(super) fn give_back(&self, mut up: Upstream, was_lent: bool) {
        if was_lent {
            self.lent.fetch_sub(1, Ordering::AcqRel);
        }
        up.idle_since = Instant::now();
        if let Err(e) = self.give.try_send(Ok(up)) {
            // Cannot happen (the queue holds as many as exist); closed.
            warn!("a connection could not be kept: {e}");
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Closes a lent connection that was not left idle.
    pub(super) fn discard(&self, up: Upstream) {
        self.lent.fetch_sub(1, Ordering::AcqRel);
        self.count.fetch_sub(1, Ordering::AcqRel);
        drop(up);
    }
}
