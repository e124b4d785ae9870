//! Starting commands so that they can always be cleaned up.
//!
//! Every command is started as the leader of a new session (and so of a
//! process group), and, where the server can make one, in a cgroup of its
//! own (see `super::cgroup`): a shell pipeline, a `make -j` or anything
//! else the command forks, even what moves to other process groups or
//! sessions (in a cgroup), can be killed as one. Dropping a [`GroupGuard`]
//! terminates it all (see `super::sweep`): whatever path a connection
//! takes out — normal end, cancel, timeout, disconnect, panic — nothing it
//! started is left running.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process;

use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

use super::cgroup::{self, CommandCgroup};
use super::child::{kill_and_reap, Child};
use super::ctty::{self, Setup};
pub use super::guard::{kill_all_groups, GroupGuard};
use super::helper::wire::{SpawnRequest, Stdio};
use super::helper::{self, NotStarted};
use super::launcher::{self, LaunchError, Launched};
use super::reaper;
use super::spec::Resolved;
pub use super::spec::{resolve_program, Program, SpawnError, Spec};

/// Pipe capacity asked for on the output pipes: larger pipes mean fewer
/// wake-ups per byte when a command produces output fast.
const PIPE_CAPACITY: i32 = 1024 * 1024;

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

/// Spawns `spec` as the leader of a new session (in a cgroup of its own
/// where the server has them) with piped stdout and stderr; `what` names
/// it in the error. Started by the spawn helper where the server has one
/// (see `super::helper`), else from a launcher thread once the server
/// holds many descriptors (see `launcher`: there the cost of a start does
/// not grow with them), else from this thread.
pub async fn spawn_group(spec: &Spec, what: &str) -> Result<Spawned, SpawnError> {
    let fail = |source| SpawnError::new(what, source);
    let resolved = spec.resolve(what)?;
    let cgroup = cgroup::for_command().map_err(fail)?;
    if helper::available() {
        let pipes = Pipes::new(spec.stdin).map_err(fail)?;
        let stdio = Stdio::Pipes { stdin: spec.stdin };
        match by_helper(&resolved, stdio, &pipes.child_ends(), cgroup.as_ref()).await {
            Ok(Some((pid, child))) => return pipes.spawned(pid, child, cgroup).map_err(fail),
            Ok(None) => {}
            Err(e) => return Err(fail(failed_in_helper(e, cgroup))),
        }
    }
    let mut cmd = Command::from(resolved.std_command());
    ctty::prepare(
        cmd.as_std_mut(),
        Setup {
            terminal: false,
            cgroup: cgroup.as_ref().map(|c| c.procs().clone()),
        },
    );
    // Until the command is registered, the reaper must not take it.
    let spawning = reaper::spawning();
    let cmd = match launcher::launch(cmd.into_std(), spec.stdin) {
        Ok(launched) => return from_launched(launched, cgroup).map_err(fail),
        Err(LaunchError::Failed(e)) => return Err(fail(e)),
        Err(LaunchError::Unavailable(cmd)) => cmd,
    };
    let mut cmd = Command::from(*cmd);
    cmd.stdin(if spec.stdin {
        process::Stdio::piped()
    } else {
        process::Stdio::null()
    })
    .stdout(process::Stdio::piped())
    .stderr(process::Stdio::piped())
    .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(fail)?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let registered = reaper::register(pid);
    drop(spawning);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdin = child.stdin.take();
    // Failure only costs speed, so it is ignored.
    let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
    Ok(Spawned {
        child: Child::tokio(child, registered),
        pid,
        stdout,
        stderr,
        stdin,
        guard: GroupGuard::new(pid, cgroup),
    })
}

