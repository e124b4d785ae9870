//! A command's input, on its way from the client: the window's queue
//! ([`StdinFeed`]) and the future that writes it to the command's pipe or
//! terminal, acknowledging what it wrote (after russh's
//! `channels/io/rx.rs`).

use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::output::Outbox;
use super::window::{Window, WindowExceeded};

/// Client input on its way to the command's stdin.
///
/// Chunks are queued without waiting (the client may have at most
/// `stdin_window` bytes unacknowledged, which bounds the queue: see
/// [`Window`]) and written
/// by a future the command's task polls beside its pumps (see
/// [`StdinFeed::new`]); each written — or, once the command has closed
/// its input, discarded — piece is acknowledged with `stdin_ack` in the
/// ordered output stream, which reopens the client's window. Small input is
/// acknowledged together with what it causes (see [`Outbox`]).
///
/// Small chunks are copied together into pieces of up to [`STDIN_PIECE`]
/// bytes rather than queued one by one: a `stdin` body is a view into the
/// connection's read buffer, so a window of one-byte frames, each queued
/// as it came, kept some 70 times the window alive (every frame's share of
/// the buffer, and a queue entry each).
pub(super) struct StdinFeed {
    inbox: Arc<StdinInbox>,
    /// Whether input is still taken (until `stdin_end`).
    open: bool,
    /// What the client may have unacknowledged, and has.
    window: Arc<Window>,
}

/// The writing half of a [`StdinFeed`]: a future that ends once the input
/// has ended and is written, or the connection is gone.
pub(super) type Feeding = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Input smaller than this is copied into a shared piece; larger input is
/// queued as it came (it pins little more than itself).
const STDIN_COPY_BELOW: usize = 16 * 1024;

/// Most bytes small input is gathered into before a new piece starts.
const STDIN_PIECE: usize = 64 * 1024;

/// The queue between [`StdinFeed::push`] and the future that writes.
///
/// Nothing is woken when input arrives: the one task that pushes (the
/// command's) is the one that polls the writing future, and its loop polls
/// that future again after every frame it handles. A wake-up would be the
/// task waking itself, which a multi-threaded runtime pays for by waking
/// another worker thread, on every key typed.
#[derive(Default)]
struct StdinInbox {
    state: std::sync::Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    /// Pieces ready to write, in order.
    pieces: std::collections::VecDeque<Bytes>,
    /// Small input gathered after the last piece.
    tail: BytesMut,
    /// `stdin_end` arrived: once the queue is written, close the input.
    ended: bool,
}

impl StdinInbox {
    fn state(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, chunk: Bytes) {
        let mut state = self.state();
        let state = &mut *state;
        if chunk.len() < STDIN_COPY_BELOW {
            if state.tail.len() + chunk.len() > STDIN_PIECE {
                let full = state.tail.split().freeze();
                state.pieces.push_back(full);
            }
            state.tail.extend_from_slice(&chunk);
        } else {
            if !state.tail.is_empty() {
                let gathered = state.tail.split().freeze();
                state.pieces.push_back(gathered);
            }
            state.pieces.push_back(chunk);
        }
    }

    fn end(&self) {
        self.state().ended = true;
    }

    /// The next piece to write; `None` once the input has ended and
    /// everything before its end is taken. Pending until the pushing task
    /// polls again (see [`StdinInbox`]).
    async fn next(&self) -> Option<Bytes> {
        std::future::poll_fn(|_| {
            let mut state = self.state();
            if let Some(piece) = state.pieces.pop_front() {
                return Poll::Ready(Some(piece));
            }
            if !state.tail.is_empty() {
                return Poll::Ready(Some(state.tail.split().freeze()));
            }
            match state.ended {
                true => Poll::Ready(None),
                false => Poll::Pending,
            }
        })
        .await
    }
}

