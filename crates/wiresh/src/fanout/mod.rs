//! Fan-out: one command, or one copy, on many hosts at once, the job of
//! pdsh, parallel-ssh and ClusterShell.
//!
//! Every host gets its own library [`Connection`]; at most
//! [`Options::fanout`] run at once, launched in the order the hosts were
//! given. What each host prints is kept apart by host and shown one of
//! several ways ([`Display`]); a summary of what happened on every host
//! ends each run, and the exit status says whether all went well
//! ([`crate::exit::for_fanout`]).
//!
//! - [`select`]: `-H`, `-g`, `-x` and the inventory, to hosts and endpoints;
//! - `capture`: each host's output, as prefixed lines (filtered for a
//!   terminal), files, or the spool;
//! - `spool`: the temporary file that keeps output (at most
//!   `--max-output` per host) and stdin, and the error of a disk that
//!   would not keep them ([`NotKept`]);
//! - `stdin`: local stdin, read once, for every host;
//! - `report`: groups of identical output, diffs, JSON lines, the summary;
//! - [`exec`]: `wiresh exec` on many hosts;
//! - [`shell`]: `wiresh shell` on many hosts, each line gathered;
//! - [`copy`]: `wiresh put` and `wiresh get` on many hosts.

mod capture;
pub mod copy;
pub mod exec;
mod report;
pub mod select;
pub mod shell;
mod spool;
mod stdin;

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use wiresh_proto::{ErrorCode, ExitStatus};

use crate::cli::interrupt::Interrupts;
use crate::client::{ClientError, Connection, Endpoint, CONNECT_TIMEOUT};
use crate::exit;

pub use self::spool::{NotKept, Place};

/// Hosts worked on at once unless `--fanout` says otherwise (pdsh's and
/// clush's default is 32 and 64; connections here are cheap).
pub const DEFAULT_FANOUT: usize = 64;

/// How long connecting to one host may take, unless `--connect-timeout`
/// says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = CONNECT_TIMEOUT;

/// What `--gather`, `--diff` and `--json` keep of one host's output
/// (stdout and stderr together) unless `--max-output` says otherwise:
/// some ten thousand lines, far more than a terminal shows, and, with
/// the spool on disk, 1 GiB for a thousand hosts that never stop.
pub const DEFAULT_MAX_OUTPUT: u64 = 1024 * 1024;

/// What is kept of each host's output for the end, and how output
/// reaches a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRules {
    /// Most bytes of one host's output, stdout and stderr together, kept
    /// for `--gather`, `--diff` and `--json` (`--max-output`); the rest is
    /// counted, not kept, and the host reported truncated. `None`: all.
    pub max_output: Option<u64>,
    /// Output to a terminal byte for byte (`--raw`). Otherwise a terminal
    /// gets text, tabs, newlines and colours, and every other control
    /// character written out ([`crate::untrusted::TerminalFilter`]).
    pub raw: bool,
}

impl Default for OutputRules {
    fn default() -> OutputRules {
        OutputRules {
            max_output: Some(DEFAULT_MAX_OUTPUT),
            raw: false,
        }
    }
}

impl OutputRules {
    /// Whether what goes to local stdout is filtered (a terminal, not `--raw`).
    pub(crate) fn filters_stdout(&self) -> bool {
        !self.raw && std::io::stdout().is_terminal()
    }

    /// Whether what goes to local stderr is filtered.
    pub(crate) fn filters_stderr(&self) -> bool {
        !self.raw && std::io::stderr().is_terminal()
    }
}

/// One host of a fan-out: the name it is shown by, and how to reach it.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name as selected (`web01`, `127.0.0.1:7001`): output prefixes,
    /// group headers, file names and the summary use it.
    pub name: String,
    /// Where it is and how to authenticate.
    pub endpoint: Endpoint,
}

