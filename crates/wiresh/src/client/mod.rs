//! The wiresh protocol's client: connect, authenticate, run commands,
//! transfer files.
//!
//! [`Connection`] is the library-level client, used by the `wiresh`
//! command's front ends (`crate::cli`, `crate::fanout`), the tests, and
//! whatever else is built on the library. It prints nothing and decides no
//! exit status: a command's output goes to a sink the caller picks
//! ([`OutputSink`]), and every ending is a value ([`ExitStatus`],
//! [`ClientError`]).
//!
//! - [`transfer`]: one file up or down, checked; [`copy`]: files and trees,
//!   scp-style, on top of it;
//! - [`zero_copy`]: over plain TCP, large output moved from the socket to
//!   the sink's descriptor without passing through memory;
//! - `read_ahead`: over TLS, the socket read many records at a time.

pub mod copy;
mod output;
mod read_ahead;
pub mod transfer;
pub mod zero_copy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{self, Instant};
use wiresh_proto::{
    codec::encode_frame, BodyPassing, ErrorCode, ExecRequest, ExitStatus, Frame, FrameCodec, Hello,
    Limits, Message, Preamble, Secret, SignalName, PROTOCOL_VERSION,
};

pub use self::output::{Output, OutputSink};
use self::read_ahead::ReadAhead;
use self::zero_copy::PassedBody;
pub use crate::addr::Target;
use crate::conn::{FrameConn, FrameSender, RecvError};
use crate::task::AbortOnDrop;
use crate::tls::PinCheck;
pub use crate::tls::Pinning;
use crate::untrusted::escape;

/// Smallest `stdout` body worth moving with `splice(2)` (for a sink that
/// takes bodies on the socket, [`OutputSink::passed_bodies`]); smaller
/// ones are copied.
const PASSED_BODY_MIN: usize = 64 * 1024;

/// How long connecting and authenticating may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a file request waits on the server at each step, unless told
/// otherwise ([`Connection::set_transfer_timeout`], `--transfer-timeout`).
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything that can go wrong on the client side. The messages are meant
/// to be shown to a user as they are.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No TCP connection could be made.
    #[error("cannot connect to {target}: {source}{hint}")]
    Connect {
        /// Where we tried to connect.
        target: String,
        /// Why it failed.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
        /// The host name did not resolve (DNS), so no address was tried.
        unknown_host: bool,
    },
    /// The server said no, with a reason.
    #[error("server error ({code}): {}", escape(message))]
    Remote {
        /// Machine-readable reason.
        code: ErrorCode,
        /// The server's explanation, as it sent it: shown with its control
        /// characters written out ([`crate::untrusted::escape`]), as this
        /// error's `Display` does.
        message: String,
        /// Whether the command had been started when the error came: if not,
        /// it never ran, and retrying it cannot repeat its side effects.
        started: bool,
    },
    /// The peer broke the protocol or is not a wiresh server (the text
    /// may quote what it sent).
    #[error("protocol error: {}", escape(.0))]
    Protocol(String),
    /// The server went silent.
    #[error("{0}")]
    Timeout(String),
    /// The connection closed before the answer was complete.
    #[error(
        "connection to the server was lost {0}; try again, and if it keeps happening, the \
         server's log says why"
    )]
    Closed(&'static str),
    /// TLS failed (every word of it this client's own).
    #[error("{0}")]
    Tls(String),
    /// The server presented another fingerprint than the one pinned for
    /// it: someone may be intercepting the connection, or its key was
    /// regenerated. The text says which fingerprints and what to do.
    #[error("{0}")]
    Pinning(String),
    /// The user interrupted the command twice.
    #[error("interrupted")]
    Interrupted,
    /// Whatever consumed the output went away; the command is abandoned
    /// (the server kills it when the connection closes).
    #[error("local output closed")]
    OutputClosed,
    /// The server does not offer what the request needs; nothing was sent
    /// (the text may name the server as its `hello` does).
    #[error("{}", escape(.0))]
    Unsupported(String),
}

