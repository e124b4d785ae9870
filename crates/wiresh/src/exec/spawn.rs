//! Starting commands as process groups that can always be cleaned up.
//!
//! Every command is started as the leader of a new process group, so that a
//! shell pipeline, a `make -j` or anything else the command forks can be
//! signalled as one unit. Dropping a [`GroupGuard`] terminates the group:
//! whatever path a connection takes out — normal end, cancel, timeout,
//! disconnect, panic — nothing it started is left running.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

use super::child::{kill_and_reap, Child};
use super::launcher::{self, LaunchError, Launched};

/// Pipe capacity asked for on the output pipes: larger pipes mean fewer
/// wake-ups per byte when a command produces output fast.
const PIPE_CAPACITY: i32 = 1024 * 1024;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A command line for `/bin/sh -c`.
    Shell(String),
    /// A program and its arguments; never empty. A program name without a
    /// `/` is looked up in the server's own `PATH` (see [`resolve_program`]).
    Argv(Vec<String>),
    /// The login shell of the account the server runs as, as `ssh host`
    /// starts it: `argv[0]` is `-` and its name, and it starts in the
    /// account's home directory unless the spec names one.
    LoginShell,
}

/// A command to start: the program, its environment, directory and input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// What to run.
    pub program: Program,
    /// Variables added to (or replacing in) the server's environment.
    pub env: Vec<(String, String)>,
    /// Working directory; the server's own when `None`.
    pub cwd: Option<PathBuf>,
    /// Whether the command gets a pipe for its stdin (else `/dev/null`).
    pub stdin: bool,
}

impl Spec {
    /// `sh -c line` with the server's environment and no input.
    pub fn shell(line: impl Into<String>) -> Spec {
        Spec {
            program: Program::Shell(line.into()),
            env: Vec::new(),
            cwd: None,
            stdin: false,
        }
    }

    /// The command, with everything but its stdio and process group.
    pub(super) fn command(&self) -> io::Result<Command> {
        let mut cmd = match &self.program {
            Program::Shell(line) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(line);
                c
            }
            Program::Argv(argv) => {
                let mut c = Command::new(resolve_program(&argv[0])?);
                c.arg0(&argv[0]).args(&argv[1..]);
                c
            }
            Program::LoginShell => {
                let (shell, home) = login_account();
                let name = shell.file_name().unwrap_or_default().to_string_lossy();
                let mut c = Command::new(&shell);
                c.arg0(format!("-{name}"));
                if let Some(home) = home.filter(|h| h.is_dir()) {
                    c.current_dir(home);
                }
                c
            }
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        Ok(cmd)
    }
}

