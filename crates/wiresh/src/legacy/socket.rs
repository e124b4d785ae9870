//! Socket settings both ends of the legacy protocol need.

use socket2::{SockRef, TcpKeepalive};

use crate::defaults::{LEGACY_KEEPALIVE_IDLE, LEGACY_KEEPALIVE_INTERVAL, LEGACY_KEEPALIVE_PROBES};

/// Turns on TCP keepalive with short timers. The legacy protocol is silent
/// while a command runs (the reply header needs the whole output first), so
/// without keepalive neither end could tell a long command from a peer
/// whose machine vanished; with it, a vanished peer is noticed in about a
/// minute. Failure only loses that detection, so it is ignored.
pub(crate) fn set_keepalive(socket: &tokio::net::TcpStream) {
    let keepalive = TcpKeepalive::new()
        .with_time(LEGACY_KEEPALIVE_IDLE)
        .with_interval(LEGACY_KEEPALIVE_INTERVAL)
        .with_retries(LEGACY_KEEPALIVE_PROBES);
    let _ = SockRef::from(socket).set_tcp_keepalive(&keepalive);
}
