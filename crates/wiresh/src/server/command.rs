//! Running one command for a session: spawn, stream, feed, reap.
//!
//! The session keeps reading the connection for the whole life of the
//! command — stdin is flow-controlled by a window (`hello.stdin_window`), so
//! buffering it never needs more than that — which means `cancel`, `ping`
//! and a vanished client are always noticed, whatever the command does with
//! its input and output. The command's deadlines are the
//! [`Supervisor`]'s.
//!
//! A command runs on pipes, or on a pty when the request asks for one
//! (`exec.pty`): then its terminal is both its output (all of it sent as
//! `stdout`) and its input, and `resize` reaches it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{ChildStderr, ChildStdout};
use tokio::time::{self, Instant};
use tracing::info;
use wiresh_proto::{ErrorCode, ExecRequest, ExitStatus, Frame, Message};

use super::buffers::BufferPool;
use super::refusal::Refusal;
use super::session::Session;
use crate::audit::{self, Ending, Outcome, Verb};
use crate::conn::{Closed, FrameSender, Outgoing};
use crate::defaults::STARTED_HOLD;
use crate::exec::{self, Deadlines, Event, KillReason, Spec, Supervisor, Terminal};
use crate::listener::{During, End};

/// Largest chunk read from a command's pipe into one frame. Large enough
/// that per-frame costs vanish at full speed, small enough that what a
/// connection holds in flight stays near 2.5 MiB (see `conn`); never more
/// than the body limit, which every client accepts.
const CHUNK: usize = 256 * 1024;

/// The first read from a command's pipe or terminal (see `copy_pump`).
const FIRST_READ: usize = 8 * 1024;

/// Largest body spliced from a pipe into one frame (never more than the
/// body limit): nothing is held in memory for it, so it can be as large as
/// the pipe (see `exec::spawn`).
const SPLICE_CHUNK: usize = 1024 * 1024;

/// Output of a command copied before the rest is spliced (see `pump`).
const SPLICE_AFTER: u64 = 1024 * 1024;

/// A command's frames into the connection's ordered stream, holding back
/// what can wait to travel with the next frame, as TCP delays its ACKs:
///
/// - `started`, until something else goes out or [`STARTED_HOLD`] has
///   passed: a short command's `started` and `exit` then leave in one
///   write, and the client wakes once for them instead of twice;
/// - acknowledgements of input (`stdin_ack`), until something else goes
///   out, the input ends or a quarter of the window is owed (see
///   [`StdinFeed`]): a key typed on a terminal is then acknowledged
///   together with its echo, one wake-up per key at each end. No timer
///   bounds the hold: arming one per key wakes the runtime's other thread
///   and costs what the hold saves, and none is needed, since a client
///   owed less than a quarter of its window can always send on.
///
/// Whatever goes first takes what is held with it, in order, so the wire
/// reads as if each had been sent at once.
#[derive(Debug, Clone)]
struct Outbox {
    data: FrameSender,
    started: Arc<Mutex<Option<Frame>>>,
    /// Bytes of input written (or discarded) and not yet acknowledged.
    owed: Arc<AtomicU64>,
}

impl Outbox {
    fn new(data: FrameSender, started: Frame) -> Outbox {
        Outbox {
            data,
            started: Arc::new(Mutex::new(Some(started))),
            owed: Arc::new(AtomicU64::new(0)),
        }
    }

    fn take_started(&self) -> Option<Outgoing> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(Outgoing::from)
    }

    fn take_ack(&self) -> Option<Outgoing> {
        match self.owed.swap(0, Ordering::AcqRel) {
            0 => None,
            bytes => Some(Frame::new(Message::StdinAck { bytes }).into()),
        }
    }

    /// Whether `started` is still held.
    fn holding(&self) -> bool {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Owes the client an acknowledgement of `bytes` more of its input;
    /// returns how much is owed now.
    fn owe(&self, bytes: usize) -> u64 {
        self.owed.fetch_add(bytes as u64, Ordering::AcqRel) + bytes as u64
    }

    /// Queues `frame`, behind what is held.
    async fn send(&self, frame: impl Into<Outgoing>) -> Result<(), Closed> {
        let items = [self.take_started(), self.take_ack(), Some(frame.into())];
        self.data.send_together(items).await
    }

    /// Sends a frame of `kind` whose body is the next `len` bytes of
    /// `pipe` (they are there already), or more up to `up_to` if more has
    /// come when the socket takes it, spliced into the socket; returns the
    /// body's length once it has left the pipe.
    async fn send_spliced(
        &self,
        kind: Message,
        pipe: Arc<OwnedFd>,
        len: usize,
        up_to: usize,
    ) -> Result<usize, Closed> {
        let (item, moved) = FrameSender::spliced(kind, pipe, len, up_to);
        self.send(item).await?;
        moved.await.unwrap_or(Err(Closed))
    }

    /// Queues what is held now.
    async fn flush(&self) -> Result<(), Closed> {
        let items = [self.take_started(), self.take_ack()];
        self.data.send_together(items).await
    }
}

