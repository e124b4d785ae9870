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

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedWrite;
use wiresh_proto::{Frame, FrameCodec};

/// Output frames in flight per connection. With pumps reading up to 256 KiB
/// per frame this caps queued output at about 1 MiB.
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
    pub fn spawn(write: OwnedWriteHalf, codec: FrameCodec) -> (Outbox, JoinHandle<()>) {
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let task = tokio::spawn(write_frames(
            FramedWrite::new(write, codec),
            data_rx,
            control_rx,
        ));
        (Outbox { data, control }, task)
    }

    /// Queues a control frame, waiting for room. Returns false if the
    /// connection's writer is gone.
    pub async fn send_control(&self, frame: Frame) -> bool {
        self.control.send(frame).await.is_ok()
    }

    /// Resolves when the writer has stopped (the peer is gone or the socket
    /// failed).
    pub async fn closed(&self) {
        self.data.closed().await
    }
}

async fn write_frames(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut data: mpsc::Receiver<Frame>,
    mut control: mpsc::Receiver<Frame>,
) {
    loop {
        let frame = tokio::select! {
            biased;
            Some(f) = control.recv() => f,
            Some(f) = data.recv() => f,
            else => break,
        };
        if let Err(e) = sink.feed(frame).await {
            tracing::debug!("connection write failed: {e}");
            return;
        }
        // Batch whatever is already queued into one write; flush when idle.
        if control.is_empty()
            && data.is_empty()
            && SinkExt::<Frame>::flush(&mut sink).await.is_err()
        {
            return;
        }
    }
    let _ = SinkExt::<Frame>::flush(&mut sink).await;
    let _ = sink.into_inner().shutdown().await;
}
