//! A frame connection: whole frames in, whole frames out, over plain TCP or
//! TLS alike. Both the server and the client hold one.
//!
//! After mini-redis's `Connection`, with one difference that matters here:
//! writing happens on a task of its own, fed by two queues, so that a
//! connection never stops reading because it is busy writing. That is what
//! lets a server notice `cancel`, `ping` and a vanished peer while a command
//! floods its output, and a client keep its keepalive while stdin streams.
//!
//! - The bounded *data* queue carries ordered traffic: a command's
//!   `started`, output and `exit` on the server; requests and stdin on the
//!   client, and a client's `cancel` and `signal`, which must never
//!   overtake the `exec` they are about. When the peer reads slowly it
//!   fills, whoever produces the data waits, and backpressure reaches the
//!   command's pipes.
//! - The small *control* queue carries what must not wait behind megabytes
//!   of data (`pong`, `ping`); the writer serves it first.
//!
//! [`FrameConn::recv`] is cancel-safe, so it can sit in a `select!` beside
//! a command's other events.
//!
//! Over plain TCP the writer can also send a frame whose body it moves
//! from a pipe straight into the socket with `splice(2)`, never copying it
//! through memory ([`FrameSender::spliced`]); over TLS there is no
//! such path ([`FrameSender::can_splice`] says which), and a frame's body
//! is bytes in memory as always. On the reading side, a plain TCP
//! connection can likewise leave a large body on the socket for whoever
//! moves it on ([`FrameConn::pass_bodies`], [`FrameConn::take_body_on_socket`]).

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{self, Instant};
use tokio_util::codec::FramedRead;
use wiresh_proto::{BodyPassing, DecodeError, Frame, FrameCodec, Limits, Message};

use crate::task::AbortOnDrop;

/// The read side of a connection, plain TCP or TLS alike.
type BoxRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// The write side of a connection, plain TCP or TLS alike.
type BoxWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Data frames queued per connection. With output read in chunks of up to
/// 256 KiB, a connection holds at most about 2.5 MiB: 1 MiB here, up to
/// [`BATCH_BYTES`] being written, and one chunk per producer.
const DATA_QUEUE: usize = 4;
/// Control frames in flight; a peer that fills this (say, with pings it
/// never reads the answers to) is misbehaving.
const CONTROL_QUEUE: usize = 32;
/// Most bytes of `pong` bodies queued and not yet written: a pong is
/// skipped rather than queued past this (one is always queued when none
/// is waiting). Without it a peer that never reads could park a full
/// control queue of pongs as large as the body limit, 32 MiB a connection.
const PONG_BYTES: usize = 1024 * 1024;
/// Most bytes gathered into one vectored write.
const BATCH_BYTES: usize = 1024 * 1024;
/// Most buffers in one vectored write (well under the kernel's IOV_MAX).
const BATCH_SLICES: usize = 64;
/// The read buffer a connection starts with: room for the small frames of
/// a session (`auth`, `exec`, `ping`) in one read.
const READ_BUFFER: usize = 2048;

/// The connection's writer has stopped: the peer is gone or the socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

/// Why [`FrameConn::send_unless_stalled`] could not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The writer has stopped: the peer is gone or the socket failed.
    #[error("the connection is closed")]
    Closed,
    /// The peer took nothing for this long; the connection is cut off.
    #[error("the peer took nothing for {0:?}")]
    Stalled(Duration),
}

/// Tells a peer that takes nothing from one that is merely slow: counts
/// the bytes the connection's writer hands to the socket.
#[derive(Debug)]
pub struct StallWatch {
    written: Arc<AtomicU64>,
    /// When set, time counts only while the writer holds bytes the socket
    /// has not taken (a connection with nothing to send is not stalled).
    holding: Option<Arc<AtomicBool>>,
    last: u64,
    since: Instant,
    limit: Duration,
    /// When to look next: kept across calls, so that a caller polling in a
    /// loop of `select!` does not restart the wait each time.
    next_check: Instant,
}

