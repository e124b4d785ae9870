//! A command's output, on its way to the client: the [`Outbox`] that
//! batches what can wait, and the pumps that move the command's pipes (or
//! terminal) into it, by copy or, over plain TCP, by splice (after russh's
//! `channels/io/tx.rs`).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::process::{ChildStderr, ChildStdout};
use tokio::time::{self, Instant};
use wiresh_proto::{Frame, Message};

use super::window::Window;
use crate::conn::{Closed, FrameSender, Outgoing};
use crate::defaults::OUTPUT_GATHER;
use crate::server::buffers::BufferPool;

/// Largest chunk read from a command's pipe into one frame. Large enough
/// that per-frame costs vanish at full speed, small enough that what a
/// connection holds in flight stays near 2.5 MiB (see `conn`); never more
/// than the body limit, which every client accepts.
pub(super) const CHUNK: usize = 256 * 1024;

/// The first read from a command's pipe or terminal (see `copy_pump`).
const FIRST_READ: usize = 8 * 1024;

/// Largest body spliced from a pipe into one frame (never more than the
/// body limit): nothing is held in memory for it, so it can be as large as
/// the pipe (see `exec::spawn`).
const SPLICE_CHUNK: usize = 1024 * 1024;

/// Output of a command copied before the rest is spliced (see `pump`).
const SPLICE_AFTER: u64 = 1024 * 1024;

/// What a spliced frame gathers while output flows (see `gather`), at
/// most: never more than half the pipe.
const GATHER: usize = 256 * 1024;

/// A command's frames into the connection's ordered stream, holding back
/// what can wait to travel with the next frame, as TCP delays its ACKs:
///
/// - `started`, until something else goes out or
///   [`STARTED_HOLD`](crate::defaults::STARTED_HOLD) has
///   passed: a short command's `started` and `exit` then leave in one
///   write, and the client wakes once for them instead of twice;
/// - acknowledgements of input (`stdin_ack`), until something else goes
///   out, the input ends or a quarter of the window is owed (see
///   `StdinFeed` and [`Window`]): a key typed on a terminal is then acknowledged
///   together with its echo, one wake-up per key at each end. No timer
///   bounds the hold: arming one per key wakes the runtime's other thread
///   and costs what the hold saves, and none is needed, since a client
///   owed less than a quarter of its window can always send on.
///
/// Whatever goes first takes what is held with it, in order, so the wire
/// reads as if each had been sent at once.
#[derive(Debug, Clone)]
pub(super) struct Outbox {
    data: FrameSender,
    started: Arc<Mutex<Option<Frame>>>,
    /// The command's stdin window, whose acknowledgements this sends.
    window: Arc<Window>,
}

impl Outbox {
    /// An outbox for a command whose `started` is `started` and whose
    /// input has a window of `window` bytes.
    pub fn new(data: FrameSender, started: Frame, window: usize) -> Outbox {
        Outbox {
            data,
            started: Arc::new(Mutex::new(Some(started))),
            window: Arc::new(Window::new(window)),
        }
    }

    /// The stdin window whose acknowledgements this sends.
    pub fn window(&self) -> &Arc<Window> {
        &self.window
    }

    /// Whether the connection can splice output into its socket (plain
    /// TCP).
    pub fn can_splice(&self) -> bool {
        self.data.can_splice()
    }

    /// Resolves once the connection's writer has stopped.
    pub async fn closed(&self) {
        self.data.closed().await
    }

    fn take_started(&self) -> Option<Outgoing> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(Outgoing::from)
    }

    fn take_ack(&self) -> Option<Outgoing> {
        match self.window.acknowledge() {
            0 => None,
            bytes => Some(Frame::new(Message::StdinAck { bytes }).into()),
        }
    }

    /// Whether `started` is still held.
    pub fn holding(&self) -> bool {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Owes the client an acknowledgement of `bytes` more of its input;
    /// returns how much is owed now.
    pub fn owe(&self, bytes: usize) -> u64 {
        self.window.written(bytes)
    }

    /// Queues `frame`, behind what is held.
    pub async fn send(&self, frame: impl Into<Outgoing>) -> Result<(), Closed> {
        let items = [self.take_started(), self.take_ack(), Some(frame.into())];
        self.data.send_together(items).await
    }

    /// Sends a frame of `kind` whose body is the next `len` bytes of
    /// `pipe` (they are there already), or more up to `up_to` if more has
    /// come when the socket takes it, spliced into the socket; returns the
    /// body's length once it has left the pipe.
    async fn send_spliced(
        &self,
        kind: Message,
        pipe: Arc<OwnedFd>,
        len: usize,
        up_to: usize,
    ) -> Result<usize, Closed> {
        let (item, moved) = FrameSender::spliced(kind, pipe, len, up_to);
        self.send(item).await?;
        moved.await.unwrap_or(Err(Closed))
    }

    /// Queues what is held now.
    pub async fn flush(&self) -> Result<(), Closed> {
        let items = [self.take_started(), self.take_ack()];
        self.data.send_together(items).await
    }
}

