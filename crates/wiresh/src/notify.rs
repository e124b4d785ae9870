//! Telling systemd how the server is doing (`Type=notify`): a datagram
//! such as `READY=1` to the socket named by `$NOTIFY_SOCKET`, as
//! `sd_notify(3)` sends it. Without that variable (not under systemd)
//! nothing is sent. A failure to tell is logged and otherwise ignored: the
//! server works the same either way.

use std::os::unix::net::UnixDatagram;

use tracing::debug;

/// Environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Every listener accepts connections (again, after a reload); `status` is
/// the one line `systemctl status` shows.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", status.replace('\n', " ")));
}

/// A reload has begun; [`ready`] says it is over. The timestamp is what
/// systemd's `Type=notify-reload` asks for; older ones ignore it.
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}

/// The server has begun to shut down.
pub fn stopping() {
    send("STOPPING=1");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket: a name, not a path.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        debug!("cannot notify systemd ({state:?}): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        // Tests in this binary run in threads; only this one sets the variable.
        std::env::set_var(NOTIFY_SOCKET_ENV, &path);
        ready("up");
        reloading();
        std::env::remove_var(NOTIFY_SOCKET_ENV);
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
        let n = socket.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
    }
}
