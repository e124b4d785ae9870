//! System calls as the rest of the crate wants them: restarted when a
//! signal interrupts them, errors as `std::io::Error`.

use std::io;
use std::os::fd::AsFd;

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

/// Writes all of `bytes` to `fd` with `write(2)`, no buffer between.
pub(crate) fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match retry(|| rustix::io::write(&fd, bytes))? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => bytes = &bytes[n..],
        }
    }
    Ok(())
}
