//! The legacy protocol of `shared/legacy`, at both ends.
//!
//! wiresh grew from a Python server and client (`server.py`, `client.py`);
//! scripts and habits built on them keep working because wiresh speaks
//! their protocol byte for byte: [`server`] serves the original client,
//! [`client`] talks to the original server. The format itself is in
//! [`wiresh_proto::legacy`]; `docs/PROTOCOL.md` describes it and its flaws.
//!
//! Wherever the protocol leaves room, wiresh does better than the original:
//! connections are served concurrently, `md5` is the real digest of the
//! payload, large outputs are spooled to disk instead of held in memory,
//! commands get a timeout and die with their whole process group when the
//! client goes away, and replies are not delayed by Nagle's algorithm.
//!
//! The protocol has no authentication, so [`check_legacy_bind`] keeps the
//! legacy listener on loopback unless the operator explicitly opts out.

pub mod client;
pub mod encoding;
mod peer;
pub mod server;
mod socket;
mod spool;

use std::net::SocketAddr;

use tracing::warn;

use crate::error::SetupError;

pub use client::{LegacyClient, LegacyError, LegacyReply};
pub use server::LegacyServerConfig;
pub use wiresh_proto::legacy::DEFAULT_LEGACY_PORT;

/// Name of the command-line flag that allows a non-loopback legacy
/// listener; quoted in the refusal so the operator knows what to pass.
pub const ALLOW_REMOTE_FLAG: &str = "--legacy-allow-insecure-remote";

/// Checks that the legacy listener may bind to `addr`.
///
/// Anyone who can connect to a legacy listener can run any command as the
/// server's user — the protocol has no authentication at all — so only
/// loopback addresses are allowed, unless `allow_remote` (the operator
/// passed [`ALLOW_REMOTE_FLAG`]); then this logs a warning and allows it.
pub fn check_legacy_bind(addr: SocketAddr, allow_remote: bool) -> Result<(), SetupError> {
    // `::ffff:127.0.0.1` is loopback too, though `Ipv6Addr::is_loopback` says no.
    if addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    if allow_remote {
        warn!(
            %addr,
            "legacy listener on a non-loopback address: the legacy protocol has NO authentication; \
             anyone who can reach {addr} can run any command as this user"
        );
        return Ok(());
    }
    Err(SetupError::Config(format!(
        "refusing to serve the legacy protocol on {addr}: it has no authentication, so anyone who \
         can reach that address could run any command as this user. Listen on a loopback address \
         (such as 127.0.0.1:{DEFAULT_LEGACY_PORT}), or, only on a network you trust completely, \
         pass {ALLOW_REMOTE_FLAG}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_allowed() {
        for addr in [
            "127.0.0.1:8090",
            "127.1.2.3:0",
            "[::1]:8090",
            "[::ffff:127.0.0.1]:1",
        ] {
            check_legacy_bind(addr.parse().unwrap(), false).unwrap();
        }
    }

    #[test]
    fn other_addresses_need_the_flag() {
        for addr in [
            "0.0.0.0:8090",
            "[::]:8090",
            "192.168.1.5:8090",
            "[2001:db8::1]:1",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let err = check_legacy_bind(addr, false).unwrap_err().to_string();
            assert!(err.contains(ALLOW_REMOTE_FLAG), "{err}");
            assert!(err.contains("no authentication"), "{err}");
            check_legacy_bind(addr, true).unwrap();
        }
    }
}
