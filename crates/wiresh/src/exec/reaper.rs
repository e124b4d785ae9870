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
//! (`register`) before it could be reaped: its start holds `spawning`
//! (shared) from before the fork until it is registered, and the reaper
//! holds it exclusively while it reaps. It looks with `waitid(WNOWAIT)`,
//! which leaves the child to be reaped; when the first exited child is one
//! a task waits for, the others are found in `/proc`.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::procfs;

/// Held (shared) from before a child is started until it is registered.
static SPAWNING: RwLock<()> = RwLock::new(());

/// The children waited for by a task of their own.
static WAITED_FOR: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Held while a command is started; see the module's docs.
pub(super) fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(|e| e.into_inner())
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

/// Reaps every exited child that no task waits for.
pub fn reap_adopted() {
    let _exclusive = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
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
