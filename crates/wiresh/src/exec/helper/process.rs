//! The spawn helper process itself: no runtime, a short descriptor table
//! and a small address space. A few starter threads read the server's
//! requests (each datagram goes to one of them) and start what it asks
//! for, several at once, without copying the helper's memory
//! (`super::vfork`), answering each request as its command starts;
//! the main thread tells the server when each command exits.
//!
//! An exited command is seen through its pidfd, looked at with
//! `waitid(WNOWAIT)`, reported, and only then reaped: if the helper dies
//! in between, the command is still a zombie, reparented to the server (a
//! child subreaper), which reaps it for its status itself.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rustix::event::epoll;
use rustix::net::SocketType;
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus, WaitOptions};

use super::wire::{Reply, SpawnRequest, Stdio as Streams, MAX_REQUEST};
use super::{datagram, vfork};
use crate::exec::ctty::Setup;
use crate::syscall::retry;

/// The epoll key of the socket; a child's key is its pid.
const SOCKET: u64 = u64::MAX;

/// Runs the helper on the socket it was started with as stdin, until the
/// server closes it. Called by the binary's `main` before anything else.
pub fn run() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wiresh spawn helper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> io::Result<()> {
    let stdin = rustix::stdio::stdin();
    if rustix::net::sockopt::socket_type(stdin).ok() != Some(SocketType::SEQPACKET) {
        return Err(io::Error::other(
            "this is `wiresh serve`'s spawn helper, started by the server on a socket; it is not \
             run by hand",
        ));
    }
    // `top` and `ps -o comm` would say `exe` (the file it was run as).
    let _ = nix::sys::prctl::set_name(c"wiresh-spawner");
    // Off fd 0 (which every command gets its own of) and close-on-exec.
    let socket = rustix::io::fcntl_dupfd_cloexec(stdin, 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    let shared = Arc::new(Shared {
        socket,
        epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        children: Mutex::new(HashMap::new()),
    });
    // The starters read the requests; here, only the socket's end.
    epoll::add(
        &shared.epoll,
        &shared.socket,
        epoll::EventData::new_u64(SOCKET),
        epoll::EventFlags::RDHUP,
    )?;
    for _ in 0..starters() {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("starter".into())
            .spawn(move || starter(&shared))?;
    }
    shared.send(&Reply::Ready, None)?;
    report_exits(&shared)
}

/// How many commands start at once. A start waits for its command's
/// `execve` (`super::vfork`), part of a millisecond of the child's own
/// work: with one starter, starts queued behind each other's `execve`
/// and one core stood idle.
fn starters() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (cores * 2).clamp(2, MAX_STARTERS)
}

/// The most starter threads, however many cores.
const MAX_STARTERS: usize = 16;

/// What the helper's threads share.
struct Shared {
    socket: OwnedFd,
    epoll: OwnedFd,
    /// The commands started and not yet reaped, by pid.
    children: Mutex<HashMap<u32, OwnedFd>>,
}

/// The main thread: reports each command's exit, until the server is
/// gone.
fn report_exits(shared: &Shared) -> io::Result<()> {
    let mut events = Vec::with_capacity(64);
    loop {
        events.clear();
        retry(|| epoll::wait(&shared.epoll, spare(&mut events), None))?;
        for event in &events {
            match event.data.u64() {
                SOCKET => return Ok(()),
                pid => shared.report_exit(pid as u32)?,
            }
        }
    }
}

/// A starter thread: takes a request (the socket hands each to one
/// reader), starts its command and answers, until the server is gone.
fn starter(shared: &Shared) {
    let mut buffer = vec![0; MAX_REQUEST];
    let mut stack = vec![0; vfork::CHILD_STACK];
    loop {
        let answered = match datagram::receive(shared.socket.as_fd(), &mut buffer) {
            Ok(received) if received.len == 0 => return,
            Ok(received) => shared.serve_request(&buffer, received, &mut stack),
            Err(e) => Err(e),
        };
        if answered.is_err() {
            // The server is gone, or a command would run unwatched: the
            // helper ends (its main thread sees the socket end), and the
            // server ends what it was starting.
            let _ = rustix::net::shutdown(&shared.socket, rustix::net::Shutdown::Both);
            return;
        }
    }
}

impl Shared {
    /// Starts the command `buffer` asks for, and answers.
    fn serve_request(
        &self,
        buffer: &[u8],
        received: datagram::Received,
        stack: &mut [u8],
    ) -> io::Result<()> {
        let bytes = &buffer[..received.len];
        let (cut, fds) = (received.cut || received.fds_cut, received.fds);
        let refused = match SpawnRequest::decode(bytes) {
            _ if cut => io::Error::other("a spawn request over the size limit"),
            Ok(request) if request.stdio.descriptors() != fds.len() => {
                io::Error::other(format!("a spawn request with {} descriptors", fds.len()))
            }
            Ok(request) => {
                let id = request.id;
                return match self.start(request, fds, stack) {
                    Ok((pid, pidfd)) => self.started(id, pid, pidfd),
                    Err(e) => self.refuse(id, &e),
                };
            }
            Err(e) => io::Error::other(e.to_string()),
        };
        // Unanswerable without its id: the server is not what it should
        // be, and this helper ends.
        let Some(id) = SpawnRequest::id_of(bytes) else {
            return Err(refused);
        };
        self.refuse(id, &refused)
    }

