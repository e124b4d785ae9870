//! One command through a master without an async runtime: the fast path
//! of a one-shot `wiresh exec`.
//!
//! Through a master, a one-shot client spends most of its time being a
//! process (starting, building a runtime and its threads, exiting), not
//! talking. Here the command runs on the calling thread over a blocking
//! Unix socket, in one `poll(2)` loop over the socket, stdin and Ctrl-C
//! (a `signalfd`), with the protocol and the endings of
//! [`crate::client::Connection::run`]: the `exec` goes with the
//! handshake, stdin is forwarded within the server's window, pings keep
//! the command alive, the first Ctrl-C sends `INT` (a cancel, to a server
//! that takes no signals), the second gives up.
//!
//! Output is written inline. Before a write that could wait on a slow
//! reader (more than `INLINE_WRITE_MAX` bytes, or a descriptor not
//! ready now) a thread takes over the pings and Ctrl-C (`Watch`), so
//! that a paused pager never lets the server take the client for gone
//! and Ctrl-C still reaches the command.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags, Timespec};
use tokio_util::codec::Decoder;
use wiresh_proto::codec::encode_frame;
use wiresh_proto::{
    ErrorCode, ExecRequest, ExitStatus, Frame, FrameCodec, Hello, Message, Preamble, SignalName,
    PROTOCOL_VERSION,
};

use super::client::find;
use super::handshake::Request;
use crate::client::{
    auth_ok_from, hello_from, ping_interval, silence_limit, ClientError, Endpoint, CONNECT_TIMEOUT,
};
use crate::syscall::write_all;

/// The most output written on the calling thread while nothing else
/// watches the connection: what a pipe that polls writable takes without
/// waiting (`PIPE_BUF`).
const INLINE_WRITE_MAX: usize = 4096;

/// What one read from the socket takes at most.
const READ_SIZE: usize = 64 * 1024;

/// What one read from local stdin takes at most (and so one `stdin`
/// frame), as the threaded client reads it.
const STDIN_READ: usize = 256 * 1024;

/// What came of running a command through a master.
#[derive(Debug)]
pub enum Oneshot {
    /// The command ran (or the connection failed while it ran): how it
    /// ended, and whether local stdout went away first.
    Ran {
        /// Its exit status, or what went wrong.
        result: Result<ExitStatus, ClientError>,
        /// Local stdout would take no more.
        stdout_closed: bool,
    },
    /// No master answers for this endpoint: connect as usual (which may
    /// start one).
    Absent,
    /// A master answered but does not serve this client now (all its
    /// connections in use, stopping, refused by the server): connect
    /// directly, telling the user why when there is a reason to.
    Declined(Option<String>),
}

/// Runs `req` through the master of `endpoint`, if one answers, with this
/// process's stdio (stdin forwarded when `forward_stdin`). `req` must be
/// one that goes with the handshake (no terminal, no login shell).
pub fn run(endpoint: &Endpoint, mut req: ExecRequest, forward_stdin: bool) -> Oneshot {
    if req.pty.is_some() || req.login_shell {
        return Oneshot::Absent;
    }
    req.stdin = forward_stdin;
    let (identity, stream) = match find(endpoint) {
        Ok(Some(found)) => found,
        Ok(None) => return Oneshot::Absent,
        Err(why) => return Oneshot::Declined(Some(why)),
    };
    let line = Request::Session(identity.hex()).line();
    let session = match Session::open(stream, line.as_bytes(), endpoint, req) {
        Ok(session) => session,
        Err(ClientError::Remote {
            code: ErrorCode::TooManyConnections | ErrorCode::ShuttingDown,
            ..
        }) => return Oneshot::Declined(None),
        Err(e) => {
            return Oneshot::Declined(Some(format!(
                "the master for {} did not take this client ({e})",
                endpoint.target
            )))
        }
    };
    session.follow(forward_stdin)
}

/// The socket, written by the calling thread and the watching one.
struct Link {
    stream: UnixStream,
    writing: Mutex<()>,
}

