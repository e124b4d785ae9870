//! System calls as the rest of the crate wants them: restarted when a
//! signal interrupts them, errors as `std::io::Error`.

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
