//! How the helper starts a command: as glibc's `posix_spawn` does, the
//! child shares the helper's memory (`CLONE_VM`) and the starting thread
//! waits until the child has called `execve` or failed (`CLONE_VFORK`).
//!
//! Why not `fork` (the standard library's spawn with a `pre_exec` hook):
//! a fork copies the page tables of everything the helper has written
//! to, and then the child and the helper's other threads take
//! copy-on-write faults, 0.17 ms more per command than a shared-memory
//! start from a 1 MiB process here, 0.5 ms from a 20 MiB one: a large
//! share of a short command's round trip. Why not `posix_spawn`: it
//! cannot take a controlling terminal by `TIOCSCTTY`, nor enter a cgroup
//! before the program runs (glibc's `posix_spawnattr_setcgroup_np` is
//! newer than the distributions the server runs on); see
//! `super::super::ctty` for why the child must enter its cgroup itself.
//!
//! The child is created in its cgroup where the kernel can
//! (`super::clone3`); elsewhere it enters it first. Then it does what
//! the standard library and the `ctty` hook do between `fork` and
//! `exec`: a new session, its stdio, the controlling terminal, its
//! working directory, signals back to their defaults, inherited
//! descriptors closed at `execve`, then `execve` (and, for a file
//! without a `#!` line, `/bin/sh FILE ARGS...` as `execvp` does).
//! Everything it needs is built before the clone: in the child nothing
//! allocates, takes a lock or unwinds.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use rustix::io::Errno;

use super::clone3;
use crate::exec::ctty::Setup;
use crate::exec::spec::Resolved;
use crate::syscall::{close_inherited_on_exec, retry};

/// The child's stack, owned by the starting thread and reused. The child
/// runs a few system calls on it before `execve`; glibc's own spawn
/// allocates 32 KiB plus the size of the arguments, which it copies
/// there (these are built on the heap beforehand instead).
pub(super) const CHILD_STACK: usize = 64 * 1024;

/// Where the command's standard streams come from; `None` keeps the
/// helper's own (its stdin is `/dev/null`).
pub(super) struct Streams<'a> {
    pub stdin: Option<BorrowedFd<'a>>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

impl<'a> Streams<'a> {
    /// The streams on these descriptors.
    pub fn of(stdin: Option<&'a OwnedFd>, stdout: &'a OwnedFd, stderr: &'a OwnedFd) -> Self {
        Streams {
            stdin: stdin.map(AsFd::as_fd),
            stdout: stdout.as_fd(),
            stderr: stderr.as_fd(),
        }
    }
}

/// A command ready to start: every string and pointer array its `execve`
/// and set-up need.
struct Prepared<'a> {
    program: CString,
    argv: Pointers,
    /// `/bin/sh PROGRAM ARGS...`, for a file `execve` cannot run itself:
    /// pointers into `program` and `argv`'s strings.
    script_argv: Vec<*const libc::c_char>,
    envp: Pointers,
    cwd: Option<CString>,
    cgroup: Option<&'a CString>,
    terminal: bool,
    streams: Streams<'a>,
}

/// A null-terminated array of pointers into the strings it owns.
struct Pointers {
    _strings: Vec<CString>,
    pointers: Vec<*const libc::c_char>,
}

impl Pointers {
    fn new(strings: Vec<CString>) -> Pointers {
        let mut pointers: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        Pointers {
            _strings: strings,
            pointers,
        }
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.pointers.as_ptr()
    }
}