impl Link {
    /// Sends one frame whole (frames from two threads never interleave).
    fn send(&self, frame: &Frame) -> io::Result<()> {
        let bytes = encode_frame(frame).map_err(io::Error::other)?;
        let _turn = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        (&self.stream).write_all(&bytes)
    }
}

/// Frames read from the socket.
struct Frames {
    buf: BytesMut,
    codec: FrameCodec,
    scratch: Vec<u8>,
}

impl Frames {
    /// The next frame among the bytes read, if one is complete.
    fn next(&mut self) -> Result<Option<Frame>, ClientError> {
        self.codec
            .decode(&mut self.buf)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Reads what the socket has (it polled readable); 0 at its end.
    fn fill(&mut self, stream: &UnixStream) -> io::Result<usize> {
        loop {
            match (&*stream).read(&mut self.scratch) {
                Ok(n) => {
                    self.buf.extend_from_slice(&self.scratch[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame, waiting for it until `deadline`.
    fn wait(&mut self, stream: &UnixStream, deadline: Instant) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.next()? {
                return Ok(frame);
            }
            let mut fds = [PollFd::new(stream, PollFlags::IN)];
            if poll_until(&mut fds, Some(deadline)) == 0 {
                return Err(ClientError::Timeout(format!(
                    "no answer within {CONNECT_TIMEOUT:?}"
                )));
            }
            match self.fill(stream) {
                Ok(0) | Err(_) => return Err(ClientError::Closed("during the handshake")),
                Ok(_) => {}
            }
        }
    }
}

/// Polls `fds` until one is ready or `deadline` passes; how many are
/// ready (0: the deadline passed). An interrupted poll counts as none
/// ready, so the caller looks again.
fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> usize {
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        // Rounded up: a poll that returns just before its deadline would
        // spin.
        Timespec::try_from(left + Duration::from_micros(500)).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    rustix::event::poll(fds, timeout.as_ref()).unwrap_or(0)
}

/// Whether `fd` takes a write now.
fn writable_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n == 1)
        && fds[0].revents() == PollFlags::OUT
}

/// The Ctrl-Cs and pings of the running command, acted on by the calling
/// thread until output could make it wait, then by a thread of its own.
struct Watch {
    link: Arc<Link>,
    signals: SignalFd,
    /// The server takes signals: the first Ctrl-C sends `INT`.
    signaller: bool,
    presses: u8,
    every: Duration,
    next_ping: Instant,
}

/// What a Ctrl-C came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pressed {
    /// Acted on; the command runs on until its exit status comes.
    Acted,
    /// The second: give up on the command (it was cancelled).
    GiveUp,
    /// The cancel could not be sent: the connection is gone.
    Lost,
}

impl Watch {
    /// Acts on the Ctrl-Cs pending, as [`crate::cli::interrupt`] does:
    /// with signals, `INT` then a cancel and giving up; without, a cancel
    /// then giving up.
    fn on_signals(&mut self) -> Option<Pressed> {
        let mut outcome = None;
        while let Ok(Some(_)) = self.signals.read_signal() {
            self.presses = self.presses.saturating_add(1);
            let cancel = |link: &Link| match link.send(&Frame::new(Message::Cancel)) {
                Ok(()) => Pressed::Acted,
                Err(_) => Pressed::Lost,
            };
            let pressed = match (self.signaller, self.presses) {
                (true, 1) => {
                    // A lost connection shows in the command's own end.
                    let _ = self.link.send(&Frame::new(Message::Signal {
                        name: SignalName::Int,
                    }));
                    Pressed::Acted
                }
                (false, 1) => cancel(&self.link),
                (true, _) => match cancel(&self.link) {
                    Pressed::Acted => Pressed::GiveUp,
                    lost => lost,
                },
                (false, _) => Pressed::GiveUp,
            };
            if pressed != Pressed::Acted {
                return Some(pressed);
            }
            outcome = Some(pressed);
        }
        outcome
    }

    /// Pings the server when it is time.
    fn on_time(&mut self) {
        let now = Instant::now();
        if now >= self.next_ping {
            // Only liveness: a failure shows in the reads.
            let _ = self.link.send(&Frame::new(Message::Ping));
            self.next_ping = now + self.every;
        }
    }

    /// Watches from a thread of its own until `stop` hangs up; a second
    /// Ctrl-C is told through `ended` and by shutting the socket's reading
    /// side, which wakes the calling thread.
    fn keep(mut self, stop: OwnedFd, ended: Arc<AtomicU8>) {
        loop {
            let mut fds = [
                PollFd::new(&self.signals, PollFlags::IN),
                PollFd::new(&stop, PollFlags::IN),
            ];
            poll_until(&mut fds, Some(self.next_ping));
            if !fds[1].revents().is_empty() {
                return;
            }
            if !fds[0].revents().is_empty() {
                if let Some(end @ (Pressed::GiveUp | Pressed::Lost)) = self.on_signals() {
                    ended.store(end as u8, Ordering::Release);
                    let _ = self.link.stream.shutdown(std::net::Shutdown::Read);
                    return;
                }
            }
            self.on_time();
        }
    }
}

/// What [`Session::wait`] found ready.
struct Ready {
    socket: bool,
    signals: bool,
    stdin: bool,
}

/// The watching thread, once started.
struct Keeper {
    /// Dropped to stop it.
    _stop: OwnedFd,
    /// A [`Pressed`] other than `Acted` once it gave up.
    ended: Arc<AtomicU8>,
}

/// A command running through a master.
struct Session {
    link: Arc<Link>,
    frames: Frames,
    hello: Hello,
    /// On this thread, until a [`Keeper`] takes it.
    watch: Option<Watch>,
    keeper: Option<Keeper>,
    /// Local stdin, when it is forwarded.
    stdin: Option<Stdin>,
    started: bool,
    stdout_closed: bool,
}

impl Session {
    /// Sends the handshake with the command and reads the master's
    /// answer (the server's `hello` and `auth_ok`).
    fn open(
        stream: UnixStream,
        prefix: &[u8],
        endpoint: &Endpoint,
        req: ExecRequest,
    ) -> Result<Session, ClientError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut opening = prefix.to_vec();
        opening.extend_from_slice(&Preamble::new(PROTOCOL_VERSION).encode());
        let auth = Frame::new(Message::Auth {
            token: endpoint.token.clone(),
        });
        for frame in [auth, Frame::new(Message::Exec(req))] {
            let bytes = encode_frame(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
            opening.extend_from_slice(&bytes);
        }
        (&stream)
            .write_all(&opening)
            .map_err(|_| ClientError::Closed("while sending the handshake"))?;
        let mut frames = Frames {
            buf: BytesMut::with_capacity(READ_SIZE),
            codec: FrameCodec::default(),
            scratch: vec![0; READ_SIZE],
        };
        let hello = hello_from(frames.wait(&stream, deadline)?.message)?;
        auth_ok_from(frames.wait(&stream, deadline)?.message)?;
        Ok(Session {
            link: Arc::new(Link {
                stream,
                writing: Mutex::new(()),
            }),
            frames,
            hello,
            watch: None,
            keeper: None,
            stdin: None,
            started: false,
            stdout_closed: false,
        })
    }

    /// Follows the command to its end; the socket is shut when it ends, so
    /// the master knows at once.
    fn follow(mut self, forward_stdin: bool) -> Oneshot {
        self.stdin = forward_stdin.then(|| Stdin::new(&self.hello));
        let result = self.watch_signals().and_then(|()| self.follow_frames());
        self.keeper = None;
        let _ = self.link.stream.shutdown(std::net::Shutdown::Both);
        Oneshot::Ran {
            result,
            stdout_closed: self.stdout_closed,
        }
    }

    /// Takes Ctrl-C (SIGINT) from now on: blocked, and read from a
    /// `signalfd`.
    fn watch_signals(&mut self) -> Result<(), ClientError> {
        let mask = interrupt_mask();
        let failed = |e: nix::Error| ClientError::Protocol(format!("cannot take Ctrl-C: {e}"));
        mask.thread_block().map_err(failed)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(failed)?;
        let every = ping_interval(&self.hello);
        self.watch = Some(Watch {
            link: self.link.clone(),
            signals,
            signaller: self.hello.features.iter().any(|f| f == "signal"),
            presses: 0,
            every,
            next_ping: Instant::now() + every,
        });
        Ok(())
    }

    /// The loop: frames, stdin, Ctrl-C and pings until the exit status.
    fn follow_frames(&mut self) -> Result<ExitStatus, ClientError> {
        let silence_limit = silence_limit(&self.hello);
        let mut last_heard = Instant::now();
        loop {
            while let Some(frame) = self.frames.next()? {
                if let Some(status) = self.take(frame)? {
                    return Ok(status);
                }
                // After the frame, whose output may have waited on a reader.
                last_heard = Instant::now();
            }
            self.gave_up()?;
            let next_ping = self.watch.as_ref().map(|w| w.next_ping);
            let deadline = [Some(last_heard + silence_limit), next_ping]
                .into_iter()
                .flatten()
                .min();
            let ready = self.wait(deadline);
            if ready.signals {
                self.on_signals()?;
            }
            if ready.socket {
                let link = self.link.clone();
                if !matches!(self.frames.fill(&link.stream), Ok(1..)) {
                    self.gave_up()?;
                    return Err(ClientError::Closed("before the command finished"));
                }
            } else if Instant::now() >= last_heard + silence_limit {
                return Err(ClientError::Timeout(format!(
                    "the server has not answered for {silence_limit:?}; the connection seems dead"
                )));
            }
            if ready.stdin {
                if let Some(stdin) = &mut self.stdin {
                    stdin.forward(&self.link);
                }
            }
            if let Some(watch) = &mut self.watch {
                watch.on_time();
            }
        }
    }

    /// Waits until the socket, Ctrl-C (while this thread watches) or stdin
    /// (while it is forwarded and the window allows) is ready, or until
    /// `deadline`.
    fn wait(&self, deadline: Option<Instant>) -> Ready {
        let stdin_handle = std::io::stdin();
        let mut fds = vec![PollFd::new(&self.link.stream, PollFlags::IN)];
        let signals = self.watch.as_ref().map(|w| {
            fds.push(PollFd::new(&w.signals, PollFlags::IN));
            fds.len() - 1
        });
        let wants_stdin = self.stdin.as_ref().is_some_and(Stdin::wants);
        let stdin = wants_stdin.then(|| {
            fds.push(PollFd::new(&stdin_handle, PollFlags::IN));
            fds.len() - 1
        });
        poll_until(&mut fds, deadline);
        let ready = |i: Option<usize>| i.is_some_and(|i| !fds[i].revents().is_empty());
        Ready {
            socket: ready(Some(0)),
            signals: ready(signals),
            stdin: ready(stdin),
        }
    }

    /// The Ctrl-Cs pending, on this thread.
    fn on_signals(&mut self) -> Result<(), ClientError> {
        match self.watch.as_mut().and_then(Watch::on_signals) {
            Some(Pressed::GiveUp) => Err(ClientError::Interrupted),
            Some(Pressed::Lost) => Err(ClientError::Closed("before the command finished")),
            _ => Ok(()),
        }
    }

    /// The watching thread's second Ctrl-C, if it came.
    fn gave_up(&self) -> Result<(), ClientError> {
        let ended = self
            .keeper
            .as_ref()
            .map(|k| k.ended.load(Ordering::Acquire));
        match ended {
            Some(e) if e == Pressed::GiveUp as u8 => Err(ClientError::Interrupted),
            Some(e) if e == Pressed::Lost as u8 => {
                Err(ClientError::Closed("before the command finished"))
            }
            _ => Ok(()),
        }
    }

    /// Acts on one frame of the running command; its exit status once it
    /// has one.
    fn take(&mut self, frame: Frame) -> Result<Option<ExitStatus>, ClientError> {
        match frame.message {
            Message::Started { .. } => self.started = true,
            Message::StdinAck { bytes } => {
                if let Some(stdin) = &mut self.stdin {
                    stdin.acked(bytes);
                }
            }
            Message::Stdout => {
                if self.output(std::io::stdout().as_fd(), &frame.body).is_err() {
                    self.stdout_closed = true;
                    return Err(ClientError::OutputClosed);
                }
            }
            Message::Stderr => {
                let _ = self.output(std::io::stderr().as_fd(), &frame.body);
            }
            Message::Exit(status) => return Ok(Some(status)),
            Message::Error { code, message } => {
                return Err(ClientError::Remote {
                    code,
                    message,
                    started: self.started,
                })
            }
            Message::Pong => {}
            Message::Ping => {
                let _ = self.link.send(&Frame::with_body(Message::Pong, frame.body));
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected `{}` while a command runs",
                    other.type_name()
                )))
            }
        }
        Ok(None)
    }

    /// Writes output to `fd`; a watching thread is started first when the
    /// write could wait.
    fn output(&mut self, fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
        if self.keeper.is_none() && (bytes.len() > INLINE_WRITE_MAX || !writable_now(fd)) {
            self.start_keeper();
        }
        write_all(fd, bytes)
    }

    /// Hands the pings and Ctrl-C to a thread of their own. Should no
    /// thread be had, Ctrl-C is let through to end this process, as it
    /// would end any (the master then closes the command's connection).
    fn start_keeper(&mut self) {
        let Some(watch) = self.watch.take() else {
            return;
        };
        let stop = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
        let ended = Arc::new(AtomicU8::new(Pressed::Acted as u8));
        let told = ended.clone();
        let started = stop
            .map_err(io::Error::from)
            .and_then(|(stop_read, stop_write)| {
                std::thread::Builder::new()
                    .name("watch".into())
                    .spawn(move || watch.keep(stop_read, told))
                    .map(|_| stop_write)
            });
        match started {
            Ok(stop) => self.keeper = Some(Keeper { _stop: stop, ended }),
            Err(_) => {
                let _ = interrupt_mask().thread_unblock();
            }
        }
    }
}