/// What the server runs for a request, or why the request is malformed.
fn spec_for(req: &ExecRequest) -> Result<Spec, Refusal> {
    let program = match req.program().map_err(|e| Refusal::BadRequest(e.into()))? {
        wiresh_proto::Program::Shell(line) => exec::Program::Shell(line.to_string()),
        wiresh_proto::Program::Argv(argv) => exec::Program::Argv(argv.to_vec()),
        wiresh_proto::Program::LoginShell => exec::Program::LoginShell,
    };
    if let Some(pty) = &req.pty {
        pty.check().map_err(Refusal::BadRequest)?;
    }
    Ok(Spec {
        program,
        env: req
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: req.cwd.as_ref().map(Into::into),
        stdin: req.stdin,
    })
}

/// A started command, before its supervisor takes the child: the command's
/// side of its I/O and what is needed to supervise it.
struct Started {
    child: exec::Child,
    guard: exec::GroupGuard,
    pid: u32,
    io: CommandIo,
}

/// How the server talks to a command.
enum CommandIo {
    /// Pipes: stdout and stderr apart, and stdin when the request has one.
    Pipes {
        stdout: ChildStdout,
        stderr: ChildStderr,
        stdin: Option<tokio::process::ChildStdin>,
    },
    /// A pty: one terminal for input and output.
    Terminal(Terminal),
}

/// Starts `spec`, on pipes or on a pty.
fn start(
    spec: &Spec,
    pty: Option<&wiresh_proto::PtyRequest>,
    what: &str,
) -> Result<Started, exec::SpawnError> {
    Ok(match pty {
        None => {
            let s = exec::spawn_group(spec, what)?;
            Started {
                child: s.child,
                guard: s.guard,
                pid: s.pid,
                io: CommandIo::Pipes {
                    stdout: s.stdout,
                    stderr: s.stderr,
                    stdin: s.stdin,
                },
            }
        }
        Some(pty) => {
            let s = exec::spawn_on_pty(spec, pty, what)?;
            Started {
                child: s.child.into(),
                guard: s.guard,
                pid: s.pid,
                io: CommandIo::Terminal(s.terminal),
            }
        }
    })
}

/// Who ran what, for both audit lines of a command.
fn exec_action<'a>(session: &'a Session, what: &'a str, pty: bool) -> audit::Action<'a> {
    audit::Action {
        pty,
        ..session.action(Verb::Exec, what)
    }
}

