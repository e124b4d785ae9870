//! The spawn helper process itself: one thread, no runtime, a short
//! descriptor table and a small address space. It starts what the server
//! asks for, with the server's own `pre_exec` hook (`super::super::ctty`),
//! and tells it when each command exits.
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
use std::process::{Command, ExitCode, Stdio};

use rustix::event::epoll;
use rustix::net::SocketType;
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus, WaitOptions};

use super::datagram;
use super::wire::{Reply, SpawnRequest, Stdio as Streams, MAX_REQUEST};
use crate::exec::ctty::{self, Setup};
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
    let mut helper = Helper {
        socket,
        epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        children: HashMap::new(),
        buffer: vec![0; MAX_REQUEST],
    };
    epoll::add(
        &helper.epoll,
        &helper.socket,
        epoll::EventData::new_u64(SOCKET),
        epoll::EventFlags::IN,
    )?;
    helper.send(&Reply::Ready, None)?;
    helper.run()
}

struct Helper {
    socket: OwnedFd,
    epoll: OwnedFd,
    /// The commands started and not yet reaped, by pid.
    children: HashMap<u32, OwnedFd>,
    /// Where requests are received: [`MAX_REQUEST`] bytes, once.
    buffer: Vec<u8>,
}

impl Helper {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Vec::with_capacity(64);
        loop {
            events.clear();
            retry(|| epoll::wait(&self.epoll, spare(&mut events), None))?;
            for event in &events {
                match event.data.u64() {
                    SOCKET => {
                        if !self.serve_request()? {
                            return Ok(());
                        }
                    }
                    pid => self.report_exit(pid as u32)?,
                }
            }
        }
    }

    /// Takes one request and answers it; `false` once the server is gone.
    fn serve_request(&mut self) -> io::Result<bool> {
        let received = datagram::receive(self.socket.as_fd(), &mut self.buffer)?;
        if received.len == 0 {
            return Ok(false);
        }
        let (cut, fds) = (received.cut || received.fds_cut, received.fds);
        let reply = match SpawnRequest::decode(&self.buffer[..received.len]) {
            _ if cut => Err(io::Error::other("a spawn request over the size limit")),
            Ok(request) if request.stdio.descriptors() != fds.len() => Err(io::Error::other(
                format!("a spawn request with {} descriptors", fds.len()),
            )),
            Ok(request) => self.start(request, fds),
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        match reply {
            Ok((pid, pidfd)) => self.send(&Reply::Started { pid }, Some(pidfd.as_fd()))?,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                let text = e.to_string();
                self.send(&Reply::Failed { errno, text }, None)?;
            }
        }
        Ok(true)
    }

    /// Starts the command as the server would have; its pid and a pidfd.
    fn start(&mut self, request: SpawnRequest, fds: Vec<OwnedFd>) -> io::Result<(u32, OwnedFd)> {
        let mut cmd: Command = request.command.std_command();
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("counted");
        let terminal = match request.stdio {
            Streams::Pipes { stdin } => {
                let input = if stdin { next().into() } else { Stdio::null() };
                cmd.stdin(input).stdout(next()).stderr(next());
                false
            }
            Streams::Terminal => {
                let tty = next();
                cmd.stdin(tty.try_clone()?)
                    .stdout(tty.try_clone()?)
                    .stderr(tty);
                true
            }
        };
        let cgroup = match request.cgroup {
            Some(path) => Some(CString::new(path).map_err(io::Error::other)?),
            None => None,
        };
        ctty::prepare(&mut cmd, Setup { terminal, cgroup });
        let child = cmd.spawn()?;
        // The descriptors given to the child close here with `cmd`.
        drop(cmd);
        let pid = child.id();
        let pidfd = Pid::from_raw(pid as i32)
            .ok_or_else(|| io::Error::other("pid 0"))
            .and_then(|p| Ok(rustix::process::pidfd_open(p, PidfdFlags::empty())?));
        let pidfd = match pidfd {
            Ok(pidfd) => pidfd,
            Err(e) => {
                // Unwatchable: it must not run on unseen.
                let _ = rustix::process::kill_process_group(
                    Pid::from_raw(pid as i32).expect("not 0"),
                    rustix::process::Signal::KILL,
                );
                let _ = retry(|| {
                    rustix::process::waitpid(Pid::from_raw(pid as i32), WaitOptions::empty())
                });
                return Err(e);
            }
        };
        let key = epoll::EventData::new_u64(pid.into());
        epoll::add(&self.epoll, &pidfd, key, epoll::EventFlags::IN)?;
        let server_copy = pidfd.try_clone()?;
        self.children.insert(pid, pidfd);
        Ok((pid, server_copy))
    }

    /// Child `pid`'s pidfd is readable: reports its status, then reaps it.
    fn report_exit(&mut self, pid: u32) -> io::Result<()> {
        let Some(pidfd) = self.children.get(&pid) else {
            return Ok(());
        };
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        let Some(status) =
            retry(|| rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options))?
        else {
            return Ok(());
        };
        self.send(
            &Reply::Exited {
                pid,
                status: wait_status(&status),
            },
            None,
        )?;
        let _ =
            retry(|| rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED));
        let _ = epoll::delete(&self.epoll, pidfd);
        self.children.remove(&pid);
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
