//! Command output moved from the socket to a descriptor (stdout) without
//! passing through memory: `splice(2)`, over plain TCP.
//!
//! For an output sink that takes them ([`super::OutputSink`]), the
//! connection leaves the rest of each large `stdout` body on the socket
//! ([`FrameConn::take_body_on_socket`]) and hands the sink a
//! [`PassedBody`]; the sink, in its place among the other output, moves
//! the rest on with a [`Splicer`]. `splice` needs a pipe on one side: when
//! the output is a pipe, the bytes go straight into it; otherwise (a file,
//! `/dev/null`, a socket) through a relay pipe of our own. Where the output
//! cannot take a splice at all (a file opened for appending, some devices),
//! the relay's bytes are copied out with `read` and `write`.
//!
//! [`FrameConn::take_body_on_socket`]: crate::conn::FrameConn::take_body_on_socket

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::FileType;
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

use crate::conn::BodyOnSocket;
use crate::syscall::retry;

/// How large the relay pipe is asked to be: the largest frame body a
/// server sends by default, so one splice in and one out move a body.
const RELAY_PIPE: usize = 1024 * 1024;

/// A `stdout` body whose rest is still on the connection's socket, handed
/// to the output sink, which writes `head` and moves the rest itself.
#[derive(Debug)]
pub struct PassedBody {
    /// What of the body had arrived with its header.
    pub head: Bytes,
    /// The rest, on the socket.
    pub rest: BodyOnSocket,
    /// How long the socket may stay silent.
    pub idle: Duration,
    /// Answered once the body is out: an error is the connection's. No
    /// answer (the sender dropped): the output would not take it, and the
    /// command is abandoned as for a closed sink.
    pub done: oneshot::Sender<io::Result<()>>,
}

/// Why a body could not be moved to stdout.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The connection failed, went silent, or ended inside the body.
    #[error("{0}")]
    Socket(io::Error),
    /// Stdout would not take the bytes (its reader is gone, a full disk).
    #[error("{0}")]
    Output(io::Error),
}

/// Moves bodies from a connection's socket to `out` (stdout).
#[derive(Debug)]
pub struct Splicer<O> {
    out: O,
    /// `out` is a pipe: splice straight into it.
    direct: bool,
    /// The relay pipe (read end, write end) when stdout is not a pipe,
    /// made at the first body.
    relay: Option<(OwnedFd, OwnedFd)>,
    /// Stdout refused a splice once: copy out of the relay from then on.
    copy_out: Option<Vec<u8>>,
}

impl<O: AsFd> Splicer<O> {
    /// For bodies to go to `out`.
    pub fn new(out: O) -> Splicer<O> {
        let direct = rustix::fs::fstat(&out)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Fifo);
        Splicer {
            out,
            direct,
            relay: None,
            copy_out: None,
        }
    }

    /// Moves `body` to `out`, waiting at most `idle` each time the socket
    /// has nothing yet. Whatever was written to `out` before must have
    /// been flushed.
    pub fn move_body(&mut self, body: BodyOnSocket, idle: Duration) -> Result<(), MoveError> {
        let out = self.out.as_fd();
        let socket = body.socket.as_fd();
        let mut left = body.len;
        while left > 0 {
            wait_for(socket, PollFlags::IN, Some(idle)).map_err(MoveError::Socket)?;
            let moved = if self.direct {
                wait_for(out, PollFlags::OUT, None).map_err(MoveError::Output)?;
                // Non-blocking: both sides are ready, and a would-block
                // just means waiting again.
                match splice(socket, out, left, SpliceFlags::NONBLOCK) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Err(MoveError::Output(e))
                    }
                    other => other.map_err(MoveError::Socket)?,
                }
            } else {
                relay_once(&mut self.relay, &mut self.copy_out, socket, out, left)?
            };
            if moved == Some(0) {
                return Err(MoveError::Socket(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended inside a frame",
                )));
            }
            left -= moved.unwrap_or(0);
        }
        Ok(())
    }
}

