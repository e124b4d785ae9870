//! The launcher: a thread with a file-descriptor table of its own, nearly
//! empty, that starts commands for the server.
//!
//! Starting a process copies the parent's file-descriptor table (vfork and
//! fork alike: `dup_fd` in the kernel), and at `exec` the child closes every
//! close-on-exec descriptor of that copy, one by one. A server running a
//! thousand commands holds thousands of descriptors (a socket per
//! connection, pipes and a pidfd per command), so every start costs in
//! proportion, and a thousand starts at once cost the square.
//!
//! A launcher thread leaves the process's table at birth
//! (`unshare(CLONE_FILES)`) and closes its copy of everything but the
//! standard streams: a command started from it copies a handful of
//! descriptors, whatever the server holds. The command's pipes are made in
//! the launcher's table; the server's ends come back over a socket pair
//! (`SCM_RIGHTS`), received close-on-exec. The commands are still children
//! of this process (any thread may wait for them); [`super::Child`] waits
//! through a pidfd.
//!
//! Nothing but [`launch_thread`]'s loop runs on a launcher thread: after
//! the unshare, a descriptor number from the rest of the process means
//! something else there, or nothing. It makes no log lines for the same
//! reason.
//!
//! A launcher costs two thread hops a start, so it is used only once the
//! server holds a few hundred descriptors ([`LAUNCH_FROM`]); below that,
//! and where a launcher cannot be had (no `/proc`, no pidfds, `unshare`
//! refused), commands start from the calling thread.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock, TryLockError};

use nix::sys::signal::SigSet;

use super::child::kill_and_reap;
use crate::syscall::retry;
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// A command started by the launcher: its process id (and group id) and
/// the server's ends of its pipes, close-on-exec.
#[derive(Debug)]
pub(super) struct Launched {
    pub pid: u32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: Option<OwnedFd>,
}

/// Why [`launch`] did not start a command.
pub(super) enum LaunchError {
    /// No launcher is there, or worth it: start `Command` some other way.
    Unavailable(Box<Command>),
    /// Starting it failed.
    Failed(io::Error),
}

/// A command for the launcher thread, and whether it gets a stdin pipe.
struct Job {
    cmd: Command,
    stdin: bool,
}

/// The server's side of a launcher thread. One command at a time: its lock
/// is held from the job to the descriptors received, so they always match.
struct Launcher {
    jobs: Sender<Job>,
    replies: Receiver<io::Result<u32>>,
    socket: UnixDatagram,
}

/// Launcher threads. A start keeps its launcher until the child has called
/// `exec` (vfork), so with one, starts wait in line behind each other's
/// `exec`; two keep both cores of a small machine busy.
const LAUNCHERS: usize = 2;

/// The launchers, started at the first command; empty when none can be.
static LAUNCHERS_STARTED: OnceLock<Vec<Mutex<Launcher>>> = OnceLock::new();

/// Which launcher the next start tries first.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Descriptors the server may hold before its commands start from a
/// launcher. Below, a start from the calling thread costs less than the
/// launcher's two thread hops (about 20 µs: measured on a live connection,
/// 2,000 commands each way); the copy and the closes cost about 0.1 µs a
/// descriptor.
const LAUNCH_FROM: u32 = 256;

/// [`LAUNCH_FROM`], or 0 in unit tests of the launcher: tests run in
/// parallel in one process, whose table they cannot keep dense.
static LAUNCH_FROM_NOW: AtomicU32 = AtomicU32::new(LAUNCH_FROM);

/// Has every command start from a launcher, however few descriptors are
/// open (for tests of the launcher).
#[cfg(test)]
pub(super) fn launch_always() {
    LAUNCH_FROM_NOW.store(0, Ordering::Relaxed);
}

/// Starts `cmd` from a launcher thread, with piped stdout and stderr, and
/// a piped stdin when `stdin` (else `/dev/null`). The caller sets
/// everything else (its session and cgroup hook included); `cmd` must have no
/// `pre_exec` hook that touches descriptors. While the server holds few
/// descriptors, or when there is no launcher, `cmd` comes back
/// ([`LaunchError::Unavailable`]) to be started from the calling thread.
pub(super) fn launch(cmd: Command, stdin: bool) -> Result<Launched, LaunchError> {
    let from = LAUNCH_FROM_NOW.load(Ordering::Relaxed);
    if from > 0 && !lowest_free_descriptor().is_some_and(|lowest| lowest >= from) {
        return Err(LaunchError::Unavailable(Box::new(cmd)));
    }
    let launchers =
        LAUNCHERS_STARTED.get_or_init(|| (0..LAUNCHERS).map_while(|_| Launcher::start()).collect());
    if launchers.is_empty() {
        return Err(LaunchError::Unavailable(Box::new(cmd)));
    }
    // A free launcher if there is one, else wait for the next in turn.
    let first = NEXT.fetch_add(1, Ordering::Relaxed);
    let turn = |i: usize| &launchers[(first + i) % launchers.len()];
    let launcher = (0..launchers.len())
        .find_map(|i| match turn(i).try_lock() {
            Ok(free) => Some(free),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        })
        .unwrap_or_else(|| turn(0).lock().unwrap_or_else(|e| e.into_inner()));
    launcher.launch(cmd, stdin)
}

/// The lowest descriptor number free in this table: descriptors are
/// handed out lowest first, so this is about how many are open (fewer if
/// some have closed since, which only makes a start from the calling
/// thread a little dearer). Two system calls.
fn lowest_free_descriptor() -> Option<u32> {
    static PROBE: OnceLock<Option<OwnedFd>> = OnceLock::new();
    let probe = PROBE
        .get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()?;
    let free = rustix::io::fcntl_dupfd_cloexec(probe, 0).ok()?;
    u32::try_from(free.as_raw_fd()).ok()
}

