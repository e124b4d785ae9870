//! The write side of a connection: one task that owns the socket's write
//! half and sends frames from two queues. Both the server and the client use
//! it, so that neither ever stops reading because it is busy writing.
//!
//! On the server, output frames (`started`, `stdout`, `stderr`, `exit`) go through the
//! bounded *data* queue: when the client reads slowly the queue fills, the
//! pumps stop reading the command's pipes, and the command blocks on write —
//! backpressure all the way down, so memory stays bounded whatever the output
//! size. Replies that must not wait behind megabytes of output (`pong`,
//! connection errors) go through the small *control* queue, which the writer
//! always serves first. On the client, stdin frames are the data and pings
//! and cancels the control.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wiresh_proto::{Frame, FrameCodec, Message};

/// The read side of a connection, plain TCP or TLS alike.
pub(crate) type BoxRead = Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>;
/// The write side of a connection, plain TCP or TLS alike.
pub(crate) type BoxWrite = Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>;

/// Splits any duplex stream into boxed halves.
pub(crate) fn split<S>(stream: S) -> (BoxRead, BoxWrite)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static,
{
    let (r, w) = tokio::io::split(stream);
    (Box::new(r), Box::new(w))
}

/// Output frames queued per connection. With pumps reading up to 256 KiB
/// per frame, a connection holds at most about 2.5 MiB of output: 1 MiB
/// here, up to [`BATCH_BYTES`] being written, and one chunk per pump.
const DATA_QUEUE: usize = 4;
/// Control frames in flight; a peer that fills this (say, with pings it
/// never reads the answers to) is misbehaving.
const CONTROL_QUEUE: usize = 32;

/// Handle for queueing frames to the peer.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    /// Ordered output of the running command.
    pub data: mpsc::Sender<Frame>,
    /// Small replies served ahead of output.
    pub control: mpsc::Sender<Frame>,
}

impl Outbox {
    /// Starts the writer task for `write`.
    pub fn spawn(write: BoxWrite, codec: FrameCodec) -> (Outbox, JoinHandle<()>) {
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let task = tokio::spawn(write_frames(write, codec, data_rx, control_rx));
        (Outbox { data, control }, task)
    }

    /// Queues a control frame, waiting for room. Returns false if the
    /// connection's writer is gone.
    pub async fn send_control(&self, frame: Frame) -> bool {
        self.control.send(frame).await.is_ok()
    }

    /// Answers a ping. When the control queue is full the peer is not
    /// reading what it asked for, and the pong is skipped (documented): a
    /// ping is a liveness hint, never a reason to end a command.
    pub fn pong(&self, body: Bytes) {
        let _ = self.control.try_send(Frame::with_body(Message::Pong, body));
    }

    /// Resolves when the writer has stopped (the peer is gone or the socket
    /// failed).
    pub async fn closed(&self) {
        self.data.closed().await
    }
}

/// Most bytes gathered into one vectored write.
const BATCH_BYTES: usize = 1024 * 1024;
/// Most buffers in one vectored write (well under the kernel's IOV_MAX).
const BATCH_SLICES: usize = 64;

async fn write_frames(
    mut socket: BoxWrite,
    codec: FrameCodec,
    mut data: mpsc::Receiver<Frame>,
    mut control: mpsc::Receiver<Frame>,
) {
    // Headers are encoded into one buffer; bodies are written from their own
    // buffers with vectored writes, never copied.
    let mut headers = BytesMut::new();
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    loop {
        let first = tokio::select! {
            biased;
            Some(f) = control.recv() => f,
            Some(f) = data.recv() => f,
            else => break,
        };
        // Gather whatever else is already queued, so a short command's
        // `started`, output and `exit` leave in one segment.
        let mut batched = 0;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if let Err(e) = codec.encode_header(&frame.message, frame.body.len(), &mut headers) {
                tracing::error!("dropping a frame that cannot be encoded: {e}");
                continue;
            }
            pending.push_back(headers.split().freeze());
            batched += frame.body.len();
            if !frame.body.is_empty() {
                pending.push_back(frame.body);
            }
            if batched < BATCH_BYTES && pending.len() + 2 <= BATCH_SLICES {
                next = control.try_recv().or_else(|_| data.try_recv()).ok();
            }
        }
        if let Err(e) = write_all(&mut socket, &mut pending).await {
            tracing::debug!("connection write failed: {e}");
            return;
        }
        // Before waiting for more, push out what the transport may still
        // hold: a no-op for TCP, but TLS buffers records the socket did not
        // take yet, and the peer would wait for them forever.
        if control.is_empty() && data.is_empty() {
            if let Err(e) = socket.flush().await {
                tracing::debug!("connection flush failed: {e}");
                return;
            }
        }
    }
    let _ = socket.shutdown().await;
}

/// Writes every buffer in `pending`, in order, with as few system calls as
/// the kernel allows.
async fn write_all(socket: &mut BoxWrite, pending: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    while !pending.is_empty() {
        let slices: Vec<IoSlice<'_>> = pending.iter().map(|b| IoSlice::new(b)).collect();
        let mut written = socket.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
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
    }
    Ok(())
}