/// How a fan-out runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most hosts worked on at once (at least 1).
    pub fanout: usize,
    /// Most time to connect to and authenticate with one host.
    pub connect_timeout: Duration,
    /// Launch no more hosts once one has failed.
    pub fail_fast: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fanout: DEFAULT_FANOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            fail_fast: false,
        }
    }
}

/// How the hosts' output is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Display {
    /// As it comes, each line prefixed with its host (`web01: ...`).
    Live,
    /// At the end, hosts with the same output and status grouped under one
    /// header (`clush -b`, `dshbak -c`).
    Gather,
    /// Like [`Display::Gather`], each group as a diff against the largest.
    Diff,
    /// One JSON object per host per line, as each host finishes.
    Json,
    /// Each host's stdout and stderr to `DIR/HOST.out` and `DIR/HOST.err`.
    Outdir(PathBuf),
}

/// What became of one host.
#[derive(Debug)]
pub enum Outcome {
    /// The command ran and ended with this status.
    Exited(ExitStatus),
    /// No connection could be made or authenticated.
    Unreachable(ClientError),
    /// Connected, but the command could not run, or the connection broke.
    Failed(ClientError),
    /// Never launched: Ctrl-C or `--fail-fast` came first.
    NotRun,
    /// Stopped because this machine's disk would not keep its output (or
    /// stdin for it), there or on another host.
    NotKept(NotKept),
}

/// The kind of an [`Outcome`], in the order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Exit status 0.
    Ok,
    /// A non-zero status, a signal, or a command that could not start.
    Failed,
    /// Killed by the server when `--timeout` ran out.
    TimedOut,
    /// Refused by the server's policy (or its limits).
    Refused,
    /// Could not be connected to or authenticated with.
    Unreachable,
    /// The connection broke while the command ran.
    Lost,
    /// Not launched.
    NotRun,
}

impl Kind {
    /// The name used in JSON and the summary.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Failed => "failed",
            Kind::TimedOut => "timed_out",
            Kind::Refused => "refused",
            Kind::Unreachable => "unreachable",
            Kind::Lost => "lost",
            Kind::NotRun => "not_run",
        }
    }
}

/// An outcome as the summary and the exit status see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Verdict {
    /// What kind of outcome.
    pub kind: Kind,
    /// What the summary groups by: `exit 3`, `killed by signal 9`,
    /// `unreachable (connection refused)`, ...
    pub label: String,
}

impl Outcome {
    /// This outcome's kind and label.
    pub fn verdict(&self) -> Verdict {
        let (kind, label) = match self {
            Outcome::Exited(s) if s.timed_out => (Kind::TimedOut, "timed out".to_string()),
            Outcome::Exited(s) => match (s.code, s.signal) {
                (Some(0), _) => (Kind::Ok, "exit 0".to_string()),
                (Some(code), _) => (Kind::Failed, format!("exit {code}")),
                (None, Some(sig)) => (Kind::Failed, format!("killed by signal {sig}")),
                (None, None) => (Kind::Failed, "no exit status".to_string()),
            },
            Outcome::Unreachable(e) => (Kind::Unreachable, format!("unreachable ({})", reason(e))),
            Outcome::Failed(e) => match e {
                ClientError::Remote {
                    code: ErrorCode::Forbidden,
                    ..
                } => (Kind::Refused, "refused by policy".to_string()),
                ClientError::Remote {
                    code: ErrorCode::SpawnFailed,
                    ..
                } => (Kind::Failed, "not started".to_string()),
                ClientError::Remote { code, .. } if e.connection_usable() => {
                    (Kind::Refused, format!("refused ({code})"))
                }
                _ => (Kind::Lost, reason(e)),
            },
            Outcome::NotRun => (Kind::NotRun, "not run".to_string()),
            Outcome::NotKept(e) => {
                let what = match e.place {
                    Place::Stdin(_) => "stdin",
                    Place::Spool(_) | Place::Outdir(_) => "output",
                };
                (
                    Kind::Lost,
                    format!("stopped: {what} not kept ({})", e.reason()),
                )
            }
        };
        Verdict { kind, label }
    }

