//! A terminal device on the runtime: the master side of a command's pty
//! on the server, this process's own terminal on the client.
//!
//! A [`Terminal`] is an [`AsyncRead`] for what is written to it
//! ([`Terminal::reader`]), an [`AsyncWrite`] for its input
//! ([`Terminal::writer`], whose shutdown types the end-of-file key) and
//! [`Terminal::resize`]. Both ends use it, so it belongs to neither: the
//! server's commands on ptys are in `exec::pty` (whose tests drive this
//! type with real commands), the client's terminal sessions in `cli`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustix::fs::OFlags;
use rustix::termios::{self, LocalModes, SpecialCodeIndex, Winsize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wiresh_proto::WindowSize;

use crate::task::watch;

/// The kernel's form of a window size.
pub(crate) fn winsize(size: WindowSize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A terminal: the master side of a command's pty, or this process's own.
#[derive(Debug, Clone)]
pub struct Terminal(Arc<AsyncFd<OwnedFd>>);

impl Terminal {
    /// The terminal whose descriptor (master side, or a terminal of our
    /// own) is `fd`, which must be non-blocking.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Terminal> {
        // Watched for input only: a terminal is writable nearly always, and
        // watching for that would wake the runtime after every write (the
        // terminal reports room again as soon as its reader takes the
        // bytes), once per key echoed. A write that finds the terminal
        // full waits on a registration of its own (see `TerminalWriter`).
        Ok(Terminal(Arc::new(watch(fd, Interest::READABLE)?)))
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
