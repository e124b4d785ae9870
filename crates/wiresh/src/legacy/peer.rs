//! Which local user a loopback peer is: the kernel says which uid owns the
//! connecting socket, in `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! The legacy protocol has no authentication, and any local user can reach
//! a loopback port; knowing the peer's uid lets the legacy listener admit
//! only the user it runs commands as, and name the user in the audit log.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the socket at `peer` that is connected to `local` (a
/// socket of this machine), if the kernel lists it.
pub fn loopback_peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            find_uid(&text, local, peer)
        })
}

/// In a `/proc/net/tcp`-style table, the uid of the socket whose own
/// address is `peer` and whose remote address is `local`.
///
/// Only a socket some process still holds open counts (its inode, field 9,
/// is not 0). A socket its owner has closed is orphaned, and once its FIN is
/// acknowledged the kernel keeps it as a time-wait entry that it lists with
/// uid 0 whoever opened it: a local user could otherwise send a command,
/// close at once, and pass for root while the server reads the command.
fn find_uid(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let same = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let own = parse_address(fields.get(1)?)?;
        let remote = parse_address(fields.get(2)?)?;
        if !(same(own, peer) && same(remote, local)) {
            return None;
        }
        let inode: u64 = fields.get(9)?.parse().ok()?;
        (inode != 0).then(|| fields.get(7)?.parse().ok()).flatten()
    })
}

/// `0100007F:1F90` (or the 32-digit IPv6 form): the address words as the
/// kernel stores them, printed as native-endian numbers, then the port.
fn parse_address(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
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
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(loopback_peer_uid(local, peer), None);
    }

    #[test]
    fn parses_the_kernels_format() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_address("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().unwrap())
            );
            assert_eq!(
                parse_address("00000000000000000000000001000000:0016"),
                Some("[::1]:22".parse().unwrap())
            );
        }
        assert_eq!(parse_address("zz:1"), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n\
                     0: 0100007F:9B6D 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000 0 1\n\
                     1: 0100007F:9B6E 0100007F:1F90 05 00000000:00000000 03:0000176F 00000000     0 0 0 3\n";
        if cfg!(target_endian = "little") {
            let local = "127.0.0.1:8080".parse().unwrap();
            let peer = "127.0.0.1:39789".parse().unwrap();
            assert_eq!(find_uid(table, local, peer), Some(1000));
            assert_eq!(find_uid(table, peer, local), None);
            // A closed socket's time-wait entry (inode 0) says uid 0: nobody.
            let closed = "127.0.0.1:39790".parse().unwrap();
            assert_eq!(find_uid(table, local, closed), None);
        }
    }
}
