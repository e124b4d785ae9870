//! The server's side of the spawn helper: starting it, asking it to start
//! commands, taking its exit reports, and starting it again when it dies.
//!
//! A task on the server's runtime reads everything the helper says (a
//! reply wakes the runtime, not a thread that would wake it in turn: two
//! context switches less a command): the answer to a request goes to the
//! task that asked, by the request's id (several are in flight at once; a
//! task gives up once the helper has answered no request for
//! [`HELPER_REPLY_TIMEOUT`]), an exit report to the command's
//! [`Child`](crate::exec::Child) through a oneshot channel made when its
//! start was read, so no report can come before its channel.
//!
//! One thread per helper (`wiresh-helper`) supervises it. When the
//! helper's socket ends (it died, or was found hung and its socket shut
//! down), that thread kills the helper's process group (a command still
//! between fork and `setsid` is in it, not started), reaps the helper, and
//! only then drops the exit channels: the helper's commands are the
//! server's children by then (a child subreaper adopts them), and each
//! waits for its own through its pidfd. It then starts a new helper after
//! a backoff, meanwhile commands start from the server's own threads.

use std::collections::HashMap;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::datagram;
use super::wire::{Reply, SpawnRequest, MAX_REPLY};
use crate::defaults::{HELPER_LIVED, HELPER_REPLY_TIMEOUT, HELPER_RESTART, HELPER_RESTART_MAX};
use crate::exec::reaper;
use crate::task::watch;

/// The hidden first argument that makes `wiresh` the spawn helper.
pub const HELPER_ARG: &str = "spawn-helper";

