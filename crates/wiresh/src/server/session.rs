//! One client connection, from preamble to close.
//!
//! States: preamble → `hello` → `auth` → any number of commands, one after
//! another. Any protocol violation ends this connection (with an `error`
//! frame saying why) and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time;
use tokio_util::codec::FramedRead;
use tracing::{info, warn};
use wiresh_proto::{
    DecodeError, ErrorCode, Frame, FrameCodec, Hello, Limits, Message, Preamble, PreambleError,
    PREAMBLE_LEN, PROTOCOL_VERSION,
};

use super::audit;
use super::throttle::FAILURE_DELAY;
use super::{command, files, ServerConfig, State};
use crate::auth::token_matches;
use crate::outbox::{split, BoxRead, Outbox};
use crate::shutdown::Shutdown;
use crate::task::AbortOnDrop;

/// What [`Session::audit`] records about one action.
pub(super) struct AuditEntry<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub status: Option<&'a wiresh_proto::ExitStatus>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Why a connection ended, for the log line.
#[derive(Debug)]
pub(super) enum End {
    /// The client closed the connection cleanly between commands.
    ClientClosed,
    /// The connection was ended by the server with an error sent to the peer
    /// (or by the peer vanishing); the text says why.
    Error(String),
}

/// The state of one authenticated connection.
pub(super) struct Session {
    pub peer: SocketAddr,
    pub config: Arc<ServerConfig>,
    pub reader: FramedRead<BoxRead, FrameCodec>,
    pub outbox: Outbox,
    pub shutdown: Shutdown,
    pub commands: u64,
    pub state: Arc<State>,
    /// Who authenticated, for the audit log: a key id derived from the
    /// token (never the token itself).
    pub identity: String,
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves one connection to its end and logs one line about it.
///
/// The first byte tells TLS (a handshake record) from the plaintext
/// preamble; plaintext is served only when allowed, and only to a peer on
/// loopback.
pub(super) async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    state: Arc<State>,
    shutdown: Shutdown,
) {
    let limit = config.handshake_timeout;
    let mut first = [0u8; 1];
    match time::timeout(limit, socket.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => {
            info!(%peer, "connection closed before sending anything");
            return;
        }
    }
    match (&config.tls, first[0]) {
        (Some(tls), TLS_HANDSHAKE) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            match time::timeout(limit, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => serve_stream(stream, peer, config, state, shutdown).await,
                Ok(Err(e)) => info!(%peer, "TLS handshake failed: {e}"),
                Err(_) => info!(%peer, "TLS handshake not completed within {limit:?}"),
            }
        }
        (None, _) => serve_stream(socket, peer, config, state, shutdown).await,
        (Some(_), _) if config.allow_plaintext && peer.ip().to_canonical().is_loopback() => {
            serve_stream(socket, peer, config, state, shutdown).await
        }
        (Some(_), _) => {
            let line = "WIRESH-ERROR tls_required: this server accepts only TLS connections \
                        (the wiresh client uses TLS by default; plaintext is possible only on \
                        loopback, with `serve --allow-plaintext` and `--plaintext`)\n";
            let _ = time::timeout(Duration::from_secs(2), socket.write_all(line.as_bytes())).await;
            let _ = socket.shutdown().await;
            info!(%peer, "plaintext connection refused: TLS required");
        }
    }
}

/// Serves one connection, over TLS or not, from the preamble on.
async fn serve_stream<S>(
    mut stream: S,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    state: Arc<State>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    let opened = Instant::now();
    let preamble = match check_preamble(&mut stream, config.handshake_timeout).await {
        Ok(p) => p,
        Err(reason) => {
            info!(%peer, "connection refused: {reason}");
            return;
        }
    };
    let (read, write) = split(stream);
    let (outbox, writer) = Outbox::spawn(write, FrameCodec::new(config.limits));
    let mut writer = AbortOnDrop(writer);
    let mut session = Session {
        peer,
        // Until the peer authenticates it may send one small frame only.
        reader: FramedRead::new(read, FrameCodec::new(Limits::PRE_AUTH)),
        outbox,
        shutdown,
        commands: 0,
        identity: String::new(),
        config,
        state,
    };
    let end = session.run(preamble).await;
    let commands = session.commands;
    // Let the writer deliver what is queued (such as a final error) and close.
    drop(session);
    // A peer that reads nothing more gets 5 s, then the socket is closed
    // (aborting the writer drops it).
    let _ = time::timeout(Duration::from_secs(5), &mut writer.0).await;
    drop(writer);
    let elapsed = opened.elapsed();
    match end {
        End::ClientClosed => {
            info!(%peer, commands, duration_ms = elapsed.as_millis() as u64, "connection closed")
        }
        End::Error(reason) => {
            warn!(%peer, commands, duration_ms = elapsed.as_millis() as u64, "connection ended: {reason}")
        }
    }
}

