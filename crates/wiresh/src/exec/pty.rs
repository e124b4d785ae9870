//! Commands on a pseudo-terminal (`exec -t`, `wiresh shell`).
//!
//! A command on a pty is the leader of a new session whose controlling
//! terminal is the pty's slave side, which is also its stdin, stdout and
//! stderr; the server holds the master side, as a [`Terminal`]: an
//! [`AsyncRead`] for the output ([`Terminal::reader`]), an [`AsyncWrite`]
//! for the input ([`Terminal::writer`], whose shutdown types the end-of-file
//! key) and [`Terminal::resize`]. The session's id is the leader's pid, and
//! its [`GroupGuard`] terminates every process group of the session, since a
//! job-control shell puts each job in a group of its own.
//!
//! Reading the master is what drains the terminal: when the server stops
//! reading (its client is slow), the command blocks once the terminal's
//! buffer is full, exactly as with a full pipe.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::{self, LocalModes, SpecialCodeIndex, Winsize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::Child;
use wiresh_proto::{PtyRequest, WindowSize};

use super::spawn::{GroupGuard, SpawnError, Spec};
use crate::task::watch;

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
pub fn spawn_on_pty(spec: &Spec, pty: &PtyRequest, what: &str) -> Result<SpawnedPty, SpawnError> {
    let fail = |source| SpawnError {
        what: what.to_string(),
        source,
    };
    let (master, slave) = open(pty.size()).map_err(fail)?;
    let mut cmd = spec.command().map_err(fail)?;
    let term_from_env = spec.env.iter().any(|(k, _)| k == "TERM");
    if !pty.term.is_empty() && !term_from_env {
        cmd.env("TERM", &pty.term);
    }
    cmd.stdin(Stdio::from(slave.try_clone().map_err(fail)?))
        .stdout(Stdio::from(slave.try_clone().map_err(fail)?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(false);
    ctty::become_session_leader(&mut cmd);
    let child = cmd.spawn().map_err(fail)?;
    // The slave's copies went to the child and were closed here when `cmd`
    // is dropped; the server keeps only the master.
    drop(cmd);
    let pid = child.id().expect("a just-spawned child has a pid");
    let terminal = Terminal::new(master).map_err(fail)?;
    Ok(SpawnedPty {
        child,
        pid,
        terminal,
        guard: GroupGuard::for_session(pid),
    })
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

fn winsize(size: WindowSize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The master side of a command's pty.
#[derive(Debug, Clone)]
pub struct Terminal(Arc<AsyncFd<OwnedFd>>);

impl Terminal {
    fn new(master: OwnedFd) -> io::Result<Terminal> {
        // Watched for input only: a terminal is writable nearly always, and
        // watching for that would wake the runtime after every write (the
        // terminal reports room again as soon as its reader takes the
        // bytes), once per key echoed. A write that finds the terminal
        // full waits on a registration of its own (see `TerminalWriter`).
        Ok(Terminal(Arc::new(watch(master, Interest::READABLE)?)))
    }

    /// This process's own terminal (its stdin's), opened anew: a new open
    /// file description, so that making it non-blocking (as the runtime
    /// needs) changes nothing for the shell that shares stdin. Lets a client
    /// read keys and write output on its runtime's thread, as ssh does,
    /// with no thread to wake per key.
    pub fn reopen_stdin() -> io::Result<Terminal> {
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::open("/proc/self/fd/0", flags, rustix::fs::Mode::empty())?;
        if !termios::isatty(&fd) {
            return Err(io::Error::other("stdin is not a terminal"));
        }
        Terminal::new(fd)
    }

    /// Whether `fd` is this terminal (the same device).
    pub fn is(&self, fd: impl AsFd) -> bool {
        let same = |a: rustix::fs::Stat, b: rustix::fs::Stat| {
            a.st_rdev == b.st_rdev && a.st_ino == b.st_ino
        };
        match (rustix::fs::fstat(self.0.get_ref()), rustix::fs::fstat(fd)) {
            (Ok(a), Ok(b)) => same(a, b),
            _ => false,
        }
    }

    /// Gives the terminal a new size; the kernel sends `SIGWINCH` to its
    /// foreground process group.
    pub fn resize(&self, size: WindowSize) -> io::Result<()> {
        Ok(termios::tcsetwinsize(self.0.get_ref(), winsize(size))?)
    }

    /// What the command writes to the terminal. Ends (reads 0) once every
    /// process has closed the terminal.
    pub fn reader(&self) -> TerminalReader {
        TerminalReader(self.0.clone())
    }

    /// The command's input, as typed keys. Shutting it down types the
    /// end-of-file key (see [`TerminalWriter`]).
    pub fn writer(&self) -> TerminalWriter {
        TerminalWriter {
            fd: self.0.clone(),
            full: None,
            at_line_start: true,
            eof: None,
        }
    }
}

/// Reads the terminal's output.
#[derive(Debug)]
pub struct TerminalReader(Arc<AsyncFd<OwnedFd>>);

impl AsyncRead for TerminalReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *unfilled)?)) {
                Ok(Ok(n)) => {
                    // Less than there was room for: the terminal is empty
                    // now, as tokio's sockets assume too. The next read
                    // waits for the next event instead of making a call
                    // that can only fail, one per key on each side.
                    if n > 0 && n < room {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Linux reports a pty whose slave side every process has
                // closed with EIO: that is its end of file.
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Writes the command's input to the terminal.
///
/// A terminal cannot be closed for input alone, so [`AsyncWrite::poll_shutdown`]
/// types the terminal's end-of-file character (`VEOF`) instead, when the
/// terminal is in canonical mode: once at the start of a line, twice after
/// half a line (the first delivers it). A program reading lines then sees
/// end of file, as after Ctrl-D; one in raw mode gets nothing.
#[derive(Debug)]
pub struct TerminalWriter {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// While the terminal is full: a second descriptor of it, watched for
    /// room (the first is watched for input only, see [`Terminal::new`]).
    full: Option<AsyncFd<OwnedFd>>,
    at_line_start: bool,
    /// The end-of-file keys still to type, once shutting down.
    eof: Option<Vec<u8>>,
}

impl TerminalWriter {
    fn poll_write_raw(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let Some(full) = &self.full else {
                match rustix::io::write(self.fd.get_ref(), data) {
                    Err(rustix::io::Errno::AGAIN) => {
                        let second = self.fd.get_ref().try_clone()?;
                        self.full = Some(watch(second, Interest::WRITABLE)?);
                        continue;
                    }
                    written => return Poll::Ready(Ok(written?)),
                }
            };
            let mut ready = ready!(full.poll_write_ready(cx))?;
            if let Ok(written) = ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), data)?)) {
                // Room again: stop watching until the terminal fills up.
                self.full = None;
                return Poll::Ready(written);
            }
        }
    }

    /// The end-of-file keys to type now, as described on the type.
    fn eof_keys(&self) -> Vec<u8> {
        match termios::tcgetattr(self.fd.get_ref()) {
            Ok(t) if t.local_modes.contains(LocalModes::ICANON) => {
                let key = t.special_codes[SpecialCodeIndex::VEOF];
                let times = if self.at_line_start { 1 } else { 2 };
                vec![key; times]
            }
            _ => Vec::new(),
        }
    }
}

