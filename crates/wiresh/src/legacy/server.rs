//! `wiresh serve --legacy-listen`: serves the original `client.py` (and
//! anything else written against `shared/legacy/server.py`).
//!
//! Byte for byte what the client sees is what the original server sends:
//! each read of up to 8096 bytes is one command, run by `sh -c`; the reply
//! is a 4-byte native-endian header length, a JSON header
//! (`total_size`, `md5`, `filename`), then stdout followed by stderr.
//!
//! What the client cannot see is done better:
//! - many connections are served at once (the original served one at a
//!   time, in accept order), bounded by a semaphore;
//! - `md5` is the real md5 of the payload, not a placeholder;
//! - output is kept in memory only up to [`LegacyServerConfig::spool_threshold`]
//!   and spooled to an unlinked temporary file past it, so a 1 GiB output
//!   costs disk, not 1 GiB of server memory;
//! - each command runs in its own process group, killed when the command
//!   times out, when the client disconnects mid-command, or on shutdown;
//! - TCP_NODELAY, and the header goes out in one write with its length:
//!   the original's two small writes cost 44 ms per command to Nagle's
//!   algorithm meeting the client's delayed ACK.
//!
//! The protocol cannot say "killed" or "exit status": when wiresh ends a
//! command early it appends a line starting with `wiresh:` to the payload's
//! stderr part, so the person reading the output learns why it stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wiresh_proto::legacy::MAX_COMMAND_LEN;

use super::peer::loopback_peer_uid;
use super::socket::set_keepalive;
pub use super::spool::REPLY_FILENAME;
use super::spool::{send_reply, Output, Reply, Stream, CHUNK};
use crate::audit::{self, Action, AuditLog, Ending, Outcome, Record, Verb};
use crate::defaults;
use crate::exec::{self, CommandSlots, Deadlines, Event, KillReason, Spawned, Spec, Status};
use crate::exec::{SpawnError, Supervisor};
use crate::listener::{ConnLog, During, End, Gone};

/// What a legacy server needs to know, fixed at start.
#[derive(Debug, Clone)]
pub struct LegacyServerConfig {
    /// Most connections served at once. The protocol has no way to say
    /// "busy", so a connection over the limit is closed at once (and logged).
    pub max_connections: usize,
    /// Kill a command (its whole process group) after this long; the reply
    /// then carries its output so far and a note. `None`: no limit, as in the
    /// original.
    pub command_timeout: Option<Duration>,
    /// Close a connection on which no command arrives for this long.
    pub idle_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a command's group is killed.
    pub kill_grace: Duration,
    /// Output bytes (stdout and stderr together) held in memory per
    /// command; the rest is spooled to a temporary file.
    pub spool_threshold: usize,
    /// On shutdown, how long a running command may go on before its process
    /// group is killed (its reply, with what it printed so far, is still sent).
    pub shutdown_grace: Duration,
    /// The commands running at once (shared with the wiresh listener); a
    /// command over the limit is not run, and its reply says so.
    pub commands: CommandSlots,
    /// Where every command is recorded, as on the wiresh listener.
    pub audit: Option<Arc<AuditLog>>,
    /// Admit only local peers whose socket belongs to the user commands run
    /// as (or to root); others are closed. Remote peers (possible only with
    /// `--legacy-allow-insecure-remote`) cannot be told apart and are let in.
    pub same_user_only: bool,
    /// The encoding commands arrive in and answers are sent in
    /// (`--legacy-encoding`); `None`: bytes as they are (UTF-8).
    pub encoding: Option<&'static encoding_rs::Encoding>,
}

impl Default for LegacyServerConfig {
    /// The defaults both servers share, and the legacy spool threshold.
    fn default() -> Self {
        LegacyServerConfig {
            max_connections: defaults::MAX_CONNECTIONS,
            command_timeout: None,
            idle_timeout: defaults::IDLE_TIMEOUT,
            kill_grace: defaults::KILL_GRACE,
            spool_threshold: defaults::LEGACY_SPOOL_THRESHOLD,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            commands: CommandSlots::new(defaults::MAX_COMMANDS),
            audit: None,
            same_user_only: true,
            encoding: None,
        }
    }
}

/// Serves legacy-protocol connections from `listener` until `shutdown` is
/// cancelled; then stops accepting, closes idle connections, gives running
/// commands `shutdown_grace` before killing them, and returns once every
/// connection has ended.
pub async fn run(listener: TcpListener, config: LegacyServerConfig, shutdown: CancellationToken) {
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "legacy listener ready (no authentication: loopback only unless allowed)");
    }
    let max = config.max_connections;
    let connections = Arc::new(Semaphore::new(max));
    crate::listener::serve_connections(
        listener,
        "legacy listener",
        shutdown,
        move |_, _: &TcpStream| {
            connections
                .clone()
                .try_acquire_owned()
                .map_err(|_| format!("{max} connections already open"))
        },
        move |socket, peer, place, shutdown| {
            let _ = socket.set_nodelay(true);
            set_keepalive(&socket);
            let config = config.clone();
            async move {
                serve(socket, peer, config, shutdown).await;
                drop(place);
            }
        },
        // The protocol has no error message; closing is all we can say.
        |socket, _, _| {
            drop(socket);
            async {}
        },
    )
    .await
}