/// Reads and checks the 8-byte preamble. A peer with the wrong magic gets a
/// plain-text line, readable by whatever it is (curl, netcat, a browser).
async fn check_preamble<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    limit: Duration,
) -> Result<Preamble, String> {
    let mut raw = [0u8; PREAMBLE_LEN];
    match time::timeout(limit, socket.read_exact(&mut raw)).await {
        Err(_) => return Err(format!("no preamble within {limit:?}")),
        Ok(Err(e)) => return Err(format!("connection lost before the preamble: {e}")),
        Ok(Ok(_)) => {}
    }
    match Preamble::decode(&raw) {
        Ok(p) => Ok(p),
        Err(err @ PreambleError::BadMagic { .. }) => {
            let line = format!(
                "WIRESH-ERROR bad_preamble: this is a wiresh server (protocol {PROTOCOL_VERSION}); \
                 {err}; use the wiresh client\n"
            );
            let _ = time::timeout(Duration::from_secs(2), socket.write_all(line.as_bytes())).await;
            let _ = socket.shutdown().await;
            Err(err.to_string())
        }
    }
}

impl Session {
    async fn run(&mut self, preamble: Preamble) -> End {
        // The version check comes after the magic check, so the peer is known
        // to speak frames and can read an error frame.
        if preamble.version != PROTOCOL_VERSION {
            let message = format!(
                "client speaks protocol version {}; this server supports version {PROTOCOL_VERSION} only",
                preamble.version
            );
            return self.fail(ErrorCode::UnsupportedVersion, message).await;
        }
        if let Err(end) = self.greet().await {
            return end;
        }
        if let Err(end) = self.authenticate().await {
            return end;
        }
        self.serve_commands().await
    }

