//! A command's main process, to wait for: one tokio spawned, one the
//! launcher started (see `launcher`), waited for through a pidfd, or one
//! the spawn helper started (see `helper`), whose exit status the helper
//! reports.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rustix::process::{Pid, WaitOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;

use super::reaper::Registered;
use crate::syscall::retry;
use crate::task::watch;

/// A child process of the server, to wait for. While it is not reaped,
/// the server's reaper leaves it alone (`super::reaper`).
#[derive(Debug)]
pub struct Child(Inner);

#[derive(Debug)]
enum Inner {
    /// Spawned with tokio's `Command` (the pty path, and the fallback).
    Tokio(tokio::process::Child, Option<Registered>),
    /// Started by the launcher: its pidfd tells when it has exited.
    Pidfd(PidfdChild),
    /// Started by the spawn helper: its exit status comes from the
    /// helper's report; if the helper dies first, the channel closes and
    /// the process is the server's own (adopted), waited for as `Pidfd`.
    Helper(PidfdChild, Option<oneshot::Receiver<ExitStatus>>),
}

#[derive(Debug)]
struct PidfdChild {
    pid: Pid,
    /// `None` once reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    registered: Option<Registered>,
}

impl Child {
    /// A child tokio spawned, registered with the reaper.
    pub(super) fn tokio(child: tokio::process::Child, registered: Registered) -> Child {
        Child(Inner::Tokio(child, Some(registered)))
    }

    /// Watches child `pid` through a pidfd. Must run inside a tokio
    /// runtime.
    pub(super) fn from_pid(pid: u32, registered: Registered) -> io::Result<Child> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other(format!("bad pid {pid}")))?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK)?;
        Ok(Child(Inner::Pidfd(PidfdChild {
            pid,
            pidfd: Some(watch(pidfd, Interest::READABLE)?),
            status: None,
            registered: Some(registered),
        })))
    }

    /// Watches child `pid`, started by the spawn helper: `exit` brings its
    /// status. Must run inside a tokio runtime.
    pub(super) fn from_helper(
        pid: u32,
        pidfd: OwnedFd,
        exit: oneshot::Receiver<ExitStatus>,
        registered: Registered,
    ) -> io::Result<Child> {
        let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
        Ok(Child(Inner::Helper(
            PidfdChild {
                pid,
                pidfd: Some(watch(pidfd, Interest::READABLE)?),
                status: None,
                registered: Some(registered),
            },
            Some(exit),
        )))
    }

    /// The process id; `None` once the child has been reaped (its number
    /// may belong to another process by then).
    pub fn id(&self) -> Option<u32> {
        match &self.0 {
            Inner::Tokio(child, _) => child.id(),
            Inner::Pidfd(child) | Inner::Helper(child, _) => child
                .status
                .is_none()
                .then(|| child.pid.as_raw_nonzero().get() as u32),
        }
    }

    /// Waits for the process to exit and reaps it; afterwards returns the
    /// same status at once. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.0 {
            Inner::Tokio(child, registered) => {
                let status = child.wait().await;
                if status.is_ok() {
                    *registered = None;
                }
                status
            }
            Inner::Pidfd(child) => child.wait().await,
            Inner::Helper(child, exit) => {
                if let Some(reported) = exit.as_mut() {
                    // Cancel-safe: a oneshot receiver keeps what came.
                    let reported = reported.await;
                    *exit = None;
                    if let Ok(status) = reported {
                        child.reaped(status);
                    }
                }
                // Reported, or adopted when the helper died first.
                child.wait().await
            }
        }
    }
}

impl PidfdChild {
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let pidfd = self.pidfd.as_ref().expect("present until reaped");
        let status = reap(self.pid, pidfd).await?;
        self.reaped(status);
        Ok(status)
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.pidfd = None;
        self.registered = None;
    }
}

impl Drop for Inner {
    /// A helper's child is the helper's to reap while the helper lives.
    fn drop(&mut self) {
        if let Inner::Helper(child, Some(exit)) = self {
            if !matches!(exit.try_recv(), Err(oneshot::error::TryRecvError::Closed)) {
                child.pidfd = None;
            }
        }
    }
}

/// Kills the process group of `pid`, a command just started that the
/// server cannot watch or reach, and reaps its leader: it must neither run
/// on unseen nor stay a zombie.
pub(super) fn kill_and_reap(pid: u32) {
    let pgid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pgid, None);
}

/// Waits until `pid` (whose pidfd is `pidfd`) exits, and reaps it.
/// Cancel-safe: the status is returned as soon as it is taken.
async fn reap(pid: Pid, pidfd: &AsyncFd<OwnedFd>) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = try_reap(pid)? {
            return Ok(status);
        }
        pidfd.readable().await?.clear_ready();
    }
}

/// Reaps `pid` if it has exited.
fn try_reap(pid: Pid) -> io::Result<Option<ExitStatus>> {
    let reaped = retry(|| rustix::process::waitpid(Some(pid), WaitOptions::NOHANG))?;
    Ok(reaped.map(|(_, status)| ExitStatus::from_raw(status.as_raw())))
}

impl Drop for PidfdChild {
    /// A child not yet reaped is reaped once it exits, as tokio does with
    /// its own: whoever drops it (a connection that went away) has its
    /// group killed by the `GroupGuard`, not here.
    fn drop(&mut self) {
        let (Some(pidfd), None) = (self.pidfd.take(), self.status) else {
            return;
        };
        let pid = self.pid;
        if matches!(try_reap(pid), Ok(Some(_)) | Err(_)) {
            return;
        }
        // Still registered while it is waited for here.
        let registered = self.registered.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = reap(pid, &pidfd).await;
                    drop(registered);
                });
            }
            Err(_) => {
                drop(pidfd);
                std::thread::spawn(move || {
                    let _ = retry(|| rustix::process::waitpid(Some(pid), WaitOptions::empty()));
                    drop(registered);
                });
            }
        }
    }
}
