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

/// A network: an address and a prefix length, written `ADDR` or
/// `ADDR/BITS` (`10.0.0.0/8`, `::1`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or ADDR/BITS network (such as 10.0.0.0/8 or ::1)")]
pub struct NetworkError(String);

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Network, NetworkError> {
        let bad = || NetworkError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count
    /// as their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How many leading bits of an address name the network it comes from,
/// for fairness between sources: `V4[:V6]` (`24:64`, the default, groups
/// IPv4 addresses by /24 and IPv6 ones by /64; `32:128` makes every
/// address a source of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netblock {
    v4: u8,
    v6: u8,
}

impl Netblock {
    /// IPv4 /24s and IPv6 /64s.
    pub const DEFAULT: Netblock = Netblock {
        v4: crate::defaults::SOURCE_NETBLOCK_V4,
        v6: crate::defaults::SOURCE_NETBLOCK_V6,
    };

    /// The network of `ip` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of(&self, ip: IpAddr) -> Network {
        let (addr, prefix) = match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.v4)).unwrap_or(0);
                (IpAddr::V4((u32::from(v4) & mask).into()), self.v4)
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.v6)).unwrap_or(0);
                (IpAddr::V6((u128::from(v6) & mask).into()), self.v6)
            }
        };
        Network { addr, prefix }
    }
}

/// Why a text is not a [`Netblock`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not V4[:V6] prefix lengths (such as 24:64), at most 32 and 128")]
pub struct NetblockError(String);

impl FromStr for Netblock {
    type Err = NetblockError;

    fn from_str(s: &str) -> Result<Netblock, NetblockError> {
        let bad = || NetblockError(s.to_string());
        let bits = |p: &str, max: u8| {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(bad)
        };
        match s.split_once(':') {
            Some((v4, v6)) => Ok(Netblock {
                v4: bits(v4, 32)?,
                v6: bits(v6, 128)?,
            }),
            None => Ok(Netblock {
                v4: bits(s, 32)?,
                ..Netblock::DEFAULT
            }),
        }
    }
}

impl fmt::Display for Netblock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.v4, self.v6)
    }
}

/// The part of an address that names one machine or site, for limits per
/// peer: an IPv4 address, or the /64 an IPv6 host usually has to itself.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net = |s: &str| s.parse::<Network>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("127.0.0.1")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("example.org".parse::<Network>().is_err());
        assert_eq!(net("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(peer_key(ip("2001:db8::1")), peer_key(ip("2001:db8::2")));
        assert_ne!(peer_key(ip("127.0.0.1")), peer_key(ip("127.0.0.2")));
    }

    #[test]
    fn netblocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let default = Netblock::DEFAULT;
        assert_eq!(default.to_string(), "24:64");
        assert_eq!(default.of(ip("10.1.2.3")).to_string(), "10.1.2.0/24");
        assert_eq!(
            default.of(ip("::ffff:10.1.2.3")),
            default.of(ip("10.1.2.200"))
        );
        assert_eq!(
            default.of(ip("2001:db8:1:2:3::4")).to_string(),
            "2001:db8:1:2::/64"
        );
        let each: Netblock = "32:128".parse().unwrap();
        assert_ne!(each.of(ip("10.1.2.3")), each.of(ip("10.1.2.4")));
        let wide: Netblock = "16".parse().unwrap();
        assert_eq!(wide.to_string(), "16:64");
        assert_eq!(wide.of(ip("10.1.2.3")).to_string(), "10.1.0.0/16");
        assert_eq!(
            "0:0"
                .parse::<Netblock>()
                .unwrap()
                .of(ip("8.8.8.8"))
                .to_string(),
            "0.0.0.0/0"
        );
        for bad in ["33", "24:129", "x", "24:", ""] {
            assert!(bad.parse::<Netblock>().is_err(), "{bad}");
        }
    }

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
