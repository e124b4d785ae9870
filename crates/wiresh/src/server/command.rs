//! Running one command for a session: spawn, stream, feed, reap.
//!
//! The session keeps reading the connection for the whole life of the
//! command — stdin is flow-controlled by a window (`hello.stdin_window`), so
//! buffering it never needs more than that — which means `cancel`, `ping`
//! and a vanished client are always noticed, whatever the command does with
//! its input and output.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::time::{self, Instant as Deadline};
use tracing::info;
use wiresh_proto::{ErrorCode, ExecRequest, ExitStatus, Frame, Message};

use super::session::{AuditEntry, End, Session};
use crate::process::{self, SpawnError};
use crate::task::{sleep_until, AbortOnDrop};

/// Largest chunk read from a command's pipe into one frame. Large enough
/// that per-frame costs vanish at full speed, small enough that what a
/// connection holds in flight stays near 2.5 MiB (see `outbox`); never more
/// than the body limit, which every client accepts.
const CHUNK: usize = 256 * 1024;

/// After the server kills a command, how much longer than the kill grace it
/// waits for the output pipes to close: a process that escaped the group
/// (`setsid`) may hold them open forever.
const DRAIN_SLACK: Duration = Duration::from_secs(2);

/// Runs `req` to completion. `Ok` means the connection can take the next
/// command; `Err` means it must close.
pub(super) async fn run(session: &mut Session, req: ExecRequest) -> Result<(), End> {
    let what = req.describe();
    let refusal = session
        .audit_refusal()
        .map(|m| (ErrorCode::Internal, m))
        .or_else(|| {
            let verdict = session.config.policy.check_exec(&req);
            verdict.err().map(|m| (ErrorCode::Forbidden, m))
        });
    if let Some((code, message)) = refusal {
        info!(peer = %session.peer, command = %what, "command refused: {message}");
        session.audit(AuditEntry {
            action: "exec",
            target: &what,
            outcome: "refused",
            status: None,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
        });
        return session
            .send(Frame::new(Message::error(code, message)))
            .await;
    }
    // Held until the command ends: bounds the commands running server-wide.
    let Ok(_slot) = session.state.commands.clone().try_acquire_owned() else {
        let message = format!(
            "the server is running its limit of {} commands; try again later",
            session.config.max_commands
        );
        info!(peer = %session.peer, command = %what, "command refused: busy");
        return session
            .send(Frame::new(Message::error(ErrorCode::Busy, message)))
            .await;
    };
    let spawned =
        process::command_for(&req).and_then(|cmd| process::spawn_group(cmd, req.stdin, &what));
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            let code = match e {
                SpawnError::BadRequest(_) => ErrorCode::BadRequest,
                SpawnError::Io { .. } => ErrorCode::SpawnFailed,
            };
            info!(peer = %session.peer, command = %what, "command not started: {e}");
            return session
                .send(Frame::new(Message::error(code, e.to_string())))
                .await;
        }
    };
    let started = Instant::now();
    let config = session.config.clone();
    let process::Spawned {
        mut child,
        pid,
        stdout,
        stderr,
        stdin,
        guard,
    } = spawned;
    let mut guard = guard.with_grace(config.kill_grace);

    session.send(Frame::new(Message::Started { pid })).await?;
    let data = session.outbox.data.clone();
    let chunk = CHUNK.min(config.limits.max_body);
    // Aborted on every way out of this function, so no pump outlives the
    // command and keeps the connection's writer (and socket) alive.
    let mut stdout_pump = AbortOnDrop(tokio::spawn(pump(
        stdout,
        Message::Stdout,
        data.clone(),
        chunk,
    )));
    let mut stderr_pump = AbortOnDrop(tokio::spawn(pump(
        stderr,
        Message::Stderr,
        data.clone(),
        chunk,
    )));
    let (mut stdout_done, mut stderr_done) = (false, false);
    let mut bytes_out = 0u64;
    let mut stdin_feed = stdin.map(|pipe| StdinFeed::spawn(pipe, data.clone()));
    let mut bytes_in = 0u64;

    let timeout = match (
        req.timeout_ms.map(Duration::from_millis),
        config.command_timeout,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let timeout_at = timeout.map(|t| Deadline::now() + t);
    let mut timed_out = false;
    let mut cancelled = false;
    let mut grace_at: Option<Deadline> = None;
    let mut drain_at: Option<Deadline> = None;
    let kill = |guard: &mut process::GroupGuard, drain_at: &mut Option<Deadline>| {
        guard.terminate();
        drain_at.get_or_insert(Deadline::now() + config.kill_grace + DRAIN_SLACK);
    };
    // The client promises a frame at least every `keepalive`; allow three
    // missed beats before deciding it is gone.
    let silence_limit = config.keepalive * 3;
    let mut last_heard = Deadline::now();
    let mut status = None;

    let aborted: Option<End> = 'run: {
        while status.is_none() || !stdout_done || !stderr_done {
            tokio::select! {
                biased;
                next = session.reader.next() => {
                    last_heard = Deadline::now();
                    let frame = match next {
                        None => break 'run Some(End::Error(format!("client disconnected during `{what}`; its process group was killed"))),
                        Some(Err(e)) => break 'run Some(session.fail_decode(e).await),
                        Some(Ok(frame)) => frame,
                    };
                    match frame.message {
                        Message::Stdin => {
                            bytes_in += frame.body.len() as u64;
                            if let Some(feed) = &stdin_feed {
                                if let Err(message) = feed.push(frame.body, config.stdin_window) {
                                    break 'run Some(session.fail(ErrorCode::FlowControl, message).await);
                                }
                            }
                        }
                        Message::StdinEnd => {
                            if let Some(feed) = &mut stdin_feed {
                                feed.close();
                            }
                        }
                        Message::Cancel => {
                            cancelled = true;
                            kill(&mut guard, &mut drain_at);
                        }
                        Message::Ping => session.outbox.pong(frame.body),
                        Message::Pong => {}
                        other => break 'run Some(session.unexpected(&other, "while a command runs").await),
                    }
                }
                st = child.wait(), if status.is_none() => {
                    status = Some(st.map(process::code_and_signal).unwrap_or((None, None)));
                }
                n = &mut stdout_pump.0, if !stdout_done => { stdout_done = true; bytes_out += n.unwrap_or(0); }
                n = &mut stderr_pump.0, if !stderr_done => { stderr_done = true; bytes_out += n.unwrap_or(0); }
                _ = sleep_until(timeout_at), if !timed_out && timeout_at.is_some() => {
                    timed_out = true;
                    kill(&mut guard, &mut drain_at);
                }
                _ = session.shutdown.recv(), if !session.shutdown.is_shutdown() => {
                    grace_at = Some(Deadline::now() + config.shutdown_grace);
                }
                _ = sleep_until(grace_at), if grace_at.is_some() => {
                    grace_at = None;
                    kill(&mut guard, &mut drain_at);
                }
                _ = sleep_until(drain_at), if drain_at.is_some() => {
                    // Killed, yet the pipes stay open: something escaped the
                    // group. Stop waiting for them (the pumps are aborted).
                    drain_at = None;
                    stdout_done = true;
                    stderr_done = true;
                    if status.is_none() {
                        status = Some((None, Some(libc::SIGKILL)));
                    }
                }
                _ = time::sleep_until(last_heard + silence_limit), if !silence_limit.is_zero() => {
                    let message = format!(
                        "no frame from the client for {silence_limit:?} during `{what}` (keepalive missed); \
                         the command was killed"
                    );
                    break 'run Some(session.fail(ErrorCode::Timeout, message).await);
                }
                _ = session.outbox.closed() => {
                    break 'run Some(End::Error(format!("connection lost during `{what}`; its process group was killed")));
                }
            }
        }
        None
    };
    if let Some(end) = aborted {
        session.audit(AuditEntry {
            action: "exec",
            target: &what,
            outcome: "aborted",
            status: None,
            duration: started.elapsed(),
            bytes_in,
            bytes_out,
        });
        return Err(end);
    }
    // Whatever the command left behind in its group ends with it; and no
    // `stdin_ack` may follow the `exit`.
    guard.terminate();
    drop(stdin_feed);
    let (code, signal) = status.expect("loop ends with a status");
    let exit = ExitStatus {
        code,
        signal,
        duration_ms: started.elapsed().as_millis() as u64,
        timed_out,
    };
    info!(
        peer = %session.peer,
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
    session.audit(AuditEntry {
        action: "exec",
        target: &what,
        outcome: if cancelled { "cancelled" } else { "finished" },
        status: Some(&exit),
        duration: started.elapsed(),
        bytes_in,
        bytes_out,
    });
    let exit = Frame::new(Message::Exit(exit));
    if session.shutdown.is_shutdown() {
        // A client that stopped reading must not hold up the shutdown.
        let _ = time::timeout(config.kill_grace + DRAIN_SLACK, session.send(exit)).await;
        return Err(session
            .fail(ErrorCode::ShuttingDown, "server is shutting down")
            .await);
    }
    session.send(exit).await
}

