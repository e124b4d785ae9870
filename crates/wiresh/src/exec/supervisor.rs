//! One running command's life, from spawn to reaped: the deadlines both
//! servers enforce, as one state machine.
//!
//! A [`Supervisor`] owns the child and its [`GroupGuard`]. A server selects
//! on [`Supervisor::next`] beside its own I/O (the client's frames, the
//! output pipes) and acts on the [`Event`]s it yields:
//!
//! - the command ran past its timeout, or the server started shutting down
//!   and the grace period is over: the group is killed
//!   ([`Event::Killing`]);
//! - the main process exited ([`Event::Exited`]);
//! - after a kill, the pipes stayed open past the kill grace plus
//!   [`DRAIN_SLACK`]: something escaped the group (`setsid`) and holds
//!   them, so the server should stop waiting for them
//!   ([`Event::GaveUpOnPipes`]).
//!
//! Cancels and output limits are the server's to notice; it calls
//! [`Supervisor::kill`] with its reason (or, for a client's signal,
//! [`Supervisor::signal`]). Dropping the supervisor kills the
//! group, so a server that leaves early (its client vanished) leaves
//! nothing running.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::child::Child;
use super::spawn::{GroupGuard, Spawned};
use crate::defaults::DRAIN_SLACK;
use crate::task::sleep_until;

/// How a command's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl From<std::process::ExitStatus> for Status {
    fn from(status: std::process::ExitStatus) -> Status {
        use std::os::unix::process::ExitStatusExt;
        Status {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

/// Why a command's process group is being killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// It ran past its timeout.
    TimedOut(Duration),
    /// The client asked.
    Cancelled,
    /// The server is shutting down and the grace period is over.
    Shutdown,
    /// The server's own reason (too much output, say), for the user.
    Other(String),
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillReason::TimedOut(limit) => write!(f, "command timed out after {limit:?}"),
            KillReason::Cancelled => f.write_str("cancelled by the client"),
            KillReason::Shutdown => f.write_str("server shutting down"),
            KillReason::Other(why) => f.write_str(why),
        }
    }
}

/// What happened to the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The main process exited (its output may still be arriving).
    Exited(Status),
    /// The group was just sent SIGTERM (SIGKILL follows after the kill
    /// grace), for this reason.
    Killing(KillReason),
    /// Killed, yet the pipes stayed open: stop waiting for them.
    GaveUpOnPipes,
}

/// The time limits a command runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Kill after this long; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Once the server starts shutting down, kill after this long.
    pub shutdown_grace: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// A running command and its deadlines.
#[derive(Debug)]
pub struct Supervisor {
    child: Child,
    guard: GroupGuard,
    deadlines: Deadlines,
    shutdown: CancellationToken,
    started: Instant,
    status: Option<Status>,
    killed: Option<KillReason>,
    timeout_at: Option<Instant>,
    grace_at: Option<Instant>,
    drain_at: Option<Instant>,
    saw_shutdown: bool,
}

impl Supervisor {
    /// Takes charge of a spawned command (whose pipes the caller has taken);
    /// `shutdown` is the server's shutdown signal.
    pub fn new(
        child: Child,
        guard: GroupGuard,
        deadlines: Deadlines,
        shutdown: CancellationToken,
    ) -> Supervisor {
        let started = Instant::now();
        Supervisor {
            child,
            guard: guard.with_grace(deadlines.kill_grace),
            deadlines,
            shutdown,
            started,
            status: None,
            killed: None,
            timeout_at: deadlines.timeout.map(|t| started + t),
            grace_at: None,
            drain_at: None,
            saw_shutdown: false,
        }
    }

    /// Like [`Supervisor::new`], from what [`super::spawn_group`] returned,
    /// handing back the pipes.
    pub fn start(
        spawned: Spawned,
        deadlines: Deadlines,
        shutdown: CancellationToken,
    ) -> (
        Supervisor,
        tokio::process::ChildStdout,
        tokio::process::ChildStderr,
        Option<tokio::process::ChildStdin>,
    ) {
        let Spawned {
            child,
            stdout,
            stderr,
            stdin,
            guard,
            ..
        } = spawned;
        (
            Supervisor::new(child, guard, deadlines, shutdown),
            stdout,
            stderr,
            stdin,
        )
    }

    /// The next thing that happens to the command. Cancel-safe: meant for
    /// a `select!` loop, called until the main process has exited and the
    /// caller has all the output it will get.
    pub async fn next(&mut self) -> Event {
        loop {
            tokio::select! {
                status = self.child.wait(), if self.status.is_none() => {
                    // A failed wait leaves nothing to report but "gone".
                    let status = status.map(Status::from).unwrap_or_default();
                    self.status = Some(status);
                    return Event::Exited(status);
                }
                _ = sleep_until(self.timeout_at), if self.timeout_at.is_some() && self.killed.is_none() => {
                    let limit = self.deadlines.timeout.unwrap_or_default();
                    self.kill(KillReason::TimedOut(limit));
                    return Event::Killing(KillReason::TimedOut(limit));
                }
                _ = self.shutdown.cancelled(), if !self.saw_shutdown => {
                    self.saw_shutdown = true;
                    self.grace_at = Some(Instant::now() + self.deadlines.shutdown_grace);
                }
                _ = sleep_until(self.grace_at), if self.grace_at.is_some() && self.killed.is_none() => {
                    self.kill(KillReason::Shutdown);
                    return Event::Killing(KillReason::Shutdown);
                }
                _ = sleep_until(self.drain_at), if self.drain_at.is_some() => {
                    self.drain_at = None;
                    return Event::GaveUpOnPipes;
                }
            }
        }
    }

