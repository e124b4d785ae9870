//! One client connection, from its first byte to its log line.
//!
//! States: admitted (a place among the connections authenticating, see
//! `admission`) → TLS or plaintext (told apart by the first byte) →
//! preamble → `hello` → `auth` (then a place among the authenticated
//! connections) → any number of requests, one after another, each handed to
//! [`super::command`] or [`super::files`]. Everything before `auth` shares
//! one deadline (`handshake_timeout`). Any protocol violation ends this
//! connection (with an `error` frame saying why) and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use wiresh_proto::{
    ErrorCode, Frame, FrameCodec, Hello, Limits, Message, Preamble, PreambleError, Secret,
    PREAMBLE_LEN, PROTOCOL_VERSION,
};

use super::admission::{Cut, Entry, StartupPermit};
use super::clients::{self, AuthMode, AuthorizedClient};
use super::config::ServerConfig;
use super::logins;
use super::session::{Place, Session, Shared};
use super::{command, files};
use crate::auth::{token_id, token_matches};
use crate::cert::fingerprint;
use crate::conn::{FrameConn, RecvError};
use crate::defaults::{
    self, AUTH_FAILURE_DELAY, CLOSE_DRAIN, CLOSE_WITHIN, ERROR_LINE_WITHIN, REFUSAL_TLS_PEEK,
    REFUSAL_WITHIN,
};
use crate::listener::{ConnLog, During, End};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves one connection to its end and logs one line about it.
///
/// It first needs a place among the connections authenticating (`entry`:
/// taken at accept, or still to wait for); then the first byte tells TLS (a
/// handshake record) from the plaintext preamble; plaintext is served only
/// when allowed, and only to a peer on loopback.
pub(super) async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    entry: Entry,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let deadline = time::Instant::now() + config.handshake_timeout;
    // (Readiness alone may be spurious: a byte to peek at is not.)
    let speaks = async {
        let _ = socket.peek(&mut [0u8; 1]).await;
    };
    let room = shared.waiting_room();
    let startup = match entry.place(defaults::ADMISSION_WAIT, room, speaks).await {
        Ok(permit) => permit,
        Err(why) => {
            info!(%peer, "connection refused: {why}");
            return refuse(socket, why.to_string(), shared, config.tls.clone()).await;
        }
    };
    let mut first = [0u8; 1];
    match startup.within(deadline, socket.peek(&mut first)).await {
        Ok(Ok(1)) => startup.spoke(),
        Ok(_) => return info!(%peer, "connection closed before sending anything"),
        Err(cut) => return log_cut(peer, cut, "before sending anything"),
    }
    let accepted = Accepted {
        peer,
        config: config.clone(),
        shared,
        shutdown,
        startup,
        deadline,
        client_key: None,
    };
    match (&config.tls, first[0]) {
        (Some(tls), TLS_HANDSHAKE) => accepted.serve_tls(socket, tls.clone()).await,
        (None, _) => accepted.serve(socket).await,
        (Some(_), _) if config.allow_plaintext && peer.ip().to_canonical().is_loopback() => {
            accepted.serve(socket).await
        }
        (Some(_), _) => {
            let line = "WIRESH-ERROR tls_required: this server accepts only TLS connections \
                        (the wiresh client uses TLS by default; plaintext is possible only on \
                        loopback, with `serve --allow-plaintext` and `--plaintext`)\n";
            let _ = time::timeout(ERROR_LINE_WITHIN, socket.write_all(line.as_bytes())).await;
            let _ = socket.shutdown().await;
            info!(%peer, "plaintext connection refused: TLS required");
        }
    }
}

/// Logs why a connection still authenticating was cut off `when`.
fn log_cut(peer: SocketAddr, cut: Cut, when: &str) {
    match cut {
        Cut::TimedOut => info!(%peer, "connection closed: the handshake deadline passed {when}"),
        // A flood makes these by the thousand; admission logs a summary.
        Cut::Evicted => debug!(
            %peer,
            "connection dropped {when}: its network held the most connections authenticating, \
             and a newcomer from another needed the place"
        ),
    }
}