/// The file a program name runs: a name with a `/` as it is; a bare name
/// looked up in the *server's* `PATH`, never in a `PATH` the client put in
/// the command's environment (which would let a client choose what `date`
/// means). The standard library would search the child's `PATH`.
pub fn resolve_program(name: &str) -> io::Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: not found in the server's PATH"),
        )
    };
    if name.is_empty() {
        return Err(not_found());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

/// The shell and home directory of the account this process runs as, as
/// the user database names them; `/bin/sh` when it names no shell.
fn login_account() -> (PathBuf, Option<PathBuf>) {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten();
    let shell = user
        .as_ref()
        .map(|u| u.shell.clone())
        .filter(|s| !s.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    (shell, user.map(|u| u.dir))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

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
    /// Standard input pipe, when the spec asked for one.
    pub stdin: Option<ChildStdin>,
    /// Kills the group when dropped.
    pub guard: GroupGuard,
}

/// The operating system refused to start a command.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {what}: {source}")]
pub struct SpawnError {
    /// What was being started.
    pub what: String,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Spawns `spec` as the leader of a new process group with piped stdout
/// and stderr; `what` names it in the error. Started from a launcher
/// thread once the server holds many descriptors (see `launcher`: there
/// the cost of a start does not grow with them), else from this thread.
pub fn spawn_group(spec: &Spec, what: &str) -> Result<Spawned, SpawnError> {
    let fail = |source| SpawnError {
        what: what.to_string(),
        source,
    };
    let mut cmd = spec.command().map_err(fail)?;
    cmd.process_group(0);
    let cmd = match launcher::launch(cmd.into_std(), spec.stdin) {
        Ok(launched) => return from_launched(launched).map_err(fail),
        Err(LaunchError::Failed(e)) => return Err(fail(e)),
        Err(LaunchError::Unavailable(cmd)) => cmd,
    };
    let mut cmd = Command::from(*cmd);
    cmd.stdin(if spec.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(fail)?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdin = child.stdin.take();
    // Failure only costs speed, so it is ignored.
    let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
    Ok(Spawned {
        child: child.into(),
        pid,
        stdout,
        stderr,
        stdin,
        guard: GroupGuard::new(pid),
    })
}

/// The command the launcher started, its group guarded from here on.
fn from_launched(launched: Launched) -> io::Result<Spawned> {
    let Launched {
        pid,
        stdout,
        stderr,
        stdin,
    } = launched;
    // First, so that whatever fails below still ends the command.
    let guard = GroupGuard::new(pid);
    let child = match Child::from_pid(pid) {
        Ok(child) => child,
        Err(e) => {
            // With no pidfd, nothing would ever reap it: end it here.
            kill_and_reap(pid);
            return Err(e);
        }
    };
    let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
    Ok(Spawned {
        child,
        pid,
        stdout: ChildStdout::from_std(stdout.into())?,
        stderr: ChildStderr::from_std(stderr.into())?,
        stdin: stdin
            .map(|fd| ChildStdin::from_std(fd.into()))
            .transpose()?,
        guard,
    })
}

/// Sends `signal` to every process in group `pgid` (`None`: only checks it
/// exists). Returns false when the group no longer exists (which is not an
/// error: it may have finished).
fn signal_group(pgid: u32, signal: Option<Signal>) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(killpg(Pid::from_raw(raw), signal), Err(Errno::ESRCH))
}

/// Sends `signal` to group `id`, or with `session` to every group of
/// session `id`; false when nothing was there.
fn signal_all(id: u32, session: bool, signal: Option<Signal>) -> bool {
    if !session {
        return signal_group(id, signal);
    }
    let mut any = false;
    for pgid in session_groups(id) {
        any |= signal_group(pgid, signal);
    }
    any
}

/// The process groups of session `sid` (its leader's among them while it
/// lives), from `/proc`: there is no system call that signals a session.
fn session_groups(sid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups: Vec<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid pgrp session ...": comm may hold anything.
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let pgrp = fields.nth(2)?.parse().ok()?;
            let session: u32 = fields.next()?.parse().ok()?;
            (session == sid).then_some(pgrp)
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Process groups (`false`) and sessions (`true`) started and not yet known
/// to be gone, so that a second shutdown signal can kill them all at once
/// ([`kill_all_groups`]).
static LIVE_GROUPS: Mutex<BTreeMap<u32, bool>> = Mutex::new(BTreeMap::new());

fn live_groups() -> std::sync::MutexGuard<'static, BTreeMap<u32, bool>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILLs every process group this process started that may still be
/// running: for an operator who asked twice for the server to stop now.
pub fn kill_all_groups() {
    for (&id, &session) in live_groups().iter() {
        signal_all(id, session, Some(Signal::SIGKILL));
    }
}

/// Terminates a process group (or every group of a session) when dropped:
/// SIGTERM at once, SIGKILL after a grace period for whatever ignored
/// SIGTERM.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: u32,
    session: bool,
    grace: Duration,
    armed: bool,
}

impl GroupGuard {
    /// A guard for group `pgid`.
    pub fn new(pgid: u32) -> Self {
        Self::guarding(pgid, false)
    }

    /// A guard for every process group of session `sid` (a command on a
    /// pty, whose shell may put jobs in groups of their own).
    pub fn for_session(sid: u32) -> Self {
        Self::guarding(sid, true)
    }

    fn guarding(pgid: u32, session: bool) -> Self {
        live_groups().insert(pgid, session);
        GroupGuard {
            pgid,
            session,
            grace: crate::defaults::KILL_GRACE,
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
        let (pgid, session) = (self.pgid, self.session);
        if !signal_all(pgid, session, Some(Signal::SIGTERM)) {
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
                std::thread::sleep(crate::defaults::GROUP_GONE_POLL);
                if !signal_all(pgid, session, None) {
                    live_groups().remove(&pgid);
                    return;
                }
            }
            signal_all(pgid, session, Some(Signal::SIGKILL));
            live_groups().remove(&pgid);
        });
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_found_in_the_servers_path_only() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(resolve_program("./x").unwrap(), PathBuf::from("./x"));
        assert!(resolve_program("no-such-program-wiresh").is_err());
        assert!(resolve_program("").is_err());
    }

    /// Open descriptors of the launcher threads, the busiest one's count.
    fn launcher_descriptors() -> Option<usize> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let name = std::fs::read_to_string(task.join("comm")).ok()?;
                (name.trim() == "wiresh-launcher")
                    .then(|| std::fs::read_dir(task.join("fd")).map_or(0, Iterator::count))
            })
            .max()
    }

    #[tokio::test]
    async fn commands_start_from_a_table_without_the_servers_descriptors() {
        launcher::launch_always();
        // The server's descriptors, as a thousand connections would be.
        let held: Vec<_> = (0..300)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let spec = Spec {
            stdin: true,
            ..Spec::shell("cat; echo err >&2")
        };
        let mut spawned = spawn_group(&spec, "cat").unwrap();
        let launcher = launcher_descriptors().expect("a launcher thread runs here");
        assert!(
            launcher < 16,
            "the launcher's table has {launcher} descriptors beside the {} held",
            held.len()
        );
        // Its pipes work as any command's do.
        let mut stdin = spawned.stdin.take().expect("stdin is piped");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"in\n")
            .await
            .unwrap();
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        tokio::io::AsyncReadExt::read_to_string(&mut spawned.stdout, &mut out)
            .await
            .unwrap();
        tokio::io::AsyncReadExt::read_to_string(&mut spawned.stderr, &mut err)
            .await
            .unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("in\n", "err\n"));
        assert!(spawned.child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_back_and_stay() {
        use std::os::unix::process::ExitStatusExt;
        launcher::launch_always();
        let mut exits = spawn_group(&Spec::shell("exit 3"), "exit").unwrap();
        let status = exits.child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        // Reaped once; asked again, the same answer, and no pid any more.
        assert_eq!(exits.child.wait().await.unwrap(), status);
        assert_eq!(exits.child.id(), None);
        let mut killed = spawn_group(&Spec::shell("kill -KILL $$"), "kill").unwrap();
        let status = killed.child.wait().await.unwrap();
        assert_eq!((status.code(), status.signal()), (None, Some(9)));
        assert!(spawn_group(&Spec::shell("true"), "true").unwrap().pid > 0);
    }

    #[test]
    fn a_start_that_fails_says_why() {
        let spec = Spec {
            program: Program::Argv(vec!["/nonexistent/wiresh-test".into()]),
            ..Spec::shell("")
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime.block_on(async { spawn_group(&spec, "nothing").unwrap_err() });
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[tokio::test]
    async fn a_path_in_the_request_does_not_choose_the_program() {
        let evil = tempfile::tempdir().unwrap();
        let fake = evil.path().join("true");
        std::fs::write(&fake, "#!/bin/sh\necho hijacked\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let spec = Spec {
            program: Program::Argv(vec!["true".into()]),
            env: vec![("PATH".into(), evil.path().display().to_string())],
            cwd: None,
            stdin: false,
        };
        let mut spawned = spawn_group(&spec, "true").unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut spawned.stdout, &mut out)
            .await
            .unwrap();
        assert_eq!(out, "", "the client's PATH chose the program");
        assert!(spawned.child.wait().await.unwrap().success());
    }
}
