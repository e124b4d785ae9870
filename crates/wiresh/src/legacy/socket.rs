//! Socket settings both ends of the legacy protocol need.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Turns on TCP keepalive with short timers. The legacy protocol is silent
/// while a command runs (the reply header needs the whole output first), so
/// without keepalive neither end could tell a long command from a peer
/// whose machine vanished; with it, a vanished peer is noticed in about a
/// minute. Failure only loses that detection, so it is ignored.
pub(crate) fn set_keepalive(socket: &tokio::net::TcpStream) {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = SockRef::from(socket).set_tcp_keepalive(&keepalive);
}
