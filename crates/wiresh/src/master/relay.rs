//! Moving a session's bytes between a client's Unix socket and the
//! server's connection, both ways at once, unchanged.
//!
//! Over plain TCP a large body goes from one socket to the other with
//! `splice(2)` through a pipe, never through this process's memory; what
//! is read (headers, small frames) is written on as it was read. Over TLS
//! the master decrypts and encrypts (rustls, in the master only): the
//! client's side is always a Unix socket in the clear.
//!
//! Each direction is scanned for frame boundaries ([`Scanner`]) and the
//! session followed ([`Tracker`]), so that when the client leaves, the
//! master knows whether the connection is idle.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use rustix::pipe::SpliceFlags;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, Ready};
use tokio::net::{TcpStream, UnixStream};
use wiresh_proto::Limits;

use super::pool::{Stream, Upstream};
use super::scan::{Scanner, Tracker};

/// Bodies with at least this much left on the socket are spliced rather
/// than read.
const SPLICE_MIN: u64 = 16 * 1024;

/// What one read takes at most.
const READ_BUFFER: usize = 64 * 1024;

/// The pipe bodies are spliced through is asked to be this large (a
/// server's largest body), so that one splice in and one out move most.
const PIPE_SIZE: usize = 1024 * 1024;

/// How a session ended.
#[derive(Debug)]
pub(super) enum Ending {
    /// The client left the connection idle: it may be lent again.
    Idle,
    /// The client left while something ran (or left a frame half sent):
    /// the connection is closed, which ends what ran.
    Busy,
    /// The server closed the connection, or a socket failed.
    Gone(String),
}

/// Relays between `client` and the server until one of them leaves;
/// `first` (what the client sent after its `auth`) goes first, to the
/// server, and only then `answer` (the server's `hello` and `auth_ok`)
/// to the client: a one-shot's `exec` comes with its handshake, and the
/// server starts the command while the client reads the answer.
pub(super) async fn relay(
    client: &mut UnixStream,
    first: &[u8],
    answer: &[u8],
    up: &mut Upstream,
) -> Ending {
    let tracker = Mutex::new(Tracker::default());
    let client_sent = |kind: &str| lock(&tracker).client_sent(kind);
    let server_sent = |kind: &str| lock(&tracker).server_sent(kind);
    // What the client sends is held to the server's limits; what the
    // server sends, to a version 1 server's.
    let mut upward = Scanner::new(up.limits);
    let mut downward = Scanner::new(Limits::default());
    if let Err(e) = upward.feed(first, client_sent) {
        return Ending::Gone(format!("the client sent {e}"));
    }
    let ended = match &mut up.stream {
        Stream::Plain(tcp) => {
            if let Err(e) = write_all(&*tcp, first).await {
                return Ending::Gone(format!("writing to the server: {e}"));
            }
            if let Err(e) = write_all(&*client, answer).await {
                return unanswered(first, &e);
            }
            let (tcp, client) = (&*tcp, &*client);
            tokio::select! {
                r = pump_plain(client, tcp, &mut upward, client_sent) => Side::Client(r),
                r = pump_plain(tcp, client, &mut downward, server_sent) => Side::Server(r),
            }
        }
        Stream::Tls(tls) => {
            let tls = &mut **tls;
            if let Err(e) = write_flush(tls, first).await {
                return Ending::Gone(format!("writing to the server: {e}"));
            }
            if let Err(e) = client.write_all(answer).await {
                return unanswered(first, &e);
            }
            let (from_server, to_server) = tokio::io::split(tls);
            let (from_client, to_client) = client.split();
            tokio::select! {
                r = pump(from_client, to_server, &mut upward, client_sent) => Side::Client(r),
                r = pump(from_server, to_client, &mut downward, server_sent) => Side::Server(r),
            }
        }
    };
    match ended {
        Side::Client(Ok(())) => {
            let clean = upward.at_boundary() && downward.at_boundary() && lock(&tracker).idle();
            match clean {
                true => Ending::Idle,
                false => Ending::Busy,
            }
        }
        Side::Client(Err(e)) => Ending::Gone(format!("the client's side: {e}")),
        Side::Server(Ok(())) => Ending::Gone("the server closed the connection".into()),
        Side::Server(Err(e)) => Ending::Gone(format!("the server's side: {e}")),
    }
}