    /// The exit status a single-host `wiresh exec` would have given (ssh's
    /// contract), for `-S`; `None` for a host that was not run.
    pub fn status(&self) -> Option<i32> {
        match self {
            Outcome::Exited(s) => Some(exit::for_status(s)),
            Outcome::Unreachable(e) | Outcome::Failed(e) => Some(exit::for_error(e)),
            Outcome::NotRun => None,
            Outcome::NotKept(_) => Some(exit::LOCAL_IO),
        }
    }
}

/// Why a host did not run or finish its command, from a small fixed set
/// (`--json`'s `error.kind`, which scripts match on; the message says the
/// rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The host name did not resolve.
    UnknownHost,
    /// Nothing listens on that port (connection refused).
    Refused,
    /// No answer in time: connecting, or a server gone silent.
    Timeout,
    /// The network did not reach the address (no route, host down).
    Unreachable,
    /// The server refused the token or key.
    AuthFailed,
    /// The server's fingerprint is not the pinned one.
    Pinning,
    /// TLS failed otherwise (not a TLS server, a bad certificate).
    Tls,
    /// The peer broke the protocol, or is not a wiresh server.
    Protocol,
    /// The server's policy forbids the command.
    Forbidden,
    /// The server could not start the program.
    NotStarted,
    /// The server refused the request for another reason (its error code
    /// is in the message: limits, shutting down, ...).
    Server,
    /// The connection broke while the command ran.
    Lost,
    /// The server does not offer what the request needs.
    Unsupported,
    /// Given up on after a second Ctrl-C.
    Interrupted,
    /// Local output was closed early.
    OutputClosed,
    /// This machine's disk would not keep its output or stdin.
    NotKept,
    /// Never launched: Ctrl-C or `--fail-fast` came first.
    NotRun,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::UnknownHost,
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Unreachable,
        ErrorKind::AuthFailed,
        ErrorKind::Pinning,
        ErrorKind::Tls,
        ErrorKind::Protocol,
        ErrorKind::Forbidden,
        ErrorKind::NotStarted,
        ErrorKind::Server,
        ErrorKind::Lost,
        ErrorKind::Unsupported,
        ErrorKind::Interrupted,
        ErrorKind::OutputClosed,
        ErrorKind::NotKept,
        ErrorKind::NotRun,
    ];

    /// The name `--json` writes.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::UnknownHost => "unknown_host",
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::Pinning => "pinning",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotStarted => "not_started",
            ErrorKind::Server => "server",
            ErrorKind::Lost => "lost",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::OutputClosed => "output_closed",
            ErrorKind::NotKept => "not_kept",
            ErrorKind::NotRun => "not_run",
        }
    }

    /// The kind of a client error.
    pub fn of(e: &ClientError) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match e {
            ClientError::Connect {
                unknown_host: true, ..
            } => ErrorKind::UnknownHost,
            ClientError::Connect { source, .. } => match source.kind() {
                Io::ConnectionRefused => ErrorKind::Refused,
                Io::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Unreachable,
            },
            ClientError::Timeout(_) => ErrorKind::Timeout,
            ClientError::Pinning(_) => ErrorKind::Pinning,
            ClientError::Tls(_) => ErrorKind::Tls,
            ClientError::Remote { code, .. } => match code {
                ErrorCode::AuthFailed | ErrorCode::AuthRequired => ErrorKind::AuthFailed,
                ErrorCode::Forbidden => ErrorKind::Forbidden,
                ErrorCode::SpawnFailed => ErrorKind::NotStarted,
                _ => ErrorKind::Server,
            },
            ClientError::Protocol(_) => ErrorKind::Protocol,
            ClientError::Closed(_) => ErrorKind::Lost,
            ClientError::Interrupted => ErrorKind::Interrupted,
            ClientError::OutputClosed => ErrorKind::OutputClosed,
            ClientError::Unsupported(_) => ErrorKind::Unsupported,
        }
    }
}

