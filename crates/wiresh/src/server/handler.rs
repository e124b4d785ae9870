//! One client connection, from its first byte to its log line.
//!
//! States: TLS or plaintext (told apart by the first byte) → preamble →
//! `hello` → `auth` → any number of requests, one after another, each
//! handed to [`super::command`] or [`super::files`]. Any protocol violation
//! ends this connection (with an `error` frame saying why) and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wiresh_proto::{
    ErrorCode, Frame, FrameCodec, Hello, Limits, Message, Preamble, PreambleError, PREAMBLE_LEN,
    PROTOCOL_VERSION,
};

use super::config::ServerConfig;
use super::session::{Session, Shared};
use super::throttle::FAILURE_DELAY;
use super::{command, files};
use crate::auth::{token_id, token_matches};
use crate::conn::{FrameConn, RecvError};
use crate::listener::{ConnLog, End};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a closing connection's last frames may take to leave.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Serves one connection to its end and logs one line about it.
///
/// The first byte tells TLS (a handshake record) from the plaintext
/// preamble; plaintext is served only when allowed, and only to a peer on
/// loopback.
pub(super) async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
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
    let accepted = Accepted {
        peer,
        config: config.clone(),
        shared,
        shutdown,
    };
    match (&config.tls, first[0]) {
        (Some(tls), TLS_HANDSHAKE) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            match time::timeout(limit, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => accepted.serve(stream).await,
                Ok(Err(e)) => info!(%peer, "TLS handshake failed: {e}"),
                Err(_) => info!(%peer, "TLS handshake not completed within {limit:?}"),
            }
        }
        (None, _) => accepted.serve(socket).await,
        (Some(_), _) if config.allow_plaintext && peer.ip().to_canonical().is_loopback() => {
            accepted.serve(socket).await
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

/// A connection accepted, before it has proved anything.
struct Accepted {
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Accepted {
    /// Serves one connection, over TLS or not, from the preamble on.
    async fn serve<S>(self, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let log = ConnLog::new("connection", self.peer);
        let preamble = match check_preamble(&mut stream, self.config.handshake_timeout).await {
            Ok(p) => p,
            Err(reason) => {
                info!(peer = %self.peer, "connection refused: {reason}");
                return;
            }
        };
        // Until the peer authenticates it may send one small frame only.
        let conn = FrameConn::new(
            stream,
            Limits::PRE_AUTH,
            FrameCodec::new(self.config.limits),
        );
        let mut session = Session::new(
            conn,
            self.peer,
            self.config,
            self.shared,
            self.shutdown,
            String::new(),
        );
        let end = run(&mut session, preamble).await;
        let commands = session.commands;
        // Let the writer deliver what is queued (such as a final error) and
        // close; a peer that reads nothing more is cut off.
        session.conn.close(CLOSE_WITHIN).await;
        log.ended(&end, commands);
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

async fn run(session: &mut Session, preamble: Preamble) -> End {
    // The version check comes after the magic check, so the peer is known
    // to speak frames and can read an error frame.
    if preamble.version != PROTOCOL_VERSION {
        let message = format!(
            "client speaks protocol version {}; this server supports version {PROTOCOL_VERSION} only",
            preamble.version
        );
        return session.fail(ErrorCode::UnsupportedVersion, message).await;
    }
    if let Err(end) = greet(session).await {
        return end;
    }
    if let Err(end) = authenticate(session).await {
        return end;
    }
    serve_requests(session).await
}

async fn greet(session: &Session) -> Result<(), End> {
    let config = &session.config;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        server: concat!("wiresh/", env!("CARGO_PKG_VERSION")).to_string(),
        features: config.features(),
        keepalive_secs: config.keepalive.as_secs() as u32,
        max_body: config.limits.max_body as u32,
        max_header: config.limits.max_header as u32,
        stdin_window: config.stdin_window as u32,
    };
    session
        .conn
        .send_control(Frame::new(Message::Hello(hello)))
        .await
        .map_err(|_| End::Error("connection lost before hello".into()))
}

async fn authenticate(session: &mut Session) -> Result<(), End> {
    let peer = session.peer.ip();
    if let Err(wait) = session.shared.throttle.check(peer) {
        let message = format!(
            "too many failed authentications from {peer}; try again in {} s",
            wait.as_secs() + 1
        );
        return Err(session.fail(ErrorCode::RateLimited, message).await);
    }
    let limit = session.config.handshake_timeout;
    let frame = match session.conn.recv_within(limit).await {
        Ok(frame) => frame,
        Err(RecvError::TimedOut(_)) => {
            let message = format!("no authentication within {limit:?}");
            return Err(session.fail(ErrorCode::Timeout, message).await);
        }
        Err(e) if e.is_peer_gone() => {
            return Err(End::Error("client left before authenticating".into()))
        }
        Err(e) => return Err(session.fail_recv(e, "before authentication").await),
    };
    match frame.message {
        Message::Auth { token } if token_matches(&session.config.token, &token) => {
            session.conn.set_read_limits(session.config.limits);
            session.identity = token_id(&token);
            session
                .conn
                .send_control(Frame::new(Message::AuthOk))
                .await
                .map_err(|_| End::Error("connection lost during authentication".into()))
        }
        Message::Auth { .. } => {
            // Logged without the token, by construction: Secret's Debug is redacted.
            session.shared.throttle.failed(peer);
            time::sleep(FAILURE_DELAY).await;
            Err(session
                .fail(
                    ErrorCode::AuthFailed,
                    "authentication failed: wrong token (check --token-file or WIRESH_TOKEN)",
                )
                .await)
        }
        other => Err(session
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

async fn serve_requests(session: &mut Session) -> End {
    let idle = session.config.idle_timeout;
    let mut idle_deadline = time::Instant::now() + idle;
    // A peer that starts a frame must finish it within the frame timeout
    // (slowloris); checked on a tick, as the codec buffers silently.
    let frame_timeout = session.config.frame_timeout;
    let mut tick = time::interval(frame_timeout / 4);
    let mut partial_since: Option<time::Instant> = None;
    loop {
        let next = tokio::select! {
            next = session.conn.recv_until(idle_deadline) => next,
            _ = tick.tick() => {
                if !session.conn.mid_frame() {
                    partial_since = None;
                } else if partial_since.get_or_insert_with(time::Instant::now).elapsed() > frame_timeout {
                    let message = format!("a frame was started but not completed within {frame_timeout:?}");
                    return session.fail(ErrorCode::Timeout, message).await;
                }
                continue;
            }
            () = session.shutdown.cancelled() => {
                return session.fail(ErrorCode::ShuttingDown, "server is shutting down").await;
            }
        };
        partial_since = None;
        idle_deadline = time::Instant::now() + idle;
        let frame = match next {
            Ok(frame) => frame,
            Err(RecvError::TimedOut(_)) => {
                let message = format!("idle for {idle:?}; closing the connection");
                session.fail(ErrorCode::Timeout, message).await;
                return End::Idle(idle);
            }
            Err(e) => return session.fail_recv(e, "between commands").await,
        };
        let handled = match frame.message {
            Message::Exec(req) => {
                session.commands += 1;
                command::run(session, req).await
            }
            Message::Stat { .. }
            | Message::List { .. }
            | Message::Mkdir { .. }
            | Message::Put(_)
            | Message::Get { .. } => files::handle(session, frame.message).await,
            Message::Ping => {
                session.conn.pong(frame.body);
                Ok(())
            }
            // Late input or a cancel that crossed the command's exit on
            // the wire: harmless, and documented as ignored.
            Message::Stdin
            | Message::StdinEnd
            | Message::Cancel
            | Message::Resize(_)
            | Message::Pong => Ok(()),
            other => Err(session.unexpected(&other, "between commands").await),
        };
        if let Err(end) = handled {
            return end;
        }
    }
}
