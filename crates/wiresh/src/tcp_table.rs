//! The TCP sockets of this machine as the kernel lists them, in
//! `/proc/net/tcp` and `/proc/net/tcp6`: each socket's own and remote
//! address, its queues, the uid that opened it and its inode.
//!
//! The legacy listener asks it which local user a loopback peer is; tests
//! ask it whether a peer has read everything sent to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One line of the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The socket's own address.
    pub own: SocketAddr,
    /// The address it is connected to (all zeros when listening).
    pub remote: SocketAddr,
    /// Bytes sent and not yet acknowledged by the peer.
    pub send_queue: u64,
    /// Bytes received and not yet read by the socket's owner.
    pub receive_queue: u64,
    /// The uid that opened it. A socket its owner has closed, kept in
    /// time-wait, is listed with uid 0 whoever opened it (see `inode`).
    pub uid: u32,
    /// Its inode; 0 once no process holds it open any more.
    pub inode: u64,
}

impl TcpSocket {
    /// Whether this socket is the end at `own` of a connection to `remote`
    /// (IPv4 addresses match their IPv4-mapped IPv6 forms).
    pub fn connects(&self, own: SocketAddr, remote: SocketAddr) -> bool {
        let same = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
        };
        same(self.own, own) && same(self.remote, remote)
    }
}

/// Every TCP socket the kernel lists, IPv4 first; each table is read only
/// when the search gets to it.
pub fn sockets() -> impl Iterator<Item = TcpSocket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .into_iter()
        .flat_map(|table| match std::fs::read_to_string(table) {
            Ok(text) => parse(&text).collect(),
            Err(_) => Vec::new(),
        })
}

/// The sockets of a `/proc/net/tcp`-style table; lines that do not parse
/// are skipped.
pub(crate) fn parse(table: &str) -> impl Iterator<Item = TcpSocket> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (send_queue, receive_queue) = fields.get(4)?.split_once(':')?;
        Some(TcpSocket {
            own: parse_address(fields.get(1)?)?,
            remote: parse_address(fields.get(2)?)?,
            send_queue: u64::from_str_radix(send_queue, 16).ok()?,
            receive_queue: u64::from_str_radix(receive_queue, 16).ok()?,
            uid: fields.get(7)?.parse().ok()?,
            inode: fields.get(9)?.parse().ok()?,
        })
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
                     0: 0100007F:9B6D 0100007F:1F90 01 0000002A:00000010 00:00000000 00000000  1000 0 1\n\
                     1: garbage\n";
        let sockets: Vec<TcpSocket> = parse(table).collect();
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        let socket = sockets[0];
        assert_eq!((socket.send_queue, socket.receive_queue), (42, 16));
        assert_eq!((socket.uid, socket.inode), (1000, 1));
        if cfg!(target_endian = "little") {
            let own = "127.0.0.1:39789".parse().unwrap();
            let remote = "[::ffff:127.0.0.1]:8080".parse().unwrap();
            assert!(socket.connects(own, remote));
            assert!(!socket.connects(remote, own));
        }
    }

    #[test]
    fn lists_a_real_connection_with_its_queues() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        client.write_all(b"unread").unwrap();
        let local = listener.local_addr().unwrap();
        let server_end = sockets()
            .find(|s| s.connects(local, peer))
            .expect("the kernel lists the server's end");
        // Loopback delivers at once: the bytes wait in the receive queue.
        assert_eq!(server_end.receive_queue, 6);
        assert_ne!(server_end.inode, 0);
    }
}