/// ACKs the client's last handshake record (its TLS `Finished`) at once.
///
/// The server writes nothing after the handshake until the preamble has
/// come (it sends no session tickets), so the kernel would delay that ACK
/// by up to 40 ms; a client that has not disabled Nagle's algorithm (most
/// do not: Python's `ssl`, say) holds its preamble back until the ACK
/// comes, and every login paid the 40 ms. `TCP_QUICKACK` sends the pending
/// ACK now. Failure costs only that latency, so it is ignored.
fn acknowledge_now(socket: &TcpStream) {
    let _ = rustix::net::sockopt::set_tcp_quickack(socket, true);
}

/// Tells a peer it is turned away, and why, with a `too_many_connections`
/// error frame: inside TLS when the peer opens with a TLS handshake (so a
/// TLS client can read it), in the clear otherwise (as before a preamble).
/// TLS answers cost a handshake each, so only so many run at once; past
/// that a TLS peer's connection is closed with a FIN, never a reset in the
/// middle of its handshake (the client then says the server may be busy).
pub(super) async fn refuse(
    mut socket: TcpStream,
    why: String,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let Ok(_telling) = shared.refusing.clone().try_acquire_owned() else {
        // A flood: closing is all it gets, but with a FIN. Closing with
        // unread bytes would send a reset, so what has arrived is read.
        let mut sink = [0u8; 4096];
        while matches!(socket.try_read(&mut sink), Ok(n) if n > 0) {}
        return;
    };
    let frame = Frame::new(Message::error(ErrorCode::TooManyConnections, why));
    let Ok(bytes) = wiresh_proto::codec::encode_frame(&frame) else {
        return;
    };
    // A TLS client speaks first at once; a silent peer gets the frame in
    // the clear, as before any preamble.
    let mut first = [0u8; 1];
    let peeked = time::timeout(REFUSAL_TLS_PEEK, socket.peek(&mut first)).await;
    let is_tls = matches!(peeked, Ok(Ok(1)) if first[0] == TLS_HANDSHAKE);
    let answer = async {
        match &tls {
            Some(config) if is_tls => {
                let Ok(_answering) = shared.refusals.clone().try_acquire_owned() else {
                    return close_quietly(socket).await;
                };
                let mut stream = tokio_rustls::TlsAcceptor::from(config.clone())
                    .accept(socket)
                    .await?;
                stream.write_all(&bytes).await?;
                stream.shutdown().await
            }
            _ => {
                socket.write_all(&bytes).await?;
                close_quietly(socket).await
            }
        }
    };
    let _ = time::timeout(REFUSAL_WITHIN, answer).await;
}

