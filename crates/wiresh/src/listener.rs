//! Accepting connections, for both listeners (the wiresh protocol and the
//! legacy one): a connection limit, one task per connection with panics
//! contained, a graceful stop, and one log line per connection.
//!
//! After mini-redis: each server says how it admits a connection (a place
//! in a budget it keeps); a [`CancellationToken`] tells every connection to
//! wind down; each connection task holds a clone of an mpsc sender, so the
//! channel closing means all of them have ended.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::defaults::{ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX, REFUSAL_LOG_EVERY};

/// Why a connection ended, for its log line.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed the connection between commands.
    ClientClosed,
    /// Nothing arrived within the idle timeout.
    Idle(Duration),
    /// The server is shutting down.
    Shutdown,
    /// Something went wrong; the text says what.
    Error(String),
}

/// What a connection did, for its log line.
#[derive(Debug)]
pub(crate) struct ConnLog {
    /// `connection` or `legacy connection`.
    pub kind: &'static str,
    /// The peer.
    pub peer: SocketAddr,
    /// When it was accepted.
    pub opened: Instant,
}

impl ConnLog {
    /// Starts the record of a connection accepted now.
    pub fn new(kind: &'static str, peer: SocketAddr) -> ConnLog {
        ConnLog {
            kind,
            peer,
            opened: Instant::now(),
        }
    }

    /// Logs the one line that says how the connection ended.
    pub fn ended(&self, end: &End, commands: u64) {
        let (kind, peer) = (self.kind, self.peer);
        let duration_ms = self.opened.elapsed().as_millis() as u64;
        match end {
            End::ClientClosed => info!(%peer, commands, duration_ms, "{kind} closed"),
            End::Idle(idle) => {
                info!(%peer, commands, duration_ms, "{kind} closed: idle for {idle:?}")
            }
            End::Shutdown => {
                info!(%peer, commands, duration_ms, "{kind} closed: server shutting down")
            }
            End::Error(reason) => warn!(%peer, commands, duration_ms, "{kind} ended: {reason}"),
        }
    }
}

/// Logs refused connections without letting a flood flood the log: the
/// first at once, then one line a second with how many more there were.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    name: &'static str,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// A log for refusals of listener `name`.
    pub fn new(name: &'static str) -> RefusalLog {
        RefusalLog {
            name,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Records one refusal of `peer`, for `why`.
    pub fn refused(&self, peer: SocketAddr, why: &dyn std::fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if at.elapsed() < REFUSAL_LOG_EVERY => *suppressed += 1,
            _ => {
                let name = self.name;
                if *suppressed > 0 {
                    warn!(%peer, "{name}: refusing connection: {why} ({suppressed} more refused in the last second)");
                } else {
                    warn!(%peer, "{name}: refusing connection: {why}");
                }
                *last = Some(Instant::now());
                *suppressed = 0;
            }
        }
    }
}

/// Serves `listener` until `shutdown` is cancelled, then stops accepting
/// and returns once every connection has ended.
///
/// Each accepted socket is first put to `admit`: what it returns (a place
/// in some budget, say) goes with the socket to `serve`, in a task of its
/// own, with the shutdown token to watch; a socket `admit` turns away goes
/// to `refuse` with the reason, which tells the peer (if its protocol can).
pub(crate) async fn serve_connections<P, E, A, S, SF, R, RF>(
    listener: tokio::net::TcpListener,
    name: &'static str,
    shutdown: CancellationToken,
    admit: A,
    serve: S,
    refuse: R,
) where
    P: Send + 'static,
    E: std::fmt::Display,
    A: Fn(SocketAddr) -> Result<P, E>,
    S: Fn(TcpStream, SocketAddr, P, CancellationToken) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream, SocketAddr, E) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let refusals = RefusalLog::new(name);
    let accept = async {
        let mut backoff = ACCEPT_BACKOFF;
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF;
                    pair
                }
                Err(e) => {
                    // EMFILE and friends are transient: back off rather than
                    // spin or die, as the open connections are still served.
                    warn!("{name}: accept failed: {e}; retrying in {backoff:?}");
                    time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let place = match admit(peer) {
                Ok(place) => place,
                Err(why) => {
                    refusals.refused(peer, &why);
                    tokio::spawn(refuse(socket, peer, why));
                    continue;
                }
            };
            let connection = tokio::spawn(serve(socket, peer, place, shutdown.clone()));
            let done = done_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    if e.is_panic() {
                        error!(%peer, "{name}: connection handler panicked; connection closed, server unaffected");
                    }
                }
                drop(done);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown.cancelled() => info!("{name}: shutting down: no new connections"),
    }
    drop(listener);
    drop(done_tx);
    let _ = done_rx.recv().await;
    info!("{name}: stopped");
}