/// One of a command's outputs: a pipe or its terminal.
pub(super) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// Where a pump takes a command's output from.
pub(super) enum Source {
    /// Anything readable; the bytes are copied into frames.
    Read(BoxRead),
    /// A command's output pipe over a plain TCP connection: copied while
    /// the output is small, spliced once it is large.
    Child(ChildPipe),
}

/// A command's stdout or stderr pipe, as tokio holds it.
pub(super) enum ChildPipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl ChildPipe {
    fn into_owned_fd(self) -> std::io::Result<OwnedFd> {
        match self {
            ChildPipe::Out(pipe) => pipe.into_owned_fd(),
            ChildPipe::Err(pipe) => pipe.into_owned_fd(),
        }
    }
}

impl AsyncRead for ChildPipe {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ChildPipe::Out(pipe) => std::pin::Pin::new(pipe).poll_read(cx, buf),
            ChildPipe::Err(pipe) => std::pin::Pin::new(pipe).poll_read(cx, buf),
        }
    }
}

/// Sends one of the command's outputs as frames of `kind` until end of
/// file; returns the byte count. Waiting on a full queue (or for a splice
/// to finish) is what slows the command down to the client's pace.
///
/// A command's pipe over plain TCP is copied for its first
/// [`SPLICE_AFTER`] bytes, like any output: most commands say little, and
/// taking the pipe over for splicing costs a few system calls. Past that
/// the rest is spliced.
pub(super) async fn pump(source: Source, kind: Message, out: Outbox, chunk: usize) -> u64 {
    let mut pipe = match source {
        Source::Read(mut pipe) => {
            return copy_pump(&mut pipe, &kind, &out, chunk, u64::MAX).await.0
        }
        Source::Child(pipe) => pipe,
    };
    let (copied, ended) = copy_pump(&mut pipe, &kind, &out, chunk, SPLICE_AFTER).await;
    if ended {
        return copied;
    }
    let fd = match pipe.into_owned_fd() {
        Ok(fd) => fd,
        Err(e) => {
            // Cannot happen short of a broken epoll; say so rather than hang.
            tracing::warn!(
                "cannot take over a command's output pipe: {e}; the rest of its output is lost"
            );
            return copied;
        }
    };
    // The writer splices from a handle of its own on the pipe, which stays
    // open as long as it may use it, whatever happens to this pump. Without
    // one, the pipe is read and copied.
    copied
        + match (fd.try_clone(), pipe::Receiver::from_owned_fd(fd)) {
            (Ok(shared), Ok(ready)) => splice_pump(ready, Arc::new(shared), kind, out).await,
            (Err(_), Ok(mut ready)) => copy_pump(&mut ready, &kind, &out, chunk, u64::MAX).await.0,
            (_, Err(e)) => {
                tracing::warn!(
                    "cannot read a command's output pipe: {e}; the rest of its output is lost"
                );
                0
            }
        }
}