/// A client gone before it read the answer: the connection is still idle
/// if nothing of its was sent on.
fn unanswered(first: &[u8], e: &io::Error) -> Ending {
    match first.is_empty() {
        true => Ending::Idle,
        false => Ending::Gone(format!("writing to the client: {e}")),
    }
}

/// Which direction ended first: the client's (its end: it left) or the
/// server's.
enum Side {
    Client(io::Result<()>),
    Server(io::Result<()>),
}

fn lock(tracker: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies `from` to `to` until `from` ends, scanning what passes.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    scanner: &mut Scanner,
    seen: impl Fn(&str),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        scanner.feed(&buf[..n], &seen).map_err(io::Error::other)?;
        write_flush(&mut to, &buf[..n]).await?;
    }
}

/// Writes all of `bytes` and flushes (TLS holds records until then).
async fn write_flush<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

/// A socket on the runtime: TCP or Unix alike.
trait Socket: AsFd {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Socket for TcpStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> {
        TcpStream::ready(self, interest)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        TcpStream::try_io(self, interest, f)
    }
}

impl Socket for UnixStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> {
        UnixStream::ready(self, interest)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UnixStream::try_io(self, interest, f)
    }
}

/// Runs `call` on `socket` once it is ready for `interest`, as often as
/// it would block.
async fn when_ready<S: Socket, R>(
    socket: &S,
    interest: Interest,
    mut call: impl FnMut() -> rustix::io::Result<R>,
) -> io::Result<R> {
    loop {
        socket.ready(interest).await?;
        match socket.try_io(interest, || call().map_err(io::Error::from)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Copies `from` to `to` until `from` ends, scanning what passes; the
/// rest of a large body is spliced, unread.
async fn pump_plain<F: Socket, T: Socket>(
    from: &F,
    to: &T,
    scanner: &mut Scanner,
    seen: impl Fn(&str),
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut pipe = None;
    loop {
        let left = scanner.body_left();
        if left >= SPLICE_MIN {
            let moved = splice_through(from, to, &mut pipe, left).await?;
            if moved == 0 {
                return Ok(());
            }
            scanner.skip(moved as u64);
            continue;
        }
        let n = when_ready(from, Interest::READABLE, || {
            rustix::io::read(from, &mut buf)
        })
        .await?;
        if n == 0 {
            return Ok(());
        }
        scanner.feed(&buf[..n], &seen).map_err(io::Error::other)?;
        write_all(to, &buf[..n]).await?;
    }
}

/// Writes all of `bytes` to `to`.
async fn write_all<T: Socket>(to: &T, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = when_ready(to, Interest::WRITABLE, || {
            rustix::net::send(to, bytes, rustix::net::SendFlags::NOSIGNAL)
        })
        .await?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Moves up to `left` bytes from `from` to `to` through `pipe` (made at
/// the first call); 0 when `from` has ended.
async fn splice_through<F: Socket, T: Socket>(
    from: &F,
    to: &T,
    pipe: &mut Option<(OwnedFd, OwnedFd)>,
    left: u64,
) -> io::Result<usize> {
    if pipe.is_none() {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // A smaller pipe (pipe-max-size) only means more rounds.
        let _ = rustix::pipe::fcntl_setpipe_size(&read, PIPE_SIZE);
        *pipe = Some((read, write));
    }
    let (pipe_out, pipe_in) = pipe.as_ref().expect("made above");
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let want = usize::try_from(left).unwrap_or(usize::MAX).min(PIPE_SIZE);
    let moved = when_ready(from, Interest::READABLE, || {
        rustix::pipe::splice(from, None, pipe_in, None, want, flags)
    })
    .await?;
    let mut out = 0;
    while out < moved {
        out += when_ready(to, Interest::WRITABLE, || {
            rustix::pipe::splice(pipe_out, None, to, None, moved - out, flags)
        })
        .await?;
    }
    Ok(moved)
}