impl ClientError {
    /// Whether the connection can still be used after this error (the
    /// server refused one command but kept the connection).
    pub fn connection_usable(&self) -> bool {
        matches!(
            self,
            ClientError::Remote {
                code: ErrorCode::SpawnFailed
                    | ErrorCode::BadRequest
                    | ErrorCode::Busy
                    | ErrorCode::Forbidden
                    | ErrorCode::Internal,
                ..
            }
        )
    }
}

/// How the connection is protected.
#[derive(Debug, Clone)]
pub enum Security {
    /// TLS, with the server's certificate pinned (trust on first use).
    Tls(Pinning),
    /// No encryption: for a server on loopback started with
    /// `--allow-plaintext`.
    Plaintext,
}

/// Everything needed to reach one server and prove we may use it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where the server is.
    pub target: Target,
    /// The shared secret.
    pub token: Secret,
    /// TLS (pinned) or plaintext.
    pub security: Security,
    /// Most time to connect and authenticate (`--connect-timeout`;
    /// [`CONNECT_TIMEOUT`] unless told).
    pub connect_timeout: Duration,
    /// Keep a master for this server, for how long without clients (its
    /// `persist` host setting, ssh's ControlPersist); `None`: only when
    /// the process asks for every connection (`--persist`). This library
    /// only connects; [`crate::master`] acts on it.
    pub persist: Option<Duration>,
}

impl From<crate::tls::PinError> for ClientError {
    fn from(e: crate::tls::PinError) -> ClientError {
        ClientError::Tls(e.to_string())
    }
}

impl ClientError {
    /// The error for a failed read: `waiting_for` says what was expected.
    fn from_recv(err: RecvError, waiting_for: &'static str) -> ClientError {
        match err {
            RecvError::TimedOut(limit) => ClientError::Timeout(format!(
                "the server sent nothing for {limit:?} {waiting_for}"
            )),
            RecvError::Closed => ClientError::Closed(waiting_for),
            // A TLS server that exits without close_notify has still just
            // gone: say so, not the TLS library's words.
            RecvError::Decode(wiresh_proto::DecodeError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                ClientError::Closed(waiting_for)
            }
            RecvError::Decode(e) => ClientError::Protocol(e.to_string()),
        }
    }
}

/// An authenticated connection to a wiresh server, which runs commands one
/// after another.
pub struct Connection {
    conn: FrameConn,
    hello: Hello,
    /// How long a file request may wait on the server
    /// ([`Connection::set_transfer_timeout`]).
    transfer_timeout: Duration,
    /// The `exec` sent with the handshake ([`Connection::connect_running`]),
    /// which the next [`Connection::run`] takes up instead of sending it.
    sent_ahead: Option<ExecRequest>,
    /// The server's fingerprint, if this connection pinned it.
    pinned_on_first_use: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("hello", &self.hello)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the endpoint's server and authenticates.
    ///
    /// The preamble and the `auth` frame go out in one write, so the whole
    /// wiresh handshake costs one round trip (after TLS's own).
    pub async fn connect(endpoint: &Endpoint) -> Result<Connection, ClientError> {
        Connection::open(endpoint, None).await
    }

    /// Connects like [`Connection::connect`], with `req` sent in the same
    /// write as the preamble and `auth` (PROTOCOL.md 7.2 allows it): a
    /// one-shot command saves a round trip. Call [`Connection::run`] next
    /// with the same request (and stdin exactly when `req.stdin` is set).
    /// A request that needs a feature the server must offer first (a
    /// terminal, a login shell) is not sent ahead; `run` sends it as usual.
    pub async fn connect_running(
        endpoint: &Endpoint,
        req: &ExecRequest,
    ) -> Result<Connection, ClientError> {
        Connection::open(endpoint, sent_ahead(req)).await
    }