impl StallWatch {
    /// Resolves once nothing has been written for `limit` (checked four
    /// times per `limit`), counting only the time the writer had something
    /// to write when the watch was made with
    /// [`FrameConn::output_stall_watch`]. Cancel-safe: progress seen is
    /// kept.
    pub async fn stalled(&mut self) {
        loop {
            time::sleep_until(self.next_check).await;
            self.next_check = Instant::now() + self.limit / 4;
            let written = self.written.load(Ordering::Relaxed);
            let idle = self
                .holding
                .as_ref()
                .is_some_and(|holding| !holding.load(Ordering::Acquire));
            if written != self.last || idle {
                self.last = written;
                self.since = Instant::now();
            } else if self.since.elapsed() >= self.limit {
                return;
            }
        }
    }
}

/// Why no frame was received.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// Nothing complete arrived in time.
    #[error("nothing received for {0:?}")]
    TimedOut(Duration),
    /// The peer closed the connection between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The bytes are not a valid frame (or the socket failed).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl RecvError {
    /// Whether the peer simply went away. A TLS peer that exits without
    /// close_notify has still just left; it cannot have lost anything it
    /// was waiting for.
    pub fn is_peer_gone(&self) -> bool {
        match self {
            RecvError::Closed => true,
            RecvError::Decode(DecodeError::Io(e)) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }
}

/// What the data queue carries: a frame, or a frame whose body is still in
/// a pipe. Boxed: a queue allocates room for 32 items at once, and an idle
/// connection keeps that room, so its items are kept small (a pointer, not
/// a 184-byte frame; 12 KiB less per connection).
#[derive(Debug)]
pub enum Outgoing {
    /// A whole frame.
    Frame(Box<Frame>),
    /// A frame whose body the writer splices from a pipe.
    Spliced(Box<SpliceJob>),
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Outgoing {
        Outgoing::Frame(Box::new(frame))
    }
}

/// A frame of `message` whose body is the next `len` bytes of `pipe`,
/// which are there already (the pipe's `FIONREAD` said so) and which no
/// one else reads until `done` answers with the body's length: more than
/// `len` (up to `up_to`) if more has come by the time the socket takes it.
#[derive(Debug)]
pub struct SpliceJob {
    message: Message,
    pipe: Arc<OwnedFd>,
    len: usize,
    up_to: usize,
    done: oneshot::Sender<Result<usize, Closed>>,
}

/// A queue into the connection's ordered data stream, for tasks that
/// produce frames on their own (output pumps, stdin forwarders).
#[derive(Debug, Clone)]
pub struct FrameSender {
    queue: mpsc::Sender<Outgoing>,
    can_splice: bool,
}

impl FrameSender {
    /// Queues a frame behind those already queued, waiting for room.
    pub async fn send(&self, frame: impl Into<Outgoing>) -> Result<(), Closed> {
        self.queue.send(frame.into()).await.map_err(|_| Closed)
    }

    /// Queues the items that are there back to back, nothing between them:
    /// the writer finds them at once and sends them in one write.
    pub async fn send_together<const N: usize>(
        &self,
        items: [Option<Outgoing>; N],
    ) -> Result<(), Closed> {
        let count = items.iter().flatten().count();
        if count == 0 {
            return Ok(());
        }
        let mut permits = self.queue.reserve_many(count).await.map_err(|_| Closed)?;
        for item in items.into_iter().flatten() {
            permits.next().expect("a permit for each item").send(item);
        }
        Ok(())
    }

    /// Whether the connection is plain TCP, whose writer can splice bodies
    /// from pipes ([`FrameSender::spliced`]).
    pub fn can_splice(&self) -> bool {
        self.can_splice
    }

