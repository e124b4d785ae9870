//! `clone3(2)` for the helper's start: the child shares the helper's
//! memory and runs on a stack of its own, as with `clone(2)` through
//! glibc (`nix::sched::clone`), and is created in the command's cgroup
//! (`CLONE_INTO_CGROUP`) instead of moving itself there.
//!
//! Why: moving a process into a cgroup (a write to `cgroup.procs`) takes
//! the cgroup core's thread-group lock for writing, which waits for an
//! RCU grace period unless another move came just before it. Measured
//! here (2-core VM, Linux 6.18): 16 ms for the first command after 50 ms
//! of quiet, so a `wiresh exec` typed by hand took 20-29 ms against
//! 7-9 ms with `--no-cgroup`; back to back 55-90 µs, p90 280 µs. A
//! process created in its cgroup takes that lock for reading only.
//!
//! No crate wraps `clone3` with a child function, and glibc 2.36 exports
//! none, so the call is a few instructions of assembly: the child starts
//! on its own stack and must never return into the helper's frames,
//! whose memory it shares. x86_64 only; elsewhere, and where the kernel
//! lacks it (before 5.7, or `clone3` filtered out), the child enters its
//! cgroup itself as before ([`unsupported`] tells the caller to).

use std::io;
use std::os::fd::BorrowedFd;

/// What the helper says (on the server's stderr) when it turns to moving
/// commands into their cgroups, for operators and tests.
pub(super) const REFUSED: &str =
    "wiresh spawn helper: the kernel creates no process in a cgroup (clone3 with \
     CLONE_INTO_CGROUP); commands move into their cgroups instead, which can wait for the \
     kernel";

/// What the child runs; its return value is its exit status.
pub(super) type ChildFn<'a> = dyn FnMut() -> isize + 'a;

/// Whether `error` from [`vfork_into_cgroup`] means this kernel (or
/// build) cannot start a child that way at all: no `clone3` (`ENOSYS`;
/// container seccomp profiles answer that, older ones `EPERM`, which no
/// cgroup check gives), or no `CLONE_INTO_CGROUP` (`E2BIG` for the
/// larger argument struct, `EINVAL` for the flag).
pub(super) fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::ENOSYS | nix::libc::EPERM | nix::libc::E2BIG | nix::libc::EINVAL)
    )
}

/// Starts `child` in a new process that shares this one's memory
/// (`CLONE_VM`), runs on `stack` and starts in the cgroup `cgroup` (a
/// cgroup v2 directory), while this thread waits until the child calls
/// `execve` or exits (`CLONE_VFORK`); the child's pid. The child exits
/// with what `child` returns.
///
/// # Safety
/// As for `nix::sched::clone` with `CLONE_VM | CLONE_VFORK`: `child`
/// runs on this process's memory while this thread waits, so it may
/// only make system calls (no allocation, no lock, no unwinding), with
/// every signal blocked in this thread; nothing else may use `stack`
/// meanwhile.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn vfork_into_cgroup(
    child: &mut ChildFn<'_>,
    stack: &mut [u8],
    cgroup: BorrowedFd<'_>,
) -> io::Result<i32> {
    use linux_raw_sys::general::{clone_args, CLONE_INTO_CGROUP, CLONE_VFORK, CLONE_VM};
    use std::os::fd::AsRawFd;

    debug_assert!(
        stack.len() >= 4096,
        "a child stack of {} bytes",
        stack.len()
    );
    let base = stack.as_mut_ptr() as u64;
    // The ABI wants the stack 16-byte aligned at the child's `call`.
    let top = (base + stack.len() as u64) & !15;
    let args = clone_args {
        flags: u64::from(CLONE_VM | CLONE_VFORK) | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: nix::libc::SIGCHLD as u64,
        stack: base,
        stack_size: top - base,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // The child gets a thin pointer to this (fat) one, on this stack,
    // which stays put while this thread waits.
    let mut child = child;
    let child_arg = std::ptr::addr_of_mut!(child).cast::<std::ffi::c_void>();
    let result: i64;
    // SAFETY: `clone3` returns twice. This thread (rax = the child's pid,
    // or -errno) goes on past label 2 with every register but rax, rcx
    // and r11 as they were, which the operands say. The child (rax = 0)
    // starts with rsp at the top of `stack` (the kernel sets it from
    // `args`), ends the frame chain (rbp 0, as glibc's `clone` does, so
    // that a stack walker stops there), calls `run_child(child_arg)`,
    // which never returns, and so never touches this thread's frames.
    // `args` outlives the call.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call {run_child}",
            "ud2",
            "2:",
            inlateout("rax") nix::libc::SYS_clone3 => result,
            in("rdi") std::ptr::addr_of!(args),
            in("rsi") std::mem::size_of::<clone_args>(),
            in("r12") child_arg,
            lateout("rcx") _,
            lateout("r11") _,
            run_child = sym run_child,
            options(nostack),
        );
    }
    match result {
        pid @ 1.. => Ok(pid as i32),
        errno => Err(io::Error::from_raw_os_error(-errno as i32)),
    }
}

/// Not on this architecture: the caller starts the child the old way.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn vfork_into_cgroup(
    _child: &mut ChildFn<'_>,
    _stack: &mut [u8],
    _cgroup: BorrowedFd<'_>,
) -> io::Result<i32> {
    Err(io::Error::from_raw_os_error(nix::libc::ENOSYS))
}

/// In the child, on its own stack: runs the child function and exits
/// with its value, without running anything of the helper's (no
/// `atexit` handler, no flush).
#[cfg(target_arch = "x86_64")]
extern "C" fn run_child(child: *mut std::ffi::c_void) -> ! {
    // SAFETY: `child` points to the `&mut ChildFn` of `vfork_into_cgroup`,
    // alive while the parent waits; `_exit` only ends this process.
    unsafe {
        let child = &mut *child.cast::<&mut ChildFn<'_>>();
        nix::libc::_exit(child() as i32)
    }
}
