//! Running one command for a session: spawn, stream, feed, reap.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::time::{self, Instant as Deadline};
use tracing::info;
use wiresh_proto::{ErrorCode, ExecRequest, ExitStatus, Frame, Message};

use super::session::{End, Session};
use crate::process::{self, SpawnError};

/// Largest chunk read from a command's pipe into one frame: the protocol's
/// default body limit, which every client accepts.
const CHUNK: usize = wiresh_proto::Limits::DEFAULT_MAX_BODY;

/// Runs `req` to completion. `Ok` means the connection can take the next
/// command; `Err` means it must close.
pub(super) async fn run(session: &mut Session, req: ExecRequest) -> Result<(), End> {
    let what = req.describe();
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
            let frame = Frame::new(Message::error(code, e.to_string()));
            return match session.outbox.data.send(frame).await {
                Ok(()) => Ok(()),
                Err(_) => Err(End::Error("connection lost".into())),
            };
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

    let data = session.outbox.data.clone();
    if data
        .send(Frame::new(Message::Started { pid }))
        .await
        .is_err()
    {
        return Err(End::Error("connection lost".into()));
    }
    let chunk = CHUNK.min(config.limits.max_body);
    let mut stdout_pump = tokio::spawn(pump(stdout, Message::Stdout, data.clone(), chunk));
    let mut stderr_pump = tokio::spawn(pump(stderr, Message::Stderr, data.clone(), chunk));
    let (mut stdout_done, mut stderr_done) = (false, false);
    let mut bytes_out = 0u64;
    let mut stdin_tx = stdin.map(spawn_stdin_writer);
    let mut pending_stdin: Option<Bytes> = None;
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
    // The client promises a frame at least every `keepalive`; allow three
    // missed beats before deciding it is gone.
    let silence_limit = config.keepalive * 3;
    let mut last_heard = Deadline::now();
    let mut status = None;

    while status.is_none() || !stdout_done || !stderr_done {
        tokio::select! {
            biased;
            next = session.reader.next(), if pending_stdin.is_none() => {
                last_heard = Deadline::now();
                let frame = match next {
                    None => return Err(End::Error(format!("client disconnected during `{what}`; its process group was killed"))),
                    Some(Err(e)) => return Err(session.fail_decode(e).await),
                    Some(Ok(frame)) => frame,
                };
                match frame.message {
                    Message::Stdin => {
                        if stdin_tx.is_some() && !frame.body.is_empty() {
                            bytes_in += frame.body.len() as u64;
                            pending_stdin = Some(frame.body);
                        }
                    }
                    Message::StdinEnd => stdin_tx = None,
                    Message::Cancel => {
                        cancelled = true;
                        guard.terminate();
                    }
                    Message::Ping => session.outbox.pong(frame.body),
                    Message::Pong => {}
                    other => return Err(session.unexpected(&other, "while a command runs").await),
                }
            }
            permit = reserve(stdin_tx.clone()), if pending_stdin.is_some() => {
                last_heard = Deadline::now();
                match permit {
                    Some(permit) => {
                        permit.send(pending_stdin.take().expect("pending stdin"));
                    }
                    // The command closed its stdin or exited: input is dropped, as a pipe would.
                    None => { pending_stdin = None; stdin_tx = None; }
                }
            }
            st = child.wait(), if status.is_none() => {
                status = Some(st.map(process::code_and_signal).unwrap_or((None, None)));
            }
            n = &mut stdout_pump, if !stdout_done => { stdout_done = true; bytes_out += n.unwrap_or(0); }
            n = &mut stderr_pump, if !stderr_done => { stderr_done = true; bytes_out += n.unwrap_or(0); }
            _ = sleep_until(timeout_at), if !timed_out && timeout_at.is_some() => {
                timed_out = true;
                guard.terminate();
            }
            _ = session.shutdown.recv(), if !session.shutdown.is_shutdown() => {
                grace_at = Some(Deadline::now() + config.shutdown_grace);
            }
            _ = sleep_until(grace_at), if grace_at.is_some() => {
                grace_at = None;
                guard.terminate();
            }
            // Not while input is held back: then the client cannot be heard.
            _ = time::sleep_until(last_heard + silence_limit), if pending_stdin.is_none() => {
                let message = format!(
                    "no frame from the client for {silence_limit:?} during `{what}` (keepalive missed); \
                     the command was killed"
                );
                return Err(session.fail(ErrorCode::Timeout, message).await);
            }
            _ = session.outbox.closed() => {
                return Err(End::Error(format!("connection lost during `{what}`; its process group was killed")));
            }
        }
    }
    // Whatever the command left behind in its group ends with it.
    guard.terminate();
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
    if data.send(Frame::new(Message::Exit(exit))).await.is_err() {
        return Err(End::Error("connection lost".into()));
    }
    if session.shutdown.is_shutdown() {
        return Err(session
            .fail(ErrorCode::ShuttingDown, "server is shutting down")
            .await);
    }
    Ok(())
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

/// Feeds client input to the command's stdin from its own task, so a
/// command that does not read its input never stalls the session.
fn spawn_stdin_writer(mut stdin: ChildStdin) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if stdin.write_all(&chunk).await.is_err() {
                return; // the command closed its stdin; later input is dropped
            }
        }
        // Channel closed: stdin_end (or the command ended). Dropping closes the pipe.
    });
    tx
}

async fn reserve(tx: Option<mpsc::Sender<Bytes>>) -> Option<mpsc::OwnedPermit<Bytes>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => None,
    }
}

async fn sleep_until(at: Option<Deadline>) {
    match at {
        Some(at) => time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