/// SIGINT alone.
fn interrupt_mask() -> SigSet {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask
}

/// Local stdin, forwarded within the server's window.
struct Stdin {
    /// Bytes that may be sent before the next acknowledgement.
    credits: usize,
    /// The server's window: no acknowledgement adds more.
    window: usize,
    /// The largest `stdin` frame.
    piece: usize,
    /// Its end was sent.
    ended: bool,
    buf: Vec<u8>,
}

impl Stdin {
    fn new(hello: &Hello) -> Stdin {
        let window = hello.stdin_window as usize;
        Stdin {
            credits: window,
            window,
            piece: window.min(hello.max_body as usize).clamp(1, STDIN_READ),
            ended: false,
            buf: Vec::new(),
        }
    }

    /// Whether to read stdin now.
    fn wants(&self) -> bool {
        !self.ended && self.credits > 0
    }

    /// The server acknowledged `bytes`.
    fn acked(&mut self, bytes: u64) {
        let acked = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.credits = self.credits.saturating_add(acked.min(self.window));
    }

    /// Reads stdin (it polled readable) and sends what it gave, or its end.
    /// A failed send shows in the reads.
    fn forward(&mut self, link: &Link) {
        let want = self.credits.min(self.piece);
        self.buf.resize(want, 0);
        match rustix::io::read(std::io::stdin(), &mut self.buf[..want]) {
            Ok(0) => self.end(link),
            Ok(n) => {
                self.credits -= n;
                let _ = link.send(&Frame::with_body(Message::Stdin, self.buf[..n].to_vec()));
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            // A closed stdin reads as empty, as std reads it.
            Err(rustix::io::Errno::BADF) => self.end(link),
            Err(e) => {
                eprintln!("wiresh: cannot read local stdin: {}", io::Error::from(e));
                self.end(link);
            }
        }
    }

    fn end(&mut self, link: &Link) {
        self.ended = true;
        let _ = link.send(&Frame::new(Message::StdinEnd));
    }
}
