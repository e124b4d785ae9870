//! The client's side of masters: run over the master of an endpoint when
//! one answers ([`connect`]), start one ([`start`]), list them and stop
//! them ([`list`], [`stop`]).

use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time;
use wiresh_proto::{ErrorCode, ExecRequest};

use super::handshake::Request;
use super::identity::{masters_dir, Identity, Places};
use super::serve::{take_lock, StartError};
use super::{Spec, MAX_STARTS, START_WAIT};
use crate::addr::Target;
use crate::client::{ClientError, Connection, Endpoint};
use crate::home::wiresh_home;

pub use super::serve::Status;

/// The flag of `wiresh master` that runs a master from a [`Spec`] read
/// on stdin, in the background ([`start`]).
pub const BACKGROUND_FLAG: &str = "--background";

/// What came of looking for a master.
#[derive(Debug)]
pub enum Attempt {
    /// Connected through the master.
    Connected(Box<Connection>),
    /// No master answers for this endpoint (or its connections are all
    /// in use): connect directly, saying nothing.
    Absent,
    /// A master is there but cannot serve this client (the server refused
    /// it, its directory is not private, ...): connect directly, and tell
    /// the user why.
    Refused(String),
}

/// Persistence for this process's connections (`--persist`, ssh's
/// ControlPersist), or for one host's (its `persist` setting): when no
/// master answers, one is started.
#[derive(Debug, Clone)]
pub struct Persist {
    /// How long the master stays without clients.
    pub idle: Duration,
    /// The most connections it holds.
    pub pool: usize,
    /// The `wiresh` program to start it with.
    pub program: PathBuf,
}

/// Persistence for every host (`--persist`).
static PERSIST: OnceLock<Persist> = OnceLock::new();

/// The program that serves as a master, for hosts whose `persist`
/// setting asks for one ([`start_masters_with`]); unset, no such master
/// is started (a library user's process is no `wiresh`).
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Masters started by this process so far ([`MAX_STARTS`]).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Whether this process told the user it starts no more masters.
static TOLD_MAX: AtomicBool = AtomicBool::new(false);

/// Set when a master answered this process but would not serve it: its
/// connections go directly from then on.
static BYPASS: AtomicBool = AtomicBool::new(false);

impl Persist {
    /// Makes `self` the persistence of every connection this process
    /// makes from now on (the first call wins).
    pub fn apply(self) {
        let _ = PERSIST.set(self);
    }

    /// The persistence of connections to `endpoint`: every connection's
    /// (`--persist`), else its own (its `persist` setting), if any.
    fn of(endpoint: &Endpoint) -> Option<Persist> {
        if let Some(every) = PERSIST.get() {
            return Some(every.clone());
        }
        Some(Persist {
            idle: endpoint.persist?,
            pool: super::DEFAULT_POOL,
            program: PROGRAM.get()?.clone(),
        })
    }
}

/// Lets this process start masters running `program` (`wiresh`) for the
/// hosts whose `persist` setting asks for one (the first call wins).
pub fn start_masters_with(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// Makes this process's connections go directly, past any master (one
/// turned it away already; asking again would only wait again).
pub fn bypass() {
    BYPASS.store(true, Ordering::Release);
}

/// Takes one of the [`MAX_STARTS`] masters this process may start;
/// `false` (said once on stderr) when they are all taken.
fn may_start(target: &Target) -> bool {
    let taken = STARTED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < MAX_STARTS).then_some(n + 1)
    });
    if taken.is_err() && !TOLD_MAX.swap(true, Ordering::AcqRel) {
        eprintln!(
            "wiresh: {MAX_STARTS} masters started by this command, the most one starts; {target} \
             and any other host without one connect directly"
        );
    }
    taken.is_ok()
}