    /// A frame of `message` whose body is the next `len` bytes of `pipe`,
    /// or all it holds, up to `up_to`, when the socket can take them (so
    /// that a fast producer makes large frames rather than many), for
    /// [`FrameSender::send`]; and what resolves with the body's length once
    /// the writer has moved it (an error: the connection failed on the way,
    /// or cannot splice). The `len` bytes must be in the pipe already, and
    /// nothing else may read it until then.
    pub fn spliced(
        message: Message,
        pipe: Arc<OwnedFd>,
        len: usize,
        up_to: usize,
    ) -> (Outgoing, oneshot::Receiver<Result<usize, Closed>>) {
        let (done, moved) = oneshot::channel();
        let job = SpliceJob {
            message,
            pipe,
            len,
            up_to: up_to.max(len),
            done,
        };
        (Outgoing::Spliced(Box::new(job)), moved)
    }

    /// Resolves when the connection's writer has stopped.
    pub async fn closed(&self) {
        self.queue.closed().await
    }
}

/// The rest of a frame's body, left on the socket
/// ([`FrameConn::take_body_on_socket`]) for its taker to move on without
/// reading it (`splice(2)`).
#[derive(Debug)]
pub struct BodyOnSocket {
    /// A handle of its own on the connection's socket.
    pub socket: OwnedFd,
    /// Bytes of the body still on the socket: exactly the next `len`.
    pub len: usize,
}

/// One end of a wiresh connection.
pub struct FrameConn {
    reader: FramedRead<Source, FrameCodec>,
    data: FrameSender,
    control: mpsc::Sender<Box<Frame>>,
    writer: AbortOnDrop<()>,
    /// Bytes the writer has handed to the socket so far.
    written: Arc<AtomicU64>,
    /// Whether the writer holds frames the socket has not taken yet.
    holding: Arc<AtomicBool>,
    /// Bytes of `pong` bodies queued and not yet written.
    pong_bytes: Arc<AtomicUsize>,
}

impl fmt::Debug for FrameConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameConn")
            .field("read_limits", &self.reader.decoder().limits())
            .finish_non_exhaustive()
    }
}

