//! One authenticated client connection, as the request handlers see it:
//! the frame connection, who the peer is, the server's settings and shared
//! state, and the shutdown signal. After mini-redis's `Handler`, it holds
//! the connection rather than its parts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wiresh_proto::{ErrorCode, Frame, Message};

use super::audit;
use super::config::ServerConfig;
use super::refusal::Refusal;
use super::throttle::AuthThrottle;
use crate::conn::{FrameConn, RecvError};
use crate::listener::End;

/// What all connections of a server share while it runs.
#[derive(Debug)]
pub(super) struct Shared {
    /// Recent authentication failures per address.
    pub throttle: AuthThrottle,
    /// Slots for running commands (`max_commands`).
    commands: Arc<Semaphore>,
}

impl Shared {
    pub fn new(config: &ServerConfig) -> Shared {
        Shared {
            throttle: AuthThrottle::default(),
            commands: Arc::new(Semaphore::new(config.max_commands)),
        }
    }
}

/// What [`Session::audit`] records about one action.
pub(super) struct AuditEntry<'a> {
    pub action: &'a str,
    pub target: &'a str,
    /// Whether the command ran on a pty.
    pub pty: bool,
    pub outcome: &'a str,
    pub status: Option<&'a wiresh_proto::ExitStatus>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// An authenticated connection and everything its handlers need.
pub(super) struct Session {
    /// The frames to and from the client.
    pub conn: FrameConn,
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's settings.
    pub config: Arc<ServerConfig>,
    /// What all connections share.
    pub shared: Arc<Shared>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Who authenticated, for the audit log (a key id, never the token).
    pub identity: String,
    /// Commands run on this connection so far.
    pub commands: u64,
}

impl Session {
    /// A session for a connection that has just authenticated as `identity`.
    pub fn new(
        conn: FrameConn,
        peer: SocketAddr,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        identity: String,
    ) -> Session {
        Session {
            conn,
            peer,
            config,
            shared,
            shutdown,
            identity,
            commands: 0,
        }
    }

    /// A slot for one more running command, held until it ends.
    pub fn command_slot(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.shared
            .commands
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy(self.config.max_commands))
    }

    /// Queues a frame behind the output already queued; a connection whose
    /// writer is gone ends here.
    pub async fn send(&self, frame: Frame) -> Result<(), End> {
        self.conn
            .send(frame)
            .await
            .map_err(|_| End::Error("connection lost".into()))
    }

    /// Tells the client its request was refused; the connection goes on.
    pub async fn refuse(&self, what: &str, refusal: Refusal) -> Result<(), End> {
        info!(peer = %self.peer, "{what} refused: {}: {refusal}", refusal.code());
        self.send(refusal.frame()).await
    }

    /// Sends an error to the peer and returns the end reason for the log.
    ///
    /// The error goes through the ordered data queue, behind any output
    /// still queued, so it never overtakes a command's `exit`. A peer that
    /// stopped reading gets a bounded wait, not a hung session.
    pub async fn fail(&self, code: ErrorCode, message: impl Into<String>) -> End {
        let message = message.into();
        let frame = Frame::new(Message::error(code, message.clone()));
        let _ = time::timeout(Duration::from_secs(5), self.conn.send(frame)).await;
        match code {
            ErrorCode::ShuttingDown => End::Shutdown,
            _ => End::Error(format!("{code}: {message}")),
        }
    }

    /// Ends the connection after a failed read: a framing error is reported
    /// to the peer (the stream has no trustworthy boundary after it); a
    /// timeout says what was awaited (`waiting_for`).
    pub async fn fail_recv(&self, err: RecvError, waiting_for: &str) -> End {
        if err.is_peer_gone() {
            return End::ClientClosed;
        }
        match err {
            RecvError::TimedOut(limit) => {
                self.fail(
                    ErrorCode::Timeout,
                    format!("nothing received for {limit:?} {waiting_for}"),
                )
                .await
            }
            RecvError::Decode(wiresh_proto::DecodeError::Io(e)) => {
                End::Error(format!("read failed: {e}"))
            }
            RecvError::Decode(e) => self.fail(e.code(), e.to_string()).await,
            RecvError::Closed => End::ClientClosed,
        }
    }

    /// Rejects a message that is valid but not allowed now.
    pub async fn unexpected(&self, message: &Message, when: &str) -> End {
        self.fail(
            ErrorCode::UnexpectedMessage,
            format!("`{}` is not allowed {when}", message.type_name()),
        )
        .await
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
            pty: entry.pty,
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
    pub fn audit_refusal(&self) -> Option<Refusal> {
        self.config
            .audit
            .as_ref()
            .filter(|log| log.is_broken())
            .map(|_| Refusal::AuditBroken)
    }
}