/// Closes a connection with a FIN: what the peer still sends is read and
/// dropped for a moment, since closing with unread data sends a reset.
async fn close_quietly(mut socket: TcpStream) -> std::io::Result<()> {
    socket.shutdown().await?;
    let mut sink = [0u8; 4096];
    let _ = time::timeout(CLOSE_DRAIN, async {
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

/// A connection accepted, before it has proved anything.
struct Accepted {
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    startup: StartupPermit,
    /// When the handshake must be over.
    deadline: time::Instant,
    /// The fingerprint of the client's TLS certificate, if it sent one.
    client_key: Option<String>,
}

impl Accepted {
    /// Serves a connection that opened with a TLS handshake.
    async fn serve_tls(mut self, socket: TcpStream, tls: Arc<rustls::ServerConfig>) {
        let peer = self.peer;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let stream = match self
            .startup
            .within(self.deadline, acceptor.accept(socket))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return info!(%peer, "TLS handshake failed: {e}"),
            Err(cut) => return log_cut(peer, cut, "during the TLS handshake"),
        };
        acknowledge_now(stream.get_ref().0);
        // TLS checked that the client holds this certificate's key.
        self.client_key = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| fingerprint(cert));
        let config = &self.config;
        let authorized = |fp: &String| config.auth.uses_keys() && config.clients.get(fp).is_some();
        if self.client_key.as_ref().is_some_and(authorized) {
            // A known client, not a stranger: no per-address cap, no share.
            self.startup.proven();
        }
        self.serve(stream).await
    }

    /// Serves one connection, over TLS or not, from the preamble on.
    async fn serve<S>(self, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let log = ConnLog::new("connection", self.peer);
        let preamble = match check_preamble(&mut stream, &self.startup, self.deadline).await {
            Ok(p) => p,
            Err(NoPreamble::Cut(cut)) => return log_cut(self.peer, cut, "before the preamble"),
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
            self.startup,
        );
        let end = run(
            &mut session,
            preamble,
            self.deadline,
            self.client_key.as_deref(),
        )
        .await;
        let commands = session.commands;
        // Let the writer deliver what is queued (such as a final error) and
        // close; a peer that reads nothing more is cut off.
        session.conn.close(CLOSE_WITHIN).await;
        log.ended(&end, commands);
    }
}

/// Why a connection got no further than its preamble.
#[derive(Debug, thiserror::Error)]
enum NoPreamble {
    /// None came in time, or the connection was dropped for a newcomer.
    #[error("no preamble: {0:?}")]
    Cut(Cut),
    /// The connection broke first.
    #[error("connection lost before the preamble: {0}")]
    Lost(std::io::Error),
    /// It is not a wiresh preamble.
    #[error(transparent)]
    Invalid(PreambleError),
}

/// Reads and checks the 8-byte preamble. A peer with the wrong magic gets a
/// plain-text line, readable by whatever it is (curl, netcat, a browser),
/// as soon as a byte differs: a legacy client's `true` is four bytes, and
/// it would wait for an answer as the server waited for four more.
async fn check_preamble<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    startup: &StartupPermit,
    deadline: time::Instant,
) -> Result<Preamble, NoPreamble> {
    let mut raw = [0u8; PREAMBLE_LEN];
    let read_start = async {
        let mut filled = 0;
        while filled < PREAMBLE_LEN {
            match socket.read(&mut raw[filled..]).await? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => filled += n,
            }
            if let Err(err) = Preamble::check_start(&raw[..filled]) {
                return Ok(Err(err));
            }
        }
        Ok(Preamble::decode(&raw))
    };
    let checked = match startup.within(deadline, read_start).await {
        Err(cut) => return Err(NoPreamble::Cut(cut)),
        Ok(Err(e)) => return Err(NoPreamble::Lost(e)),
        Ok(Ok(checked)) => checked,
    };
    match checked {
        Ok(p) => Ok(p),
        Err(err @ PreambleError::BadMagic { .. }) => {
            let line = format!(
                "WIRESH-ERROR bad_preamble: this is a wiresh server (protocol {PROTOCOL_VERSION}); \
                 {err}; use the wiresh client\n"
            );
            let _ = time::timeout(ERROR_LINE_WITHIN, socket.write_all(line.as_bytes())).await;
            let _ = socket.shutdown().await;
            Err(NoPreamble::Invalid(err))
        }
    }
}