    /// Authenticates over `stream`, already connected to something that
    /// speaks the protocol for the endpoint's server (a master,
    /// [`crate::master`]): `prefix` goes out first, in the same write as
    /// the preamble, `auth` and `running` (sent ahead as
    /// [`Connection::connect_running`] does).
    pub(crate) async fn over<S>(
        stream: S,
        prefix: &[u8],
        token: &Secret,
        running: Option<&ExecRequest>,
    ) -> Result<Connection, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let ahead = running.and_then(sent_ahead);
        let handshake = Connection::handshake(stream, prefix, token, ahead, None);
        match time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(res) => res,
            Err(_) => Err(ClientError::Timeout(format!(
                "no answer within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    /// Connects, authenticates and, if given, sends `ahead` with them.
    async fn open(
        endpoint: &Endpoint,
        ahead: Option<&ExecRequest>,
    ) -> Result<Connection, ClientError> {
        let (target, token) = (&endpoint.target, &endpoint.token);
        let handshake = async {
            // Resolved apart from connecting, so that an unknown name is
            // told from an address that does not answer.
            let addresses: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|source| ClientError::Connect {
                    target: target.to_string(),
                    hint: "; is the host name right?",
                    unknown_host: true,
                    source,
                })?
                .collect();
            let socket = TcpStream::connect(&addresses[..]).await.map_err(|source| {
                ClientError::Connect {
                    target: target.to_string(),
                    hint: match source.kind() {
                        std::io::ErrorKind::ConnectionRefused => {
                            "; is `wiresh serve` running there, on that port?"
                        }
                        _ => "",
                    },
                    unknown_host: false,
                    source,
                }
            })?;
            let _ = socket.set_nodelay(true);
            match &endpoint.security {
                Security::Plaintext => Connection::handshake(socket, &[], token, ahead, None).await,
                Security::Tls(pinning) => {
                    let host = target.to_string();
                    let (config, check) = pinning.client_config(&host)?;
                    let connector = tokio_rustls::TlsConnector::from(config);
                    let stream = connector
                        .connect(PinCheck::server_name(), ReadAhead::new(socket))
                        .await
                        .map_err(|e| match check.changed() {
                            true => ClientError::Pinning(check.explain(&e)),
                            false => ClientError::Tls(check.explain(&e)),
                        })?;
                    // Pinned once the peer has proved it speaks wiresh
                    // (its `hello`), never for any TLS service at all.
                    Connection::handshake(stream, &[], token, ahead, Some(&check)).await
                }
            }
        };
        let limit = endpoint.connect_timeout;
        match time::timeout(limit, handshake).await {
            Ok(res) => res,
            Err(_) => Err(ClientError::Timeout(format!(
                "no answer from {target} within {limit:?} (--connect-timeout); check the address and that a wiresh server listens there"
            ))),
        }
    }

    /// The wiresh handshake on a connected stream. The preamble and the
    /// `auth` frame (and `ahead`, a first `exec`) go out in one write,
    /// after `prefix`, so it costs one round trip.
    async fn handshake<S>(
        mut stream: S,
        prefix: &[u8],
        token: &Secret,
        ahead: Option<&ExecRequest>,
        pin: Option<&PinCheck>,
    ) -> Result<Connection, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let mut opening = prefix.to_vec();
        opening.extend_from_slice(&Preamble::new(PROTOCOL_VERSION).encode());
        let auth = Frame::new(Message::Auth {
            token: token.clone(),
        });
        let exec = ahead.map(|req| Frame::new(Message::Exec(req.clone())));
        for frame in std::iter::once(&auth).chain(&exec) {
            opening.extend_from_slice(
                &encode_frame(frame).map_err(|e| ClientError::Protocol(e.to_string()))?,
            );
        }
        stream
            .write_all(&opening)
            .await
            .map_err(|_| ClientError::Closed("while sending the handshake"))?;
        stream
            .flush()
            .await
            .map_err(|_| ClientError::Closed("while sending the handshake"))?;
        let mut conn = FrameConn::new(stream, Limits::default(), FrameCodec::default());
        let hello = hello_from(handshake_frame(&mut conn).await?.message)?;
        // A wiresh server, whatever it thinks of our token: its
        // fingerprint is pinned now (trust on first use), as ssh records
        // a host key before authenticating.
        let pinned_on_first_use = match pin {
            Some(check) => check.remember()?,
            None => None,
        };
        auth_ok_from(handshake_frame(&mut conn).await?.message)?;
        Ok(Connection {
            conn,
            hello,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            sent_ahead: ahead.cloned(),
            pinned_on_first_use,
        })
    }

    /// Closes the connection cleanly: everything queued is sent, then the
    /// write side is shut down (for TLS, with a close_notify), so the server
    /// sees an orderly end rather than a vanished peer.
    pub async fn close(self) {
        self.conn.close(Duration::from_secs(2)).await;
    }

    /// How long a file request (`put`, `get`, `stat`, `list`, `mkdir`) may
    /// wait on the server at each step before it gives up: for a frame
    /// from it, or for it to take some of what is being sent. Defaults to
    /// [`DEFAULT_TRANSFER_TIMEOUT`].
    pub fn set_transfer_timeout(&mut self, limit: Duration) {
        self.transfer_timeout = limit;
    }

    /// The server's fingerprint when this connection pinned it, trusting
    /// it on first use (it is now in the known-hosts file); `None` when it
    /// was pinned before, or over plaintext. For the caller to tell its
    /// user: the library says nothing itself.
    pub fn pinned_on_first_use(&self) -> Option<&str> {
        self.pinned_on_first_use.as_deref()
    }

    /// The server's greeting.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Whether the server lists `feature` in its `hello`.
    pub fn offers(&self, feature: &str) -> bool {
        self.hello.features.iter().any(|f| f == feature)
    }

    /// A handle that tells the server the terminal's new size while a
    /// command with a pty runs (see [`Resizer`]).
    pub fn resizer(&self) -> Resizer {
        Resizer(self.conn.sender())
    }

    /// A handle that sends signals to the running command (a Ctrl-C as
    /// `INT`, see [`Signaller`]), when the server takes them (the feature
    /// `signal`); `None` when it does not, and only a cancel reaches the
    /// command.
    pub fn signaller(&self) -> Option<Signaller> {
        self.offers("signal").then(|| Signaller(self.conn.sender()))
    }

    fn ping_interval(&self) -> Duration {
        ping_interval(&self.hello)
    }

    fn silence_limit(&self) -> Duration {
        silence_limit(&self.hello)
    }

    /// Runs one command.
    ///
    /// Output goes to `output` as it arrives ([`OutputSink`]); when its
    /// queue is full the client stops reading, which slows the server down
    /// (backpressure). `stdin`, if given, is forwarded as the command's
    /// standard input, and its end closes that input. When `cancel`
    /// resolves, the command is cancelled (its exit status still arrives);
    /// when it resolves a second time the call returns
    /// [`ClientError::Interrupted`].
    pub async fn run<S, F, C>(
        &mut self,
        mut req: ExecRequest,
        stdin: Option<mpsc::Receiver<Bytes>>,
        output: &S,
        cancel: C,
    ) -> Result<ExitStatus, ClientError>
    where
        S: OutputSink + ?Sized,
        C: FnMut() -> F,
        F: Future<Output = ()>,
    {
        req.stdin = stdin.is_some();
        if let Some(sent) = self.sent_ahead.take() {
            if sent != req {
                return Err(ClientError::Protocol(format!(
                    "this connection was opened running `{}`, not `{}`",
                    sent.describe(),
                    req.describe()
                )));
            }
            return self.follow(stdin, output, cancel).await;
        }
        if (req.pty.is_some() || req.login_shell) && !self.offers("pty") {
            // An older server would run the command on pipes (it ignores
            // the unknown field) or refuse a login shell as malformed.
            return Err(ClientError::Unsupported(format!(
                "the server does not offer terminal sessions (no \"pty\" among its features: {} \
                 is older than this client); run the command without -t, or use `wiresh shell --each-line`",
                self.hello.server
            )));
        }
        // On the data path, behind any stdin of the previous command still
        // queued, so that input can never be taken for this command's.
        if self
            .conn
            .send(Frame::new(Message::Exec(req)))
            .await
            .is_err()
        {
            return Err(ClientError::Closed("before the command could be sent"));
        }
        self.follow(stdin, output, cancel).await
    }

    /// Runs the command whose `exec` has been sent: input, output, pings
    /// and cancels until its `exit`.
    async fn follow<S, F, C>(
        &mut self,
        stdin: Option<mpsc::Receiver<Bytes>>,
        output: &S,
        mut cancel: C,
    ) -> Result<ExitStatus, ClientError>
    where
        S: OutputSink + ?Sized,
        C: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let window = self.hello.stdin_window as usize;
        let credits = Arc::new(Semaphore::new(window));
        let piece = window.min(self.hello.max_body as usize).max(1);
        let _forwarder = stdin.map(|rx| {
            AbortOnDrop(tokio::spawn(forward_stdin(
                rx,
                self.conn.sender(),
                credits.clone(),
                piece,
            )))
        });
        // Over plain TCP only: over TLS the socket holds records.
        let passing = BodyPassing {
            min_len: PASSED_BODY_MIN,
            applies: |message| *message == Message::Stdout,
        };
        let silence_limit = self.silence_limit();
        let mut running = Running {
            started: false,
            credits,
            window,
            bodies: output
                .passed_bodies()
                .filter(|_| self.conn.pass_bodies(passing)),
            silence_limit,
        };
        let mut ping =
            time::interval_at(Instant::now() + self.ping_interval(), self.ping_interval());
        let mut last_heard = Instant::now();
        let mut cancels = 0u8;
        // An output frame read while the sink's queue was full. No place in
        // the queue is held while waiting for a frame: runs sharing a queue
        // smaller than their number would otherwise wait on one another
        // (one holding the place for a frame that is slow to come, the
        // rest with output ready and nowhere to put it).
        let mut waiting: Option<Frame> = None;
        loop {
            let cancel_requested = cancel();
            tokio::select! {
                biased;
                permit = output.queue().reserve(), if waiting.is_some() => {
                    let frame = waiting.take().expect("checked");
                    let permit = permit.map_err(|_| ClientError::OutputClosed)?;
                    self.deliver(frame, permit, &running).await?;
                    // After the frame, which may have been a body moved for a while.
                    last_heard = Instant::now();
                }
                next = self.conn.recv_until(last_heard + silence_limit), if waiting.is_none() => {
                    let frame = next.map_err(|e| match e {
                        RecvError::TimedOut(_) => ClientError::Timeout(format!(
                            "the server has not answered for {silence_limit:?}; the connection seems dead"
                        )),
                        e => ClientError::from_recv(e, "before the command finished"),
                    })?;
                    if !matches!(frame.message, Message::Stdout | Message::Stderr) {
                        if let Some(status) = self.take_frame(frame, &mut running)? {
                            return Ok(status);
                        }
                    } else {
                        match output.queue().try_reserve() {
                            Ok(permit) => self.deliver(frame, permit, &running).await?,
                            Err(TrySendError::Full(())) => waiting = Some(frame),
                            Err(TrySendError::Closed(())) => return Err(ClientError::OutputClosed),
                        }
                    }
                    last_heard = Instant::now();
                }
                _ = ping.tick() => {
                    // A full queue means pings are already waiting: skipping is fine.
                    self.conn.try_send_control(Frame::new(Message::Ping));
                }
                _ = cancel_requested => {
                    cancels += 1;
                    if cancels > 1 {
                        return Err(ClientError::Interrupted);
                    }
                    // On the data path, behind the `exec` (which may still
                    // be queued there): a server ignores a `cancel` that
                    // comes before its command.
                    if self.conn.send(Frame::new(Message::Cancel)).await.is_err() {
                        return Err(ClientError::Closed("before the command finished"));
                    }
                }
            }
        }
    }

