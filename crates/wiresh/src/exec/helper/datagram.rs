//! One message between the server and its helper: a `SOCK_SEQPACKET`
//! datagram, sent or received whole, with descriptors beside it
//! (`SCM_RIGHTS`), which arrive close-on-exec.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::syscall::retry;

/// The most descriptors one message carries: a command's stdin, stdout
/// and stderr.
const MAX_FDS: usize = 3;

/// A datagram as it was received.
pub(super) struct Received {
    /// How many bytes of the buffer it filled; 0 when the peer is gone.
    pub len: usize,
    /// Longer than the buffer: what is in it was cut short.
    pub cut: bool,
    /// Some of its descriptors could not be taken (too many, or no room
    /// in this process's table); the others are in `fds`.
    pub fds_cut: bool,
    pub fds: Vec<OwnedFd>,
}

/// Sends `bytes` with `fds` beside them: all or nothing.
pub(super) fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_with(socket, bytes, fds, SendFlags::empty())
}

/// Sends as [`send`] if the peer's queue has room now; `WouldBlock` if
/// not (nothing is sent then).
pub(super) fn send_now(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    send_with(socket, bytes, fds, SendFlags::DONTWAIT)
}

fn send_with(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let iov = [IoSlice::new(bytes)];
    retry(|| rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL | flags))?;
    Ok(())
}

/// Receives one datagram into `buffer`, waiting for it.
pub(super) fn receive(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<Received> {
    receive_with(socket, buffer, RecvFlags::empty())
}

/// Receives one datagram into `buffer` if one is there; `WouldBlock` if
/// none is (the socket itself stays blocking, for the senders).
pub(super) fn receive_now(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<Received> {
    receive_with(socket, buffer, RecvFlags::DONTWAIT)
}

fn receive_with(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    flags: RecvFlags,
) -> io::Result<Received> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = retry(|| {
        rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | flags,
        )
    })?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    Ok(Received {
        len: received.bytes,
        cut: received.flags.contains(ReturnFlags::TRUNC),
        fds_cut: received.flags.contains(ReturnFlags::CTRUNC),
        fds,
    })
}
