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
use wiresh_proto::ErrorCode;

use crate::defaults::{ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX, REFUSAL_LOG_EVERY};

/// Why a connection ended, for its log line: a typed cause, written out
/// once, in [`End`]'s `Display`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum End {
    /// The peer closed the connection between commands.
    #[error("closed by the client")]
    ClientClosed,
    /// Nothing arrived within the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// Dropped while authenticating, to make room for a newcomer from a
    /// network with fewer connections authenticating.
    #[error(
        "dropped while authenticating: its network held the most connections authenticating, \
         and a newcomer from another needed the place"
    )]
    Evicted,
    /// The peer went away in the middle of something.
    #[error("{}", peer_gone(how, during))]
    PeerGone {
        /// How it went.
        how: Gone,
        /// What the connection was doing.
        during: During,
    },
    /// The peer took nothing the server had for it for this long.
    #[error("{}", stalled(limit, during))]
    Stalled {
        /// The send timeout.
        limit: Duration,
        /// What the connection was doing.
        during: During,
    },
    /// The server told the peer why in an `error` frame, then closed.
    #[error("{code}: {message}")]
    Failed {
        /// The `error` frame's code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// Reading from the connection failed.
    #[error("read failed: {0}")]
    ReadFailed(std::io::Error),
    /// A legacy peer on loopback whose socket belongs to a user other than
    /// the one commands run as.
    #[error(
        "refused: the peer's socket belongs to {}, not to uid {own} that commands run as \
         (serve --legacy-any-user admits every local user)",
        match uid { Some(uid) => format!("uid {uid}"), None => "an unknown user".to_string() }
    )]
    ForeignUser {
        /// Who owns the peer's socket, if the kernel says.
        uid: Option<u32>,
        /// Who commands run as.
        own: u32,
    },
    /// A legacy answer could not be sent.
    #[error("could not send the {bytes}-byte answer to `{command}`: {source}")]
    AnswerUnsent {
        /// The answer's size.
        bytes: u64,
        /// The command it answers.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A legacy command's output could not be read back from its spool
    /// file to answer.
    #[error("cannot read back the spooled output: {0}")]
    Spool(std::io::Error),
}

impl End {
    /// The peer closed its end during `during`.
    pub fn disconnected(during: During) -> End {
        End::PeerGone {
            how: Gone::Closed,
            during,
        }
    }

    /// The connection broke during `during`.
    pub fn lost(during: During) -> End {
        End::PeerGone {
            how: Gone::Lost(None),
            during,
        }
    }
}

/// How a peer went away.
#[derive(Debug)]
pub(crate) enum Gone {
    /// It closed its end.
    Closed,
    /// The connection broke (a read or write failed, or the writer
    /// stopped), for the reason given if one is known.
    Lost(Option<std::io::Error>),
}

/// The log's words for [`End::PeerGone`].
fn peer_gone(how: &Gone, during: &During) -> String {
    let (what, cause) = match how {
        Gone::Closed => ("client disconnected", String::new()),
        Gone::Lost(None) => ("connection lost", String::new()),
        Gone::Lost(Some(e)) => ("connection lost", format!(" ({e})")),
    };
    let consequence = match during {
        During::Command(_) => "; the command and its processes were killed",
        _ => "",
    };
    format!("{what}{during}{cause}{consequence}")
}

/// The log's words for [`End::Stalled`].
fn stalled(limit: &Duration, during: &During) -> String {
    let consequence = match during {
        During::Command(_) => "; the command and its processes were killed",
        _ => "",
    };
    format!("the client took nothing for {limit:?} (--send-timeout){during}; dropped{consequence}")
}

/// What a connection was doing when its peer went away.
#[derive(Debug)]
pub(crate) enum During {
    /// Answering a request.
    Answer,
    /// Saying hello.
    Hello,
    /// Authenticating.
    Auth,
    /// Running this command.
    Command(String),
    /// A file transfer.
    Transfer,
}

impl std::fmt::Display for During {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            During::Answer => Ok(()),
            During::Hello => f.write_str(" before hello"),
            During::Auth => f.write_str(" during authentication"),
            During::Command(what) => write!(f, " during `{what}`"),
            During::Transfer => f.write_str(" during a transfer"),
        }
    }
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
            End::Evicted => info!(%peer, commands, duration_ms, "{kind} {end}"),
            other => warn!(%peer, commands, duration_ms, "{kind} ended: {other}"),
        }
    }
}

/// Logs refused connections without letting a flood flood the log: the
/// first at once, then one line a second with how many more there were.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    name: &'static str,
    /// What each line says before the reason.
    words: &'static str,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// A log for refusals of listener `name`.
    pub fn new(name: &'static str) -> RefusalLog {
        RefusalLog::saying(name, "refusing connection")
    }

    /// A log of listener `name` whose lines say `words` before the reason
    /// (for other events that a flood makes by the thousand).
    pub fn saying(name: &'static str, words: &'static str) -> RefusalLog {
        RefusalLog {
            name,
            words,
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
                let (name, words) = (self.name, self.words);
                if *suppressed > 0 {
                    warn!(%peer, "{name}: {words}: {why} ({suppressed} more in the last second)");
                } else {
                    warn!(%peer, "{name}: {words}: {why}");
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
/// Each accepted socket is first put to `admit` (with its peer): what it returns (a place
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
    A: Fn(SocketAddr, &TcpStream) -> Result<P, E>,
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
            let place = match admit(peer, &socket) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of the log lines that operators (and tests) look for.
    #[test]
    fn endings_read_as_before() {
        let cases = [
            (
                End::disconnected(During::Command("sleep 9".into())),
                "client disconnected during `sleep 9`; the command and its processes were killed",
            ),
            (
                End::PeerGone {
                    how: Gone::Lost(Some(std::io::ErrorKind::BrokenPipe.into())),
                    during: During::Command("yes".into()),
                },
                "connection lost during `yes` (broken pipe); the command and its processes were \
                 killed",
            ),
            (End::lost(During::Answer), "connection lost"),
            (End::lost(During::Hello), "connection lost before hello"),
            (
                End::disconnected(During::Transfer),
                "client disconnected during a transfer",
            ),
            (
                End::Stalled {
                    limit: Duration::from_secs(1),
                    during: During::Answer,
                },
                "the client took nothing for 1s (--send-timeout); dropped",
            ),
            (
                End::Stalled {
                    limit: Duration::from_secs(60),
                    during: During::Command("yes".into()),
                },
                "the client took nothing for 60s (--send-timeout) during `yes`; dropped; the \
                 command and its processes were killed",
            ),
            (
                End::Failed {
                    code: ErrorCode::AuthFailed,
                    message: "authentication failed: wrong token".into(),
                },
                "auth_failed: authentication failed: wrong token",
            ),
            (
                End::ForeignUser {
                    uid: Some(1001),
                    own: 1000,
                },
                "refused: the peer's socket belongs to uid 1001, not to uid 1000 that commands \
                 run as (serve --legacy-any-user admits every local user)",
            ),
        ];
        for (end, words) in cases {
            assert_eq!(end.to_string(), words);
        }
    }
}