    /// Acts on one frame of the running command that is not output; the
    /// command's exit status once it has one.
    fn take_frame<T>(
        &mut self,
        frame: Frame,
        running: &mut Running<T>,
    ) -> Result<Option<ExitStatus>, ClientError> {
        match frame.message {
            Message::Started { .. } => running.started = true,
            Message::StdinAck { bytes } => {
                let acked = usize::try_from(bytes).unwrap_or(usize::MAX);
                running.credits.add_permits(acked.min(running.window));
            }
            Message::Exit(status) => return Ok(Some(status)),
            Message::Error { code, message } => {
                return Err(ClientError::Remote {
                    code,
                    message,
                    started: running.started,
                })
            }
            Message::Pong => {}
            Message::Ping => self.conn.pong(frame.body),
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected `{}` while a command runs",
                    other.type_name()
                )))
            }
        }
        Ok(None)
    }

    /// Hands an output frame (`stdout` or `stderr`) to the sink through
    /// `permit`.
    async fn deliver<T: From<Output>>(
        &mut self,
        frame: Frame,
        permit: mpsc::Permit<'_, T>,
        running: &Running<T>,
    ) -> Result<(), ClientError> {
        match frame.message {
            Message::Stdout => {
                let (bodies, idle) = (running.bodies, running.silence_limit);
                self.deliver_stdout(frame.body, permit, bodies, idle).await
            }
            _ => {
                permit.send(Output::Stderr(frame.body).into());
                Ok(())
            }
        }
    }

    /// Hands a `stdout` body to the sink through `permit`: as it is, or,
    /// when the sink moves bodies itself (`bodies`) and the rest of this
    /// one is still on the socket, with that rest, waiting until the sink
    /// has moved it (no frame can be read before).
    async fn deliver_stdout<T: From<Output>>(
        &mut self,
        head: Bytes,
        permit: mpsc::Permit<'_, T>,
        bodies: Option<fn(PassedBody) -> T>,
        idle: Duration,
    ) -> Result<(), ClientError> {
        let passed = match bodies {
            Some(pass) => self.conn.take_body_on_socket().map(|rest| (pass, rest)),
            None => None,
        };
        let Some((pass, rest)) = passed else {
            permit.send(Output::Stdout(head).into());
            return Ok(());
        };
        let (done, moved) = oneshot::channel();
        permit.send(pass(PassedBody {
            head,
            rest,
            idle,
            done,
        }));
        match moved.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => Err(ClientError::Timeout(
                format!("{e}; the connection seems dead"),
            )),
            Ok(Err(e)) => Err(ClientError::from_recv(
                RecvError::Decode(e.into()),
                "before the command finished",
            )),
            // The sink dropped the body: its output would not take it.
            Err(_) => Err(ClientError::OutputClosed),
        }
    }

    /// Measures one round trip.
    pub async fn ping(&mut self) -> Result<Duration, ClientError> {
        let sent = Instant::now();
        if self
            .conn
            .send_control(Frame::new(Message::Ping))
            .await
            .is_err()
        {
            return Err(ClientError::Closed("before the ping"));
        }
        match handshake_frame(&mut self.conn).await?.message {
            Message::Pong => Ok(sent.elapsed()),
            other => Err(not_expected(other, "pong")),
        }
    }
}