impl Launcher {
    /// Starts the launcher thread and waits until it has a table of its
    /// own; `None` when it cannot.
    fn start() -> Option<Mutex<Launcher>> {
        // Commands started here are waited for through a pidfd (Linux 5.3).
        let own = rustix::process::Pid::from_raw(std::process::id() as i32)?;
        rustix::process::pidfd_open(own, rustix::process::PidfdFlags::NONBLOCK).ok()?;
        let (socket, theirs) = UnixDatagram::pair().ok()?;
        let keep = theirs.as_raw_fd();
        let (jobs, job_rx) = mpsc::channel();
        let (reply_tx, replies) = mpsc::channel();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("wiresh-launcher".into())
            .spawn(move || {
                let detached = detach(keep);
                let ok = detached.is_ok();
                let _ = ready_tx.send(detached);
                if ok {
                    launch_thread(&job_rx, &reply_tx, &theirs);
                }
            })
            .ok()?;
        match ready.recv() {
            Ok(Ok(())) => {
                // The thread's table has its own copy of its end, owned
                // there; this table's copy of the number is owned by
                // nothing and goes. (On failure there is one copy, the
                // thread's, which it closes.)
                let _ = nix::unistd::close(keep);
                Some(Mutex::new(Launcher {
                    jobs,
                    replies,
                    socket,
                }))
            }
            Ok(Err(e)) => {
                tracing::debug!(
                    "no launcher thread ({e}); commands start from the server's threads"
                );
                None
            }
            Err(_) => None,
        }
    }

    fn launch(&self, cmd: Command, stdin: bool) -> Result<Launched, LaunchError> {
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { cmd, stdin }) {
            return Err(LaunchError::Unavailable(Box::new(job.cmd)));
        }
        let gone = || io::Error::other("the launcher thread is gone");
        let pid = self
            .replies
            .recv()
            .map_err(|_| gone())
            .and_then(|reply| reply)
            .map_err(LaunchError::Failed)?;
        let mut fds = match self.receive(if stdin { 3 } else { 2 }) {
            Ok(fds) => fds.into_iter(),
            Err(e) => {
                // The server cannot reach this command: it must not run on.
                kill_and_reap(pid);
                return Err(LaunchError::Failed(e));
            }
        };
        let (Some(stdout), Some(stderr)) = (fds.next(), fds.next()) else {
            unreachable!("receive checks the count")
        };
        Ok(Launched {
            pid,
            stdout,
            stderr,
            stdin: fds.next(),
        })
    }

    /// Receives the `count` descriptors of the command just started. When
    /// this table has no room for them (the kernel drops them and says
    /// the message was cut short), the error is `EMFILE`, as a spawn here
    /// would have had: the server answers that it is busy.
    fn receive(&self, count: usize) -> io::Result<Vec<OwnedFd>> {
        let mut byte = [0u8; 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = retry(|| {
            rustix::net::recvmsg(
                &self.socket,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
        })?;
        let mut fds = Vec::with_capacity(count);
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received.flags.contains(ReturnFlags::CTRUNC) {
            return Err(Errno::MFILE.into());
        }
        if fds.len() != count {
            return Err(io::Error::other(format!(
                "the launcher sent {} descriptors, not {count}",
                fds.len()
            )));
        }
        Ok(fds)
    }
}

/// On the launcher thread: leaves the process's descriptor table for a
/// copy, then closes the copy's descriptors but the standard streams and
/// `keep` (its end of the socket pair).
fn detach(keep: RawFd) -> io::Result<()> {
    // No signal handler may run here: a handler writes to descriptors by
    // number (tokio's SIGCHLD handler to its wake-up socket), numbers that
    // mean other files in this table. One that ran here wrote into the
    // exec-error pipe of a start (the standard library then panicked:
    // "short read on the CLOEXEC pipe", or ECONNRESET). The standard
    // library gives the commands started here an empty mask.
    SigSet::all().thread_block()?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES)?;
    // This thread's table, not the process's (`/proc/self`).
    let open: Vec<RawFd> = std::fs::read_dir("/proc/thread-self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|&fd| fd > 2 && fd != keep) {
        // Closes this table's copy only; the directory's own descriptor
        // is among them, and already closed (EBADF).
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// The launcher thread's loop: a job in, a reply (pid or error) out, and
/// on success the pipes over `socket`.
fn launch_thread(jobs: &Receiver<Job>, replies: &Sender<io::Result<u32>>, socket: &UnixDatagram) {
    for Job { mut cmd, stdin } in jobs {
        let reply = start(&mut cmd, stdin, socket);
        drop(cmd);
        if replies.send(reply).is_err() {
            return;
        }
    }
}

/// Spawns `cmd` and sends the server its ends of the pipes; returns the
/// pid.
fn start(cmd: &mut Command, stdin: bool, socket: &UnixDatagram) -> io::Result<u32> {
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(3);
    fds.extend(child.stdout.take().map(OwnedFd::from));
    fds.extend(child.stderr.take().map(OwnedFd::from));
    fds.extend(child.stdin.take().map(OwnedFd::from));
    let rights: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&rights));
    let sent = retry(|| {
        rustix::net::sendmsg(
            socket,
            &[IoSlice::new(&[rights.len() as u8])],
            &mut control,
            SendFlags::empty(),
        )
    });
    drop(rights);
    // This table's copies close here either way.
    drop(fds);
    if let Err(e) = sent {
        // The server will never see this command: it must not run.
        kill_and_reap(pid);
        return Err(io::Error::other(format!(
            "cannot hand a command's pipes to the server: {e}"
        )));
    }
    Ok(pid)
}