    /// Kills the group (SIGTERM, SIGKILL after the kill grace) unless it was
    /// killed already; says whether this call did it.
    pub fn kill(&mut self, reason: KillReason) -> bool {
        if self.killed.is_some() {
            return false;
        }
        self.guard.terminate();
        self.drain_at = Some(Instant::now() + self.deadlines.kill_grace + DRAIN_SLACK);
        self.killed = Some(reason);
        true
    }

    /// Sends one `signal` to the group, as a client asks (a Ctrl-C): the
    /// command may handle it and run on. Nothing once it is being killed.
    pub fn signal(&self, signal: Signal) {
        if self.killed.is_none() {
            self.guard.signal(signal);
        }
    }

    /// The main process of a command on a pty has exited: terminates what
    /// is left of its session now, as closing a terminal hangs it up, and
    /// gives up waiting for its output after the kill grace plus
    /// [`DRAIN_SLACK`] ([`Event::GaveUpOnPipes`]). Not a kill: the command
    /// ended by itself.
    pub fn hang_up(&mut self) {
        if self.killed.is_none() && self.drain_at.is_none() {
            self.guard.end();
            self.drain_at = Some(Instant::now() + self.deadlines.kill_grace + DRAIN_SLACK);
        }
    }

    /// Why the group was killed, if it was.
    pub fn killed(&self) -> Option<&KillReason> {
        self.killed.as_ref()
    }

    /// Whether the command was killed for running past its timeout.
    pub fn timed_out(&self) -> bool {
        matches!(self.killed, Some(KillReason::TimedOut(_)))
    }

    /// How the main process ended; when the server gave up on it before it
    /// was reaped, as killed by SIGKILL.
    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status {
            code: None,
            signal: Some(Signal::SIGKILL as i32),
        })
    }

    /// Time since the command started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The command is done: whatever it left running in its session ends
    /// with it (a daemon that left the session lives on, as over ssh; a
    /// killed command took everything with it already). Returns its status.
    pub fn finish(mut self) -> Status {
        self.guard.end();
        self.status()
    }

    /// Longest a server should wait for a client to take the last frames
    /// of a killed command during shutdown.
    pub fn drain_limit(&self) -> Duration {
        self.deadlines.kill_grace + DRAIN_SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::spawn::{spawn_group, Spec};
    use tokio::time;

    fn deadlines(timeout: Option<Duration>) -> Deadlines {
        Deadlines {
            timeout,
            shutdown_grace: Duration::from_millis(100),
            kill_grace: Duration::from_millis(200),
        }
    }

    async fn run(line: &str, deadlines: Deadlines, shutdown: CancellationToken) -> Vec<Event> {
        let spawned = spawn_group(&Spec::shell(line), line).await.unwrap();
        let (mut sup, _out, _err, _in) = Supervisor::start(spawned, deadlines, shutdown);
        let mut events = Vec::new();
        let bound = time::timeout(Duration::from_secs(20), async {
            loop {
                let event = sup.next().await;
                let done = matches!(event, Event::Exited(_));
                events.push(event);
                if done {
                    break;
                }
            }
        });
        bound.await.expect("the command ended");
        events
    }

    #[tokio::test]
    async fn reports_the_exit_status() {
        let events = run("exit 3", deadlines(None), CancellationToken::new()).await;
        assert_eq!(
            events,
            [Event::Exited(Status {
                code: Some(3),
                signal: None
            })]
        );
    }

    #[tokio::test]
    async fn kills_at_the_timeout() {
        let limit = Duration::from_millis(50);
        let events = run("sleep 30", deadlines(Some(limit)), CancellationToken::new()).await;
        assert_eq!(
            events,
            [
                Event::Killing(KillReason::TimedOut(limit)),
                Event::Exited(Status {
                    code: None,
                    signal: Some(Signal::SIGTERM as i32)
                })
            ]
        );
    }

    #[tokio::test]
    async fn kills_after_the_shutdown_grace() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let events = run("sleep 30", deadlines(None), shutdown).await;
        assert_eq!(events[0], Event::Killing(KillReason::Shutdown));
        assert!(matches!(events[1], Event::Exited(_)));
    }

    #[tokio::test]
    async fn gives_up_on_pipes_an_escaped_process_holds() {
        // The child leaves the group with setsid and keeps stdout open.
        let line = "setsid sleep 5 & exec sleep 30";
        let spawned = spawn_group(&Spec::shell(line), line).await.unwrap();
        let (mut sup, _out, _err, _in) =
            Supervisor::start(spawned, deadlines(None), CancellationToken::new());
        assert!(sup.kill(KillReason::Cancelled));
        assert!(!sup.kill(KillReason::Cancelled), "killed once only");
        let mut events = Vec::new();
        time::timeout(Duration::from_secs(20), async {
            while events.last() != Some(&Event::GaveUpOnPipes) {
                events.push(sup.next().await);
            }
        })
        .await
        .expect("gave up in time");
        assert!(matches!(events[0], Event::Exited(_)), "{events:?}");
        assert_eq!(sup.killed(), Some(&KillReason::Cancelled));
    }
}