/// Interval at which to ping a server that said `hello` while a command
/// runs.
pub(crate) fn ping_interval(hello: &Hello) -> Duration {
    match hello.keepalive_secs {
        0 => Duration::from_secs(10),
        k => Duration::from_millis(u64::from(k) * 500),
    }
}

/// How long that server may stay silent (it answers our pings) before we
/// give up on it.
pub(crate) fn silence_limit(hello: &Hello) -> Duration {
    (ping_interval(hello) * 6).max(Duration::from_secs(30))
}

/// The request to send with the handshake, if it may be: one that needs
/// a feature the server must offer first (a terminal, a login shell) is
/// sent by [`Connection::run`] once the `hello` has been read.
fn sent_ahead(req: &ExecRequest) -> Option<&ExecRequest> {
    (req.pty.is_none() && !req.login_shell).then_some(req)
}

/// A running command, as [`Connection::run`] follows it.
struct Running<T> {
    /// Whether the server said it started.
    started: bool,
    /// Bytes of stdin that may be sent before the next acknowledgement.
    credits: Arc<Semaphore>,
    /// The server's stdin window: no acknowledgement adds more.
    window: usize,
    /// How the sink takes a `stdout` body left on the socket, if it does.
    bodies: Option<fn(PassedBody) -> T>,
    /// How long the server may stay silent.
    silence_limit: Duration,
}

