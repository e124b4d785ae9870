//! Which local user a loopback peer is: the kernel says which uid owns the
//! connecting socket, in `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! The legacy protocol has no authentication, and any local user can reach
//! a loopback port; knowing the peer's uid lets the legacy listener admit
//! only the user it runs commands as, and name the user in the audit log.

use std::net::SocketAddr;

use crate::tcp_table::{self, TcpSocket};

/// The uid owning the socket at `peer` that is connected to `local` (a
/// socket of this machine), if the kernel lists it.
pub fn loopback_peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    owner(tcp_table::sockets(), local, peer)
}

/// Among `sockets`, the uid of the one whose own address is `peer` and
/// whose remote address is `local`.
///
/// Only a socket some process still holds open counts (its inode is not
/// 0). A socket its owner has closed is orphaned, and once its FIN is
/// acknowledged the kernel keeps it as a time-wait entry that it lists with
/// uid 0 whoever opened it: a local user could otherwise send a command,
/// close at once, and pass for root while the server reads the command.
fn owner(
    mut sockets: impl Iterator<Item = TcpSocket>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<u32> {
    sockets
        .find(|s| s.connects(peer, local) && s.inode != 0)
        .map(|s| s.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        let local = listener.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = loopback_peer_uid(local, peer).expect("the kernel lists the socket");
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
        // A peer that is not connected here is not found.
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(loopback_peer_uid(local, elsewhere), None);
    }

    /// A peer that sent its bytes and closed at once is no longer anyone's
    /// socket: the kernel lists what is left of it with uid 0 (as if root
    /// had opened it), so it must not be taken for anyone, root least of all.
    #[test]
    fn a_closed_peer_is_nobody_not_root() {
        use std::io::{Read, Write};
        use std::time::{Duration, Instant};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(local).unwrap();
        let (mut server_side, peer) = listener.accept().unwrap();
        client.write_all(b"id").unwrap();
        drop(client);
        // The client's FIN has arrived (and been acknowledged) once the
        // server side reads end of file after the command.
        let mut got = Vec::new();
        server_side.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"id");
        // The kernel's table lists the peer's socket as closed (no process
        // holds it: inode 0) once it has caught up; wait for that, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let orphaned = || tcp_table::sockets().any(|s| s.connects(peer, local) && s.inode == 0);
        while !orphaned() {
            assert!(
                Instant::now() < deadline,
                "the table never listed the closed socket"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(loopback_peer_uid(local, peer), None);
    }

    #[test]
    fn a_time_wait_entry_is_nobody() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n\
                     0: 0100007F:9B6D 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000 0 1\n\
                     1: 0100007F:9B6E 0100007F:1F90 05 00000000:00000000 03:0000176F 00000000     0 0 0 3\n";
        if cfg!(target_endian = "little") {
            let local = "127.0.0.1:8080".parse().unwrap();
            let peer = "127.0.0.1:39789".parse().unwrap();
            let owner_in = |local, peer| owner(tcp_table::parse(table), local, peer);
            assert_eq!(owner_in(local, peer), Some(1000));
            assert_eq!(owner_in(peer, local), None);
            // A closed socket's time-wait entry (inode 0) says uid 0: nobody.
            let closed = "127.0.0.1:39790".parse().unwrap();
            assert_eq!(owner_in(local, closed), None);
        }
    }
}
