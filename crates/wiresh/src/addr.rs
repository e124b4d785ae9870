//! `HOST[:PORT]`, the way every wiresh command names a server, whatever
//! protocol it speaks.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where a server is: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a `HOST[:PORT]` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Nothing was given.
    #[error("empty host")]
    Empty,
    /// The part after the last `:` is not a port.
    #[error("bad port {port:?} in {input:?}: expected HOST[:PORT]")]
    BadPort {
        /// What was given as the port.
        port: String,
        /// The whole input.
        input: String,
    },
    /// `:PORT` with no host.
    #[error("no host in {0:?}: expected HOST[:PORT]")]
    NoHost(String),
}

impl Target {
    /// Parses `HOST`, `HOST:PORT`, `IPV6`, or `[IPV6]:PORT`, using
    /// `default_port` when none is given.
    pub fn parse(s: &str, default_port: u16) -> Result<Target, AddrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        if let Ok(addr) = SocketAddr::from_str(s) {
            return Ok(Target {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        if let Ok(ip) = IpAddr::from_str(s.trim_start_matches('[').trim_end_matches(']')) {
            return Ok(Target {
                host: ip.to_string(),
                port: default_port,
            });
        }
        match s.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse().map_err(|_| AddrError::BadPort {
                    port: port.to_string(),
                    input: s.to_string(),
                })?;
                if host.is_empty() {
                    return Err(AddrError::NoHost(s.to_string()));
                }
                Ok(Target {
                    host: host.to_string(),
                    port,
                })
            }
            None => Ok(Target {
                host: s.to_string(),
                port: default_port,
            }),
        }
    }

    /// Whether the host is a loopback address (or `localhost`).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || IpAddr::from_str(&self.host).is_ok_and(|ip| ip.to_canonical().is_loopback())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let t = |s| Target::parse(s, 7878).unwrap().to_string();
        assert_eq!(t("example.org"), "example.org:7878");
        assert_eq!(t("example.org:22"), "example.org:22");
        assert_eq!(t("127.0.0.1"), "127.0.0.1:7878");
        assert_eq!(t("127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(t("::1"), "[::1]:7878");
        assert_eq!(t("[::1]"), "[::1]:7878");
        assert_eq!(t("[::1]:9"), "[::1]:9");
        assert!(matches!(
            Target::parse("host:x", 1),
            Err(AddrError::BadPort { .. })
        ));
        assert_eq!(Target::parse(":9", 1), Err(AddrError::NoHost(":9".into())));
        assert_eq!(Target::parse(" ", 1), Err(AddrError::Empty));
    }

    #[test]
    fn loopback() {
        for host in ["localhost", "127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(Target::parse(host, 1).unwrap().is_loopback(), "{host}");
        }
        assert!(!Target::parse("10.0.0.1", 1).unwrap().is_loopback());
    }
}