/// Sends `resize` for the running command, in order with its input: taken
/// from [`Connection::resizer`] before [`Connection::run`], and used while
/// it runs.
#[derive(Debug, Clone)]
pub struct Resizer(FrameSender);

impl Resizer {
    /// Tells the server the terminal is now `size`.
    pub async fn resize(&self, size: wiresh_proto::WindowSize) -> Result<(), ClientError> {
        self.0
            .send(Frame::new(Message::Resize(size)))
            .await
            .map_err(|_| ClientError::Closed("while resizing the terminal"))
    }
}

/// Sends `signal` for the running command, in order with its input and
/// behind its `exec`: taken from [`Connection::signaller`] before
/// [`Connection::run`], and used while it runs (from its `cancel` future,
/// say). The command may handle the signal and run on; its exit status
/// still ends [`Connection::run`].
#[derive(Debug, Clone)]
pub struct Signaller(FrameSender);

impl Signaller {
    /// Sends `name` to the running command's process group.
    pub async fn send(&self, name: SignalName) -> Result<(), ClientError> {
        self.0
            .send(Frame::new(Message::Signal { name }))
            .await
            .map_err(|_| ClientError::Closed("while signalling the command"))
    }
}

/// The server's `hello`, the first frame of a handshake: one of another
/// protocol version, or anything else, is an error.
pub(crate) fn hello_from(message: Message) -> Result<Hello, ClientError> {
    let hello = match message {
        Message::Hello(hello) => hello,
        other => return Err(not_expected(other, "hello")),
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(ClientError::Protocol(format!(
            "server speaks protocol version {}, this client {PROTOCOL_VERSION}; upgrade the older side",
            hello.version
        )));
    }
    Ok(hello)
}

