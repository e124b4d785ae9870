//! Commands on a pseudo-terminal (`exec -t`, `wiresh shell`).
//!
//! A command on a pty is the leader of a new session whose controlling
//! terminal is the pty's slave side, which is also its stdin, stdout and
//! stderr; the server holds the master side, as a [`Terminal`] (the type
//! the client's own terminal is, too: [`crate::tty`]). The session's id is
//! the leader's pid, and its [`GroupGuard`] terminates every process group
//! of the session, since a job-control shell puts each job in a group of
//! its own.
//!
//! Reading the master is what drains the terminal: when the server stops
//! reading (its client is slow), the command blocks once the terminal's
//! buffer is full, exactly as with a full pipe.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;

use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;
use rustix::termios;
use wiresh_proto::{PtyRequest, WindowSize};

use super::cgroup::CommandCgroup;
use super::child::Child;
use super::guard::GroupGuard;
use super::helper::wire::Stdio as Streams;
use super::spawn::{by_helper, failed_in_helper};
use super::spec::{Resolved, SpawnError, Spec};
use super::{cgroup, ctty, reaper};
use crate::tty::{winsize, Terminal};

/// A command started on a pty, ready to be driven.
#[derive(Debug)]
pub struct SpawnedPty {
    /// The session leader.
    pub child: Child,
    /// Its process id, which is also its process group and session id.
    pub pid: u32,
    /// The master side of its terminal.
    pub terminal: Terminal,
    /// Terminates the whole session when dropped.
    pub guard: GroupGuard,
}

/// Starts `spec` on a new pty of the requested size and type, as the leader
/// of a new session with the pty as controlling terminal. `spec.stdin` plays
/// no part: the terminal is the command's input. `what` names it in errors.
pub async fn spawn_on_pty(
    spec: &Spec,
    pty: &PtyRequest,
    what: &str,
) -> Result<SpawnedPty, SpawnError> {
    let fail = |source| SpawnError::new(what, source);
    let mut resolved = spec.resolve(what)?;
    let (master, slave) = open(pty.size()).map_err(fail)?;
    let term_from_env = spec.env.iter().any(|(k, _)| k == "TERM");
    if !pty.term.is_empty() && !term_from_env {
        resolved.env.push(("TERM".into(), pty.term.clone().into()));
    }
    let cgroup = cgroup::for_command().map_err(fail)?;
    let (pid, child) = match by_helper(
        &resolved,
        Streams::Terminal,
        &[slave.as_fd()],
        cgroup.as_ref(),
    )
    .await
    {
        Ok(Some(started)) => started,
        Ok(None) => start_here(&resolved, slave, cgroup.as_ref()).map_err(fail)?,
        Err(e) => return Err(fail(failed_in_helper(e, cgroup))),
    };
    // First, so that whatever fails below still ends the session.
    let guard = GroupGuard::new(pid, cgroup);
    let terminal = Terminal::new(master).map_err(fail)?;
    Ok(SpawnedPty {
        child,
        pid,
        terminal,
        guard,
    })
}

/// Starts `command` on the pty whose slave is `slave` from this thread.
fn start_here(
    command: &Resolved,
    slave: OwnedFd,
    cgroup: Option<&CommandCgroup>,
) -> io::Result<(u32, Child)> {
    let mut cmd = tokio::process::Command::from(command.std_command());
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(false);
    let setup = ctty::Setup {
        terminal: true,
        cgroup: cgroup.map(|c| c.procs().clone()),
    };
    ctty::prepare(cmd.as_std_mut(), setup);
    let spawning = reaper::spawning();
    let child = cmd.spawn()?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let child = Child::tokio(child, reaper::register(pid));
    drop(spawning);
    // The slave's copies went to the child and close here with `cmd`; the
    // server keeps only the master.
    Ok((pid, child))
}

/// Opens a pty of `size`: the master (non-blocking, for the runtime) and
/// the slave, neither inherited by other children.
fn open(size: WindowSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    termios::tcsetwinsize(&slave, winsize(size))?;
    let status = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, status | OFlags::NONBLOCK)?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::spec::Program;
    use crate::tty::TerminalReader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pty(cols: u16, rows: u16) -> PtyRequest {
        PtyRequest {
            term: "xterm".into(),
            cols,
            rows,
        }
    }

    async fn read_until(reader: &mut TerminalReader, needle: &str) -> String {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while !String::from_utf8_lossy(&text).contains(needle) {
                let n = reader.read(&mut buf).await.unwrap();
                assert!(n > 0, "end of output before {needle:?}: {text:?}");
                text.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&text)));
        String::from_utf8_lossy(&text).into_owned()
    }

    #[tokio::test]
    async fn the_command_leads_a_session_on_its_terminal() {
        let spec = Spec::shell("echo \"$TERM $(stty size) $(ps -o sid= -p $$ | tr -d ' ')\"; tty");
        let mut spawned = spawn_on_pty(&spec, &pty(100, 30), "test").await.unwrap();
        let out = read_until(&mut spawned.terminal.reader(), "/dev/pts/").await;
        let sid = spawned.pid.to_string();
        assert!(out.contains(&format!("xterm 30 100 {sid}")), "{out:?}");
        assert!(spawned.child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn shutting_input_down_types_end_of_file() {
        let spec = Spec {
            program: Program::Shell("wc -c; echo done".into()),
            ..Spec::shell("")
        };
        let spawned = spawn_on_pty(&spec, &pty(80, 24), "test").await.unwrap();
        let mut writer = spawned.terminal.writer();
        // Half a line: the first end-of-file delivers it, the second ends it.
        writer.write_all(b"abc").await.unwrap();
        writer.shutdown().await.unwrap();
        let out = read_until(&mut spawned.terminal.reader(), "done").await;
        assert!(out.contains("3\r\ndone"), "{out:?}");
    }

    /// Input the terminal has no room for waits, and goes on once the
    /// command reads (the writer watches for room only while it waits).
    #[tokio::test]
    async fn input_waits_for_room_on_the_terminal() {
        let line = "stty raw -echo; echo ready; kill -STOP $$; head -c 300000 | wc -c";
        let spawned = spawn_on_pty(&Spec::shell(line), &pty(80, 24), "test")
            .await
            .unwrap();
        let mut reader = spawned.terminal.reader();
        read_until(&mut reader, "ready").await;
        let shell = rustix::process::Pid::from_raw(spawned.pid as i32).unwrap();
        let mut writer = spawned.terminal.writer();
        let input = vec![b'k'; 300_000];
        let mut writing = Box::pin(writer.write_all(&input));
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut writing).await;
        assert!(early.is_err(), "300 kB went into a terminal nobody reads");
        rustix::process::kill_process(shell, rustix::process::Signal::CONT).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), writing)
            .await
            .expect("the input went in once the command read")
            .unwrap();
        read_until(&mut reader, "300000").await;
    }

    #[tokio::test]
    async fn output_ends_when_the_terminal_is_closed() {
        let spawned = spawn_on_pty(&Spec::shell("echo bye"), &pty(80, 24), "test")
            .await
            .unwrap();
        let mut all = Vec::new();
        let mut reader = spawned.terminal.reader();
        let read = reader.read_to_end(&mut all);
        tokio::time::timeout(std::time::Duration::from_secs(20), read)
            .await
            .expect("the output ended")
            .unwrap();
        assert_eq!(all, b"bye\r\n");
    }
}