/// A command the helper started: its pid, a pidfd, and where its exit
/// status will come (closed if the helper dies first).
#[derive(Debug)]
pub(crate) struct Started {
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Why the helper did not start a command.
#[derive(Debug)]
pub(crate) enum NotStarted {
    /// No helper is there, or the request was not sent: the caller starts
    /// the command itself.
    Unavailable,
    /// The helper tried and failed, or did not answer (it may have begun;
    /// the caller ends what it may have left in the command's cgroup).
    Failed(io::Error),
}

/// The helper's answer to a request, as its reader hands it over.
#[derive(Debug)]
enum Answer {
    Started(Started),
    Failed(io::Error),
}

/// The helper running now, if any.
static CURRENT: Mutex<Option<Arc<Link>>> = Mutex::new(None);

/// What [`stop`] needs: the supervising thread, and its stop signal
/// (dropped to stop it).
static SUPERVISOR: Mutex<Option<(std::thread::JoinHandle<()>, Sender<()>)>> = Mutex::new(None);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One running helper process, as the server asks it.
#[derive(Debug)]
struct Link {
    pid: u32,
    /// Our end of the socket pair, on the server's runtime: requests go
    /// out and replies come in without ever blocking a runtime thread
    /// (the replies that would unblock it need one). The descriptor
    /// itself stays blocking, for the first word's timed wait.
    socket: AsyncFd<OwnedFd>,
    /// The requests sent and not answered yet.
    waiting: Mutex<Waiting>,
    /// When the helper last answered a request.
    last_answer: Mutex<Instant>,
}

/// Where the answers to the requests in flight go, by request id.
#[derive(Debug, Default)]
struct Waiting {
    next: u32,
    answers: HashMap<u32, oneshot::Sender<Answer>>,
}

/// What the reading thread owns of a running helper.
struct Running {
    link: Arc<Link>,
    process: std::process::Child,
    /// Keeps the server's reaper off the helper until it is reaped here.
    _registered: reaper::Registered,
    started_at: Instant,
}

/// Starts the spawn helper and its supervising thread. Call once, inside
/// the server's runtime, as the account commands run as (after
/// `--run-as`), with the server a child subreaper already.
pub fn start() -> io::Result<u32> {
    let runtime = Handle::try_current().map_err(io::Error::other)?;
    let running = Running::start(&runtime)?;
    let pid = running.link.pid;
    let (stop, stopped) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("wiresh-helper".into())
        .spawn(move || supervise(running, &stopped, &runtime))?;
    *lock(&SUPERVISOR) = Some((thread, stop));
    Ok(pid)
}

/// Stops the helper (at the server's end) and waits until it is gone, so
/// that the server's cgroup is empty. Commands it started run on.
pub fn stop() {
    let Some((thread, stop)) = lock(&SUPERVISOR).take() else {
        return;
    };
    drop(stop);
    if let Some(link) = lock(&CURRENT).take() {
        link.shut_down();
    }
    let _ = thread.join();
}

/// The helper's pid, while one runs.
pub fn pid() -> Option<u32> {
    lock(&CURRENT).as_ref().map(|link| link.pid)
}

/// Whether a helper runs now to start commands.
pub(crate) fn available() -> bool {
    lock(&CURRENT).is_some()
}

/// Asks the helper to start `request` (its id is set here), with `fds` as
/// its stdio (in the order [`super::wire::Stdio`] says), and waits for the
/// answer without holding the thread.
pub(crate) async fn spawn(
    mut request: SpawnRequest,
    fds: &[BorrowedFd<'_>],
) -> Result<Started, NotStarted> {
    let Some(link) = lock(&CURRENT).clone() else {
        return Err(NotStarted::Unavailable);
    };
    let (id, mut answer) = link.expect();
    request.id = id;
    let Ok(bytes) = request.encode() else {
        link.answerer(id);
        return Err(NotStarted::Unavailable);
    };
    let sent = link.sent(&bytes, fds).await;
    if !matches!(sent, Some(Ok(()))) {
        // Nothing was delivered (a datagram goes whole or not at all).
        if sent.is_none() {
            warn!(
                "the spawn helper (pid {}) took no request within {HELPER_REPLY_TIMEOUT:?}: \
                 taking it for hung and starting another",
                link.pid
            );
        }
        link.answerer(id);
        link.shut_down();
        return Err(NotStarted::Unavailable);
    }
    match link.answered(&mut answer).await {
        Some(Ok(Answer::Started(started))) => Ok(started),
        Some(Ok(Answer::Failed(e))) => Err(NotStarted::Failed(e)),
        Some(Err(_)) => Err(NotStarted::Failed(io::Error::other(
            "the spawn helper died while starting the command",
        ))),
        None => {
            warn!(
                "the spawn helper (pid {}) answered nothing within {HELPER_REPLY_TIMEOUT:?}: \
                 taking it for hung and starting another",
                link.pid
            );
            link.shut_down();
            if link.answerer(id).is_none() {
                // Answered just now: a command started that nobody would
                // watch must not run on.
                if let Ok(Answer::Started(started)) = answer.await {
                    kill_group(started.pid);
                }
            }
            Err(NotStarted::Failed(io::Error::new(
                io::ErrorKind::TimedOut,
                "the spawn helper did not answer",
            )))
        }
    }
}

impl Link {
    /// Sends a request as [`Link::send`] does; gives up (`None`) once the
    /// helper has answered no request at all for [`HELPER_REPLY_TIMEOUT`],
    /// as [`Link::answered`] does: a request behind many others waits as
    /// long as they keep being answered.
    async fn sent(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Option<io::Result<()>> {
        let send = self.send(bytes, fds);
        tokio::pin!(send);
        loop {
            match tokio::time::timeout(HELPER_REPLY_TIMEOUT, &mut send).await {
                Ok(sent) => return Some(sent),
                Err(_) if lock(&self.last_answer).elapsed() < HELPER_REPLY_TIMEOUT => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends a request as soon as the helper's queue has room (it is
    /// short: `net.unix.max_dgram_qlen`, 10 by default), waiting without
    /// holding a runtime thread: the task reading the helper's replies
    /// needs one, and the helper takes no request while its replies wait.
    async fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        loop {
            let mut guard = self.socket.writable().await?;
            match guard.try_io(|fd| datagram::send_now(fd.get_ref().as_fd(), bytes, fds)) {
                Ok(sent) => return sent,
                Err(_would_block) => continue,
            }
        }
    }

    /// Ends the conversation: the reading task sees the end, and the
    /// supervising thread ends the helper.
    fn shut_down(&self) {
        let _ = rustix::net::shutdown(self.socket.get_ref(), rustix::net::Shutdown::Both);
    }

    /// Waits for `answer`; times out once the helper has answered no
    /// request at all for [`HELPER_REPLY_TIMEOUT`] (a request queued
    /// behind many others waits as long as they keep being answered).
    /// `None` when it timed out.
    async fn answered(
        &self,
        answer: &mut oneshot::Receiver<Answer>,
    ) -> Option<Result<Answer, oneshot::error::RecvError>> {
        loop {
            match tokio::time::timeout(HELPER_REPLY_TIMEOUT, &mut *answer).await {
                Ok(answered) => return Some(answered),
                Err(_) if lock(&self.last_answer).elapsed() < HELPER_REPLY_TIMEOUT => {}
                Err(_) => return None,
            }
        }
    }

    /// A new request's id, and where its answer will come.
    fn expect(&self) -> (u32, oneshot::Receiver<Answer>) {
        let mut waiting = lock(&self.waiting);
        let id = waiting.next;
        waiting.next = id.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        waiting.answers.insert(id, tx);
        (id, rx)
    }

    /// Takes where request `id`'s answer goes: `None` once answered, or
    /// given up on.
    fn answerer(&self, id: u32) -> Option<oneshot::Sender<Answer>> {
        lock(&self.waiting).answers.remove(&id)
    }

    /// Hands request `id` its answer; a command started for a request
    /// nobody waits for any more must not run on.
    fn answer(&self, id: u32, answer: Answer) {
        *lock(&self.last_answer) = Instant::now();
        let unanswered = match self.answerer(id) {
            Some(tx) => tx.send(answer).err(),
            None => Some(answer),
        };
        if let Some(Answer::Started(started)) = unanswered {
            kill_group(started.pid);
        }
    }
}

impl Running {
    /// Starts a helper process (`/proc/self/exe spawn-helper`, on one end
    /// of a socket pair as its stdin, in a process group of its own so a
    /// terminal's Ctrl-C does not reach it) and waits for its first word.
    fn start(runtime: &Handle) -> io::Result<Running> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let mut command = std::process::Command::new("/proc/self/exe");
        command
            .arg0("wiresh")
            .arg(HELPER_ARG)
            .stdin(theirs)
            .stdout(std::process::Stdio::null())
            .process_group(0);
        let socket = {
            let _runtime = runtime.enter();
            watch(ours, Interest::READABLE | Interest::WRITABLE)?
        };
        let spawning = reaper::spawning();
        let process = command.spawn()?;
        let registered = reaper::register(process.id());
        drop(spawning);
        drop(command);
        let mut running = Running {
            link: Arc::new(Link {
                pid: process.id(),
                socket,
                waiting: Mutex::new(Waiting::default()),
                last_answer: Mutex::new(Instant::now()),
            }),
            process,
            _registered: registered,
            started_at: Instant::now(),
        };
        let socket = running.link.socket.get_ref();
        let timeout = rustix::net::sockopt::Timeout::Recv;
        rustix::net::sockopt::set_socket_timeout(socket, timeout, Some(HELPER_REPLY_TIMEOUT))?;
        let first = receive(socket);
        rustix::net::sockopt::set_socket_timeout(socket, timeout, None)?;
        match first {
            Ok(Some((Reply::Ready, None))) => {
                *lock(&CURRENT) = Some(running.link.clone());
                Ok(running)
            }
            other => {
                running.end();
                Err(io::Error::other(match other {
                    Err(e) => format!("it did not say it was up: {e}"),
                    _ => "it said something else than that it was up".to_string(),
                }))
            }
        }
    }

    /// Has the runtime read what the helper says until its socket ends,
    /// then ends the helper; how long it ran, and why it ended.
    fn serve(mut self, runtime: &Handle) -> (Duration, String) {
        let (done, read) = mpsc::channel();
        let link = self.link.clone();
        runtime.spawn(async move {
            let _ = done.send(read_replies(&link).await);
        });
        // No answer: the runtime stopped, and nobody waits for exits.
        let (why, exits) = read
            .recv()
            .unwrap_or_else(|_| ("the server's runtime stopped".into(), HashMap::new()));
        let lived = self.started_at.elapsed();
        let status = self.end();
        // Reaped: its commands are the server's children now. Requests
        // still unanswered fail (their callers end what may have begun).
        drop(exits);
        lock(&self.link.waiting).answers.clear();
        (lived, format!("{why}; {status}"))
    }

    /// Ends the helper and what it was starting (its process group), and
    /// reaps it; what the exit status says.
    fn end(&mut self) -> String {
        let mut current = lock(&CURRENT);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.link)) {
            *current = None;
        }
        drop(current);
        self.link.shut_down();
        // Unreaped until below, so its pid is still its group's id.
        kill_group(self.link.pid);
        let status = self.process.wait();
        match status {
            Ok(status) => format!("it ended with {status}"),
            Err(e) => format!("it could not be reaped: {e}"),
        }
    }
}

/// Reads what the helper says, on the runtime, until its socket ends, and
/// hands each answer and exit report to whoever waits for it; why it
/// stopped, and the exit channels of the commands still running (dropped
/// only once the helper is reaped, see the module's docs).
async fn read_replies(link: &Link) -> (String, HashMap<u32, oneshot::Sender<ExitStatus>>) {
    let mut exits: HashMap<u32, oneshot::Sender<ExitStatus>> = HashMap::new();
    let why = loop {
        let mut guard = match link.socket.readable().await {
            Ok(guard) => guard,
            Err(e) => break e.to_string(),
        };
        let (reply, fd) = match guard.try_io(|socket| receive_now(socket.get_ref())) {
            Err(_would_block) => continue,
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => break "its socket ended".to_string(),
            Ok(Err(e)) => break e.to_string(),
        };
        match (reply, fd) {
            (Reply::Started { id, pid }, Some(pidfd)) => {
                let (tx, exit) = oneshot::channel();
                exits.insert(pid, tx);
                let started = Started { pid, pidfd, exit };
                link.answer(id, Answer::Started(started));
            }
            (Reply::Started { id, pid }, None) => {
                // Started, but unwatchable here (no room for its
                // pidfd): it must not run on unseen.
                kill_group(pid);
                let busy = io::Error::from(rustix::io::Errno::MFILE);
                link.answer(id, Answer::Failed(busy));
            }
            (Reply::Failed { id, errno, text }, None) => {
                let e = match errno {
                    0 => io::Error::other(text),
                    errno => io::Error::from_raw_os_error(errno),
                };
                link.answer(id, Answer::Failed(e));
            }
            (Reply::Exited { pid, status }, None) => {
                if let Some(tx) = exits.remove(&pid) {
                    let _ = tx.send(ExitStatus::from_raw(status));
                }
            }
            (reply, _) => break format!("it said {reply:?} out of turn"),
        }
    };
    (why, exits)
}

/// SIGKILLs the process group `pgid` (a command's own, or the helper's).
fn kill_group(pgid: u32) {
    if let Some(pgid) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

/// One message from the helper, with the descriptor beside it if any;
/// `None` at the end. A message over [`MAX_REPLY`], or more than one
/// descriptor, is an error.
fn receive(socket: &OwnedFd) -> io::Result<Option<(Reply, Option<OwnedFd>)>> {
    decode(socket, datagram::receive)
}

/// One message from the helper if one is there, as [`receive`]; a
/// `WouldBlock` error if none is.
fn receive_now(socket: &OwnedFd) -> io::Result<Option<(Reply, Option<OwnedFd>)>> {
    decode(socket, datagram::receive_now)
}

/// One message received by `how`, decoded.
fn decode(
    socket: &OwnedFd,
    how: fn(BorrowedFd<'_>, &mut [u8]) -> io::Result<datagram::Received>,
) -> io::Result<Option<(Reply, Option<OwnedFd>)>> {
    let mut bytes = [0u8; MAX_REPLY];
    let mut received = how(socket.as_fd(), &mut bytes)?;
    if received.len == 0 {
        return Ok(None);
    }
    if received.cut || received.fds.len() > 1 {
        return Err(io::Error::other("a message over the size limit"));
    }
    let reply =
        Reply::decode(&bytes[..received.len]).map_err(|e| io::Error::other(e.to_string()))?;
    // A pidfd that did not fit this table (`fds_cut`) is simply absent.
    Ok(Some((reply, received.fds.pop())))
}

/// The supervising thread: serves each helper until it ends, and starts
/// the next after a backoff, until [`stop`].
fn supervise(first: Running, stopped: &Receiver<()>, runtime: &Handle) {
    let mut running = first;
    let mut backoff = HELPER_RESTART;
    loop {
        let pid = running.link.pid;
        let (lived, why) = running.serve(runtime);
        if lived >= HELPER_LIVED {
            backoff = HELPER_RESTART;
        }
        if stopped.try_recv() != Err(mpsc::TryRecvError::Empty) {
            info!("spawn helper (pid {pid}) stopped");
            return;
        }
        warn!(
            "the spawn helper (pid {pid}) is gone ({why}); the commands it started run on; \
             commands start from the server's own threads until a new one is up"
        );
        running = loop {
            // Backoff, cut short by `stop`.
            if stopped.recv_timeout(backoff) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            backoff = (backoff * 2).min(HELPER_RESTART_MAX);
            match Running::start(runtime) {
                Ok(mut running) if stopped.try_recv() != Err(mpsc::TryRecvError::Empty) => {
                    running.end();
                    return;
                }
                Ok(running) => {
                    warn!("spawn helper restarted (pid {})", running.link.pid);
                    break running;
                }
                Err(e) => warn!("cannot start a spawn helper ({e}); trying again in {backoff:?}"),
            }
        };
    }
}