/// Connects through the master of `endpoint` (with `running` sent ahead,
/// as [`Connection::connect_running`] does), starting one first when
/// persistence is on ([`Persist::apply`]) and none answers.
pub async fn connect(endpoint: &Endpoint, running: Option<&ExecRequest>) -> Attempt {
    let Ok(home) = wiresh_home() else {
        return Attempt::Absent;
    };
    if BYPASS.load(Ordering::Acquire) {
        return Attempt::Absent;
    }
    let first = through_master(endpoint, &home, running).await;
    let Attempt::Absent = first else {
        return first;
    };
    let Some(persist) = Persist::of(endpoint).filter(|p| !p.idle.is_zero()) else {
        return first;
    };
    let spec = match Spec::new(endpoint, &home, persist.idle, persist.pool) {
        Ok(spec) => spec,
        // Not pinned yet: this connection pins it, directly.
        Err(_) => return Attempt::Absent,
    };
    if !may_start(&endpoint.target) {
        return first;
    }
    match start(&persist.program, &spec).await {
        Ok(_) | Err(StartError::Running(_)) => through_master(endpoint, &home, running).await,
        Err(e) => Attempt::Refused(format!(
            "cannot start a master for {}: {e}",
            endpoint.target
        )),
    }
}

/// Connects through the master of `endpoint` whose files are in `home`
/// (a wiresh home), if one answers; never starts one.
pub async fn connect_in(
    home: &Path,
    endpoint: &Endpoint,
    running: Option<&ExecRequest>,
) -> Attempt {
    through_master(endpoint, home, running).await
}

/// Connects through the master of `endpoint` if one answers.
async fn through_master(
    endpoint: &Endpoint,
    home: &Path,
    running: Option<&ExecRequest>,
) -> Attempt {
    let (identity, stream) = match find_in(endpoint, home) {
        Ok(Some(found)) => found,
        Ok(None) => return Attempt::Absent,
        Err(why) => return Attempt::Refused(why),
    };
    let stream = match into_tokio(stream) {
        Ok(stream) => stream,
        Err(why) => return Attempt::Refused(why),
    };
    let line = Request::Session(identity.hex()).line();
    match Connection::over(stream, line.as_bytes(), &endpoint.token, running).await {
        Ok(conn) => Attempt::Connected(Box::new(conn)),
        Err(ClientError::Remote {
            code: ErrorCode::TooManyConnections | ErrorCode::ShuttingDown,
            ..
        }) => Attempt::Absent,
        Err(e) => Attempt::Refused(format!(
            "the master for {} did not take this client ({e})",
            endpoint.target
        )),
    }
}

/// The socket of the master of `endpoint`, connected (blocking), and the
/// identity it serves, if a master of this user answers there; `Err` when
/// one is there but must not be used. Reads nothing the master does not
/// need (the identity's pin and key fingerprint aside).
pub(super) fn find(endpoint: &Endpoint) -> Result<Option<(Identity, StdUnixStream)>, String> {
    if BYPASS.load(Ordering::Acquire) {
        return Ok(None);
    }
    match wiresh_home() {
        Ok(home) => find_in(endpoint, &home),
        Err(_) => Ok(None),
    }
}

/// [`find`], in the wiresh home `home`.
fn find_in(endpoint: &Endpoint, home: &Path) -> Result<Option<(Identity, StdUnixStream)>, String> {
    let Ok(Some(identity)) = Identity::of(endpoint) else {
        return Ok(None);
    };
    let Some(dir) = masters_dir(home, false)? else {
        return Ok(None);
    };
    let places = Places::named(&dir, &identity.name());
    Ok(open(&places)?.map(|stream| (identity, stream)))
}

/// A blocking socket on the runtime.
fn into_tokio(stream: StdUnixStream) -> Result<UnixStream, String> {
    stream
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(stream))
        .map_err(|e| format!("the master's socket: {e}"))
}

/// The master's socket, connected, if a master of this user listens on
/// it; a socket left by a dead master is removed.
fn open(places: &Places) -> Result<Option<StdUnixStream>, String> {
    let stream = match StdUnixStream::connect(&places.socket) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            remove_if_stale(places);
            return Ok(None);
        }
        Err(_) => return Ok(None),
    };
    let me = rustix::process::geteuid();
    match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(peer) if peer.uid == me => Ok(Some(stream)),
        Ok(peer) => Err(format!(
            "{} is served by uid {}, not this user; not used",
            places.socket.display(),
            peer.uid.as_raw()
        )),
        Err(e) => Err(format!("{}: {e}", places.socket.display())),
    }
}

