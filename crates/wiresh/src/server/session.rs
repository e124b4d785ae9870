//! One authenticated client connection, as the request handlers see it:
//! the frame connection, who the peer is, the server's settings and shared
//! state, and the shutdown signal. After mini-redis's `Handler`, it holds
//! the connection rather than its parts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wiresh_proto::{ErrorCode, Frame, Message};

use super::admission::{Rules, StartupPermit, Startups};
use super::config::ServerConfig;
use super::connections::{ConnectionPlace, Connections};
use super::logins::{Login, Logins, Registration, Revocation};
use super::refusal::Refusal;
use super::throttle::AuthThrottle;
use crate::audit::{self, Record, Verb};
use crate::conn::{FrameConn, RecvError, SendError};
use crate::defaults::ERROR_QUEUE_WAIT;
use crate::exec::CommandSlots;
use crate::listener::{During, End};

/// What all connections of a server share while it runs.
#[derive(Debug)]
pub(super) struct Shared {
    /// Recent authentication failures per address.
    pub throttle: AuthThrottle,
    /// Connections still authenticating (`max_startups`).
    pub startups: Arc<Startups>,
    /// Places for authenticated connections (`max_connections`).
    connections: Arc<Connections>,
    /// Slots for running commands (`max_commands`), shared with the legacy
    /// listener.
    commands: CommandSlots,
    /// Refusals answered at once: telling a peer why costs a little (a TLS
    /// handshake), so a flood gets at most this many answers at a time.
    pub refusals: Arc<Semaphore>,
    /// Refused connections being told why (any protocol): past
    /// [`REFUSING_AT_ONCE`] a refused connection is simply closed, so that
    /// refusing cannot hold descriptors without bound.
    pub refusing: Arc<Semaphore>,
    /// When each directory (by device and inode) was last looked through
    /// for stale partial files.
    swept: Mutex<HashMap<(u64, u64), Instant>>,
    /// The logins of the open connections, for revocation at a reload.
    pub logins: Arc<Logins>,
}

/// Refusals answered at once (see [`Shared::refusals`]).
const REFUSALS_AT_ONCE: usize = 64;

/// Refused connections held open at once to be told why (see
/// [`Shared::refusing`]).
pub(super) const REFUSING_AT_ONCE: usize = 1024;

/// Most directories [`Shared::sweep_due`] remembers; past that it starts
/// over (a sweep more is harmless).
const SWEPT_DIRS: usize = 4096;

impl Shared {
    /// What the connections of a server share; `settings` holds the
    /// settings in force (the first, then each reload's). The limits are
    /// the first settings'.
    pub fn new(settings: tokio::sync::watch::Receiver<Arc<ServerConfig>>) -> Shared {
        let config = settings.borrow().clone();
        Shared {
            throttle: AuthThrottle::default(),
            startups: Startups::new(Rules {
                limits: config.max_startups,
                per_address: config.max_startups_per_address,
                netblock: config.source_netblock,
                exempt: config.exempt.clone(),
            }),
            connections: Connections::new(config.max_connections, config.release_memory),
            commands: config.commands.clone(),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            swept: Mutex::default(),
            logins: Logins::new(settings),
        }
    }

    /// Whether the directory `dir` is due to be looked through for stale
    /// partial files (not within `every`); if so, it counts as done now.
    pub fn sweep_due(&self, dir: (u64, u64), every: Duration) -> bool {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if swept
            .get(&dir)
            .is_some_and(|at| now.duration_since(*at) < every)
        {
            return false;
        }
        if swept.len() >= SWEPT_DIRS {
            swept.clear();
        }
        swept.insert(dir, now);
        true
    }

    /// How many connections may wait for a place of their address now.
    pub fn waiting_room(&self) -> usize {
        self.startups.waiting_room(self.connections.free())
    }

    /// Whether every place for an authenticated connection is taken.
    pub fn connections_full(&self) -> bool {
        self.connections.full()
    }

    /// A place for one more authenticated connection.
    pub fn connection_place(&self) -> Option<ConnectionPlace> {
        self.connections.take()
    }
}

/// What [`Session::unexpected`] tells the peer about `message`.
pub(super) fn not_allowed(message: &Message, when: &str) -> String {
    format!("`{}` is not allowed {when}", message.type_name())
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
    /// Cancelled when the server starts shutting down, or when a reload
    /// revokes the login of this connection (see `revocation`): either
    /// way its command gets the shutdown grace and the connection ends.
    pub shutdown: CancellationToken,
    /// Why this connection's login was revoked, once it is.
    pub revocation: Revocation,
    /// The login, registered for revocation at a reload.
    login: Option<Registration>,
    /// Who authenticated, for the audit log (a key id, never the token).
    pub identity: String,
    /// Commands run on this connection so far.
    pub commands: u64,
    /// Its place while it authenticates, then its place as an
    /// authenticated connection.
    pub place: Place,
}

