//! The server as a child subreaper: what a command leaves behind comes to
//! the server, not to PID 1, and is reaped here.
//!
//! When a process whose parent has exited (the forked children of a
//! command that hops from group to group, a daemon a command started)
//! exits, someone must reap it. By default that is PID 1, which in a
//! container may never do it: zombies pile up. As a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`) the server adopts them instead, and reaps
//! them when they exit: on each `SIGCHLD`, every exited child that is not a
//! command's main process is reaped.
//!
//! A command's main process is waited for by its own task, for its exit
//! status; the reaper must not take it. So every such child is registered
//! (`register`) before it could be reaped: its start holds a `Spawning`
//! from before the fork until it is registered, and the reaper reaps only
//! while no start holds one (a reap wanted meanwhile is done as the last
//! start lets go). A start by the spawn helper holds it across an `.await`,
//! so it is a counter, not a lock guard. It looks with `waitid(WNOWAIT)`,
//! which leaves the child to be reaped; when the first exited child is one
//! a task waits for, the others are found in `/proc`.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::procfs;

/// The starts in flight, and whether a reap waits for them to end.
static SPAWNING: Mutex<Starts> = Mutex::new(Starts {
    in_flight: 0,
    reap_wanted: false,
});

struct Starts {
    in_flight: usize,
    reap_wanted: bool,
}

fn starts() -> MutexGuard<'static, Starts> {
    SPAWNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The children waited for by a task of their own.
static WAITED_FOR: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Held while a command is started; see the module's docs.
#[must_use]
pub(super) struct Spawning(());

/// A start begins (it waits while the reaper reaps).
pub(super) fn spawning() -> Spawning {
    starts().in_flight += 1;
    Spawning(())
}

impl Drop for Spawning {
    fn drop(&mut self) {
        let mut starts = starts();
        starts.in_flight -= 1;
        if starts.in_flight == 0 && std::mem::take(&mut starts.reap_wanted) {
            reap_now(&starts);
        }
    }
}

/// A child whose exit status a task waits for; the reaper leaves it alone
/// until this is dropped (once it is reaped, or given up on).
#[derive(Debug)]
pub(super) struct Registered(i32);

/// Registers child `pid` (while [`spawning`] is held).
pub(super) fn register(pid: u32) -> Registered {
    let pid = pid as i32;
    let mut waited = WAITED_FOR.lock().unwrap_or_else(|e| e.into_inner());
    waited.get_or_insert_with(HashSet::new).insert(pid);
    Registered(pid)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut waited = WAITED_FOR.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waited) = waited.as_mut() {
            waited.remove(&self.0);
        }
    }
}

fn waited_for(pid: i32) -> bool {
    let waited = WAITED_FOR.lock().unwrap_or_else(|e| e.into_inner());
    waited.as_ref().is_some_and(|w| w.contains(&pid))
}

/// Makes this process a child subreaper and reaps its adopted children on
/// each `SIGCHLD`, for as long as the runtime runs. Must run inside a
/// tokio runtime.
pub fn start() -> std::io::Result<()> {
    let me = rustix::process::getpid();
    rustix::process::set_child_subreaper(Some(me))?;
    let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_adopted();
            if children.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Reaps every exited child that no task waits for, now or, while
/// commands are being started, once the last of them is registered.
pub fn reap_adopted() {
    let mut starts = starts();
    if starts.in_flight > 0 {
        starts.reap_wanted = true;
        return;
    }
    reap_now(&starts);
}

/// Reaps; `_exclusive` keeps starts from beginning meanwhile.
fn reap_now(_exclusive: &Starts) {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        let pid = match waitid(Id::All, flags) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return,
            },
        };
        if waited_for(pid.as_raw()) {
            // First in line, and its task's to reap: look past it.
            break;
        }
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    }
    for pid in exited_children() {
        if !waited_for(pid) {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// This process's exited children that are not reaped yet, from `/proc`.
fn exited_children() -> Vec<i32> {
    let me = std::process::id();
    procfs::pids()
        .filter(|&pid| procfs::stat(pid).is_some_and(|s| s.state == 'Z' && s.ppid == me))
        .collect()
}