async fn run(
    session: &mut Session,
    preamble: Preamble,
    deadline: time::Instant,
    client_key: Option<&str>,
) -> End {
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
    if let Err(end) = authenticate(session, deadline, client_key).await {
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
        .map_err(|_| End::lost(During::Hello))
}

async fn authenticate(
    session: &mut Session,
    deadline: time::Instant,
    client_key: Option<&str>,
) -> Result<(), End> {
    let peer = session.peer.ip();
    // The operator's exempt networks are not locked out by failures, at
    // the price of no penalty for guesses from them; nor is a client whose
    // authorized key already proved who it is (SECURITY.md).
    let exempt = session.config.exempt.iter().any(|net| net.contains(peer));
    // (In `both` mode the token still has to be right, so guesses of it
    // from a key holder are counted like anyone's.)
    let proven_by_key = matches!(session.config.auth, AuthMode::Either | AuthMode::Key)
        && client_key.is_some_and(|fp| session.config.clients.get(fp).is_some());
    let throttled = match exempt || proven_by_key {
        true => Ok(()),
        false => session.shared.throttle.check(peer),
    };
    if let Err(wait) = throttled {
        let message = format!(
            "too many failed authentications from {peer}; try again in {} s",
            wait.as_secs() + 1
        );
        return Err(session.fail(ErrorCode::RateLimited, message).await);
    }
    let frame = match receive_auth(session, deadline).await {
        Ok(frame) => frame,
        Err(Received::Cut(Cut::TimedOut)) => {
            let limit = session.config.handshake_timeout;
            let message = format!("no authentication within {limit:?}");
            return Err(session.fail(ErrorCode::Timeout, message).await);
        }
        Err(Received::Cut(Cut::Evicted)) => return Err(End::Evicted),
        Err(Received::Failed(e)) if e.is_peer_gone() => {
            return Err(End::disconnected(During::Auth))
        }
        Err(Received::Failed(e)) => {
            return Err(session.fail_recv(e, "before authentication").await)
        }
    };
    let token = match frame.message {
        Message::Auth { token } => token,
        other => {
            return Err(session
                .fail(
                    ErrorCode::AuthRequired,
                    format!(
                        "the first frame must be `auth`, not `{}`",
                        other.type_name()
                    ),
                )
                .await)
        }
    };
    let login = check_credentials(&session.config, client_key, &token);
    match login {
        Ok(Login::Key(ref client)) => {
            session.identity = client.name.clone();
            if let Some(own) = &client.policy {
                // This connection's snapshot, with the client's narrower rules.
                let mut config = ServerConfig::clone(&session.config);
                config.policy = clients::narrow(&config.policy, own);
                session.config = Arc::new(config);
            }
        }
        Ok(Login::Token) => session.identity = token_id(&token),
        Err(reason) => {
            // Logged without the token, by construction: Secret's Debug is redacted.
            if !exempt {
                session.shared.throttle.failed(peer);
            }
            time::sleep(AUTH_FAILURE_DELAY).await;
            let message = format!("authentication failed: {reason}");
            return Err(session.fail(ErrorCode::AuthFailed, message).await);
        }
    }
    let Some(place) = session.shared.connection_place() else {
        let max = session.config.max_connections;
        let message = format!("server is at its limit of {max} connections; try again later");
        return Err(session.fail(ErrorCode::TooManyConnections, message).await);
    };
    session.place = Place::Connection { _place: place };
    info!(peer = %session.peer, client = %session.identity, key = client_key.unwrap_or("-"), "authenticated");
    // What it rests on, so that a reload that takes it back closes this.
    session.logged_in(match (login, client_key) {
        (Ok(Login::Key(_)), Some(fp)) => {
            let both = session.config.auth == AuthMode::Both;
            logins::Login::by_key(fp, both.then_some(&token))
        }
        _ => logins::Login::by_token(&token),
    });
    session.conn.set_read_limits(session.config.limits);
    session
        .conn
        .send_control(Frame::new(Message::AuthOk))
        .await
        .map_err(|_| End::lost(During::Auth))
}

/// Why no `auth` frame came.
enum Received {
    Cut(Cut),
    Failed(RecvError),
}

/// The client's first frame, by the handshake deadline, unless the
/// connection is dropped for a newcomer first.
async fn receive_auth(session: &mut Session, deadline: time::Instant) -> Result<Frame, Received> {
    let Place::Startup { permit } = &session.place else {
        unreachable!("authentication comes before a connection's place")
    };
    match permit.within(deadline, session.conn.recv()).await {
        Err(cut) => Err(Received::Cut(cut)),
        Ok(None) => Err(Received::Failed(RecvError::Closed)),
        Ok(Some(Err(e))) => Err(Received::Failed(RecvError::Decode(e))),
        Ok(Some(Ok(frame))) => Ok(frame),
    }
}

/// Who a client proved to be.
enum Login {
    /// An authorized client key.
    Key(Arc<AuthorizedClient>),
    /// The shared token.
    Token,
}

/// Why a login is refused; each says what the client should do.
#[derive(Debug, thiserror::Error)]
enum Denied {
    /// A key the server does not list.
    #[error(
        "the client key {0} is not authorized on this server; give that fingerprint (`wiresh \
         keygen` printed it) to the server's operator, who adds it to authorized_clients and \
         reloads the server"
    )]
    UnknownKey(String),
    /// No key, where one is needed.
    #[error(
        "this server needs a client key: run `wiresh keygen`, give the fingerprint it prints to \
         the server's operator, and connect over TLS (not --plaintext)"
    )]
    NoKey,
    /// No token, where one is needed.
    #[error("no token was sent (pass --token-file or set WIRESH_TOKEN)")]
    NoToken,
    /// The wrong token.
    #[error("wrong token (check --token-file or WIRESH_TOKEN)")]
    WrongToken,
    /// A key problem, where both are needed.
    #[error("this server needs both a client key and the token; {0}")]
    KeyAndToken(Box<Denied>),
    /// A token problem, where both are needed and the key is good.
    #[error("this server needs the token as well as the client key; {0}")]
    TokenToo(Box<Denied>),
}