/// Removes a master's socket when no master holds its lock: it crashed.
fn remove_if_stale(places: &Places) {
    if let Ok(Some(_lock)) = take_lock(&places.lock) {
        let _ = std::fs::remove_file(&places.socket);
    }
}

/// Starts a master for `spec` in the background with `program` (the
/// `wiresh` binary) and waits until it is ready; its name.
pub async fn start(program: &Path, spec: &Spec) -> Result<String, StartError> {
    let failed =
        |e: std::io::Error| StartError::Failed(format!("cannot start {}: {e}", program.display()));
    // The master outlives this process: a descriptor it inherited (a
    // script's `9>lock`, the pipe of a `$(...)`) must not stay open there.
    crate::syscall::close_inherited_on_exec();
    let mut child = tokio::process::Command::new(program)
        .args(["master", BACKGROUND_FLAG])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(failed)?;
    let spec_json = serde_json::to_vec(spec).map_err(|e| StartError::Failed(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(&spec_json).await.map_err(failed)?;
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().expect("piped").take(4096));
    let mut line = String::new();
    let read = stdout.read_line(&mut line);
    let answered = time::timeout(START_WAIT, read).await;
    // The launcher exits once the master runs on its own.
    let _ = time::timeout(START_WAIT, child.wait()).await;
    match answered {
        Err(_) => Err(StartError::Failed(format!(
            "the master was not ready within {START_WAIT:?}"
        ))),
        Ok(_) => parse_readiness(line.trim_end()),
    }
}

/// The line a master started in the background says when it is ready, or
/// why it is not.
pub fn readiness_line(result: Result<&Places, &StartError>) -> String {
    match result {
        Ok(places) => format!("ready {}\n", places.name),
        Err(StartError::Running(target)) => format!("running {target}\n"),
        Err(StartError::Failed(why)) => format!("error {}\n", why.replace('\n', " ")),
    }
}

fn parse_readiness(line: &str) -> Result<String, StartError> {
    match line.split_once(' ') {
        Some(("ready", name)) => Ok(name.to_string()),
        Some(("running", target)) => Err(StartError::Running(target.to_string())),
        Some(("error", why)) => Err(StartError::Failed(why.to_string())),
        _ => Err(StartError::Failed(
            "the master exited before it was ready (its log is in $WIRESH_HOME/masters)".into(),
        )),
    }
}

/// The masters of `home` that answer; sockets of dead ones are removed.
pub async fn list(home: &Path) -> Result<Vec<Status>, String> {
    let Some(dir) = masters_dir(home, false)? else {
        return Ok(Vec::new());
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".sock").map(str::to_string)
        })
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let places = Places::named(&dir, &name);
        if let Ok(answer) = ask(&places, Request::Status).await {
            if let Ok(status) = serde_json::from_str(&answer) {
                found.push(status);
            }
        }
    }
    Ok(found)
}

/// Asks the master of `endpoint` to stop (it takes no new clients and
/// exits once its clients have gone); `false` when none runs.
pub async fn stop(endpoint: &Endpoint, home: &Path) -> Result<bool, String> {
    let Some(identity) = Identity::of(endpoint).map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    let Some(dir) = masters_dir(home, false)? else {
        return Ok(false);
    };
    let places = Places::named(&dir, &identity.name());
    match ask(&places, Request::Stop).await {
        Ok(answer) if answer == "stopping" => Ok(true),
        Ok(answer) => Err(format!("the master answered {answer:?}")),
        Err(None) => Ok(false),
        Err(Some(why)) => Err(why),
    }
}

/// Sends `request` to the master at `places` and reads its one-line
/// answer. `Err(None)`: no master there.
async fn ask(places: &Places, request: Request) -> Result<String, Option<String>> {
    let Some(stream) = open(places).map_err(Some)? else {
        return Err(None);
    };
    let mut stream = into_tokio(stream).map_err(Some)?;
    let exchange = async {
        stream.write_all(request.line().as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(&mut stream)
            .take(64 * 1024)
            .read_line(&mut line)
            .await?;
        Ok::<_, std::io::Error>(line.trim_end().to_string())
    };
    match time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(line)) => Ok(line),
        Ok(Err(e)) => Err(Some(format!("{}: {e}", places.socket.display()))),
        Err(_) => Err(Some(format!("{}: no answer", places.socket.display()))),
    }
}
