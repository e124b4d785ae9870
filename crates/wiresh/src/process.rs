//! Running commands as process groups that can always be cleaned up.
//!
//! Every command is started as the leader of a new process group, so that a
//! shell pipeline, a `make -j` or anything else the command forks can be
//! signalled as one unit. Dropping a [`GroupGuard`] terminates the group:
//! whatever path a connection takes out — normal end, cancel, timeout,
//! disconnect, panic — nothing it started is left running.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use wiresh_proto::{ExecRequest, Program};

/// How long a process group gets between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// Pipe capacity asked for on the output pipes: larger pipes mean fewer
/// wake-ups per byte when a command produces output fast.
const PIPE_CAPACITY: libc::c_int = 1024 * 1024;

/// A spawned command with its pipes taken out, ready to be driven.
#[derive(Debug)]
pub struct Spawned {
    /// The child process (leader of its own process group).
    pub child: Child,
    /// Its process id, which is also its process group id.
    pub pid: u32,
    /// Standard output pipe.
    pub stdout: ChildStdout,
    /// Standard error pipe.
    pub stderr: ChildStderr,
    /// Standard input pipe, when the request asked for one.
    pub stdin: Option<ChildStdin>,
    /// Kills the group when dropped.
    pub guard: GroupGuard,
}

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The request itself is invalid.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The operating system refused to start it.
    #[error("cannot start {what}: {source}")]
    Io {
        /// What was being started.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
}

/// Builds the command for a request: `sh -c` for a command string, the
/// program itself for an argv.
pub fn command_for(req: &ExecRequest) -> Result<Command, SpawnError> {
    let mut cmd = match req.program().map_err(SpawnError::BadRequest)? {
        Program::Shell(line) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        Program::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.envs(&req.env);
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    Ok(cmd)
}

/// Spawns `cmd` as the leader of a new process group with piped stdout and
/// stderr, and piped stdin when `with_stdin` (otherwise `/dev/null`).
pub fn spawn_group(mut cmd: Command, with_stdin: bool, what: &str) -> Result<Spawned, SpawnError> {
    cmd.process_group(0)
        .stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|source| SpawnError::Io {
        what: what.to_string(),
        source,
    })?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdin = child.stdin.take();
    grow_pipe(&stdout);
    Ok(Spawned {
        child,
        pid,
        stdout,
        stderr,
        stdin,
        guard: GroupGuard::new(pid),
    })
}

/// Asks the kernel for a larger pipe; failure only costs speed, so it is ignored.
fn grow_pipe(pipe: &impl AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a valid pipe descriptor has no memory effects.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY);
    }
}

/// Sends `signal` to every process in group `pgid`. Returns false when the
/// group no longer exists (which is not an error: it may have finished).
pub fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    unsafe { libc::kill(-(pgid as libc::pid_t), signal) == 0 }
}

/// Process groups started and not yet known to be gone, so that a second
/// shutdown signal can kill them all at once ([`kill_all_groups`]).
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn live_groups() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILLs every process group this process started that may still be
/// running: for an operator who asked twice for the server to stop now.
pub fn kill_all_groups() {
    for &pgid in live_groups().iter() {
        signal_group(pgid, libc::SIGKILL);
    }
}

/// Terminates a process group when dropped: SIGTERM at once, SIGKILL after a
/// grace period for whatever ignored SIGTERM.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: u32,
    grace: Duration,
    armed: bool,
}

impl GroupGuard {
    /// A guard for group `pgid`.
    pub fn new(pgid: u32) -> Self {
        live_groups().insert(pgid);
        GroupGuard {
            pgid,
            grace: DEFAULT_KILL_GRACE,
            armed: true,
        }
    }

    /// Sets the SIGTERM-to-SIGKILL grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The process group this guard owns.
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Terminates the group now (SIGTERM, then SIGKILL after the grace
    /// period) and disarms the guard.
    pub fn terminate(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let pgid = self.pgid;
        if !signal_group(pgid, libc::SIGTERM) {
            live_groups().remove(&pgid); // nothing left in the group
            return;
        }
        let grace = self.grace;
        // The SIGKILL must happen even if the caller goes away; a plain
        // thread works with or without a runtime around. It watches the
        // group and stops as soon as it is gone, so it never signals a
        // group id that has since been reused.
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                if !signal_group(pgid, 0) {
                    live_groups().remove(&pgid);
                    return;
                }
            }
            signal_group(pgid, libc::SIGKILL);
            live_groups().remove(&pgid);
        });
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Splits a finished process's status into (exit code, signal).
pub fn code_and_signal(status: std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}