/// Runs `req` to completion. `Ok` means the connection can take the next
/// command; `Err` means it must close.
pub(super) async fn run(session: &mut Session, req: ExecRequest) -> Result<(), End> {
    let what = req.describe();
    let pty = req.pty.is_some();
    let admitted = match session.audit_refusal() {
        Some(refusal) => Err(refusal),
        None => spec_for(&req).and_then(|spec| session.config.policy.admit(spec, pty)),
    };
    let spec = match admitted {
        Ok(spec) => spec,
        Err(refusal) => {
            session.audit_refused(exec_action(session, &what, pty));
            return session.refuse(&format!("command `{what}`"), refusal).await;
        }
    };
    // The slot is held until the command ends: it bounds the commands
    // running server-wide. The start is on record before anything runs.
    let started = session.command_slot().and_then(|slot| {
        let record = session.audit_begin(exec_action(session, &what, pty))?;
        Ok((slot, record, start(&spec, req.pty.as_ref(), &what)))
    });
    let started = match started {
        Ok((slot, record, Err(e))) => {
            drop(slot);
            record.end(Ending::of(Outcome::NotStarted));
            Err(Refusal::not_started(e))
        }
        Ok((slot, record, Ok(started))) => Ok((slot, record, started)),
        Err(refusal) => Err(refusal),
    };
    let (_slot, record, started) = match started {
        Ok(pair) => pair,
        Err(refusal) => return session.refuse(&format!("command `{what}`"), refusal).await,
    };
    let pid = started.pid;
    let config = session.config.clone();
    let deadlines = Deadlines {
        timeout: match (
            req.timeout_ms.map(Duration::from_millis),
            config.command_timeout,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        shutdown_grace: config.shutdown_grace,
        kill_grace: config.kill_grace,
    };
    let mut supervisor = Supervisor::new(
        started.child,
        started.guard,
        deadlines,
        session.shutdown.clone(),
    );

    let data = Outbox::new(session.conn.sender(), Frame::new(Message::Started { pid }));
    let lost = || End::lost(During::Answer);
    let chunk = CHUNK.min(config.limits.max_body);
    // The pumps are futures of this task, polled by the loop below rather
    // than tasks of their own: no spawn and no cross-task wake-up per
    // command, and dropped on every way out of this function, so no pump
    // outlives the command and keeps the connection's writer (and socket)
    // alive. On a pty, stderr is the terminal too: its pump has nothing to
    // read.
    let pump_of = |from, kind| pump(from, kind, data.clone(), chunk);
    // Over plain TCP, a large output goes to the socket with splice(2),
    // never through this process's memory (see `pump`); over TLS it must be
    // read to be encrypted.
    let splice = data.data.can_splice();
    let output = |pipe: ChildPipe| match splice {
        true => Source::Child(pipe),
        false => Source::Read(Box::new(pipe)),
    };
    let (stdout_pump, stderr_pump, stdin, terminal) = match started.io {
        CommandIo::Pipes {
            stdout,
            stderr,
            stdin,
        } => (
            pump_of(output(ChildPipe::Out(stdout)), Message::Stdout),
            pump_of(output(ChildPipe::Err(stderr)), Message::Stderr),
            stdin.map(|pipe| StdinFeed::new(pipe, data.clone(), config.stdin_window)),
            None,
        ),
        CommandIo::Terminal(terminal) => {
            let (mut feed, feeding) =
                StdinFeed::new(terminal.writer(), data.clone(), config.stdin_window);
            if !req.stdin {
                feed.close(); // no input: the terminal gets end of file at once
            }
            (
                pump_of(Source::Read(Box::new(terminal.reader())), Message::Stdout),
                pump_of(Source::Read(Box::new(tokio::io::empty())), Message::Stderr),
                Some((feed, feeding)),
                Some(terminal),
            )
        }
    };
    let (mut stdin_feed, mut feeding) = match stdin {
        Some((feed, feeding)) => (Some(feed), Some(feeding)),
        None => (None, None),
    };
    let (mut stdout_pump, mut stderr_pump) =
        (std::pin::pin!(stdout_pump), std::pin::pin!(stderr_pump));
    let (mut stdout_done, mut stderr_done, mut exited) = (false, false, false);
    let mut bytes_out = 0u64;
    let mut bytes_in = 0u64;

    // The client promises a frame at least every `keepalive`; allow three
    // missed beats before deciding it is gone.
    let silence_limit = config.keepalive * 3;
    let mut last_heard = Instant::now();
    let hold = time::sleep(STARTED_HOLD);
    tokio::pin!(hold);

    let aborted: Option<End> = 'run: {
        while !exited || !stdout_done || !stderr_done {
            tokio::select! {
                biased;
                next = session.conn.recv() => {
                    last_heard = Instant::now();
                    let frame = match next {
                        None => break 'run Some(End::disconnected(During::Command(what.clone()))),
                        Some(Err(e)) => break 'run Some(started_first(&data, session.fail_recv(e.into(), "")).await),
                        Some(Ok(frame)) => frame,
                    };
                    match frame.message {
                        Message::Stdin => {
                            bytes_in += frame.body.len() as u64;
                            if let Some(feed) = &stdin_feed {
                                if let Err(e) = feed.push(frame.body, config.stdin_window) {
                                    break 'run Some(started_first(&data, session.fail(ErrorCode::FlowControl, e.to_string())).await);
                                }
                            }
                        }
                        Message::StdinEnd => {
                            if let Some(feed) = &mut stdin_feed {
                                feed.close();
                            }
                        }
                        Message::Cancel => {
                            supervisor.kill(KillReason::Cancelled);
                        }
                        // Without a pty there is nothing to resize (documented).
                        Message::Resize(size) => {
                            if let Some(terminal) = &terminal {
                                let _ = terminal.resize(size);
                            }
                        }
                        Message::Ping => session.conn.pong(frame.body),
                        Message::Pong => {}
                        other => break 'run Some(started_first(&data, session.unexpected(&other, "while a command runs")).await),
                    }
                }
                event = supervisor.next() => match event {
                    Event::Exited(_) => {
                        exited = true;
                        if terminal.is_some() {
                            // What is left would hold the terminal open.
                            supervisor.hang_up();
                        }
                    }
                    Event::Killing(_) => {}
                    // Killed, yet the pipes stay open: something escaped the
                    // group. Stop waiting for them (the pumps are aborted).
                    Event::GaveUpOnPipes => {
                        (stdout_done, stderr_done, exited) = (true, true, true);
                    }
                },
                () = async { feeding.as_mut().expect("checked").await }, if feeding.is_some() => {
                    feeding = None;
                }
                n = &mut stdout_pump, if !stdout_done => { stdout_done = true; bytes_out += n; }
                n = &mut stderr_pump, if !stderr_done => { stderr_done = true; bytes_out += n; }
                _ = time::sleep_until(last_heard + silence_limit), if !silence_limit.is_zero() => {
                    let message = format!(
                        "no frame from the client for {silence_limit:?} during `{what}` (keepalive missed); \
                         the command was killed"
                    );
                    break 'run Some(started_first(&data, session.fail(ErrorCode::Timeout, message)).await);
                }
                () = &mut hold, if data.holding() => {
                    if data.flush().await.is_err() {
                        break 'run Some(lost());
                    }
                }
                () = data.data.closed() => {
                    break 'run Some(End::lost(During::Command(what.clone())));
                }
            }
        }
        None
    };
    if let Some(end) = aborted {
        record.end(Ending {
            bytes_in,
            bytes_out,
            ..Ending::of(Outcome::Aborted)
        });
        return Err(end);
    }
    // No `stdin_ack` may follow the `exit`.
    drop((stdin_feed, feeding));
    let duration = supervisor.elapsed();
    let timed_out = supervisor.timed_out();
    let cancelled = supervisor.killed() == Some(&KillReason::Cancelled);
    // Killed at the end of the shutdown grace, or by a second signal.
    let killed_by_shutdown = match supervisor.killed() {
        Some(reason) => *reason == KillReason::Shutdown,
        None => session.shutdown.is_cancelled() && supervisor.status().signal.is_some(),
    };
    let drain_limit = supervisor.drain_limit();
    // Whatever the command left behind in its group ends with it.
    let status = supervisor.finish();
    let exit = ExitStatus {
        code: status.code,
        signal: status.signal,
        duration_ms: duration.as_millis() as u64,
        timed_out,
        shutdown: killed_by_shutdown,
    };
    info!(
        peer = %session.peer,
        client = %session.identity,
        command = %what,
        code = ?exit.code,
        signal = ?exit.signal,
        timed_out,
        cancelled,
        duration_ms = exit.duration_ms,
        bytes_out,
        bytes_in,
        "command finished"
    );
    record.end(Ending {
        outcome: if cancelled {
            Outcome::Cancelled
        } else {
            Outcome::Finished
        },
        code: exit.code,
        signal: exit.signal,
        timed_out,
        bytes_in,
        bytes_out,
    });
    let exit = Frame::new(Message::Exit(exit));
    if session.shutdown.is_cancelled() {
        // A client that stopped reading must not hold up the shutdown.
        let _ = time::timeout(drain_limit, data.send(exit)).await;
        return Err(session
            .fail(ErrorCode::ShuttingDown, "server is shutting down")
            .await);
    }
    data.send(exit).await.map_err(|_| lost())
}