impl FrameConn {
    /// Starts framing `stream`: frames read are bounded by `read_limits`;
    /// frames written are encoded with `write_codec`. A plain
    /// [`TcpStream`] gets a writer that can splice bodies from pipes.
    pub fn new<S>(stream: S, read_limits: Limits, write_codec: FrameCodec) -> FrameConn
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let mut stream = Some(stream);
        let tcp = (&mut stream as &mut dyn Any)
            .downcast_mut::<Option<TcpStream>>()
            .and_then(Option::take);
        let (read, write) = match (tcp, stream) {
            (Some(tcp), _) => {
                let (read, write) = tcp.into_split();
                (Source::Tcp(read), Sink::Tcp(write))
            }
            (None, Some(stream)) => {
                let (read, write) = tokio::io::split(stream);
                (Source::Other(Box::new(read)), Sink::Other(Box::new(write)))
            }
            (None, None) => unreachable!("the stream is taken only when it is TCP"),
        };
        FrameConn::from_parts(read, write, read_limits, write_codec)
    }

    /// Like [`FrameConn::new`], from halves already split.
    fn from_parts(
        read: Source,
        write: Sink,
        read_limits: Limits,
        write_codec: FrameCodec,
    ) -> FrameConn {
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let holding = Arc::new(AtomicBool::new(false));
        let pong_bytes = Arc::new(AtomicUsize::new(0));
        let can_splice = matches!(write, Sink::Tcp(_));
        let progress = Progress {
            written: written.clone(),
            holding: holding.clone(),
            pong_bytes: pong_bytes.clone(),
        };
        let writer = tokio::spawn(write_frames(
            write,
            write_codec,
            data_rx,
            control_rx,
            progress,
        ));
        FrameConn {
            // Small to start with (an idle connection keeps it); the codec
            // reserves room for a large body when its header arrives.
            reader: FramedRead::with_capacity(read, FrameCodec::new(read_limits), READ_BUFFER),
            data: FrameSender {
                queue: data,
                can_splice,
            },
            control,
            writer: AbortOnDrop(writer),
            written,
            holding,
            pong_bytes,
        }
    }

    /// The next frame; `None` when the peer closed the connection between
    /// frames. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Frame, DecodeError>> {
        self.reader.next().await
    }

    /// The next frame, waiting at most `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Frame, RecvError> {
        self.recv_by(Instant::now() + limit, limit).await
    }

    /// The next frame, waiting until `deadline` at most.
    pub async fn recv_until(&mut self, deadline: Instant) -> Result<Frame, RecvError> {
        let limit = deadline.saturating_duration_since(Instant::now());
        self.recv_by(deadline, limit).await
    }

    /// The next frame by `deadline`; `limit` is how a timeout is reported
    /// (as asked, not as measured a moment later).
    async fn recv_by(&mut self, deadline: Instant, limit: Duration) -> Result<Frame, RecvError> {
        match time::timeout_at(deadline, self.reader.next()).await {
            Err(_) => Err(RecvError::TimedOut(limit)),
            Ok(None) => Err(RecvError::Closed),
            Ok(Some(Err(e))) => Err(RecvError::Decode(e)),
            Ok(Some(Ok(frame))) => Ok(frame),
        }
    }

    /// Leaves most of the body of each frame that `passing` picks on the
    /// socket, for [`FrameConn::take_body_on_socket`], and says whether it
    /// will: only plain TCP can (over TLS, the socket holds records).
    pub fn pass_bodies(&mut self, passing: BodyPassing) -> bool {
        let tcp = matches!(self.reader.get_ref(), Source::Tcp(_));
        if tcp {
            self.reader.decoder_mut().pass_bodies(Some(passing));
        }
        tcp
    }

    /// After [`FrameConn::recv`] returned a frame whose body was passed
    /// through ([`FrameConn::pass_bodies`]): the rest of that body, still on
    /// the socket. Its taker must move exactly `len` bytes off the socket
    /// before anything more is received here; one that cannot has broken
    /// the connection's boundaries and must drop it. `None` when there is
    /// nothing to take, or no handle could be had: then receiving goes on
    /// and returns the rest as further frames of the same message.
    pub fn take_body_on_socket(&mut self) -> Option<BodyOnSocket> {
        let len = self.reader.decoder().body_left();
        let Source::Tcp(tcp) = self.reader.get_ref() else {
            return None;
        };
        if len == 0 {
            return None;
        }
        // The decoder took everything read so far into the frame.
        debug_assert!(self.reader.read_buffer().is_empty());
        match tcp.as_ref().as_fd().try_clone_to_owned() {
            Ok(socket) => {
                self.reader.decoder_mut().body_moved(len);
                Some(BodyOnSocket { socket, len })
            }
            Err(e) => {
                tracing::debug!("cannot pass a body on: {e}");
                None
            }
        }
    }

    /// Changes the limits on frames read from now on (after authentication).
    pub fn set_read_limits(&mut self, limits: Limits) {
        self.reader.decoder_mut().set_limits(limits);
    }

    /// Whether part of a frame has arrived and the rest has not.
    pub fn mid_frame(&self) -> bool {
        !self.reader.read_buffer().is_empty() || self.reader.decoder().in_body()
    }

    /// Bytes received and not yet part of a frame: after a decoding error,
    /// what the peer actually sent (such as a one-line refusal).
    pub fn unread(&self) -> &[u8] {
        self.reader.read_buffer()
    }

    /// Queues `frame` behind the data already queued, waiting for room.
    pub async fn send(&self, frame: Frame) -> Result<(), Closed> {
        self.data.send(frame).await
    }

    /// Queues `frame` like [`FrameConn::send`], unless the peer takes
    /// nothing for `limit` meanwhile: then the writer is stopped (there is
    /// no point in a graceful close to a peer that reads nothing), and the
    /// connection with it.
    pub async fn send_unless_stalled(
        &self,
        frame: Frame,
        limit: Duration,
    ) -> Result<(), SendError> {
        let mut watch = self.stall_watch(limit);
        tokio::select! {
            sent = self.data.send(frame) => sent.map_err(|_| SendError::Closed),
            () = watch.stalled() => {
                self.cut_off();
                Err(SendError::Stalled(limit))
            }
        }
    }

    /// A watch on what the writer hands to the socket, from now on.
    pub fn stall_watch(&self, limit: Duration) -> StallWatch {
        StallWatch {
            last: self.written.load(Ordering::Relaxed),
            written: self.written.clone(),
            holding: None,
            since: Instant::now(),
            limit,
            next_check: Instant::now() + limit / 4,
        }
    }

    /// A watch that resolves once the peer has taken nothing for `limit`
    /// while the writer had frames for it (a command's output, say): time
    /// with nothing to send does not count.
    pub fn output_stall_watch(&self, limit: Duration) -> StallWatch {
        StallWatch {
            holding: Some(self.holding.clone()),
            ..self.stall_watch(limit)
        }
    }

    /// Stops the writer at once, dropping what is queued: for a peer that
    /// takes nothing, which no graceful close would reach.
    pub fn cut_off(&self) {
        self.writer.0.abort();
    }

    /// Queues `frame` ahead of queued data, waiting for room.
    pub async fn send_control(&self, frame: Frame) -> Result<(), Closed> {
        self.control.send(Box::new(frame)).await.map_err(|_| Closed)
    }

    /// Queues `frame` ahead of queued data if there is room; says whether
    /// it was queued. For pings, where a full queue means the
    /// same frame is already waiting.
    pub fn try_send_control(&self, frame: Frame) -> bool {
        self.control.try_send(Box::new(frame)).is_ok()
    }

    /// Answers a ping. When the control queue is full, or holds pongs of
    /// `PONG_BYTES` already, the peer is not reading what it asked for,
    /// and the pong is skipped (documented): a ping is a liveness hint,
    /// never a reason to end a command.
    pub fn pong(&self, body: Bytes) {
        let len = body.len();
        let queued = self.pong_bytes.fetch_add(len, Ordering::AcqRel);
        let room = queued == 0 || queued + len <= PONG_BYTES;
        if !(room && self.try_send_control(Frame::with_body(Message::Pong, body))) {
            self.pong_bytes.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// A handle on the data queue for a task of its own.
    pub fn sender(&self) -> FrameSender {
        self.data.clone()
    }

    /// Resolves when the writer has stopped (the peer is gone or the socket
    /// failed).
    pub async fn closed(&self) {
        self.data.closed().await
    }

    /// Closes the connection in order: what is queued is written, then the
    /// write side is shut down (for TLS, with a close_notify). A peer that
    /// takes nothing more for `within` is cut off.
    pub async fn close(self, within: Duration) {
        let FrameConn {
            data,
            control,
            mut writer,
            ..
        } = self;
        drop((data, control));
        let _ = time::timeout(within, &mut writer.0).await;
    }
}

/// Where the reader reads: plain TCP (whose bodies can be left on the
/// socket, [`FrameConn::pass_bodies`]), or anything else (TLS).
enum Source {
    Tcp(OwnedReadHalf),
    Other(BoxRead),
}

impl AsyncRead for Source {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Source::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Source::Other(other) => Pin::new(other).poll_read(cx, buf),
        }
    }
}

