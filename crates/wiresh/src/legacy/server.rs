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

use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wiresh_proto::legacy::{encode_reply_header, LegacyHeader, MAX_COMMAND_LEN};

use super::encoding::FromUtf8;
use super::peer::loopback_peer_uid;
use super::socket::set_keepalive;
use crate::audit::{self, Action, AuditLog, Ending, Outcome, Verb};
use crate::defaults::{self, LEGACY_MAX_OUTPUT, LEGACY_SEND_STALL};
use crate::exec::{self, CommandSlots, Deadlines, Event, KillReason, Spec, Supervisor};
use crate::home::hex;
use crate::listener::{ConnLog, During, End, Gone};

/// The `filename` the server puts in every reply header. The original sent
/// the placeholder `"xxxxx"`; the payload is a command's output, not a
/// file, and `-` is the usual name for standard output.
pub const REPLY_FILENAME: &str = "-";

/// Largest single read from a command's pipe or from a spool file, and
/// largest single socket write when sending a reply.
const CHUNK: usize = 256 * 1024;

/// A reply whose header and payload together are at most this big, and
/// all in memory, goes out in a single write.
const COALESCE: usize = 64 * 1024;

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
        move |_| {
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
                command = ?command,
                total_size,
                md5 = %reply.header.md5,
                spooled = reply.spooled(),
                ended_early = reply.ended_early.as_deref().unwrap_or(""),
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
    /// must close (the client went away); the process group is killed then.
    async fn run_command(&mut self, command: &str) -> Result<Reply, End> {
        let config = self.config.clone();
        let output = Output::new(config.spool_threshold, config.encoding);
        // The protocol has no error message: a command that is not run gets
        // a reply whose stderr part says why, as the shell would complain.
        let not_run = |output: Output, why: String| async move {
            output.finish(Some(why)).await.map_err(End::Spool)
        };
        let Some(_slot) = config.commands.try_take() else {
            let limit = config.commands.limit();
            info!(peer = %self.peer, command, "legacy command refused: busy");
            let why =
                format!("the server is running its limit of {limit} commands; try again later");
            return not_run(output, why).await;
        };
        let action = Action {
            peer: self.peer,
            identity: &self.identity,
            verb: Verb::Exec,
            target: command,
            pty: false,
        };
        let record = match audit::begin(config.audit.as_ref(), &action) {
            Ok(record) => record,
            Err(_) => {
                let why = "the server cannot write its audit log, so it runs nothing; \
                           tell its operator";
                return not_run(output, why.to_string()).await;
            }
        };
        let spawned = match exec::spawn_group(&Spec::shell(command), command) {
            Ok(s) => s,
            Err(e) => {
                record.end(Ending::of(Outcome::NotStarted));
                return not_run(output, format!("cannot run the command: {e}")).await;
            }
        };
        let mut output = output;
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
            let watching = self.pending.len() < MAX_COMMAND_LEN;
            let mut too_much = None;
            tokio::select! {
                read = stdout.read(&mut out_buf), if !out_done => {
                    match read {
                        Ok(0) | Err(_) => out_done = true,
                        Ok(n) => too_much = output.push(Stream::Stdout, &out_buf[..n]).await,
                    }
                }
                read = stderr.read(&mut err_buf), if !err_done => {
                    match read {
                        Ok(0) | Err(_) => err_done = true,
                        Ok(n) => too_much = output.push(Stream::Stderr, &err_buf[..n]).await,
                    }
                }
                event = supervisor.next() => match event {
                    Event::Exited(_) => exited = true,
                    Event::Killing(_) => {}
                    // Killed, yet something still holds the pipes: answer anyway.
                    Event::GaveUpOnPipes => break,
                },
                // While the command runs, the socket is watched so that a
                // client that goes away takes its command with it.
                read = self.socket.read(&mut watch_buf[..MAX_COMMAND_LEN - self.pending.len()]), if watching => {
                    match read {
                        Ok(0) => {
                            record.end(Ending::of(Outcome::Aborted));
                            return Err(End::disconnected(During::Command(command.to_string())));
                        }
                        Err(e) => {
                            record.end(Ending::of(Outcome::Aborted));
                            return Err(End::PeerGone {
                                how: Gone::Lost(Some(e)),
                                during: During::Command(command.to_string()),
                            });
                        }
                        Ok(n) => self.pending.extend_from_slice(&watch_buf[..n]),
                    }
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
        let status = supervisor.finish();
        record.end(Ending {
            code: status.code,
            signal: status.signal,
            ..Ending::of(Outcome::Finished)
        });
        output.finish(ended_early).await.map_err(End::Spool)
    }
}

/// Which output pipe bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// One output stream as it is collected: a head in memory and, once the
/// memory budget is spent, the rest in an unlinked temporary file.
#[derive(Debug, Default)]
struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    file_len: u64,
    last_byte: Option<u8>,
}

impl Spool {
    fn len(&self) -> u64 {
        self.mem.len() as u64 + self.file_len
    }

    async fn append(&mut self, data: &[u8], in_memory: bool) -> io::Result<()> {
        if self.file.is_none() && in_memory {
            self.mem.extend_from_slice(data);
        } else {
            let file = match &mut self.file {
                Some(file) => file,
                None => {
                    let file = tokio::task::spawn_blocking(tempfile::tempfile)
                        .await
                        .map_err(io::Error::other)??;
                    self.file.insert(File::from_std(file))
                }
            };
            file.write_all(data).await?;
            self.file_len += data.len() as u64;
        }
        if let Some(&b) = data.last() {
            self.last_byte = Some(b);
        }
        Ok(())
    }

    /// Rewinds the spool file for reading; the data written so far is
    /// flushed first (tokio writes files in the background).
    async fn rewind(&mut self) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush().await?;
            file.seek(SeekFrom::Start(0)).await?;
        }
        Ok(())
    }
}