/// Moves what the socket has, up to `left` bytes, into the `relay` pipe
/// (made at the first call) and from there to `out`; once `out` has
/// refused a splice, with `copy_out` as the buffer. `None`: the socket
/// had nothing after all.
fn relay_once(
    relay: &mut Option<(OwnedFd, OwnedFd)>,
    copy_out: &mut Option<Vec<u8>>,
    socket: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    left: usize,
) -> Result<Option<usize>, MoveError> {
    if relay.is_none() {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| MoveError::Output(e.into()))?;
        // A smaller relay (pipe-max-size) only means more rounds.
        let _ = rustix::pipe::fcntl_setpipe_size(&read, RELAY_PIPE);
        *relay = Some((read, write));
    }
    let Some((relay_out, relay_in)) = &*relay else {
        unreachable!("the relay was made above");
    };
    // The relay is empty here: this never waits for room in it.
    let Some(moved) =
        splice(socket, relay_in.as_fd(), left, SpliceFlags::empty()).map_err(MoveError::Socket)?
    else {
        return Ok(None);
    };
    let mut in_relay = moved;
    while in_relay > 0 {
        let out_now = match copy_out {
            None => match splice(relay_out.as_fd(), out, in_relay, SpliceFlags::empty()) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                    *copy_out = Some(vec![0; RELAY_PIPE.min(1 << 16)]);
                    continue;
                }
                Err(e) => return Err(MoveError::Output(e)),
            },
            Some(buf) => copy_some(relay_out.as_fd(), out, buf, in_relay)?,
        };
        match out_now {
            Some(0) => {
                return Err(MoveError::Output(io::ErrorKind::WriteZero.into()));
            }
            Some(n) => in_relay -= n,
            // Stdout is non-blocking and full: wait for room.
            None => wait_for(out, PollFlags::OUT, None).map_err(MoveError::Output)?,
        }
    }
    Ok(Some(moved))
}

/// Reads up to `len` bytes (at most a buffer's worth) out of the relay
/// and writes them all to `out`; the count, or `None` if `out` would block
/// before taking any.
fn copy_some(
    relay: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    buf: &mut [u8],
    len: usize,
) -> Result<Option<usize>, MoveError> {
    let want = len.min(buf.len());
    let got = retry(|| rustix::io::read(relay, &mut buf[..want])).map_err(MoveError::Output)?;
    let mut written = 0;
    while written < got {
        match retry(|| rustix::io::write(out, &buf[written..got])) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(out, PollFlags::OUT, None).map_err(MoveError::Output)?
            }
            Err(e) => return Err(MoveError::Output(e)),
        }
    }
    Ok(Some(got))
}

