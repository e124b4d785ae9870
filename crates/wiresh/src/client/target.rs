//! Parsing `-H HOST[:PORT]`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where a server is: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Target {
    /// Parses `HOST`, `HOST:PORT`, `IPV6`, or `[IPV6]:PORT`, using
    /// `default_port` when none is given.
    pub fn parse(s: &str, default_port: u16) -> Result<Target, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host".into());
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
                let port = port
                    .parse()
                    .map_err(|_| format!("bad port {port:?} in {s:?}: expected HOST[:PORT]"))?;
                if host.is_empty() {
                    return Err(format!("no host in {s:?}: expected HOST[:PORT]"));
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
}

impl Target {
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
        assert!(Target::parse("host:x", 1).is_err());
        assert!(Target::parse(":9", 1).is_err());
    }
}