/// A command's output while it runs: both streams, a shared memory budget,
/// and the md5 of stdout so far (stderr is hashed at the end, because the
/// payload is stdout then stderr while the two arrive interleaved).
struct Output {
    stdout: Spool,
    stderr: Spool,
    threshold: usize,
    stdout_md5: Md5,
    /// Set when the output went over [`LEGACY_MAX_OUTPUT`] or could not be spooled:
    /// later bytes are read (so the command never blocks) and dropped.
    discarding: bool,
    /// With `--legacy-encoding`: the output of each stream, turned from
    /// UTF-8 into that encoding as it arrives (stdout, stderr).
    encode: Option<(FromUtf8, FromUtf8)>,
    /// That encoding, for wiresh's own note.
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl Output {
    fn new(threshold: usize, encoding: Option<&'static encoding_rs::Encoding>) -> Self {
        Output {
            stdout: Spool::default(),
            stderr: Spool::default(),
            threshold,
            stdout_md5: Md5::new(),
            discarding: false,
            encode: encoding.map(|e| (FromUtf8::new(e), FromUtf8::new(e))),
            encoding,
        }
    }

    /// Adds bytes from one stream. Returns why the command must be killed
    /// when it produced more than can be kept.
    async fn push(&mut self, stream: Stream, data: &[u8]) -> Option<String> {
        match &mut self.encode {
            Some((out, err)) => {
                let encoded = match stream {
                    Stream::Stdout => out.push(data, false),
                    Stream::Stderr => err.push(data, false),
                };
                self.push_bytes(stream, &encoded).await
            }
            None => self.push_bytes(stream, data).await,
        }
    }

    /// Adds bytes, already in the answer's encoding, to one stream.
    async fn push_bytes(&mut self, stream: Stream, data: &[u8]) -> Option<String> {
        if self.discarding {
            return None;
        }
        if self.stdout.len() + self.stderr.len() + data.len() as u64 > LEGACY_MAX_OUTPUT {
            self.discarding = true;
            return Some(format!(
                "output exceeded {LEGACY_MAX_OUTPUT} bytes, so only the first bytes are kept; \
                 the command's process group was killed"
            ));
        }
        let in_memory =
            self.stdout.mem.len() + self.stderr.mem.len() + data.len() <= self.threshold;
        let spool = match stream {
            Stream::Stdout => {
                self.stdout_md5.update(data);
                &mut self.stdout
            }
            Stream::Stderr => &mut self.stderr,
        };
        if let Err(e) = spool.append(data, in_memory).await {
            self.discarding = true;
            return Some(format!(
                "cannot spool the output to a temporary file ({e}); \
                 the command's process group was killed"
            ));
        }
        None
    }

    /// Completes the output: appends the note saying why the command was
    /// ended early (if it was; `wiresh: ` and a newline are added) to
    /// stderr, hashes, and builds the reply.
    async fn finish(mut self, ended_early: Option<String>) -> io::Result<Reply> {
        if let Some((mut out, mut err)) = self.encode.take() {
            // What the encoders held back (half a character at the end).
            let (out_tail, err_tail) = (out.push(&[], true), err.push(&[], true));
            self.push_bytes(Stream::Stdout, &out_tail).await;
            self.push_bytes(Stream::Stderr, &err_tail).await;
        }
        if let Some(why) = &ended_early {
            let last = self.stderr.last_byte.or(self.stdout.last_byte);
            let sep = if matches!(last, None | Some(b'\n')) {
                ""
            } else {
                "\n"
            };
            let note = format!("{sep}wiresh: {why}\n");
            let note = match self.encoding {
                Some(encoding) => encoding.encode(&note).0.into_owned(),
                None => note.into_bytes(),
            };
            let in_memory = true; // a few bytes; appended to the file if there is one
            self.stderr.append(&note, in_memory).await?;
        }
        let mut md5 = self.stdout_md5;
        md5.update(&self.stderr.mem);
        self.stderr.rewind().await?;
        if let Some(file) = &mut self.stderr.file {
            let mut buf = vec![0u8; CHUNK];
            let mut left = self.stderr.file_len;
            while left > 0 {
                let n = read_some(file, &mut buf, left).await?;
                md5.update(&buf[..n]);
                left -= n as u64;
            }
        }
        self.stdout.rewind().await?;
        self.stderr.rewind().await?;
        Ok(Reply {
            header: LegacyHeader {
                total_size: self.stdout.len() + self.stderr.len(),
                md5: hex(&md5.finalize()),
                filename: REPLY_FILENAME.to_string(),
            },
            stdout: self.stdout,
            stderr: self.stderr,
            ended_early,
        })
    }
}

/// Reads at most `left` bytes (and at least one) into `buf`; a spool file
/// that ends early was tampered with, which is an error.
async fn read_some(file: &mut File, buf: &mut [u8], left: u64) -> io::Result<usize> {
    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    match file.read(&mut buf[..want]).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "spool file shorter than what was written to it",
        )),
        n => Ok(n),
    }
}