/// Has the spawn helper start `command` with `stdio` (`fds`, the child's
/// ends), in `cgroup`: its pid and its [`Child`], or `None` when there is
/// no helper to start it (the caller starts it itself).
pub(super) async fn by_helper(
    command: &Resolved,
    stdio: Stdio,
    fds: &[BorrowedFd<'_>],
    cgroup: Option<&CommandCgroup>,
) -> io::Result<Option<(u32, Child)>> {
    if !helper::available() {
        return Ok(None);
    }
    let request = SpawnRequest {
        id: 0,
        command: command.clone(),
        stdio,
        cgroup: cgroup.map(|c| c.procs().as_bytes().to_vec()),
    };
    // Until the command is registered, the reaper must not take it (it
    // becomes the server's child if the helper dies).
    let spawning = reaper::spawning();
    let started = match helper::spawn(request, fds).await {
        Ok(started) => started,
        Err(NotStarted::Unavailable) => return Ok(None),
        Err(NotStarted::Failed(e)) => return Err(e),
    };
    let registered = reaper::register(started.pid);
    drop(spawning);
    match Child::from_helper(started.pid, started.pidfd, started.exit, registered) {
        Ok(child) => Ok(Some((started.pid, child))),
        Err(e) => {
            // Unwatched, it must not run on; the helper reaps it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(started.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(e)
        }
    }
}

/// The error of a start the helper failed, or may have begun before it
/// hung or died: whatever entered the command's cgroup is ended with it.
pub(super) fn failed_in_helper(e: io::Error, cgroup: Option<CommandCgroup>) -> io::Error {
    if let Some(cgroup) = cgroup {
        drop(GroupGuard::new(0, Some(cgroup)));
    }
    e
}

/// A command's pipes, made here for the spawn helper: the server's ends
/// and the child's.
struct Pipes {
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    stdin: Option<(OwnedFd, OwnedFd)>,
}

impl Pipes {
    fn new(stdin: bool) -> io::Result<Pipes> {
        let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
        Ok(Pipes {
            stdout: pipe()?,
            stderr: pipe()?,
            stdin: stdin.then(pipe).transpose()?,
        })
    }

    /// The child's ends, in the order the helper takes them.
    fn child_ends(&self) -> Vec<BorrowedFd<'_>> {
        let stdin = self.stdin.as_ref().map(|(read, _)| read.as_fd());
        stdin
            .into_iter()
            .chain([self.stdout.1.as_fd(), self.stderr.1.as_fd()])
            .collect()
    }

    /// The started command with the server's ends; the child's close here.
    fn spawned(self, pid: u32, child: Child, cgroup: Option<CommandCgroup>) -> io::Result<Spawned> {
        // First, so that whatever fails below still ends the command.
        let guard = GroupGuard::new(pid, cgroup);
        let Pipes {
            stdout: (stdout, _),
            stderr: (stderr, _),
            stdin,
        } = self;
        let stdin = stdin.map(|(_, write)| write);
        Spawned::from_fds(child, pid, guard, [stdout, stderr], stdin)
    }
}

/// The command the launcher started, its group guarded from here on.
fn from_launched(launched: Launched, cgroup: Option<CommandCgroup>) -> io::Result<Spawned> {
    let Launched {
        pid,
        stdout,
        stderr,
        stdin,
    } = launched;
    let registered = reaper::register(pid);
    // First, so that whatever fails below still ends the command.
    let guard = GroupGuard::new(pid, cgroup);
    let child = match Child::from_pid(pid, registered) {
        Ok(child) => child,
        Err(e) => {
            // With no pidfd, nothing would ever reap it: end it here.
            kill_and_reap(pid);
            return Err(e);
        }
    };
    Spawned::from_fds(child, pid, guard, [stdout, stderr], stdin)
}

impl Spawned {
    /// A started command with the server's ends of its pipes, the output
    /// pipe made larger.
    fn from_fds(
        child: Child,
        pid: u32,
        guard: GroupGuard,
        [stdout, stderr]: [OwnedFd; 2],
        stdin: Option<OwnedFd>,
    ) -> io::Result<Spawned> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut spawned = spawn_group(&spec, "cat").await.unwrap();
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
        let mut exits = spawn_group(&Spec::shell("exit 3"), "exit").await.unwrap();
        let status = exits.child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        // Reaped once; asked again, the same answer, and no pid any more.
        assert_eq!(exits.child.wait().await.unwrap(), status);
        assert_eq!(exits.child.id(), None);
        let mut killed = spawn_group(&Spec::shell("kill -KILL $$"), "kill")
            .await
            .unwrap();
        let status = killed.child.wait().await.unwrap();
        assert_eq!((status.code(), status.signal()), (None, Some(9)));
        assert!(spawn_group(&Spec::shell("true"), "true").await.unwrap().pid > 0);
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
        let err = runtime.block_on(async { spawn_group(&spec, "nothing").await.unwrap_err() });
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
            login: true,
        };
        let mut spawned = spawn_group(&spec, "true").await.unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut spawned.stdout, &mut out)
            .await
            .unwrap();
        assert_eq!(out, "", "the client's PATH chose the program");
        assert!(spawned.child.wait().await.unwrap().success());
    }
}