/// One legacy connection.
struct Conn {
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<LegacyServerConfig>,
    shutdown: CancellationToken,
    /// Who the peer is, for the audit log: `legacy:uid=N` when known.
    identity: String,
    /// Bytes the client sent while a command ran (a client that does not
    /// wait for the answer): the original would `recv` them as the next
    /// command, and so does this server.
    pending: Vec<u8>,
    commands: u64,
}

/// Serves one connection to its end and logs one line about it.
async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<LegacyServerConfig>,
    shutdown: CancellationToken,
) {
    let log = ConnLog::new("legacy connection", peer);
    let uid = match socket.local_addr() {
        Ok(local) if peer.ip().to_canonical().is_loopback() => {
            tokio::task::spawn_blocking(move || loopback_peer_uid(local, peer))
                .await
                .ok()
                .flatten()
        }
        _ => None,
    };
    if config.same_user_only && peer.ip().to_canonical().is_loopback() {
        let own = nix::unistd::geteuid().as_raw();
        if !matches!(uid, Some(u) if u == own || u == 0) {
            log.ended(&End::ForeignUser { uid, own }, 0);
            return;
        }
    }
    let identity = match uid {
        Some(uid) => format!("legacy:uid={uid}"),
        None => "legacy".to_string(),
    };
    let mut conn = Conn {
        socket,
        peer,
        config,
        shutdown,
        identity,
        pending: Vec::new(),
        commands: 0,
    };
    let end = conn.serve_commands().await;
    log.ended(&end, conn.commands);
}

impl Conn {
    async fn serve_commands(&mut self) -> End {
        loop {
            let raw = match self.next_command().await {
                Ok(raw) => raw,
                Err(end) => return end,
            };
            self.commands += 1;
            // The original decoded strictly and died on bad UTF-8; lossy
            // decoding runs what it can and lets the shell report the rest.
            let command = match self.config.encoding {
                Some(encoding) => encoding.decode_without_bom_handling(&raw).0.into_owned(),
                None => String::from_utf8_lossy(&raw).into_owned(),
            };
            let started = Instant::now();
            let reply = match self.run_command(&command).await {
                Ok(reply) => reply,
                Err(end) => return end,
            };
            let total_size = reply.header.total_size;
            info!(
                peer = %self.peer,
                command = command.as_str(),
                total_size,
                md5 = %reply.header.md5,
                spooled = reply.spooled(),
                ended_early = reply.ended_early.as_deref(),
                duration_ms = started.elapsed().as_millis() as u64,
                "legacy command finished"
            );
            if let Err(e) = send_reply(&mut self.socket, reply).await {
                return End::AnswerUnsent {
                    bytes: total_size,
                    command,
                    source: e,
                };
            }
            if self.shutdown.is_cancelled() {
                return End::Shutdown;
            }
        }
    }

    /// Reads the next command: one read of up to [`MAX_COMMAND_LEN`]
    /// bytes, exactly like the original's `recv(8096)`.
    async fn next_command(&mut self) -> Result<Vec<u8>, End> {
        if !self.pending.is_empty() {
            // Top up with whatever else already arrived, as one recv would.
            let mut raw = std::mem::take(&mut self.pending);
            let filled = raw.len();
            raw.resize(MAX_COMMAND_LEN, 0);
            let n = self.socket.try_read(&mut raw[filled..]).unwrap_or(0);
            raw.truncate(filled + n);
            return Ok(raw);
        }
        let idle = self.config.idle_timeout;
        let mut raw = vec![0u8; MAX_COMMAND_LEN];
        let read = tokio::select! {
            read = time::timeout(idle, self.socket.read(&mut raw)) => read,
            () = self.shutdown.cancelled() => return Err(End::Shutdown),
        };
        match read {
            Err(_) => Err(End::Idle(idle)),
            Ok(Ok(0)) => Err(End::ClientClosed),
            Ok(Ok(n)) => {
                raw.truncate(n);
                Ok(raw)
            }
            Ok(Err(e)) => Err(End::ReadFailed(e)),
        }
    }

    /// Runs `command` and collects its output. `Err` means the connection
    /// must close (the client went away); the process group is killed then,
    /// and the audit record, dropped unended, says `aborted`.
    async fn run_command(&mut self, command: &str) -> Result<Reply, End> {
        let mut output = Output::new(self.config.spool_threshold, self.config.encoding);
        // The slot is held until the command ends.
        let (_slot, record, spawned) = match self.launch(command).await {
            Ok(launched) => launched,
            // The protocol has no error message: a command that is not run
            // gets a reply whose stderr part says why, as the shell would
            // complain.
            Err(not_run) => {
                return output
                    .finish(Some(not_run.to_string()))
                    .await
                    .map_err(End::Spool)
            }
        };
        let (ended_early, status) = self.collect(spawned, &mut output, command).await?;
        record.end(Ending {
            code: status.code,
            signal: status.signal,
            ..Ending::of(Outcome::Finished)
        });
        output.finish(ended_early).await.map_err(End::Spool)
    }