/// Copies one of the command's output pipes into frames of `kind` until
/// end of file; returns the byte count. Waiting on a full queue is what
/// slows the command down to the client's pace.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    kind: Message,
    out: mpsc::Sender<Frame>,
    chunk: usize,
) -> u64 {
    let mut total = 0u64;
    let mut buf = BytesMut::new();
    loop {
        // Reuses the allocation once the previous frame has been written.
        buf.reserve(chunk);
        match (&mut pipe).take(chunk as u64).read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
        let body = buf.split().freeze();
        if out
            .send(Frame::with_body(kind.clone(), body))
            .await
            .is_err()
        {
            break;
        }
    }
    total
}

/// Client input on its way to the command's stdin.
///
/// Chunks are queued without waiting (the client may have at most
/// `stdin_window` bytes unacknowledged, which bounds the queue) and written
/// by a task of their own; each written — or, once the command has closed
/// its input, discarded — chunk is acknowledged with `stdin_ack` in the
/// ordered output stream, which reopens the client's window.
struct StdinFeed {
    queue: Option<mpsc::UnboundedSender<Bytes>>,
    unacked: Arc<AtomicUsize>,
    _writer: AbortOnDrop<()>,
}

impl StdinFeed {
    fn spawn(mut pipe: ChildStdin, acks: mpsc::Sender<Frame>) -> StdinFeed {
        let (queue, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let unacked = Arc::new(AtomicUsize::new(0));
        let counter = unacked.clone();
        let writer = tokio::spawn(async move {
            let mut open = true;
            while let Some(chunk) = rx.recv().await {
                // A command that closed its input loses the rest, as with a pipe.
                open = open && pipe.write_all(&chunk).await.is_ok();
                counter.fetch_sub(chunk.len(), Ordering::AcqRel);
                let ack = Message::StdinAck {
                    bytes: chunk.len() as u64,
                };
                if acks.send(Frame::new(ack)).await.is_err() {
                    return;
                }
            }
            // stdin_end: dropping the pipe closes the command's input.
        });
        StdinFeed {
            queue: Some(queue),
            unacked,
            _writer: AbortOnDrop(writer),
        }
    }

    /// Queues a chunk, or says how the client broke the window.
    fn push(&self, chunk: Bytes, window: usize) -> Result<(), String> {
        let Some(queue) = &self.queue else {
            return Ok(()); // after stdin_end: ignored, as documented
        };
        if chunk.is_empty() {
            return Ok(());
        }
        let unacked = self.unacked.fetch_add(chunk.len(), Ordering::AcqRel) + chunk.len();
        if unacked > window {
            return Err(format!(
                "{unacked} bytes of stdin unacknowledged, more than the window of {window}"
            ));
        }
        let _ = queue.send(chunk);
        Ok(())
    }

    /// The client's stdin ended: close the command's input once the queue
    /// is written.
    fn close(&mut self) {
        self.queue = None;
    }
}