/// One `splice` of up to `len` bytes; `None` when it would block.
fn splice(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
    flags: SpliceFlags,
) -> io::Result<Option<usize>> {
    match retry(|| rustix::pipe::splice(from, None, to, None, len, SpliceFlags::MOVE | flags)) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until `fd` is ready for `events`, for at most `limit` (`None`:
/// as long as it takes). A hang-up or error counts as ready: the next
/// call on `fd` says what happened.
fn wait_for(fd: BorrowedFd<'_>, events: PollFlags, limit: Option<Duration>) -> io::Result<()> {
    let timeout = limit
        .map(|d| Timespec::try_from(d).map_err(|_| io::Error::other("timeout out of range")))
        .transpose()?;
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    match retry(|| rustix::event::poll(&mut fds, timeout.as_ref()))? {
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the server sent nothing for {:?}",
                limit.unwrap_or_default()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use wiresh_proto::{BodyPassing, Frame, FrameCodec, Limits, Message};

    use super::*;
    use crate::conn::tests::loopback_sockets;
    use crate::conn::FrameConn;

    const WITHIN: Duration = Duration::from_secs(10);

    /// Bytes that show a dropped, doubled or reordered piece.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ seed)
            .collect()
    }

    /// A connection over `socket` that leaves stdout bodies of 1 KiB or
    /// more on the socket.
    fn passing(socket: TcpStream) -> FrameConn {
        let mut conn = FrameConn::new(socket, Limits::default(), FrameCodec::default());
        let passing = BodyPassing {
            min_len: 1024,
            applies: |message| *message == Message::Stdout,
        };
        assert!(conn.pass_bodies(passing), "plain TCP can pass bodies");
        conn
    }

    /// A loopback connection: a plain sending end, and a receiving end as
    /// [`passing`] makes it.
    async fn sender_and_passing() -> (FrameConn, FrameConn) {
        let (left, right) = loopback_sockets().await;
        let left = FrameConn::new(left, Limits::default(), FrameCodec::default());
        (left, passing(right))
    }

    /// Sends `bodies` as `stdout` frames, then `stdin_end`, and receives
    /// them as the printer would: each frame's bytes written to `out`, the
    /// rest of a passed body moved there by a splicer. Returns how many
    /// bodies were passed; `out` is closed on return.
    async fn deliver<O: AsFd + Send + 'static>(bodies: Vec<Vec<u8>>, out: O) -> usize {
        let (left, mut right) = sender_and_passing().await;
        let sending = tokio::spawn(async move {
            for body in bodies {
                left.send(Frame::with_body(Message::Stdout, body))
                    .await
                    .unwrap();
            }
            left.send(Frame::new(Message::StdinEnd)).await.unwrap();
            left.close(WITHIN).await;
        });
        let mut splicer = Some(Splicer::new(out));
        let mut passed = 0;
        loop {
            let frame = right.recv_within(WITHIN).await.unwrap();
            if frame.message == Message::StdinEnd {
                break;
            }
            assert_eq!(frame.message, Message::Stdout);
            let rest = right.take_body_on_socket();
            passed += usize::from(rest.is_some());
            let mut s = splicer.take().unwrap();
            let moving = tokio::task::spawn_blocking(move || {
                crate::syscall::write_all(&s.out, &frame.body).unwrap();
                if let Some(rest) = rest {
                    s.move_body(rest, WITHIN).unwrap();
                }
                s
            });
            splicer = Some(moving.await.unwrap());
        }
        sending.await.unwrap();
        passed
    }

    fn bodies() -> Vec<Vec<u8>> {
        vec![
            pattern(1024 * 1024, 1),
            pattern(100, 2),
            pattern(700_001, 3),
            pattern(1023, 4),
            pattern(300_000, 5),
        ]
    }

    #[tokio::test]
    async fn bodies_go_straight_into_a_pipe() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::fs::File::from(read).read_to_end(&mut all).unwrap();
            all
        });
        let passed = deliver(bodies(), write).await;
        assert_eq!(passed, 3, "the three bodies of 1 KiB or more");
        assert!(reader.join().unwrap() == bodies().concat(), "bytes differ");
    }

    #[tokio::test]
    async fn bodies_reach_a_file_through_the_relay_pipe() {
        let mut file = tempfile::tempfile().unwrap();
        let passed = deliver(bodies(), file.try_clone().unwrap()).await;
        assert_eq!(passed, 3);
        let mut all = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut all).unwrap();
        assert!(all == bodies().concat(), "bytes differ");
    }

    /// A file opened for appending refuses splices: the relay's bytes are
    /// copied out instead, after what the file held.
    #[tokio::test]
    async fn a_file_that_refuses_splices_gets_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"before\n").unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let passed = deliver(bodies(), file).await;
        assert_eq!(passed, 3);
        let all = std::fs::read(&path).unwrap();
        assert!(all == [&b"before\n"[..], &bodies().concat()].concat());
    }

    /// A body whose rest never comes: the peer closes, or goes silent.
    async fn cut_short(close: bool) -> MoveError {
        let (mut left, right) = loopback_sockets().await;
        let mut right = passing(right);
        let mut wire = bytes::BytesMut::new();
        FrameCodec::default()
            .encode_header(&Message::Stdout, 200_000, &mut wire)
            .unwrap();
        wire.extend_from_slice(&pattern(50_000, 6));
        left.write_all(&wire).await.unwrap();
        if close {
            drop(left);
        }
        let frame = right.recv_within(WITHIN).await.unwrap();
        let rest = right.take_body_on_socket().expect("the body was passed");
        assert_eq!(frame.body.len() + rest.len, 200_000);
        let file = tempfile::tempfile().unwrap();
        let moved = tokio::task::spawn_blocking(move || {
            Splicer::new(file).move_body(rest, Duration::from_millis(200))
        });
        moved.await.unwrap().unwrap_err()
    }

    #[tokio::test]
    async fn a_connection_ending_inside_a_body_is_the_sockets_error() {
        let err = cut_short(true).await;
        assert!(
            matches!(&err, MoveError::Socket(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_inside_a_body_times_out() {
        let err = cut_short(false).await;
        assert!(
            matches!(&err, MoveError::Socket(e) if e.kind() == io::ErrorKind::TimedOut),
            "{err:?}"
        );
    }

    /// A pipe whose reader is gone is stdout's error, not the connection's.
    #[tokio::test]
    async fn a_pipe_without_a_reader_is_the_outputs_error() {
        let (left, mut right) = sender_and_passing().await;
        left.send(Frame::with_body(Message::Stdout, pattern(500_000, 7)))
            .await
            .unwrap();
        let _frame = right.recv_within(WITHIN).await.unwrap();
        let rest = right.take_body_on_socket().expect("the body was passed");
        let (read, write) = rustix::pipe::pipe().unwrap();
        drop(read);
        let moved =
            tokio::task::spawn_blocking(move || Splicer::new(write).move_body(rest, WITHIN));
        let err = moved.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, MoveError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe),
            "{err:?}"
        );
    }
}