/// Where the writer writes: plain TCP (which can take spliced bodies), or
/// anything else (TLS).
enum Sink {
    Tcp(OwnedWriteHalf),
    Other(BoxWrite),
}

impl Sink {
    fn stream(&mut self) -> &mut (dyn AsyncWrite + Send + Unpin) {
        match self {
            Sink::Tcp(tcp) => tcp,
            Sink::Other(other) => other,
        }
    }
}

/// What the writer tells the rest of the connection about its progress.
struct Progress {
    /// Bytes handed to the socket so far.
    written: Arc<AtomicU64>,
    /// Set while the writer holds frames the socket has not taken.
    holding: Arc<AtomicBool>,
    /// Bytes of `pong` bodies queued and not yet written.
    pong_bytes: Arc<AtomicUsize>,
}

async fn write_frames(
    mut socket: Sink,
    codec: FrameCodec,
    mut data: mpsc::Receiver<Outgoing>,
    mut control: mpsc::Receiver<Box<Frame>>,
    progress: Progress,
) {
    let Progress {
        written,
        holding,
        pong_bytes,
    } = progress;
    // Headers are encoded into one buffer; bodies are written from their own
    // buffers with vectored writes, never copied.
    let mut headers = BytesMut::new();
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    loop {
        let first = tokio::select! {
            biased;
            Some(f) = control.recv() => Outgoing::Frame(f),
            Some(f) = data.recv() => f,
            else => break,
        };
        holding.store(true, Ordering::Release);
        // Gather whatever else is already queued, so a short command's
        // `started`, output and `exit` leave in one segment.
        let mut batched = 0;
        let mut pongs = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => {
                    let body = frame.body.len();
                    if frame.message == Message::Pong {
                        pongs += body;
                    }
                    if let Err(e) = codec.encode_header(&frame.message, body, &mut headers) {
                        tracing::error!("dropping a frame that cannot be encoded: {e}");
                        continue;
                    }
                    pending.push_back(headers.split().freeze());
                    batched += body;
                    if body > 0 {
                        pending.push_back(frame.body);
                    }
                }
                Outgoing::Spliced(job) => {
                    // What is gathered goes first, then the header, then
                    // the body from the pipe: the frame stays in its place.
                    let moved = splice_frame(
                        &mut socket,
                        &codec,
                        &job,
                        &mut headers,
                        &mut pending,
                        &written,
                    )
                    .await;
                    let _ = job.done.send(moved.as_ref().copied().map_err(|_| Closed));
                    match moved {
                        Ok(len) => batched += len,
                        Err(e) => {
                            tracing::debug!("connection splice failed: {e}");
                            return;
                        }
                    }
                }
            }
            if batched < BATCH_BYTES && pending.len() + 2 <= BATCH_SLICES {
                next = match control.try_recv() {
                    Ok(frame) => Some(Outgoing::Frame(frame)),
                    Err(_) => data.try_recv().ok(),
                };
            }
        }
        if let Err(e) = write_all(socket.stream(), &mut pending, &written).await {
            tracing::debug!("connection write failed: {e}");
            return;
        }
        pong_bytes.fetch_sub(pongs, Ordering::AcqRel);
        // Before waiting for more, push out what the transport may still
        // hold: a no-op for TCP, but TLS buffers records the socket did not
        // take yet, and the peer would wait for them forever.
        if control.is_empty() && data.is_empty() {
            if let Err(e) = socket.stream().flush().await {
                tracing::debug!("connection flush failed: {e}");
                return;
            }
            holding.store(false, Ordering::Release);
        }
    }
    let _ = socket.stream().shutdown().await;
}