/// Sends the held `started` (the command did start: a client must not take
/// the error that follows for "never ran", and think a retry safe), then
/// the error `fail` sends.
async fn started_first(data: &Outbox, fail: impl std::future::Future<Output = End>) -> End {
    let _ = data.flush().await;
    fail.await
}

/// One of a command's outputs: a pipe or its terminal.
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// Where a pump takes a command's output from.
enum Source {
    /// Anything readable; the bytes are copied into frames.
    Read(BoxRead),
    /// A command's output pipe over a plain TCP connection: copied while
    /// the output is small, spliced once it is large.
    Child(ChildPipe),
}

/// A command's stdout or stderr pipe, as tokio holds it.
enum ChildPipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl ChildPipe {
    fn into_owned_fd(self) -> std::io::Result<OwnedFd> {
        match self {
            ChildPipe::Out(pipe) => pipe.into_owned_fd(),
            ChildPipe::Err(pipe) => pipe.into_owned_fd(),
        }
    }
}

impl AsyncRead for ChildPipe {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ChildPipe::Out(pipe) => std::pin::Pin::new(pipe).poll_read(cx, buf),
            ChildPipe::Err(pipe) => std::pin::Pin::new(pipe).poll_read(cx, buf),
        }
    }
}

/// Sends one of the command's outputs as frames of `kind` until end of
/// file; returns the byte count. Waiting on a full queue (or for a splice
/// to finish) is what slows the command down to the client's pace.
///
/// A command's pipe over plain TCP is copied for its first
/// [`SPLICE_AFTER`] bytes, like any output: most commands say little, and
/// taking the pipe over for splicing costs a few system calls. Past that
/// the rest is spliced.
async fn pump(source: Source, kind: Message, out: Outbox, chunk: usize) -> u64 {
    let mut pipe = match source {
        Source::Read(mut pipe) => {
            return copy_pump(&mut pipe, &kind, &out, chunk, u64::MAX).await.0
        }
        Source::Child(pipe) => pipe,
    };
    let (copied, ended) = copy_pump(&mut pipe, &kind, &out, chunk, SPLICE_AFTER).await;
    if ended {
        return copied;
    }
    let fd = match pipe.into_owned_fd() {
        Ok(fd) => fd,
        Err(e) => {
            // Cannot happen short of a broken epoll; say so rather than hang.
            tracing::warn!(
                "cannot take over a command's output pipe: {e}; the rest of its output is lost"
            );
            return copied;
        }
    };
    // The writer splices from a handle of its own on the pipe, which stays
    // open as long as it may use it, whatever happens to this pump. Without
    // one, the pipe is read and copied.
    copied
        + match (fd.try_clone(), pipe::Receiver::from_owned_fd(fd)) {
            (Ok(shared), Ok(ready)) => splice_pump(ready, Arc::new(shared), kind, out).await,
            (Err(_), Ok(mut ready)) => copy_pump(&mut ready, &kind, &out, chunk, u64::MAX).await.0,
            (_, Err(e)) => {
                tracing::warn!(
                    "cannot read a command's output pipe: {e}; the rest of its output is lost"
                );
                0
            }
        }
}