impl StdinFeed {
    /// Feeds `pipe`, a pipe or a terminal: its end (`stdin_end`) is the
    /// pipe's shutdown, which on a terminal types the end-of-file key.
    ///
    /// The writing is a future for the command's own task to poll, as the
    /// pumps are, not a task of its own: a key typed on a terminal then
    /// reaches it with no hand-over between tasks (and threads) on the way,
    /// and the writing stops whenever the command's task drops it. That
    /// task must poll it again after each [`StdinFeed::push`] and
    /// [`StdinFeed::close`]: nothing else wakes it for them (see
    /// [`StdinInbox`]).
    pub fn new<W>(mut pipe: W, acks: Outbox) -> (StdinFeed, Feeding)
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let inbox = Arc::new(StdinInbox::default());
        let window = acks.window().clone();
        let queue = inbox.clone();
        let feeding = Box::pin(async move {
            let mut open = true;
            while let Some(piece) = queue.next().await {
                // A command that closed its input loses the rest, as with a pipe.
                open = open && pipe.write_all(&piece).await.is_ok();
                let owed = acks.owe(piece.len());
                if acks.window().ack_due(owed) && acks.flush().await.is_err() {
                    return;
                }
            }
            // stdin_end: the pipe is closed when dropped; a terminal gets
            // its end-of-file key.
            if open {
                let _ = pipe.shutdown().await;
            }
            let _ = acks.flush().await;
        });
        let feed = StdinFeed {
            inbox,
            open: true,
            window,
        };
        (feed, feeding)
    }

    /// Queues a chunk, or says how the client broke the window.
    pub fn push(&self, chunk: Bytes) -> Result<(), WindowExceeded> {
        if !self.open || chunk.is_empty() {
            return Ok(()); // after stdin_end: ignored, as documented
        }
        self.window.take_in(chunk.len())?;
        self.inbox.push(chunk);
        Ok(())
    }

    /// The client's stdin ended: close the command's input once the queue
    /// is written.
    pub fn close(&mut self) {
        if self.open {
            self.open = false;
            self.inbox.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use wiresh_proto::{Frame, FrameCodec, Limits, Message};

    use super::*;
    use crate::conn::FrameConn;

    const WITHIN: Duration = Duration::from_secs(5);

    /// A connection whose frames the test reads at the other end.
    fn pair() -> (FrameConn, FrameConn) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            FrameConn::new(a, Limits::default(), FrameCodec::default()),
            FrameConn::new(b, Limits::default(), FrameCodec::default()),
        )
    }

    async fn next(conn: &mut FrameConn) -> Frame {
        conn.recv_within(WITHIN).await.expect("a frame")
    }

    /// Awaits `work` while polling `feeding` in the same task, as the
    /// command's task does.
    async fn beside<T>(feeding: &mut Feeding, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut fed = false;
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = &mut *feeding, if !fed => fed = true,
            }
        }
    }

    /// Acknowledgements wait for the command's next frame, and lose
    /// nothing on the way: input is written in order and acknowledged in
    /// full, the rest when the input ends.
    #[tokio::test(start_paused = true)]
    async fn input_is_acknowledged_with_the_next_frame_or_at_its_end() {
        let (server, mut client) = pair();
        let started = Frame::new(Message::Started { pid: 7 });
        let outbox = Outbox::new(server.sender(), started, 1 << 20);
        let (mut command_reads, command_input) = tokio::io::duplex(1024);
        let (mut feed, mut feeding) = StdinFeed::new(command_input, outbox.clone());
        feed.push(Bytes::from_static(b"ab")).unwrap();
        let mut written = [0; 2];
        beside(&mut feeding, command_reads.read_exact(&mut written))
            .await
            .unwrap();
        assert_eq!(&written, b"ab");
        // Written, and held: nothing leaves however long the wait (the
        // paused clock runs ahead to the timeout at once).
        let held = beside(&mut feeding, client.recv_within(Duration::from_secs(60))).await;
        assert!(held.is_err(), "sent without a frame to go with: {held:?}");
        outbox.send(Frame::new(Message::Stdout)).await.unwrap();
        assert_eq!(next(&mut client).await.message, Message::Started { pid: 7 });
        assert_eq!(
            next(&mut client).await.message,
            Message::StdinAck { bytes: 2 }
        );
        assert_eq!(next(&mut client).await.message, Message::Stdout);
        feed.push(Bytes::from_static(b"cde")).unwrap();
        feed.close();
        tokio::time::timeout(WITHIN, feeding).await.unwrap();
        assert_eq!(
            next(&mut client).await.message,
            Message::StdinAck { bytes: 3 }
        );
        let mut rest = Vec::new();
        command_reads.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cde");
    }

    /// Once a quarter of the window is owed, the acknowledgement goes at
    /// once, with nothing else to travel with: a client may send no more
    /// than the window, and must never wait on an acknowledgement held.
    #[tokio::test]
    async fn a_quarter_of_the_window_is_acknowledged_at_once() {
        let (server, mut client) = pair();
        let started = Frame::new(Message::Started { pid: 7 });
        let outbox = Outbox::new(server.sender(), started, 64);
        let (_command_reads, command_input) = tokio::io::duplex(1 << 16);
        let (feed, mut feeding) = StdinFeed::new(command_input, outbox);
        feed.push(Bytes::from_static(&[b'k'; 15])).unwrap();
        feed.push(Bytes::from_static(&[b'k'; 1])).unwrap();
        let started = beside(&mut feeding, next(&mut client)).await;
        assert_eq!(started.message, Message::Started { pid: 7 });
        let mut acked = 0;
        while acked < 16 {
            match beside(&mut feeding, next(&mut client)).await.message {
                Message::StdinAck { bytes } => acked += bytes,
                other => panic!("expected stdin_ack, got {other:?}"),
            }
        }
    }
}
