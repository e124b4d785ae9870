//! Running one command for a session: admit, launch, drive, finish.
//!
//! - `spec`: what a request asks to run, and for how long;
//! - `start`: the command started on pipes, or on a pty when the request
//!   asks for one (`exec.pty`): then its terminal is both its output (all
//!   of it sent as `stdout`) and its input, and `resize` reaches it;
//! - `running`: the command while it runs, driven beside the client's
//!   frames; its deadlines are the [`Supervisor`](crate::exec::Supervisor)'s;
//! - `output`: its output batched into frames, by copy or by splice;
//! - `stdin`, `window`: its input, flow-controlled by a window
//!   (`hello.stdin_window`) counted as the client counts it;
//! - `signal`: a client's `signal` delivered to its process group.
//!
//! After mini-redis's `cmd/`: one file per job, [`run`] reading as the
//! steps of a command's life.

mod output;
mod running;
mod signal;
mod spec;
mod start;
mod stdin;
mod window;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time;
use tracing::info;
use wiresh_proto::{ExecRequest, ExitStatus, Frame, Message};

use self::running::Running;
use self::start::Started;
use super::refusal::Refusal;
use super::session::Session;
use crate::audit::{self, Ending, Outcome, Record, Verb};
use crate::exec::{KillReason, Spec};
use crate::listener::{During, End};

/// Runs `req` to completion. `Ok` means the connection can take the next
/// command; `Err` means it must close.
pub(super) async fn run(session: &mut Session, req: ExecRequest) -> Result<(), End> {
    let what = req.describe();
    let launched = match admit(session, &req, &what) {
        Ok(spec) => launch(session, &spec, &req, &what).await,
        Err(refusal) => Err(refusal),
    };
    // The slot is held until the command ends: it bounds the commands
    // running server-wide.
    let Launched {
        _slot,
        record,
        started,
    } = match launched {
        Ok(launched) => launched,
        Err(refusal) => return session.refuse(&format!("command `{what}`"), refusal).await,
    };
    let deadlines = spec::deadlines(&req, &session.config);
    let mut running = Running::new(session, started, deadlines, req.stdin);
    match running.drive(session, &what).await {
        Ok(()) => finish(session, running, record, &what).await,
        Err(end) => {
            record.end(Ending {
                bytes_in: running.bytes_in,
                bytes_out: running.bytes_out,
                ..Ending::of(Outcome::Aborted)
            });
            Err(end)
        }
    }
}

/// Who runs what, for the audit log.
fn exec_action<'a>(session: &'a Session, what: &'a str, pty: bool) -> audit::Action<'a> {
    audit::Action {
        pty,
        ..session.action(Verb::Exec, what)
    }
}

/// What may run for `req`: the request well-formed, the audit log
/// writable, the server's policy agreeing. A refusal is on record.
fn admit(session: &Session, req: &ExecRequest, what: &str) -> Result<Spec, Refusal> {
    let pty = req.pty.is_some();
    let admitted = match session.audit_refusal() {
        Some(refusal) => Err(refusal),
        None => spec::spec_for(req).and_then(|spec| session.config.policy.admit(spec, pty)),
    };
    if admitted.is_err() {
        session.audit_refused(exec_action(session, what, pty));
    }
    admitted
}

/// A command started, with what it holds until it ends.
struct Launched {
    /// Its place among the commands running server-wide.
    _slot: OwnedSemaphorePermit,
    /// Its audit record, begun before it started.
    record: Record,
    started: Started,
}

/// Starts `spec` in a command slot, its start on record before anything
/// runs.
async fn launch(
    session: &Session,
    spec: &Spec,
    req: &ExecRequest,
    what: &str,
) -> Result<Launched, Refusal> {
    let slot = session.command_slot()?;
    let record = session.audit_begin(exec_action(session, what, req.pty.is_some()))?;
    match start::start(spec, req.pty.as_ref(), what).await {
        Ok(started) => Ok(Launched {
            _slot: slot,
            record,
            started,
        }),
        Err(e) => {
            drop(slot);
            record.end(Ending::of(Outcome::NotStarted));
            Err(Refusal::not_started(e))
        }
    }
}

/// Reaps a command that ran to its end, logs and records how it ended, and
/// tells the client with its `exit`.
async fn finish(
    session: &Session,
    mut running: Running,
    record: Record,
    what: &str,
) -> Result<(), End> {
    running.end_input();
    let supervisor = &running.supervisor;
    let duration = supervisor.elapsed();
    let timed_out = supervisor.timed_out();
    let cancelled = supervisor.killed() == Some(&KillReason::Cancelled);
    // Killed at the end of the shutdown grace, or by a second signal.
    let killed_by_shutdown = match supervisor.killed() {
        Some(reason) => *reason == KillReason::Shutdown,
        None => session.shutdown.is_cancelled() && supervisor.status().signal.is_some(),
    };
    let drain_limit = supervisor.drain_limit();
    let Running {
        supervisor,
        out,
        bytes_in,
        bytes_out,
        ..
    } = running;
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
        // Typed, and absent when `None`: `code=0`, `"signal":9`.
        code = exit.code,
        signal = exit.signal,
        timed_out,
        cancelled,
        duration_ms = exit.duration_ms,
        bytes_out,
        bytes_in,
        "command finished"
    );
    record.end(Ending {
        outcome: match cancelled {
            true => Outcome::Cancelled,
            false => Outcome::Finished,
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
        let _ = time::timeout(drain_limit, out.send(exit)).await;
        return Err(session.fail_closing().await);
    }
    out.send(exit).await.map_err(|_| End::lost(During::Answer))
}
