//! How every command's process is set up between `fork` and `exec`: its
//! cgroup, its session, a pty's controlling terminal. The server's own
//! threads start commands with this hook; the spawn helper does the same
//! steps in its own start, which does not fork (`super::helper`'s
//! `vfork`, `clone3`). The crate's `unsafe` lives here and there (and in
//! `crate::syscall`'s `close_range`, which no crate wraps) only.

use std::ffi::CString;

/// What a command's process does before its program runs.
#[derive(Debug, Default)]
pub(crate) struct Setup {
    /// Make its stdin (a pty) its controlling terminal.
    pub terminal: bool,
    /// The `cgroup.procs` of its cgroup, to enter before anything runs.
    pub cgroup: Option<CString>,
}

/// Makes the command, in the child between `fork` and `exec`, enter its
/// cgroup (if it has one), lead a new session, and take its stdin as
/// its controlling terminal (if it runs on a pty).
///
/// The standard library can start a process group (`process_group`)
/// but not a session, nor put a process in a cgroup; only a `pre_exec`
/// hook can, and registering one is `unsafe` because the hook runs in
/// a forked child where only async-signal-safe calls are allowed. The
/// cgroup must be entered by the child itself, before its program
/// runs: moved by the parent after the spawn, the program could fork
/// first, and its children would be outside. (The spawn helper creates
/// its children in their cgroups instead, by `clone3` with
/// `CLONE_INTO_CGROUP`, which no spawn of the standard library's can.)
pub(crate) fn prepare(cmd: &mut std::process::Command, setup: Setup) {
    use std::os::unix::process::CommandExt;
    let Setup { terminal, cgroup } = setup;
    // SAFETY: the hook makes system calls only, directly through
    // rustix: open(2) of a path prepared before the fork (no
    // allocation), write(2), close(2), setsid(2) and ioctl(TIOCSCTTY);
    // nothing that allocates, takes a lock or touches memory shared
    // with the parent. The standard library has already put the pty (or
    // the pipes) on fds 0, 1 and 2 when hooks run, and the child is not
    // a process group leader (no `process_group` is set), so setsid
    // succeeds.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &cgroup {
                let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC;
                let file = rustix::fs::open(procs.as_c_str(), flags, rustix::fs::Mode::empty())?;
                // `0` is the writer itself.
                rustix::io::write(&file, b"0")?;
            }
            rustix::process::setsid()?;
            if terminal {
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            }
            crate::syscall::close_inherited_on_exec();
            Ok(())
        });
    }
}