    async fn greet(&mut self) -> Result<(), End> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            server: concat!("wiresh/", env!("CARGO_PKG_VERSION")).to_string(),
            features: vec![
                "exec".into(),
                "stdin".into(),
                "cancel".into(),
                "ping".into(),
            ],
            keepalive_secs: self.config.keepalive.as_secs() as u32,
            max_body: self.config.limits.max_body as u32,
            max_header: self.config.limits.max_header as u32,
            stdin_window: self.config.stdin_window as u32,
        };
        if self
            .outbox
            .send_control(Frame::new(Message::Hello(hello)))
            .await
        {
            Ok(())
        } else {
            Err(End::Error("connection lost before hello".into()))
        }
    }

    async fn authenticate(&mut self) -> Result<(), End> {
        if let Err(wait) = self.state.throttle.check(self.peer.ip()) {
            let message = format!(
                "too many failed authentications from {}; try again in {} s",
                self.peer.ip(),
                wait.as_secs() + 1
            );
            return Err(self.fail(ErrorCode::RateLimited, message).await);
        }
        let limit = self.config.handshake_timeout;
        let frame = match time::timeout(limit, self.reader.next()).await {
            Err(_) => {
                return Err(self
                    .fail(
                        ErrorCode::Timeout,
                        format!("no authentication within {limit:?}"),
                    )
                    .await)
            }
            Ok(None) => return Err(End::Error("client left before authenticating".into())),
            Ok(Some(Err(e))) => return Err(self.fail_decode(e).await),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.message {
            Message::Auth { token } if token_matches(&self.config.token, &token) => {
                self.reader.decoder_mut().set_limits(self.config.limits);
                let key_id = blake3::hash(token.expose().as_bytes()).to_hex();
                self.identity = format!("token:{}", &key_id[..16]);
                if self.outbox.send_control(Frame::new(Message::AuthOk)).await {
                    Ok(())
                } else {
                    Err(End::Error("connection lost during authentication".into()))
                }
            }
            Message::Auth { .. } => {
                // Logged without the token, by construction: Secret's Debug is redacted.
                self.state.throttle.failed(self.peer.ip());
                time::sleep(FAILURE_DELAY).await;
                Err(self
                    .fail(
                        ErrorCode::AuthFailed,
                        "authentication failed: wrong token (check --token-file or WIRESH_TOKEN)",
                    )
                    .await)
            }
            other => Err(self
                .fail(
                    ErrorCode::AuthRequired,
                    format!(
                        "the first frame must be `auth`, not `{}`",
                        other.type_name()
                    ),
                )
                .await),
        }
    }

    async fn serve_commands(&mut self) -> End {
        let idle = self.config.idle_timeout;
        let mut idle_deadline = time::Instant::now() + idle;
        // A peer that starts a frame must finish it within the frame timeout
        // (slowloris); checked on a tick, as the codec buffers silently.
        let frame_timeout = self.config.frame_timeout;
        let mut tick = time::interval(frame_timeout / 4);
        let mut partial_since: Option<time::Instant> = None;
        loop {
            let next = tokio::select! {
                next = time::timeout_at(idle_deadline, self.reader.next()) => next,
                _ = tick.tick() => {
                    if self.reader.read_buffer().is_empty() && !self.reader.decoder().in_body() {
                        partial_since = None;
                    } else if partial_since.get_or_insert_with(time::Instant::now).elapsed() > frame_timeout {
                        let message = format!("a frame was started but not completed within {frame_timeout:?}");
                        return self.fail(ErrorCode::Timeout, message).await;
                    }
                    continue;
                }
                _ = self.shutdown.recv() => {
                    return self.fail(ErrorCode::ShuttingDown, "server is shutting down").await;
                }
            };
            partial_since = None;
            idle_deadline = time::Instant::now() + idle;
            let frame = match next {
                Err(_) => {
                    return self
                        .fail(
                            ErrorCode::Timeout,
                            format!("idle for {idle:?}; closing the connection"),
                        )
                        .await
                }
                Ok(None) => return End::ClientClosed,
                Ok(Some(Err(e))) => return self.fail_decode(e).await,
                Ok(Some(Ok(frame))) => frame,
            };
            match frame.message {
                Message::Exec(req) => {
                    self.commands += 1;
                    if let Err(end) = command::run(self, req).await {
                        return end;
                    }
                }
                Message::Stat { .. }
                | Message::List { .. }
                | Message::Mkdir { .. }
                | Message::Put(_)
                | Message::Get { .. } => {
                    if let Err(end) = files::handle(self, frame.message).await {
                        return end;
                    }
                }
                Message::Ping => self.outbox.pong(frame.body),
                // Late input or a cancel that crossed the command's exit on
                // the wire: harmless, and documented as ignored.
                Message::Stdin | Message::StdinEnd | Message::Cancel | Message::Pong => {}
                other => return self.unexpected(&other, "between commands").await,
            }
        }
    }

    /// Queues a frame behind the output already queued; a connection whose
    /// writer is gone ends here.
    pub async fn send(&self, frame: Frame) -> Result<(), End> {
        self.outbox
            .data
            .send(frame)
            .await
            .map_err(|_| End::Error("connection lost".into()))
    }

    /// Sends an error to the peer and returns the end reason for the log.
    ///
    /// The error goes through the ordered data queue, behind any output
    /// still queued, so it never overtakes a command's `exit`. A peer that
    /// stopped reading gets a bounded wait, not a hung session.
    pub async fn fail(&mut self, code: ErrorCode, message: impl Into<String>) -> End {
        let message = message.into();
        let frame = Frame::new(Message::error(code, message.clone()));
        let _ = time::timeout(Duration::from_secs(5), self.outbox.data.send(frame)).await;
        End::Error(format!("{code}: {message}"))
    }

    /// Reports a framing error to the peer; the stream has no trustworthy
    /// boundary after it, so the connection ends.
    pub async fn fail_decode(&mut self, err: DecodeError) -> End {
        if let DecodeError::Io(e) = &err {
            // A TLS client that exits without close_notify has still simply
            // gone away; it cannot have lost anything it was waiting for.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return End::ClientClosed;
            }
            return End::Error(format!("read failed: {e}"));
        }
        self.fail(err.code(), err.to_string()).await
    }

    /// Appends one line to the audit log, if there is one.
    pub fn audit(&self, entry: AuditEntry<'_>) {
        let Some(log) = &self.config.audit else {
            return;
        };
        log.record(&audit::Record {
            time: audit::rfc3339(std::time::SystemTime::now()),
            peer: self.peer.to_string(),
            identity: &self.identity,
            action: entry.action,
            target: entry.target,
            code: entry.status.and_then(|s| s.code),
            signal: entry.status.and_then(|s| s.signal),
            timed_out: entry.status.is_some_and(|s| s.timed_out),
            outcome: entry.outcome,
            duration_ms: entry.duration.as_millis() as u64,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
        });
    }

    /// Refuses new activity once the audit log cannot be written.
    pub fn audit_refusal(&self) -> Option<String> {
        self.config
            .audit
            .as_ref()
            .filter(|log| log.is_broken())
            .map(|_| {
                "the server cannot write its audit log, so it runs nothing; tell its operator"
                    .into()
            })
    }

    /// Rejects a message that is valid but not allowed now.
    pub async fn unexpected(&mut self, message: &Message, when: &str) -> End {
        self.fail(
            ErrorCode::UnexpectedMessage,
            format!("`{}` is not allowed {when}", message.type_name()),
        )
        .await
    }
}