/// Decides a login from the client's key (the fingerprint of its TLS
/// certificate, if it sent one) and its token (empty if it sent none),
/// under the server's mode.
fn check_credentials(
    config: &ServerConfig,
    client_key: Option<&str>,
    token: &Secret,
) -> Result<Login, Denied> {
    let mode = config.auth;
    let key = client_key.and_then(|fp| config.clients.get(fp));
    // Compared in constant time, and only when one was sent.
    let token_ok = !token.is_empty() && token_matches(&config.token, token);
    let key_problem = || match client_key {
        Some(fp) => Denied::UnknownKey(fp.to_string()),
        None => Denied::NoKey,
    };
    let token_problem = || match token.is_empty() {
        true => Denied::NoToken,
        false => Denied::WrongToken,
    };
    match (mode, key, token_ok) {
        (AuthMode::Either | AuthMode::Key, Some(client), _) => Ok(Login::Key(client.clone())),
        (AuthMode::Both, Some(client), true) => Ok(Login::Key(client.clone())),
        (AuthMode::Either | AuthMode::Token, _, true) => Ok(Login::Token),
        (AuthMode::Either, None, false) if client_key.is_some() && token.is_empty() => {
            Err(key_problem())
        }
        (AuthMode::Either | AuthMode::Token, _, false) => Err(token_problem()),
        (AuthMode::Key, None, _) => Err(key_problem()),
        (AuthMode::Both, None, _) => Err(Denied::KeyAndToken(Box::new(key_problem()))),
        (AuthMode::Both, Some(_), false) => Err(Denied::TokenToo(Box::new(token_problem()))),
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
            () = session.shutdown.cancelled() => return session.fail_closing().await,
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
            Message::Ping => {
                session.conn.pong(frame.body);
                Ok(())
            }
            // Late input, a cancel or a signal that crossed the command's exit on
            // the wire: harmless, and documented as ignored.
            Message::Stdin
            | Message::StdinEnd
            | Message::Cancel
            | Message::Signal { .. }
            | Message::Resize(_)
            | Message::Pong => Ok(()),
            message => match files::Request::from_message(message) {
                Ok(request) => files::handle(session, request).await,
                Err(other) => Err(session.unexpected(&other, "between commands").await),
            },
        };
        if let Err(end) = handled {
            return end;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use std::time::Duration;

    use super::*;
    use crate::conn::tests::loopback_sockets;
    use crate::server::session::REFUSING_AT_ONCE;

    /// Past the refusals held open, a refused connection is closed at once;
    /// what it sent is read first, so that its peer sees a FIN, not a reset.
    #[tokio::test]
    async fn a_refusal_past_the_budget_closes_with_a_fin() {
        let config = ServerConfig::new(wiresh_proto::Secret("t".repeat(32)));
        let (_settings, current) = tokio::sync::watch::channel(Arc::new(config));
        let shared = Arc::new(Shared::new(current));
        let _budget_spent = shared
            .refusing
            .clone()
            .try_acquire_many_owned(REFUSING_AT_ONCE as u32)
            .unwrap();
        let (mut peer, refused) = loopback_sockets().await;
        peer.write_all(&[TLS_HANDSHAKE, 0x03, 0x01]).await.unwrap();
        refused.readable().await.unwrap();
        refuse(refused, "full".into(), shared, None).await;
        let mut buf = [0u8; 16];
        let read = time::timeout(Duration::from_secs(10), peer.read(&mut buf)).await;
        assert_eq!(read.expect("closed").expect("a FIN, not a reset"), 0);
    }
}