/// Where a connection counts against the server's limits; held for its
/// `Drop`, which gives the place back.
#[derive(Debug)]
pub(super) enum Place {
    /// Still authenticating.
    Startup { permit: StartupPermit },
    /// Authenticated.
    Connection { _place: ConnectionPlace },
}

impl Session {
    /// A session for a connection that is about to authenticate.
    pub fn new(
        conn: FrameConn,
        peer: SocketAddr,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        startup: StartupPermit,
    ) -> Session {
        Session {
            conn,
            peer,
            config,
            shared,
            // A connection of its own, so that one can be revoked alone.
            shutdown: shutdown.child_token(),
            revocation: Revocation::default(),
            login: None,
            identity: String::new(),
            commands: 0,
            place: Place::Startup { permit: startup },
        }
    }

    /// Registers this connection's login (its `identity` set), so that a
    /// reload that refuses it closes the connection.
    pub fn logged_in(&mut self, login: Login) {
        let registration = self.shared.logins.register(
            self.peer,
            &self.identity,
            login,
            self.shutdown.clone(),
            self.revocation.clone(),
        );
        self.login = Some(registration);
    }

    /// Why the connection is winding down once `shutdown` is cancelled, as
    /// the `error` frame says it: the server stops, or a reload revoked
    /// this connection's login.
    pub fn closing(&self) -> (ErrorCode, String) {
        match self.revocation.reason() {
            Some(why) => (
                ErrorCode::AuthFailed,
                format!("{why}; the connection is closed"),
            ),
            None => (
                ErrorCode::ShuttingDown,
                "server is shutting down".to_string(),
            ),
        }
    }

    /// Ends the connection as [`Session::closing`] says.
    pub async fn fail_closing(&self) -> End {
        let (code, message) = self.closing();
        self.fail(code, message).await
    }

    /// A slot for one more running command, held until it ends.
    pub fn command_slot(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.shared
            .commands
            .try_take()
            .ok_or(Refusal::Busy(self.shared.commands.limit()))
    }

    /// Queues a frame in answer to a request, unless the client takes
    /// nothing for the send timeout: a client that asks and never reads
    /// cannot hold its connection (and its slot) for ever.
    pub async fn answer(&self, frame: Frame) -> Result<(), End> {
        let limit = self.config.send_timeout;
        self.conn
            .send_unless_stalled(frame, limit)
            .await
            .map_err(|e| match e {
                SendError::Closed => End::lost(During::Answer),
                SendError::Stalled(_) => End::Stalled {
                    limit,
                    during: During::Answer,
                },
            })
    }

    /// Tells the client its request was refused; the connection goes on.
    pub async fn refuse(&self, what: &str, refusal: Refusal) -> Result<(), End> {
        info!(peer = %self.peer, "{what} refused: {}: {refusal}", refusal.code());
        self.answer(refusal.frame()).await
    }

    /// Sends an error to the peer and returns the end reason for the log.
    ///
    /// The error goes through the ordered data queue, behind any output
    /// still queued, so it never overtakes a command's `exit`. A peer that
    /// stopped reading gets a bounded wait, not a hung session.
    pub async fn fail(&self, code: ErrorCode, message: impl Into<String>) -> End {
        let message = message.into();
        let frame = Frame::new(Message::error(code, message.clone()));
        let _ = time::timeout(ERROR_QUEUE_WAIT, self.conn.send(frame)).await;
        match code {
            ErrorCode::ShuttingDown => End::Shutdown,
            _ => End::Failed { code, message },
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
            RecvError::Decode(wiresh_proto::DecodeError::Io(e)) => End::ReadFailed(e),
            RecvError::Decode(e) => self.fail(e.code(), e.to_string()).await,
            RecvError::Closed => End::ClientClosed,
        }
    }

    /// Rejects a message that is valid but not allowed now.
    pub async fn unexpected(&self, message: &Message, when: &str) -> End {
        self.fail(ErrorCode::UnexpectedMessage, not_allowed(message, when))
            .await
    }

    /// Who does `verb` on `target`, for the audit log.
    pub fn action<'a>(&'a self, verb: Verb, target: &'a str) -> audit::Action<'a> {
        audit::Action {
            peer: self.peer,
            identity: &self.identity,
            verb,
            target,
            pty: false,
        }
    }

    /// Records that an action starts, before it does; refuses it when the
    /// audit log cannot say so. The record writes its end.
    pub fn audit_begin(&self, action: audit::Action<'_>) -> Result<Record, Refusal> {
        audit::begin(self.config.audit.as_ref(), &action).map_err(|_| Refusal::AuditBroken)
    }

    /// Records an action refused before it started.
    pub fn audit_refused(&self, action: audit::Action<'_>) {
        if let Some(log) = &self.config.audit {
            log.refused(&action);
        }
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