impl Outcome {
    /// Why this host did not run or finish its command; `None` when it did
    /// (whatever its exit status).
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Outcome::Exited(_) => None,
            Outcome::Unreachable(e) | Outcome::Failed(e) => Some(ErrorKind::of(e)),
            Outcome::NotRun => Some(ErrorKind::NotRun),
            Outcome::NotKept(_) => Some(ErrorKind::NotKept),
        }
    }
}

/// A short reason for an error, without the host's name, so that hosts
/// failing the same way fall into one group.
fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Connect {
            unknown_host: true, ..
        } => "unknown host".to_string(),
        ClientError::Connect { source, .. } => source.kind().to_string(),
        ClientError::Timeout(_) => "no answer in time".to_string(),
        ClientError::Pinning(_) => "fingerprint changed".to_string(),
        ClientError::Tls(_) => "TLS failed".to_string(),
        ClientError::Remote { code, .. } => code.to_string(),
        ClientError::Protocol(_) => "protocol error".to_string(),
        ClientError::Closed(_) => "connection lost".to_string(),
        ClientError::Interrupted => "interrupted".to_string(),
        ClientError::OutputClosed => "local output closed".to_string(),
        ClientError::Unsupported(_) => "feature not offered".to_string(),
    }
}

/// Connects to `endpoint` within `limit`.
pub async fn connect(endpoint: &Endpoint, limit: Duration) -> Result<Connection, ClientError> {
    match tokio::time::timeout(limit, crate::cli::connect(endpoint, None)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout(format!(
            "no answer from {} within {limit:?} (--connect-timeout)",
            endpoint.target
        ))),
    }
}

/// The shell keeps a connection per host: lets this process have that
/// many open files, as far as its hard limit allows.
pub(crate) fn raise_open_files_limit(connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = connections as u64 + 64; // stdio, the spool, the runtime's own
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
        }
    }
}

/// The first thing this machine's disk would not keep in a run: once
/// there is one, every host is stopped, and the run exits
/// [`exit::LOCAL_IO`] saying what it was.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiskFault(Arc<OnceLock<NotKept>>);

impl DiskFault {
    /// Records `error` (unless one came first) and stops every host at
    /// once, as a second Ctrl-C does.
    pub(crate) fn stop(&self, error: NotKept, interrupts: &Interrupts) {
        let _ = self.0.set(error);
        while interrupts.count() < 2 {
            interrupts.raise();
        }
    }

    /// The error, if there was one.
    pub(crate) fn get(&self) -> Option<&NotKept> {
        self.0.get()
    }
}

/// Runs `job` on every item, at most `options.fanout` at once, launching
/// in order; stops launching after a Ctrl-C, or (with `fail_fast`) once a
/// result is a failure. `done` gets each result as it comes. Returns the
/// items never launched, with their places.
pub(crate) async fn each_host<I, R, Fut>(
    items: I,
    options: &Options,
    interrupts: &Interrupts,
    mut job: impl FnMut(usize, I::Item) -> Fut,
    failed: impl Fn(&R) -> bool,
    mut done: impl FnMut(usize, R),
) -> Vec<(usize, I::Item)>
where
    I: IntoIterator,
    Fut: Future<Output = R>,
{
    let mut items = items.into_iter().enumerate();
    let mut running = FuturesUnordered::new();
    let mut stop = false;
    loop {
        while !stop && running.len() < options.fanout.max(1) {
            if interrupts.count() > 0 {
                stop = true;
                break;
            }
            let Some((i, item)) = items.next() else {
                break;
            };
            let work = job(i, item);
            running.push(async move { (i, work.await) });
        }
        let Some((i, result)) = running.next().await else {
            break;
        };
        if options.fail_fast && failed(&result) {
            stop = true;
        }
        done(i, result);
    }
    items.collect()
}
