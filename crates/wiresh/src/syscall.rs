//! System calls as the rest of the crate wants them: restarted when a
//! signal interrupts them, errors as `std::io::Error`; and the one no
//! crate wraps, `close_range(2)`.

use std::io;
use std::os::fd::AsFd;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

/// Runs `call` again while a signal interrupts it.
pub(crate) fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Writes all of `bytes` to `fd` with `write(2)`, no buffer between. A
/// descriptor another program made non-blocking (rsync does so to the
/// stdout of the `wiresh exec` it runs) is waited on when full, never
/// taken for closed.
pub(crate) fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match retry(|| rustix::io::write(&fd, bytes)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
                // A hang-up or an error counts as ready: the next write says which.
                retry(|| rustix::event::poll(&mut fds, None))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so that no program
/// this process starts from now on gets one: what the process opened
/// itself is close-on-exec already; this is for what it inherited open (a
/// shell's `7<file` or `9>lock`, a `$(...)` pipe, a test runner's pipes,
/// a service manager's descriptors). A command's process calls it before
/// its `execve` (nothing the server inherited may reach a command), the
/// client before it starts a master (which outlives it, and would hold a
/// script's lock or pipe open). Marked rather than closed: the process
/// may still use them, and the standard library's spawn reports a failed
/// `execve` through a descriptor of its own. Best effort: a kernel before
/// 5.11 refuses the flag, and the descriptors stay as they were. One
/// system call, safe between `fork` and `execve`.
pub(crate) fn close_inherited_on_exec() {
    // SAFETY: `close_range(2)` takes plain integers and only sets flags in
    // this process's descriptor table; no crate wraps it.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_full_non_blocking_descriptor_is_waited_on() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        rustix::io::ioctl_fionbio(&write, true).unwrap();
        // Far more than a pipe holds: the writer finds it full many times.
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(read).read_to_end(&mut got).unwrap();
            got
        });
        write_all(&write, &data).unwrap();
        drop(write);
        assert!(reader.join().unwrap() == data);
    }
}