impl AsyncWrite for TerminalWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(self.poll_write_raw(cx, data))?;
        if let Some(&last) = data[..n].last() {
            self.at_line_start = last == b'\n' || last == b'\r';
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut keys = match self.eof.take() {
            Some(keys) => keys,
            None => self.eof_keys(),
        };
        while !keys.is_empty() {
            match self.poll_write_raw(cx, &keys) {
                Poll::Ready(Ok(n)) => drop(keys.drain(..n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.eof = Some(keys);
                    return Poll::Pending;
                }
            }
        }
        self.eof = Some(keys);
        Poll::Ready(Ok(()))
    }
}

/// Reads the size of the terminal `fd` is, if it is one.
pub fn window_size(fd: impl AsFd) -> Option<WindowSize> {
    let size = termios::tcgetwinsize(fd).ok()?;
    Some(WindowSize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

/// The one `unsafe` block of this crate, kept here.
mod ctty {
    /// Makes the command, in the child between `fork` and `exec`, the leader
    /// of a new session whose controlling terminal is its stdin (the pty).
    ///
    /// The standard library can start a process group (`process_group`) but
    /// not a session with a controlling terminal; only a `pre_exec` hook can,
    /// and registering one is `unsafe` because the hook runs in a forked
    /// child where only async-signal-safe calls are allowed.
    pub(super) fn become_session_leader(cmd: &mut tokio::process::Command) {
        // SAFETY: the hook makes two system calls, setsid(2) and
        // ioctl(TIOCSCTTY), directly through rustix: nothing that allocates,
        // takes a lock or touches memory shared with the parent. The
        // standard library has already put the pty on fds 0, 1 and 2 when
        // hooks run, and the child is not a process group leader (no
        // `process_group` here), so setsid succeeds.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::spawn::Program;
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
        let mut spawned = spawn_on_pty(&spec, &pty(100, 30), "test").unwrap();
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
        let spawned = spawn_on_pty(&spec, &pty(80, 24), "test").unwrap();
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
        let spawned = spawn_on_pty(&Spec::shell(line), &pty(80, 24), "test").unwrap();
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
        let spawned = spawn_on_pty(&Spec::shell("echo bye"), &pty(80, 24), "test").unwrap();
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
