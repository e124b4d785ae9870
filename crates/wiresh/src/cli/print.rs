//! The local end of a remote command: this process's stdin, stdout and
//! stderr.
//!
//! Both directions run on plain threads with blocking I/O: terminal and
//! pipe I/O is blocking by nature, and a thread keeps a slow local consumer
//! (a pager, a full disk) from ever stalling the connection's keepalive.

use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use crate::client::zero_copy::{MoveError, PassedBody, Splicer};
use crate::client::{Output, OutputSink};
use crate::syscall::write_all;

/// Size of one read from local stdin (and so of one `stdin` frame).
const STDIN_CHUNK: usize = 256 * 1024;

/// Starts a thread that reads this process's stdin to its end and hands the
/// chunks over; the receiver ends when stdin does.
pub fn spawn_stdin_reader() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = BytesMut::new();
            loop {
                buf.resize(STDIN_CHUNK, 0);
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(buf.split().freeze()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("wiresh: cannot read local stdin: {e}");
                        return;
                    }
                }
            }
        })
        .expect("cannot start the stdin thread");
    rx
}

/// What the printer thread is asked to do.
#[derive(Debug)]
pub enum PrintJob {
    /// Print output, keeping stdout and stderr apart.
    Output(Output),
    /// Answer once everything before this job has been written.
    Barrier(oneshot::Sender<()>),
    /// Print the start of a `stdout` body, then move its rest from the
    /// socket ([`OutputSink::passed_bodies`]).
    Passed(PassedBody),
}

/// Writes `bytes` to stdout's descriptor, past the line buffer of
/// `io::stdout()` (flushed first, to keep the order), which would scan
/// every byte for a newline: 3% of all CPU while 1 GiB streamed over TLS.
fn write_through(out: &mut io::StdoutLock<'_>, bytes: &[u8]) -> io::Result<()> {
    out.flush()?;
    write_all(&*out, bytes)
}

impl From<Output> for PrintJob {
    fn from(o: Output) -> Self {
        PrintJob::Output(o)
    }
}

/// The printer thread's own state.
struct Printing {
    style: StderrStyle,
    /// Locked per job, not for the thread's life: the shell writes exit
    /// statuses to stderr between commands.
    out: io::Stdout,
    err: io::Stderr,
    /// Made at the first body passed.
    splicer: Option<Splicer<io::Stdout>>,
}

/// Local stdout would not take what was written to it.
struct StdoutGone;

impl Printing {
    /// Does one job.
    fn print(&mut self, job: PrintJob) -> Result<(), StdoutGone> {
        match job {
            PrintJob::Output(Output::Stdout(b)) => {
                write_through(&mut self.out.lock(), &b).map_err(|_| StdoutGone)?;
            }
            PrintJob::Output(Output::Stderr(b)) => {
                // Waited on when full, as stdout is: stderr may be shared
                // with a program that made it non-blocking (rsync does).
                let err = self.err.lock();
                let _ = match self.style {
                    StderrStyle::Plain => write_all(&err, &b),
                    StderrStyle::Red => write_all(&err, b"\x1b[31m")
                        .and_then(|()| write_all(&err, &b))
                        .and_then(|()| write_all(&err, b"\x1b[0m")),
                };
            }
            PrintJob::Barrier(done) => {
                let _ = done.send(());
            }
            PrintJob::Passed(body) => {
                let mut out = self.out.lock();
                let moved = match write_through(&mut out, &body.head) {
                    Ok(()) => self
                        .splicer
                        .get_or_insert_with(|| Splicer::new(io::stdout()))
                        .move_body(body.rest, body.idle),
                    Err(e) => Err(MoveError::Output(e)),
                };
                match moved {
                    Ok(()) => drop(body.done.send(Ok(()))),
                    Err(MoveError::Socket(e)) => drop(body.done.send(Err(e))),
                    Err(MoveError::Output(_)) => return Err(StdoutGone),
                }
            }
        }
        Ok(())
    }
}

/// Writes remote output to this process's stdout and stderr, in arrival
/// order, from a thread of its own.
#[derive(Debug)]
pub struct Printer {
    jobs: mpsc::Sender<PrintJob>,
    thread: Option<thread::JoinHandle<()>>,
    stdout_closed: Arc<AtomicBool>,
}

/// How [`Printer`] decorates standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrStyle {
    /// Bytes as they are.
    Plain,
    /// Wrapped in red (for the interactive shell on a terminal).
    Red,
}

impl Printer {
    /// Starts the printer thread.
    pub fn start(style: StderrStyle) -> Printer {
        let (jobs, mut rx) = mpsc::channel::<PrintJob>(8);
        let stdout_closed = Arc::new(AtomicBool::new(false));
        let closed = stdout_closed.clone();
        let thread = thread::Builder::new()
            .name("printer".into())
            .spawn(move || {
                let mut printing = Printing {
                    style,
                    out: io::stdout(),
                    err: io::stderr(),
                    splicer: None,
                };
                while let Some(job) = rx.blocking_recv() {
                    if printing.print(job).is_err() {
                        // Whoever read our stdout is gone (`| head`): stop,
                        // and the client stops the command, as SIGPIPE
                        // would stop a local pipeline.
                        closed.store(true, Ordering::Release);
                        return;
                    }
                }
            })
            .expect("cannot start the printer thread");
        Printer {
            jobs,
            thread: Some(thread),
            stdout_closed,
        }
    }

    /// Whether printing stopped because local stdout was closed.
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed.load(Ordering::Acquire)
    }

    /// The queue, for output already in memory (as the fan-out's
    /// prefixed lines are).
    pub fn sender(&self) -> &mpsc::Sender<PrintJob> {
        &self.jobs
    }

    /// Waits until everything queued so far has been written.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(PrintJob::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The printer as a command's output sink: large `stdout` bodies go from
/// the socket to stdout without passing through memory, unless stdout is
/// a terminal, which takes output slowly and would rather have it copied.
impl OutputSink for Printer {
    type Item = PrintJob;

    fn queue(&self) -> &mpsc::Sender<PrintJob> {
        &self.jobs
    }

    fn passed_bodies(&self) -> Option<fn(PassedBody) -> PrintJob> {
        let worth_it = !io::stdout().is_terminal();
        worth_it.then_some(PrintJob::Passed)
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has printed everything.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
