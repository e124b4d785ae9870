//! A command while it runs: its pumps, its input and its supervisor,
//! driven beside the client's frames until the command has exited and its
//! output is sent, or the connection must close.
//!
//! The session keeps reading the connection for the whole life of the
//! command — stdin is flow-controlled by a window, so buffering it never
//! needs more than that — which means `cancel`, `ping` and a vanished
//! client are always noticed, whatever the command does with its input and
//! output.

use std::future::Future;
use std::pin::Pin;

use tokio::time::{self, Instant};
use wiresh_proto::{ErrorCode, Frame, Message};

use super::output::{pump, ChildPipe, Outbox, Source, CHUNK};
use super::start::{CommandIo, Started};
use super::stdin::{Feeding, StdinFeed};
use crate::defaults::STARTED_HOLD;
use crate::exec::{Deadlines, Event, KillReason, Supervisor, Terminal};
use crate::listener::{During, End};
use crate::server::session::Session;

/// One of a command's outputs on its way out; resolves to the bytes sent.
type Pump = Pin<Box<dyn Future<Output = u64> + Send>>;

/// A command while it runs.
pub(super) struct Running {
    /// Its deadlines, and its process group.
    pub supervisor: Supervisor,
    /// Its frames to the client.
    pub out: Outbox,
    /// Output bytes sent.
    pub bytes_out: u64,
    /// Input bytes received.
    pub bytes_in: u64,
    /// Its stdout and stderr on their way out.
    stdout: Pump,
    stderr: Pump,
    /// Its input, when it takes any, and the future that writes it.
    stdin: Option<StdinFeed>,
    feeding: Option<Feeding>,
    /// Its terminal, when it runs on one (for `resize`).
    terminal: Option<Terminal>,
    /// Which of its output pumps are done, and whether it has exited: it
    /// has ended when all three are.
    stdout_done: bool,
    stderr_done: bool,
    exited: bool,
}

impl Running {
    /// Takes over a started command: its supervisor, and the pumps and the
    /// input feed of its pipes or terminal.
    pub fn new(session: &Session, started: Started, deadlines: Deadlines, stdin: bool) -> Running {
        let config = &session.config;
        let started_frame = Frame::new(Message::Started { pid: started.pid });
        let out = Outbox::new(session.conn.sender(), started_frame, config.stdin_window);
        let supervisor = Supervisor::new(
            started.child,
            started.guard,
            deadlines,
            session.shutdown.clone(),
        );
        let chunk = CHUNK.min(config.limits.max_body);
        // The pumps are futures of the command's task, polled by its loop
        // rather than tasks of their own: no spawn and no cross-task
        // wake-up per command, and dropped with the command, so no pump
        // outlives it and keeps the connection's writer (and socket) alive.
        let pump_of = |from, kind| -> Pump { Box::pin(pump(from, kind, out.clone(), chunk)) };
        // Over plain TCP, a large output goes to the socket with splice(2),
        // never through this process's memory (see `pump`); over TLS it
        // must be read to be encrypted.
        let splice = out.can_splice();
        let output = |pipe: ChildPipe| match splice {
            true => Source::Child(pipe),
            false => Source::Read(Box::new(pipe)),
        };
        let (stdout, stderr, feed, terminal) = match started.io {
            CommandIo::Pipes {
                stdout,
                stderr,
                stdin,
            } => (
                pump_of(output(ChildPipe::Out(stdout)), Message::Stdout),
                pump_of(output(ChildPipe::Err(stderr)), Message::Stderr),
                stdin.map(|pipe| StdinFeed::new(pipe, out.clone())),
                None,
            ),
            // On a pty, stderr is the terminal too: its pump has nothing
            // to read.
            CommandIo::Terminal(terminal) => {
                let (mut feed, feeding) = StdinFeed::new(terminal.writer(), out.clone());
                if !stdin {
                    feed.close(); // no input: the terminal gets end of file at once
                }
                (
                    pump_of(Source::Read(Box::new(terminal.reader())), Message::Stdout),
                    pump_of(Source::Read(Box::new(tokio::io::empty())), Message::Stderr),
                    Some((feed, feeding)),
                    Some(terminal),
                )
            }
        };
        let (stdin, feeding) = feed.unzip();
        Running {
            supervisor,
            out,
            bytes_out: 0,
            bytes_in: 0,
            stdout,
            stderr,
            stdin,
            feeding,
            terminal,
            stdout_done: false,
            stderr_done: false,
            exited: false,
        }
    }