    /// Starts the command as the server would have, on `stack` (see
    /// `vfork`); its pid and a pidfd.
    fn start(
        &self,
        request: SpawnRequest,
        fds: Vec<OwnedFd>,
        stack: &mut [u8],
    ) -> io::Result<(u32, OwnedFd)> {
        let (streams, terminal) = match (&request.stdio, fds.as_slice()) {
            (Streams::Pipes { stdin: true }, [i, o, e]) => {
                (vfork::Streams::of(Some(i), o, e), false)
            }
            (Streams::Pipes { stdin: false }, [o, e]) => (vfork::Streams::of(None, o, e), false),
            (Streams::Terminal, [tty]) => (vfork::Streams::of(Some(tty), tty, tty), true),
            _ => {
                let e = "descriptors that do not match the request";
                return Err(io::Error::other(e));
            }
        };
        let cgroup = match request.cgroup {
            Some(path) => Some(CString::new(path).map_err(io::Error::other)?),
            None => None,
        };
        let pid = vfork::start(
            &request.command,
            streams,
            &Setup { terminal, cgroup },
            stack,
        )?;
        // The descriptors given to the child close here (they are
        // close-on-exec: no other command's start can take them).
        drop(fds);
        let pidfd = Pid::from_raw(pid as i32)
            .ok_or_else(|| io::Error::other("pid 0"))
            .and_then(|p| Ok(rustix::process::pidfd_open(p, PidfdFlags::empty())?));
        match pidfd {
            Ok(pidfd) => Ok((pid, pidfd)),
            Err(e) => {
                // Unwatchable: it must not run on unseen.
                let _ = rustix::process::kill_process_group(
                    Pid::from_raw(pid as i32).expect("not 0"),
                    rustix::process::Signal::KILL,
                );
                let _ = retry(|| {
                    rustix::process::waitpid(Pid::from_raw(pid as i32), WaitOptions::empty())
                });
                Err(e)
            }
        }
    }

    /// Answers request `id`: its command runs as `pid`. Only then is its
    /// exit watched, so that its exit report cannot come first.
    fn started(&self, id: u32, pid: u32, pidfd: OwnedFd) -> io::Result<()> {
        self.send(&Reply::Started { id, pid }, Some(pidfd.as_fd()))?;
        let key = epoll::EventData::new_u64(pid.into());
        // In the table before epoll can say it exited.
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        epoll::add(&self.epoll, &pidfd, key, epoll::EventFlags::IN)?;
        children.insert(pid, pidfd);
        Ok(())
    }

    /// Answers request `id`: its command did not start, because of `e`.
    fn refuse(&self, id: u32, e: &io::Error) -> io::Result<()> {
        let errno = e.raw_os_error().unwrap_or(0);
        let text = e.to_string();
        self.send(&Reply::Failed { id, errno, text }, None)
    }

    /// Child `pid`'s pidfd is readable: reports its status, then reaps it.
    fn report_exit(&self, pid: u32) -> io::Result<()> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pidfd) = children.get(&pid) else {
            return Ok(());
        };
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        let Some(status) =
            retry(|| rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options))?
        else {
            return Ok(());
        };
        let pidfd = children.remove(&pid).expect("looked up above");
        drop(children);
        self.send(
            &Reply::Exited {
                pid,
                status: wait_status(&status),
            },
            None,
        )?;
        let _ =
            retry(|| rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED));
        // Out of the set by hand: closing this copy would not do it (the
        // server holds another of the same file), and a reaped child's
        // pidfd stays readable.
        let _ = epoll::delete(&self.epoll, &pidfd);
        Ok(())
    }

    fn send(&self, reply: &Reply, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        datagram::send(self.socket.as_fd(), &reply.encode(), &fds)
    }
}

/// The wait status `waitpid` would have given (what
/// [`std::process::ExitStatus::from_raw`] takes), from `waitid`'s.
fn wait_status(status: &WaitIdStatus) -> i32 {
    let raw = if let Some(code) = status.exit_status() {
        std::process::ExitStatus::from_raw((code & 0xff) << 8)
    } else {
        let signal = status.terminating_signal().unwrap_or(0) & 0x7f;
        let core = if status.dumped() { 0x80 } else { 0 };
        std::process::ExitStatus::from_raw(signal | core)
    };
    raw.into_raw()
}

/// The spare capacity of `events` as epoll fills it.
fn spare(events: &mut Vec<epoll::Event>) -> rustix::buffer::SpareCapacity<'_, epoll::Event> {
    rustix::buffer::spare_capacity(events)
}