/// The zero-copy pump: waits until the pipe has bytes, asks how many
/// (`FIONREAD`), and has the connection's writer splice exactly that many
/// (at most [`SPLICE_CHUNK`]) behind a frame header saying so.
async fn splice_pump(
    ready: pipe::Receiver,
    shared: Arc<OwnedFd>,
    kind: Message,
    out: Outbox,
) -> u64 {
    let chunk = SPLICE_CHUNK.min(wiresh_proto::Limits::default().max_body);
    let mut total = 0u64;
    let mut small = [0u8; 4096];
    loop {
        if ready.readable().await.is_err() {
            break;
        }
        let queued = rustix::io::ioctl_fionread(&ready).unwrap_or(0);
        if queued > 0 {
            let len = usize::try_from(queued).unwrap_or(chunk).min(chunk);
            match out
                .send_spliced(kind.clone(), shared.clone(), len, chunk)
                .await
            {
                Ok(sent) => total += sent as u64,
                Err(Closed) => break,
            }
            continue;
        }
        // Readable with nothing queued: the command has closed the pipe,
        // unless bytes came just now. A read tells; a would-block clears
        // the stale readiness.
        match ready.try_read(&mut small) {
            Ok(0) => break,
            Ok(n) => {
                let body = Bytes::copy_from_slice(&small[..n]);
                if out
                    .send(Frame::with_body(kind.clone(), body))
                    .await
                    .is_err()
                {
                    break;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    total
}

/// The copying pump: reads chunks into memory and queues them as frames,
/// until end of file or until `limit` bytes have gone; returns how many,
/// and whether the output ended.
async fn copy_pump<R: AsyncRead + Unpin + ?Sized>(
    pipe: &mut R,
    kind: &Message,
    out: &Outbox,
    chunk: usize,
    limit: u64,
) -> (u64, bool) {
    let mut total = 0u64;
    let mut buf = BytesMut::new();
    // Whole chunks, once reads come back that large, are read into buffers
    // that come back when their frames are written.
    let pool = BufferPool::new(chunk);
    // Reads start small and grow while they come back full: a command that
    // writes a line or a key's echo costs a small buffer per frame, not a
    // chunk's worth of memory to allocate (and, for a terminal, to zero).
    let mut want = FIRST_READ.min(chunk);
    while total < limit {
        let body = if want == chunk {
            let mut whole = pool.take();
            match pipe.read(&mut whole).await {
                Ok(n) if n > 0 => pool.body(whole, n),
                _ => return (total, true),
            }
        } else {
            // Reuses the allocation once the previous frame has been written.
            buf.reserve(want);
            match (&mut *pipe).take(want as u64).read_buf(&mut buf).await {
                Ok(n) if n > 0 => buf.split().freeze(),
                _ => return (total, true),
            }
        };
        total += body.len() as u64;
        if body.len() == want {
            want = (want * 2).min(chunk);
        }
        if out
            .send(Frame::with_body(kind.clone(), body))
            .await
            .is_err()
        {
            return (total, true);
        }
    }
    (total, false)
}

/// A client sent more stdin than its window allows.
#[derive(Debug, thiserror::Error)]
#[error("{unacked} bytes of stdin unacknowledged, more than the window of {window}")]
struct WindowExceeded {
    unacked: usize,
    window: usize,
}

/// Client input on its way to the command's stdin.
///
/// Chunks are queued without waiting (the client may have at most
/// `stdin_window` bytes unacknowledged, which bounds the queue) and written
/// by a future the command's task polls beside its pumps (see
/// [`StdinFeed::new`]); each written — or, once the command has closed
/// its input, discarded — piece is acknowledged with `stdin_ack` in the
/// ordered output stream, which reopens the client's window. Small input is
/// acknowledged together with what it causes (see [`Outbox`]).
///
/// Small chunks are copied together into pieces of up to [`STDIN_PIECE`]
/// bytes rather than queued one by one: a `stdin` body is a view into the
/// connection's read buffer, so a window of one-byte frames, each queued
/// as it came, kept some 70 times the window alive (every frame's share of
/// the buffer, and a queue entry each).
struct StdinFeed {
    inbox: Arc<StdinInbox>,
    /// Whether input is still taken (until `stdin_end`).
    open: bool,
    unacked: Arc<AtomicUsize>,
}

/// The writing half of a [`StdinFeed`]: a future that ends once the input
/// has ended and is written, or the connection is gone.
type Feeding = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Input smaller than this is copied into a shared piece; larger input is
/// queued as it came (it pins little more than itself).
const STDIN_COPY_BELOW: usize = 16 * 1024;

/// Most bytes small input is gathered into before a new piece starts.
const STDIN_PIECE: usize = 64 * 1024;

/// The queue between [`StdinFeed::push`] and the future that writes.
///
/// Nothing is woken when input arrives: the one task that pushes (the
/// command's) is the one that polls the writing future, and its loop polls
/// that future again after every frame it handles. A wake-up would be the
/// task waking itself, which a multi-threaded runtime pays for by waking
/// another worker thread, on every key typed.
#[derive(Default)]
struct StdinInbox {
    state: std::sync::Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    /// Pieces ready to write, in order.
    pieces: std::collections::VecDeque<Bytes>,
    /// Small input gathered after the last piece.
    tail: BytesMut,
    /// `stdin_end` arrived: once the queue is written, close the input.
    ended: bool,
}

impl StdinInbox {
    fn state(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, chunk: Bytes) {
        let mut state = self.state();
        let state = &mut *state;
        if chunk.len() < STDIN_COPY_BELOW {
            if state.tail.len() + chunk.len() > STDIN_PIECE {
                let full = state.tail.split().freeze();
                state.pieces.push_back(full);
            }
            state.tail.extend_from_slice(&chunk);
        } else {
            if !state.tail.is_empty() {
                let gathered = state.tail.split().freeze();
                state.pieces.push_back(gathered);
            }
            state.pieces.push_back(chunk);
        }
    }

    fn end(&self) {
        self.state().ended = true;
    }

    /// The next piece to write; `None` once the input has ended and
    /// everything before its end is taken. Pending until the pushing task
    /// polls again (see [`StdinInbox`]).
    async fn next(&self) -> Option<Bytes> {
        std::future::poll_fn(|_| {
            let mut state = self.state();
            if let Some(piece) = state.pieces.pop_front() {
                return Poll::Ready(Some(piece));
            }
            if !state.tail.is_empty() {
                return Poll::Ready(Some(state.tail.split().freeze()));
            }
            match state.ended {
                true => Poll::Ready(None),
                false => Poll::Pending,
            }
        })
        .await
    }
}

impl StdinFeed {
    /// Feeds `pipe`, a pipe or a terminal: its end (`stdin_end`) is the
    /// pipe's shutdown, which on a terminal types the end-of-file key.
    ///
    /// The writing is a future for the command's own task to poll, as the
    /// pumps are, not a task of its own: a key typed on a terminal then
    /// reaches it with no hand-over between tasks (and threads) on the way,
    /// and the writing stops whenever the command's task drops it. That
    /// task must poll it again after each [`StdinFeed::push`] and
    /// [`StdinFeed::close`]: nothing else wakes it for them (see
    /// [`StdinInbox`]).
    fn new<W>(mut pipe: W, acks: Outbox, window: usize) -> (StdinFeed, Feeding)
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let inbox = Arc::new(StdinInbox::default());
        let unacked = Arc::new(AtomicUsize::new(0));
        let (queue, counter) = (inbox.clone(), unacked.clone());
        // Acknowledged without delay past this, so the client never waits
        // on a window held shut by acknowledgements still owed.
        let eager = (window as u64 / 4).max(1);
        let feeding = Box::pin(async move {
            let mut open = true;
            while let Some(piece) = queue.next().await {
                // A command that closed its input loses the rest, as with a pipe.
                open = open && pipe.write_all(&piece).await.is_ok();
                counter.fetch_sub(piece.len(), Ordering::AcqRel);
                if acks.owe(piece.len()) >= eager && acks.flush().await.is_err() {
                    return;
                }
            }
            // stdin_end: the pipe is closed when dropped; a terminal gets
            // its end-of-file key.
            if open {
                let _ = pipe.shutdown().await;
            }
            let _ = acks.flush().await;
        });
        let feed = StdinFeed {
            inbox,
            open: true,
            unacked,
        };
        (feed, feeding)
    }

    /// Queues a chunk, or says how the client broke the window.
    fn push(&self, chunk: Bytes, window: usize) -> Result<(), WindowExceeded> {
        if !self.open || chunk.is_empty() {
            return Ok(()); // after stdin_end: ignored, as documented
        }
        let unacked = self.unacked.fetch_add(chunk.len(), Ordering::AcqRel) + chunk.len();
        if unacked > window {
            return Err(WindowExceeded { unacked, window });
        }
        self.inbox.push(chunk);
        Ok(())
    }

    /// The client's stdin ended: close the command's input once the queue
    /// is written.
    fn close(&mut self) {
        if self.open {
            self.open = false;
            self.inbox.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::FrameConn;
    use wiresh_proto::{FrameCodec, Limits};

    const WITHIN: Duration = Duration::from_secs(5);

    /// A connection whose frames the test reads at the other end.
    fn pair() -> (FrameConn, FrameConn) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            FrameConn::new(a, Limits::default(), FrameCodec::default()),
            FrameConn::new(b, Limits::default(), FrameCodec::default()),
        )
    }

    async fn next(conn: &mut FrameConn) -> Frame {
        conn.recv_within(WITHIN).await.expect("a frame")
    }

    /// Awaits `work` while polling `feeding` in the same task, as the
    /// command's task does.
    async fn beside<T>(feeding: &mut Feeding, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut fed = false;
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = &mut *feeding, if !fed => fed = true,
            }
        }
    }

    #[tokio::test]
    async fn what_is_held_leaves_first_in_order() {
        let (server, mut client) = pair();
        let outbox = Outbox::new(server.sender(), Frame::new(Message::Started { pid: 7 }));
        outbox.owe(3);
        outbox.owe(4);
        let output = Frame::with_body(Message::Stdout, &b"echo"[..]);
        outbox.send(output).await.unwrap();
        assert_eq!(next(&mut client).await.message, Message::Started { pid: 7 });
        assert_eq!(
            next(&mut client).await.message,
            Message::StdinAck { bytes: 7 }
        );
        let echo = next(&mut client).await;
        assert_eq!(
            (echo.message, &echo.body[..]),
            (Message::Stdout, &b"echo"[..])
        );
        // Nothing is held any more: the next frame goes alone.
        outbox.send(Frame::new(Message::Stderr)).await.unwrap();
        assert_eq!(next(&mut client).await.message, Message::Stderr);
    }

    /// Acknowledgements wait for the command's next frame, and lose
    /// nothing on the way: input is written in order and acknowledged in
    /// full, the rest when the input ends.
    #[tokio::test(start_paused = true)]
    async fn input_is_acknowledged_with_the_next_frame_or_at_its_end() {
        let (server, mut client) = pair();
        let outbox = Outbox::new(server.sender(), Frame::new(Message::Started { pid: 7 }));
        let (mut command_reads, command_input) = tokio::io::duplex(1024);
        let (mut feed, mut feeding) = StdinFeed::new(command_input, outbox.clone(), 1 << 20);
        feed.push(Bytes::from_static(b"ab"), 1 << 20).unwrap();
        let mut written = [0; 2];
        beside(&mut feeding, command_reads.read_exact(&mut written))
            .await
            .unwrap();
        assert_eq!(&written, b"ab");
        // Written, and held: nothing leaves however long the wait (the
        // paused clock runs ahead to the timeout at once).
        let held = beside(&mut feeding, client.recv_within(Duration::from_secs(60))).await;
        assert!(held.is_err(), "sent without a frame to go with: {held:?}");
        outbox.send(Frame::new(Message::Stdout)).await.unwrap();
        assert_eq!(next(&mut client).await.message, Message::Started { pid: 7 });
        assert_eq!(
            next(&mut client).await.message,
            Message::StdinAck { bytes: 2 }
        );
        assert_eq!(next(&mut client).await.message, Message::Stdout);
        feed.push(Bytes::from_static(b"cde"), 1 << 20).unwrap();
        feed.close();
        tokio::time::timeout(WITHIN, feeding).await.unwrap();
        assert_eq!(
            next(&mut client).await.message,
            Message::StdinAck { bytes: 3 }
        );
        let mut rest = Vec::new();
        command_reads.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cde");
    }

    /// Once a quarter of the window is owed, the acknowledgement goes at
    /// once, with nothing else to travel with: a client may send no more
    /// than the window, and must never wait on an acknowledgement held.
    #[tokio::test]
    async fn a_quarter_of_the_window_is_acknowledged_at_once() {
        let (server, mut client) = pair();
        let outbox = Outbox::new(server.sender(), Frame::new(Message::Started { pid: 7 }));
        let (_command_reads, command_input) = tokio::io::duplex(1 << 16);
        let (feed, mut feeding) = StdinFeed::new(command_input, outbox, 64);
        feed.push(Bytes::from_static(&[b'k'; 15]), 64).unwrap();
        feed.push(Bytes::from_static(&[b'k'; 1]), 64).unwrap();
        let started = beside(&mut feeding, next(&mut client)).await;
        assert_eq!(started.message, Message::Started { pid: 7 });
        let mut acked = 0;
        while acked < 16 {
            match beside(&mut feeding, next(&mut client)).await.message {
                Message::StdinAck { bytes } => acked += bytes,
                other => panic!("expected stdin_ack, got {other:?}"),
            }
        }
    }
}