    /// Drives the command until it has exited and its output is sent
    /// (`Ok`), or until the connection must close (why; the command's group
    /// dies with its supervisor).
    pub async fn drive(&mut self, session: &mut Session, what: &str) -> Result<(), End> {
        // The client promises a frame at least every `keepalive`; allow
        // three missed beats before deciding it is gone.
        let silence_limit = session.config.keepalive * 3;
        let mut last_heard = Instant::now();
        // A client that pings but takes none of the output would hold its
        // command (and its places) for ever: it gets the send timeout.
        let send_timeout = session.config.send_timeout;
        let mut stall = session.conn.output_stall_watch(send_timeout);
        let hold = time::sleep(STARTED_HOLD);
        tokio::pin!(hold);
        while !self.exited || !self.stdout_done || !self.stderr_done {
            tokio::select! {
                biased;
                next = session.conn.recv() => {
                    last_heard = Instant::now();
                    match next {
                        None => return Err(End::disconnected(During::Command(what.into()))),
                        Some(Err(e)) => {
                            return Err(started_first(&self.out, session.fail_recv(e.into(), "")).await)
                        }
                        Some(Ok(frame)) => self.on_frame(session, frame).await?,
                    }
                }
                event = self.supervisor.next() => self.on_event(event),
                () = async { self.feeding.as_mut().expect("checked").await }, if self.feeding.is_some() => {
                    self.feeding = None;
                }
                n = &mut self.stdout, if !self.stdout_done => {
                    self.stdout_done = true;
                    self.bytes_out += n;
                }
                n = &mut self.stderr, if !self.stderr_done => {
                    self.stderr_done = true;
                    self.bytes_out += n;
                }
                _ = time::sleep_until(last_heard + silence_limit), if !silence_limit.is_zero() => {
                    let message = format!(
                        "no frame from the client for {silence_limit:?} during `{what}` \
                         (keepalive missed); the command was killed"
                    );
                    return Err(started_first(&self.out, session.fail(ErrorCode::Timeout, message)).await);
                }
                () = stall.stalled(), if !send_timeout.is_zero() => {
                    session.conn.cut_off();
                    return Err(End::Stalled { limit: send_timeout, during: During::Command(what.into()) });
                }
                () = &mut hold, if self.out.holding() => {
                    if self.out.flush().await.is_err() {
                        return Err(End::lost(During::Answer));
                    }
                }
                () = self.out.closed() => return Err(End::lost(During::Command(what.into()))),
            }
        }
        Ok(())
    }

    /// Acts on a frame from the client while the command runs.
    async fn on_frame(&mut self, session: &Session, frame: Frame) -> Result<(), End> {
        match frame.message {
            Message::Stdin => {
                self.bytes_in += frame.body.len() as u64;
                if let Some(feed) = &self.stdin {
                    if let Err(e) = feed.push(frame.body) {
                        let fail = session.fail(ErrorCode::FlowControl, e.to_string());
                        return Err(started_first(&self.out, fail).await);
                    }
                }
            }
            Message::StdinEnd => {
                if let Some(feed) = &mut self.stdin {
                    feed.close();
                }
            }
            Message::Cancel => {
                self.supervisor.kill(KillReason::Cancelled);
            }
            Message::Signal { name } => super::signal::deliver(&self.supervisor, name),
            // Without a pty there is nothing to resize (documented).
            Message::Resize(size) => {
                if let Some(terminal) = &self.terminal {
                    let _ = terminal.resize(size);
                }
            }
            Message::Ping => session.conn.pong(frame.body),
            Message::Pong => {}
            other => {
                let fail = session.unexpected(&other, "while a command runs");
                return Err(started_first(&self.out, fail).await);
            }
        }
        Ok(())
    }

    /// Acts on what the supervisor says.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Exited(_) => {
                self.exited = true;
                if self.terminal.is_some() {
                    // What is left would hold the terminal open.
                    self.supervisor.hang_up();
                }
            }
            Event::Killing(_) => {}
            // Killed, yet the pipes stay open: something escaped the group.
            // Stop waiting for them (the pumps are dropped with the command).
            Event::GaveUpOnPipes => {
                (self.stdout_done, self.stderr_done, self.exited) = (true, true, true);
            }
        }
    }

    /// Stops taking and writing input: no `stdin_ack` may follow the
    /// `exit`, and input still waiting is discarded (the `exit`
    /// acknowledges it).
    pub fn end_input(&mut self) {
        (self.stdin, self.feeding) = (None, None);
    }
}

/// Sends the held `started` (the command did start: a client must not take
/// the error that follows for "never ran", and think a retry safe), then
/// the error `fail` sends.
async fn started_first(out: &Outbox, fail: impl Future<Output = End>) -> End {
    let _ = out.flush().await;
    fail.await
}