/// Writes what is pending, then the frame of `job`: its header, and its
/// body spliced from the pipe into the socket. Returns the body's length.
async fn splice_frame(
    socket: &mut Sink,
    codec: &FrameCodec,
    job: &SpliceJob,
    headers: &mut BytesMut,
    pending: &mut VecDeque<Bytes>,
    count: &AtomicU64,
) -> std::io::Result<usize> {
    let Sink::Tcp(tcp) = socket else {
        return Err(std::io::Error::other(
            "splicing needs a plain TCP connection",
        ));
    };
    let tcp: &TcpStream = tcp.as_ref();
    // Once the socket can take more, the body is whatever the pipe holds
    // by then: waiting on the socket is what lets a frame grow.
    tcp.writable().await?;
    let queued = rustix::io::ioctl_fionread(&*job.pipe).unwrap_or(0);
    let len = usize::try_from(queued)
        .unwrap_or(usize::MAX)
        .clamp(job.len, job.up_to);
    codec
        .encode_header(&job.message, len, headers)
        .map_err(std::io::Error::other)?;
    pending.push_back(headers.split().freeze());
    write_all_more(tcp, pending, count).await?;
    let mut left = len;
    while left > 0 {
        tcp.writable().await?;
        // SPLICE_F_NONBLOCK: the pipe holds the bytes already, so a
        // would-block can only be the socket's, which `writable` awaits.
        let moved = tcp.try_io(Interest::WRITABLE, || {
            let flags = rustix::pipe::SpliceFlags::MOVE | rustix::pipe::SpliceFlags::NONBLOCK;
            rustix::pipe::splice(&*job.pipe, None, tcp, None, left, flags)
                .map_err(std::io::Error::from)
        });
        match moved {
            // The pipe held less than its FIONREAD said: the frame cannot
            // be completed, and the stream would lose its boundaries.
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                left -= n;
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// Writes every buffer in `pending`, in order, with as few system calls as
/// the kernel allows.
async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
    socket: &mut W,
    pending: &mut VecDeque<Bytes>,
    count: &AtomicU64,
) -> std::io::Result<()> {
    while !pending.is_empty() {
        let slices: Vec<IoSlice<'_>> = pending.iter().map(|b| IoSlice::new(b)).collect();
        let written = socket.write_vectored(&slices).await?;
        consume(pending, written, count)?;
    }
    Ok(())
}

/// Writes every buffer in `pending` like [`write_all`], telling TCP that
/// more follows at once (`MSG_MORE`): a frame header and the body spliced
/// right after it then leave in the same segments, not the header alone
/// in a tiny one of its own.
async fn write_all_more(
    tcp: &TcpStream,
    pending: &mut VecDeque<Bytes>,
    count: &AtomicU64,
) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendFlags};
    while !pending.is_empty() {
        let slices: Vec<IoSlice<'_>> = pending.iter().map(|b| IoSlice::new(b)).collect();
        tcp.writable().await?;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
            rustix::net::sendmsg(tcp, &slices, &mut SendAncillaryBuffer::default(), flags)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(written) => consume(pending, written, count)?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Drops the `written` bytes from the front of `pending` and counts them.
fn consume(
    pending: &mut VecDeque<Bytes>,
    mut written: usize,
    count: &AtomicU64,
) -> std::io::Result<()> {
    if written == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    count.fetch_add(written as u64, Ordering::Relaxed);
    while written > 0 {
        let front = pending
            .front_mut()
            .expect("written bytes came from pending");
        let n = written.min(front.len());
        front.advance(n);
        written -= n;
        if front.is_empty() {
            pending.pop_front();
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Both ends of a loopback TCP connection.
    pub(crate) async fn loopback_sockets() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// Frame connections at both ends of a loopback TCP connection.
    async fn loopback_conns() -> (FrameConn, FrameConn) {
        let (a, b) = loopback_sockets().await;
        let conn = |s| FrameConn::new(s, Limits::default(), FrameCodec::default());
        (conn(a), conn(b))
    }

    #[tokio::test]
    async fn control_frames_overtake_queued_data() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let left = FrameConn::new(a, Limits::default(), FrameCodec::default());
        let mut right = FrameConn::new(b, Limits::default(), FrameCodec::default());
        // The writer has not run yet: both queues fill before it looks.
        for _ in 0..3 {
            left.send(Frame::new(Message::Stdout)).await.unwrap();
        }
        assert!(left.try_send_control(Frame::new(Message::Ping)));
        let first = right.recv_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.message, Message::Ping);
        for _ in 0..3 {
            let next = right.recv_within(Duration::from_secs(5)).await.unwrap();
            assert_eq!(next.message, Message::Stdout);
        }
        left.close(Duration::from_secs(5)).await;
        let end = right.recv_within(Duration::from_secs(5)).await.unwrap_err();
        assert!(end.is_peer_gone(), "{end:?}");
    }

    #[tokio::test]
    async fn a_body_spliced_from_a_pipe_keeps_its_place() {
        let (left, mut right) = loopback_conns().await;
        let sender = left.sender();
        assert!(sender.can_splice(), "plain TCP can take spliced bodies");
        let (pipe, input) = rustix::pipe::pipe().unwrap();
        let body = b"spliced \x00\xff body";
        rustix::io::write(&input, body).unwrap();
        let before = Frame::with_body(Message::Stdout, &b"before"[..]);
        let (spliced, moved) =
            FrameSender::spliced(Message::Stderr, Arc::new(pipe), body.len(), body.len());
        sender
            .send_together([Some(before.into()), Some(spliced)])
            .await
            .unwrap();
        sender.send(Frame::new(Message::StdinEnd)).await.unwrap();
        assert_eq!(moved.await.unwrap(), Ok(body.len()));
        let within = Duration::from_secs(5);
        let first = right.recv_within(within).await.unwrap();
        assert_eq!(
            (first.message, &first.body[..]),
            (Message::Stdout, &b"before"[..])
        );
        let second = right.recv_within(within).await.unwrap();
        assert_eq!(
            (second.message, &second.body[..]),
            (Message::Stderr, &body[..])
        );
        let third = right.recv_within(within).await.unwrap();
        assert_eq!(third.message, Message::StdinEnd);

        // Anything but plain TCP (TLS, here a duplex) copies instead.
        let (c, _d) = tokio::io::duplex(64);
        let other = FrameConn::new(c, Limits::default(), FrameCodec::default());
        assert!(!other.sender().can_splice());
    }

    /// A spliced body takes what the pipe holds by the time the socket
    /// can take it, up to its limit, and leaves the rest in the pipe.
    #[tokio::test]
    async fn a_spliced_body_grows_to_what_the_pipe_holds() {
        let (left, mut right) = loopback_conns().await;
        let (pipe, input) = rustix::pipe::pipe().unwrap();
        let bytes: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        rustix::io::write(&input, &bytes).unwrap();
        let pipe = Arc::new(pipe);
        // 100 bytes were known to be there; 300 are; 200 may go.
        let (spliced, moved) = FrameSender::spliced(Message::Stdout, pipe.clone(), 100, 200);
        left.sender().send(spliced).await.unwrap();
        assert_eq!(moved.await.unwrap(), Ok(200));
        let frame = right.recv_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(&frame.body[..], &bytes[..200]);
        let mut rest = [0u8; 300];
        let n = rustix::io::read(&*pipe, &mut rest).unwrap();
        assert_eq!(&rest[..n], &bytes[200..]);
    }

    #[tokio::test]
    async fn a_peer_that_reads_nothing_is_cut_off() {
        let (a, b) = tokio::io::duplex(1024);
        let left = FrameConn::new(a, Limits::default(), FrameCodec::default());
        let limit = Duration::from_millis(100);
        let chunk = Bytes::from(vec![0u8; 4096]);
        let stalled = loop {
            let frame = Frame::with_body(Message::Stdout, chunk.clone());
            if let Err(e) = left.send_unless_stalled(frame, limit).await {
                break e;
            }
        };
        assert_eq!(stalled, SendError::Stalled(limit));
        // The writer was stopped: nothing more goes, and closing is at once.
        let err = left.send(Frame::new(Message::Ping)).await.unwrap_err();
        assert_eq!(err, Closed);
        time::timeout(Duration::from_secs(1), left.close(Duration::from_secs(60)))
            .await
            .expect("close waited for a peer that reads nothing");
        drop(b);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = FrameConn::new(a, Limits::default(), FrameCodec::default());
        let err = conn
            .recv_within(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, RecvError::TimedOut(_)), "{err:?}");
        assert!(!conn.mid_frame());
    }
}