/// Starts `command` on `streams` as `setup` says, using `stack` as the
/// child's stack; its pid once it runs its program. The child has exited
/// (and is reaped) when this fails.
pub(super) fn start(
    command: &Resolved,
    streams: Streams<'_>,
    setup: &Setup,
    stack: &mut [u8],
) -> io::Result<u32> {
    let prepared = Prepared::new(command, streams, setup)?;
    // The cgroup to create the child in, where it can be (`clone3`).
    let cgroup = prepared
        .cgroup
        .filter(|_| INTO_CGROUP.load(Ordering::Relaxed))
        .and_then(|procs| cgroup_dir(procs).ok());
    let failure = AtomicI32::new(0);
    // No handler of the helper's may run in the child, which shares its
    // memory: signals stay blocked there until their dispositions are
    // back to the defaults. (glibc keeps its two internal signals, 32 and
    // 33, deliverable; it installs no handler of its own for them that a
    // stray one would run, as in its own `posix_spawn`.)
    let mut mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut mask),
    )?;
    let cloned = clone_child(&prepared, &failure, stack, cgroup.as_ref().map(AsFd::as_fd));
    // Cannot fail with a mask this thread had (and a child started must
    // be answered for whatever happens here).
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
    let pid = cloned?;
    match failure.load(Ordering::SeqCst) {
        0 => Ok(pid as u32),
        errno => {
            // Exited already: reaped so that no zombie stays.
            let pid = rustix::process::Pid::from_raw(pid);
            let _ = retry(|| rustix::process::waitpid(pid, rustix::process::WaitOptions::empty()));
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Whether children can be created in their cgroups (`clone3` with
/// `CLONE_INTO_CGROUP`); cleared for good the first time the kernel says
/// it cannot.
static INTO_CGROUP: AtomicBool = AtomicBool::new(true);

/// Clones the child that becomes `prepared`'s command, into `cgroup`
/// when given and the kernel can, else entering its cgroup itself; its
/// pid. Signals are blocked.
fn clone_child(
    prepared: &Prepared<'_>,
    failure: &AtomicI32,
    stack: &mut [u8],
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<i32> {
    if let Some(cgroup) = cgroup {
        let mut child = || {
            failure.store(prepared.become_command(false), Ordering::SeqCst);
            127
        };
        // SAFETY: as below; the child starts in its cgroup already.
        match unsafe { clone3::vfork_into_cgroup(&mut child, stack, cgroup) } {
            Ok(pid) => return Ok(pid),
            Err(e) if clone3::unsupported(&e) => {
                INTO_CGROUP.store(false, Ordering::Relaxed);
                // Once: on the server's stderr, beside its log (which
                // may be gone: no `eprintln!`, which would panic).
                let _ = writeln!(io::stderr(), "{}: {e}", clone3::REFUSED);
            }
            // No child: cloned as below, whose own move into the cgroup
            // fails (or not) as a command's start always did, with the
            // error the server has always reported.
            Err(_) => {}
        }
    }
    let child = Box::new(|| {
        failure.store(prepared.become_command(true), Ordering::SeqCst);
        // Returning ends the child at once (`clone` calls exit(2) with
        // it): no handler runs, nothing of the helper's is flushed.
        127
    });
    // SAFETY: the child shares this process's memory and runs until it
    // calls `execve` or returns while this thread waits (`CLONE_VFORK`),
    // with signals blocked (see [`start`]). It only reads `prepared`
    // (alive until this thread goes on), stores into `failure`, and makes
    // system calls (`become_command`): it allocates nothing, takes no
    // lock and cannot panic, so it leaves no state of the helper's
    // half-changed. It runs on `stack`, which nothing else uses meanwhile
    // and is far larger than the few frames it needs.
    let cloned = unsafe {
        nix::sched::clone(
            child,
            stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    Ok(cloned?.as_raw())
}

/// The cgroup directory of a `cgroup.procs` path, opened for `clone3`.
fn cgroup_dir(procs: &CString) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let procs = Path::new(OsStr::from_bytes(procs.as_bytes()));
    let dir = procs.parent().unwrap_or(Path::new("/"));
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

impl<'a> Prepared<'a> {
    fn new(command: &Resolved, streams: Streams<'a>, setup: &'a Setup) -> io::Result<Self> {
        let program = c_string(command.program.as_os_str())?;
        let mut argv = vec![c_string(&command.arg0)?];
        for arg in &command.args {
            argv.push(c_string(arg)?);
        }
        let argv = Pointers::new(argv);
        // The null that ends `argv` ends this too.
        let mut script_argv = vec![c"/bin/sh".as_ptr(), program.as_ptr()];
        script_argv.extend_from_slice(&argv.pointers[1..]);
        Ok(Prepared {
            program,
            argv,
            script_argv,
            envp: Pointers::new(environment(command)?),
            cwd: command
                .cwd
                .as_deref()
                .map(|d| c_string(d.as_os_str()))
                .transpose()?,
            cgroup: setup.cgroup.as_ref(),
            terminal: setup.terminal,
            streams,
        })
    }

    /// In the child: becomes the command, entering its cgroup first when
    /// `enter_cgroup` (else it was created there); returns only why it
    /// could not (an errno). System calls only (see [`start`]).
    fn become_command(&self, enter_cgroup: bool) -> i32 {
        match self.set_up(enter_cgroup) {
            Ok(()) => self.exec(),
            Err(errno) => errno.raw_os_error(),
        }
    }

    /// In the child: its cgroup (when it must enter it), its session, its
    /// stdio, its terminal, its working directory.
    fn set_up(&self, enter_cgroup: bool) -> Result<(), Errno> {
        use rustix::fs::{Mode, OFlags};
        use rustix::stdio::{dup2_stderr, dup2_stdin, dup2_stdout};
        if let Some(procs) = self.cgroup.filter(|_| enter_cgroup) {
            let flags = OFlags::WRONLY | OFlags::CLOEXEC;
            let file = rustix::fs::open(procs.as_c_str(), flags, Mode::empty())?;
            // `0` is the writer itself.
            rustix::io::write(&file, b"0")?;
        }
        rustix::process::setsid()?;
        if let Some(stdin) = self.streams.stdin {
            onto(stdin, 0, |fd| dup2_stdin(fd))?;
        }
        onto(self.streams.stdout, 1, |fd| dup2_stdout(fd))?;
        onto(self.streams.stderr, 2, |fd| dup2_stderr(fd))?;
        if self.terminal {
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
        }
        if let Some(dir) = &self.cwd {
            rustix::process::chdir(dir.as_c_str())?;
        }
        Ok(())
    }

    /// In the child, last: signals back to what a program starts with,
    /// then its `execve`; why that failed.
    ///
    /// Every signal the helper handles goes back to its default (a handler
    /// would run on the helper's memory), and `SIGPIPE` too, which the
    /// standard library ignores in every Rust program: the command must
    /// die of a broken pipe as it would anywhere. Then nothing is blocked,
    /// as in the standard library's children, and nothing but the three
    /// streams stays open (see `close_inherited_on_exec`).
    fn exec(&self) -> i32 {
        // SAFETY: system calls only. `sigaction` changes the child's own
        // copy of the signal table (no `CLONE_SIGHAND`), `action` is plain
        // data; the pointer arrays given to `execve` are null-terminated
        // and point into strings `self` owns (or the static `/bin/sh`).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            for signal in 1..=libc::SIGRTMAX() {
                if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                    continue; // not a signal a program may handle
                }
                let handler = action.sa_sigaction;
                if (handler != libc::SIG_DFL && handler != libc::SIG_IGN) || signal == libc::SIGPIPE
                {
                    action.sa_sigaction = libc::SIG_DFL;
                    action.sa_flags = 0;
                    libc::sigaction(signal, &action, std::ptr::null_mut());
                }
            }
            let nothing = SigSet::empty();
            libc::sigprocmask(libc::SIG_SETMASK, nothing.as_ref(), std::ptr::null_mut());
            close_inherited_on_exec();
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            if *libc::__errno_location() == libc::ENOEXEC {
                let shell = self.script_argv.as_ptr();
                libc::execve(c"/bin/sh".as_ptr(), shell, self.envp.as_ptr());
            }
            // Never 0 after a failed `execve`; if it were, still a failure.
            match *libc::__errno_location() {
                0 => libc::ECHILD,
                errno => errno,
            }
        }
    }
}

/// In the child: `source` becomes standard stream `target` (`dup2`), or,
/// already there, stays open across `execve` (a `dup2` onto itself would
/// leave it close-on-exec).
fn onto(
    source: BorrowedFd<'_>,
    target: i32,
    dup2: fn(BorrowedFd<'_>) -> rustix::io::Result<()>,
) -> Result<(), Errno> {
    match source.as_raw_fd() == target {
        true => rustix::io::fcntl_setfd(source, rustix::io::FdFlags::empty()),
        false => dup2(source),
    }
}

/// `KEY=VALUE` for each variable the command starts with: the helper's
/// own (the server's) unless the command's environment starts empty, then
/// the command's, a later one winning. As the standard library does, the
/// helper's own are passed in their order when nothing changes them, and
/// sorted by name otherwise.
fn environment(command: &Resolved) -> io::Result<Vec<CString>> {
    let vars: Vec<(OsString, OsString)> = match (command.clear_env, command.env.is_empty()) {
        (false, true) => std::env::vars_os().collect(),
        (clear, _) => {
            let mut vars: BTreeMap<OsString, OsString> = match clear {
                true => BTreeMap::new(),
                false => std::env::vars_os().collect(),
            };
            for (key, value) in &command.env {
                vars.insert(key.clone(), value.clone());
            }
            vars.into_iter().collect()
        }
    };
    vars.iter()
        .map(|(key, value)| {
            let mut pair = Vec::with_capacity(key.len() + value.len() + 1);
            pair.extend_from_slice(key.as_bytes());
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            c_string(OsStr::from_bytes(&pair))
        })
        .collect()
}

/// `text` as a C string; one with a NUL byte is refused, as the standard
/// library refuses it (in its words).
fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}