/// The zero-copy pump: waits until the pipe has bytes, asks how many
/// (`FIONREAD`), and has the connection's writer splice exactly that many
/// (at most [`SPLICE_CHUNK`]) behind a frame header saying so. While output
/// flows, a frame first gathers what comes within [`OUTPUT_GATHER`] (see
/// [`gather`]).
async fn splice_pump(
    ready: pipe::Receiver,
    shared: Arc<OwnedFd>,
    kind: Message,
    out: Outbox,
) -> u64 {
    let chunk = SPLICE_CHUNK.min(wiresh_proto::Limits::default().max_body);
    let mut total = 0u64;
    let mut small = [0u8; 4096];
    // Half the pipe at most, so that the command writes on while a frame
    // gathers and leaves: stderr keeps the default 64 KiB (see
    // `exec::spawn`), and stdout may too when the kernel refused it more;
    // gathering a full pipe's worth would wait out every deadline.
    let gather_up_to =
        rustix::pipe::fcntl_getpipe_size(&ready).map_or(0, |capacity| GATHER.min(capacity / 2));
    // When the last frame left: output that comes again soon after is
    // flowing, and worth gathering.
    let mut last_sent = Instant::now();
    loop {
        if ready.readable().await.is_err() {
            break;
        }
        let mut queued = queued_in(&ready);
        if queued > 0 && queued < gather_up_to && last_sent.elapsed() < OUTPUT_GATHER {
            queued = gather(&ready, queued, gather_up_to).await;
        }
        if queued > 0 {
            let len = queued.min(chunk);
            match out
                .send_spliced(kind.clone(), shared.clone(), len, chunk)
                .await
            {
                Ok(sent) => total += sent as u64,
                Err(Closed) => break,
            }
            last_sent = Instant::now();
            continue;
        }
        // Readable with nothing queued: the command has closed the pipe,
        // unless bytes came just now. A read tells; a would-block clears
        // the stale readiness.
        match ready.try_read(&mut small) {
            Ok(0) => break,
            Ok(n) => {
                let body = Bytes::copy_from_slice(&small[..n]);
                if out
                    .send(Frame::with_body(kind.clone(), body))
                    .await
                    .is_err()
                {
                    break;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    total
}

/// Bytes in `pipe` now (`FIONREAD`).
fn queued_in(pipe: &pipe::Receiver) -> usize {
    let queued = rustix::io::ioctl_fionread(pipe).unwrap_or(0);
    usize::try_from(queued).unwrap_or(usize::MAX)
}

/// Waits, for [`OUTPUT_GATHER`] at most, until `pipe` holds `up_to` bytes
/// (it holds `queued` now), the command closes it, or its readiness fails;
/// returns what it holds then.
///
/// A command that writes in small pieces (`head` writes 8 KiB at a time)
/// wakes its pump once per write, and a frame per wake-up costs both ends
/// a round of system calls and task and thread wake-ups: 1 GiB went out in
/// some 100,000 frames of 11 KiB. Gathering makes them a few thousand,
/// large enough for the client to splice. The wait is bounded, so output
/// that pauses goes out at once after it, and only output that came within
/// [`OUTPUT_GATHER`] of the last frame waits at all.
async fn gather(pipe: &pipe::Receiver, mut queued: usize, up_to: usize) -> usize {
    let deadline = time::sleep(OUTPUT_GATHER);
    tokio::pin!(deadline);
    while queued < up_to {
        // Forget the readiness seen so far, so that the next write wakes
        // this; then look again, as bytes may have come in between.
        let _ = pipe.try_io(|| Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
        queued = queued_in(pipe);
        if queued >= up_to {
            break;
        }
        tokio::select! {
            ready = pipe.ready(Interest::READABLE) => match ready {
                Ok(ready) if !ready.is_read_closed() => {}
                _ => return queued_in(pipe),
            },
            () = &mut deadline => return queued_in(pipe),
        }
    }
    queued
}

/// The copying pump: reads chunks into memory and queues them as frames,
/// until end of file or until `limit` bytes have gone; returns how many,
/// and whether the output ended.
async fn copy_pump<R: AsyncRead + Unpin + ?Sized>(
    pipe: &mut R,
    kind: &Message,
    out: &Outbox,
    chunk: usize,
    limit: u64,
) -> (u64, bool) {
    let mut total = 0u64;
    let mut buf = BytesMut::new();
    // Whole chunks, once reads come back that large, are read into buffers
    // that come back when their frames are written.
    let pool = BufferPool::new(chunk);
    // Reads start small and grow while they come back full: a command that
    // writes a line or a key's echo costs a small buffer per frame, not a
    // chunk's worth of memory to allocate (and, for a terminal, to zero).
    let mut want = FIRST_READ.min(chunk);
    while total < limit {
        let body = if want == chunk {
            let mut whole = pool.take();
            match pipe.read(&mut whole).await {
                Ok(n) if n > 0 => pool.body(whole, n),
                _ => return (total, true),
            }
        } else {
            // Reuses the allocation once the previous frame has been written.
            buf.reserve(want);
            match (&mut *pipe).take(want as u64).read_buf(&mut buf).await {
                Ok(n) if n > 0 => buf.split().freeze(),
                _ => return (total, true),
            }
        };
        total += body.len() as u64;
        if body.len() == want {
            want = (want * 2).min(chunk);
        }
        if out
            .send(Frame::with_body(kind.clone(), body))
            .await
            .is_err()
        {
            return (total, true);
        }
    }
    (total, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::FrameConn;
    use std::time::Duration;
    use wiresh_proto::{FrameCodec, Limits};

    /// A connection whose frames the test reads at the other end.
    fn pair() -> (FrameConn, FrameConn) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            FrameConn::new(a, Limits::default(), FrameCodec::default()),
            FrameConn::new(b, Limits::default(), FrameCodec::default()),
        )
    }

    async fn next(conn: &mut FrameConn) -> Frame {
        conn.recv_within(Duration::from_secs(5))
            .await
            .expect("a frame")
    }

    #[tokio::test]
    async fn what_is_held_leaves_first_in_order() {
        let (server, mut client) = pair();
        let outbox = Outbox::new(
            server.sender(),
            Frame::new(Message::Started { pid: 7 }),
            1 << 20,
        );
        outbox.owe(3);
        outbox.owe(4);
        let output = Frame::with_body(Message::Stdout, &b"echo"[..]);
        outbox.send(output).await.unwrap();
        assert_eq!(next(&mut client).await.message, Message::Started { pid: 7 });
        assert_eq!(
            next(&mut client).await.message,
            Message::StdinAck { bytes: 7 }
        );
        let echo = next(&mut client).await;
        assert_eq!(
            (echo.message, &echo.body[..]),
            (Message::Stdout, &b"echo"[..])
        );
        // Nothing is held any more: the next frame goes alone.
        outbox.send(Frame::new(Message::Stderr)).await.unwrap();
        assert_eq!(next(&mut client).await.message, Message::Stderr);
    }
}