    /// Starts `command` in a command slot, its start on record before it
    /// runs.
    async fn launch(
        &self,
        command: &str,
    ) -> Result<(OwnedSemaphorePermit, Record, Spawned), NotRun> {
        let commands = &self.config.commands;
        let Some(slot) = commands.try_take() else {
            info!(peer = %self.peer, command, "legacy command refused: busy");
            return Err(NotRun::Busy(commands.limit()));
        };
        let action = Action {
            peer: self.peer,
            identity: &self.identity,
            verb: Verb::Exec,
            target: command,
            pty: false,
        };
        let record =
            audit::begin(self.config.audit.as_ref(), &action).map_err(|_| NotRun::AuditBroken)?;
        match exec::spawn_group(&Spec::shell(command), command).await {
            Ok(spawned) => Ok((slot, record, spawned)),
            Err(e) => {
                record.end(Ending::of(Outcome::NotStarted));
                Err(NotRun::Spawn(e))
            }
        }
    }

    /// Collects a started command's output until it has exited and its
    /// pipes are closed, killing it past its deadlines or its output limit;
    /// returns why it was ended early, if it was, and how it ended. While
    /// it runs, the socket is watched, so that a client that goes away
    /// takes its command with it (`Err`).
    async fn collect(
        &mut self,
        spawned: Spawned,
        output: &mut Output,
        command: &str,
    ) -> Result<(Option<String>, Status), End> {
        let config = &self.config;
        let deadlines = Deadlines {
            timeout: config.command_timeout,
            shutdown_grace: config.shutdown_grace,
            kill_grace: config.kill_grace,
        };
        let (mut supervisor, mut stdout, mut stderr, _) =
            Supervisor::start(spawned, deadlines, self.shutdown.clone());
        let mut out_buf = vec![0u8; CHUNK];
        let mut err_buf = vec![0u8; CHUNK];
        let mut watch_buf = vec![0u8; MAX_COMMAND_LEN];
        let (mut out_done, mut err_done, mut exited) = (false, false, false);
        while !(exited && out_done && err_done) {
            let room = MAX_COMMAND_LEN - self.pending.len();
            let mut too_much = None;
            tokio::select! {
                read = stdout.read(&mut out_buf), if !out_done => match read {
                    Ok(0) | Err(_) => out_done = true,
                    Ok(n) => too_much = output.push(Stream::Stdout, &out_buf[..n]).await,
                },
                read = stderr.read(&mut err_buf), if !err_done => match read {
                    Ok(0) | Err(_) => err_done = true,
                    Ok(n) => too_much = output.push(Stream::Stderr, &err_buf[..n]).await,
                },
                event = supervisor.next() => match event {
                    Event::Exited(_) => exited = true,
                    Event::Killing(_) => {}
                    // Killed, yet something still holds the pipes: answer anyway.
                    Event::GaveUpOnPipes => break,
                },
                read = self.socket.read(&mut watch_buf[..room]), if room > 0 => {
                    self.watched(read, &watch_buf, command)?;
                }
            }
            if let Some(why) = too_much {
                supervisor.kill(KillReason::Other(why));
            }
        }
        let ended_early = supervisor.killed().map(|reason| match reason {
            KillReason::Other(why) => why.clone(),
            other => format!("{other}; the command's process group was killed"),
        });
        // Whatever the command left behind in its group ends with it.
        Ok((ended_early, supervisor.finish()))
    }

    /// What a read of the socket while a command runs means: bytes sent
    /// ahead are kept as the next command (as the original would `recv`
    /// them); the end of the connection ends the command.
    fn watched(
        &mut self,
        read: std::io::Result<usize>,
        buf: &[u8],
        command: &str,
    ) -> Result<(), End> {
        let during = || During::Command(command.to_string());
        match read {
            Ok(0) => Err(End::disconnected(during())),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Ok(())
            }
            Err(e) => Err(End::PeerGone {
                how: Gone::Lost(Some(e)),
                during: during(),
            }),
        }
    }
}

/// Why a legacy command was not run; its reply's stderr part says so.
#[derive(Debug, thiserror::Error)]
enum NotRun {
    /// Every command slot is taken.
    #[error("the server is running its limit of {0} commands; try again later")]
    Busy(usize),
    /// The audit log cannot say that it starts.
    #[error("the server cannot write its audit log, so it runs nothing; tell its operator")]
    AuditBroken,
    /// The shell could not be started.
    #[error("cannot run the command: {0}")]
    Spawn(SpawnError),
}
