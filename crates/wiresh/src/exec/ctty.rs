//! How every command's process is set up between `fork` and `exec`: its
//! cgroup, its session, a pty's controlling terminal. The server's own
//! threads start commands with this hook; the spawn helper does the same
//! steps in its own start, which does not fork (`super::helper`'s
//! `vfork`). The crate's `unsafe` lives here (the hook, and
//! `close_range`, which no crate wraps) and there only.

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
/// first, and its children would be outside. (A `clone3` with
/// `CLONE_INTO_CGROUP` would need `unsafe` too, and no spawn of the
/// standard library's; a helper program exec'd in between would cost
/// a second `exec` per command.)
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
            close_inherited_on_exec();
            Ok(())
        });
    }
}

/// In a command's process before its `execve`: every descriptor above
/// stderr closes at the `execve`. What the server opens itself is
/// close-on-exec already; this is for what it inherited open (a shell's
/// `7<file`, a test runner's pipes, a service manager's descriptors),
/// which no command may reach. Marked rather than closed: the standard
/// library's spawn reports a failed `execve` through a descriptor of its
/// own. Best effort: a kernel before 5.11 refuses the flag, and the
/// descriptors stay as the server got them. One system call, safe between
/// `fork` and `execve` (and harmless anywhere: it only sets flags).
pub(crate) fn close_inherited_on_exec() {
    // SAFETY: `close_range(2)` takes plain integers and changes only the
    // flags in this process's descriptor table; no crate wraps it.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}