/// A finished command's answer, ready to send.
struct Reply {
    header: LegacyHeader,
    stdout: Spool,
    stderr: Spool,
    /// Why the command was killed before it ended by itself, if it was.
    ended_early: Option<String>,
}

impl Reply {
    fn spooled(&self) -> bool {
        self.stdout.file.is_some() || self.stderr.file.is_some()
    }
}

/// Sends a reply: the header with its length in one write (together with
/// the payload when it is small), then stdout, then stderr.
async fn send_reply(socket: &mut TcpStream, mut reply: Reply) -> io::Result<()> {
    let mut head = encode_reply_header(&reply.header);
    let in_memory = !reply.spooled();
    if in_memory && head.len() as u64 + reply.header.total_size <= COALESCE as u64 {
        head.extend_from_slice(&reply.stdout.mem);
        head.extend_from_slice(&reply.stderr.mem);
        return write_timed(socket, &head).await;
    }
    write_timed(socket, &head).await?;
    let mut buf = Vec::new();
    for spool in [&mut reply.stdout, &mut reply.stderr] {
        write_timed(socket, &spool.mem).await?;
        if let Some(file) = &mut spool.file {
            buf.resize(CHUNK, 0);
            let mut left = spool.file_len;
            while left > 0 {
                let n = read_some(file, &mut buf, left).await?;
                write_timed(socket, &buf[..n]).await?;
                left -= n as u64;
            }
        }
    }
    Ok(())
}

/// Writes all of `data`, failing if the client takes no bytes for
/// [`LEGACY_SEND_STALL`].
async fn write_timed(socket: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(CHUNK) {
        time::timeout(LEGACY_SEND_STALL, socket.write_all(chunk))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {LEGACY_SEND_STALL:?}"),
                )
            })??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn contents(spool: &mut Spool) -> Vec<u8> {
        let mut all = spool.mem.clone();
        if let Some(file) = &mut spool.file {
            file.read_to_end(&mut all).await.unwrap();
        }
        all
    }

    #[tokio::test]
    async fn spools_past_the_threshold_and_hashes_stdout_then_stderr() {
        let mut output = Output::new(10, None);
        assert!(output.push(Stream::Stderr, b"err1-").await.is_none());
        assert!(output.push(Stream::Stdout, b"out1-").await.is_none());
        // Over the shared budget of 10: both streams go on disk from here.
        assert!(output.push(Stream::Stdout, b"out2-").await.is_none());
        assert!(output.push(Stream::Stderr, b"err2").await.is_none());
        let mut reply = output.finish(None).await.unwrap();
        assert!(reply.spooled());
        assert_eq!(reply.stdout.mem, b"out1-");
        assert_eq!(reply.stderr.mem, b"err1-");
        let payload = [
            contents(&mut reply.stdout).await,
            contents(&mut reply.stderr).await,
        ]
        .concat();
        assert_eq!(payload, b"out1-out2-err1-err2");
        assert_eq!(reply.header.total_size, payload.len() as u64);
        assert_eq!(reply.header.md5, hex(&Md5::digest(&payload)));
    }

    #[tokio::test]
    async fn a_note_says_why_a_command_ended_early() {
        let mut output = Output::new(1024, None);
        output.push(Stream::Stdout, b"partial").await;
        let mut reply = output
            .finish(Some(
                "command timed out after 1s; its group was killed".into(),
            ))
            .await
            .unwrap();
        let err = contents(&mut reply.stderr).await;
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "\nwiresh: command timed out after 1s; its group was killed\n"
        );
    }
}