/// The server's `auth_ok`, the frame after `hello`: anything else (its
/// `auth_failed` error) is an error.
pub(crate) fn auth_ok_from(message: Message) -> Result<(), ClientError> {
    match message {
        Message::AuthOk => Ok(()),
        other => Err(not_expected(other, "auth_ok")),
    }
}

/// The error for a frame that is not the `expected` one: the server's own
/// error when it sent one, a protocol error otherwise.
fn not_expected(message: Message, expected: &str) -> ClientError {
    match message {
        Message::Error { code, message } => ClientError::Remote {
            code,
            message,
            started: false,
        },
        other => ClientError::Protocol(format!(
            "expected `{expected}`, got `{}`",
            other.type_name()
        )),
    }
}

/// Reads the next frame during the handshake or a ping.
async fn handshake_frame(conn: &mut FrameConn) -> Result<Frame, ClientError> {
    match conn.recv_within(CONNECT_TIMEOUT).await {
        Ok(frame) => Ok(frame),
        Err(RecvError::TimedOut(_)) => Err(ClientError::Timeout(format!(
            "no answer from the server within {CONNECT_TIMEOUT:?}"
        ))),
        Err(RecvError::Closed) => Err(ClientError::Closed("during the handshake")),
        // A server that refuses us before any frame says why in one line.
        Err(RecvError::Decode(_)) if conn.unread().starts_with(b"WIRESH-ERROR") => {
            let line = String::from_utf8_lossy(conn.unread());
            Err(ClientError::Protocol(format!(
                "the server refused the connection: {}",
                line.lines().next().unwrap_or_default()
            )))
        }
        Err(RecvError::Decode(_)) if conn.unread().starts_with(b"HTTP/") => {
            Err(ClientError::Protocol(
                "this is not a wiresh server (it looks like HTTP: it answered with an HTTP \
                 status line); check the port"
                    .into(),
            ))
        }
        Err(RecvError::Decode(e)) => Err(ClientError::Protocol(format!(
            "{e}; is this a wiresh server? (for a legacy server use --legacy)"
        ))),
    }
}

/// Sends local input to the server as `stdin` frames of at most `piece`
/// bytes, then `stdin_end`, never with more unacknowledged bytes in flight
/// than the server's window (`credits`).
async fn forward_stdin(
    mut rx: mpsc::Receiver<Bytes>,
    data: FrameSender,
    credits: Arc<Semaphore>,
    piece: usize,
) {
    while let Some(mut chunk) = rx.recv().await {
        while !chunk.is_empty() {
            let part = chunk.split_to(piece.min(chunk.len()));
            match credits.acquire_many(part.len() as u32).await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            }
            if data
                .send(Frame::with_body(Message::Stdin, part))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = data.send(Frame::new(Message::StdinEnd)).await;
}
