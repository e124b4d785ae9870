//! The guard that terminates everything a command started when dropped.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::cgroup::CommandCgroup;
use super::sweep::{self, Target};

/// SIGKILLs every command this process started that may still be running:
/// for an operator who asked twice for the server to stop now.
pub fn kill_all_groups() {
    sweep::kill_all();
}

/// Terminates a command's session, or its cgroup, when dropped: SIGTERM at
/// once, SIGKILL after a grace period for whatever ignored SIGTERM, again
/// until nothing is left (see `super::sweep`).
#[derive(Debug)]
pub struct GroupGuard {
    id: u64,
    /// The command's first process: it leads its session and the process
    /// group a terminal would call the foreground one.
    leader: u32,
    target: Option<Target>,
    grace: Duration,
}

impl GroupGuard {
    /// A guard for the session that `sid` leads, or for `cgroup` when the
    /// command has one.
    pub fn new(sid: u32, cgroup: Option<CommandCgroup>) -> Self {
        let target = match cgroup {
            Some(cgroup) => Target::Cgroup(cgroup),
            None => Target::Session(sid),
        };
        GroupGuard {
            id: sweep::track(&target),
            leader: sid,
            target: Some(target),
            grace: crate::defaults::KILL_GRACE,
        }
    }

    /// Sets the SIGTERM-to-SIGKILL grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sends `signal` to the command's process group, as a terminal sends
    /// a Ctrl-C to its foreground group; nothing once it is terminated
    /// (the id may then be another group's).
    pub fn signal(&self, signal: Signal) {
        if self.target.is_some() {
            if let Ok(pgid) = i32::try_from(self.leader) {
                let _ = killpg(Pid::from_raw(pgid), signal);
            }
        }
    }

    /// The command ended by itself: terminates what is left of its session
    /// (SIGTERM, then SIGKILL after the grace period), and lets go what
    /// left the session (daemons), as a hangup does; disarms the guard.
    pub fn end(&mut self) {
        if let Some(target) = self.target.take() {
            sweep::end(self.id, target, self.leader, self.grace);
        }
    }

    /// Terminates it all now (SIGTERM, then SIGKILL after the grace
    /// period) and disarms the guard.
    pub fn terminate(&mut self) {
        if let Some(target) = self.target.take() {
            sweep::terminate(self.id, target, self.grace);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}
