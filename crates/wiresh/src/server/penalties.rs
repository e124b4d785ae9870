//! Penalties for addresses whose connections let the handshake deadline
//! pass without authenticating, after OpenSSH's `PerSourcePenalties`.
//!
//! Each such connection adds [`NOAUTH_PENALTY`] to its address's penalty,
//! which runs down in real time and never exceeds [`PENALTY_MAX`]; while
//! it is more than [`PENALTY_MIN`], new connections from the address are
//! refused at once, before they cost a TLS handshake or a place. A real
//! client that once took too long is not refused; a silent flood, whose
//! connections time out by the dozen, is refused for minutes, and longer
//! each time it comes back. The operator's exempt networks are never
//! penalized (the caller does not record them).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::defaults::{NOAUTH_PENALTY, PENALIZED_ADDRESSES, PENALTY_MAX, PENALTY_MIN};

/// The penalties in force, by address (IPv4 address, IPv6 /64).
#[derive(Debug, Default)]
pub(super) struct Penalties {
    /// When each address's penalty runs out.
    until: HashMap<IpAddr, Instant>,
}

impl Penalties {
    /// How much longer `address` is refused, if it is.
    pub fn refusing(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let left = self.until.get(&address)?.saturating_duration_since(now);
        (left > PENALTY_MIN).then_some(left)
    }

    /// A connection from `address` let the deadline pass. Returns the
    /// penalty left when this is what makes the address refused.
    pub fn timed_out(&mut self, address: IpAddr, now: Instant) -> Option<Duration> {
        let was_refused = self.refusing(address, now).is_some();
        if !self.until.contains_key(&address) && self.until.len() >= PENALIZED_ADDRESSES {
            self.until.retain(|_, until| *until > now);
            if self.until.len() >= PENALIZED_ADDRESSES {
                // As OpenSSH's `overflow:permissive`: bounded memory first.
                return None;
            }
        }
        let until = self.until.entry(address).or_insert(now);
        *until = ((*until).max(now) + NOAUTH_PENALTY).min(now + PENALTY_MAX);
        let left = *until - now;
        (!was_refused && left > PENALTY_MIN).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_grow_run_down_and_are_capped() {
        let mut penalties = Penalties::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        // One slow login is forgiven.
        assert_eq!(penalties.timed_out(a, now), None);
        assert_eq!(penalties.refusing(a, now), None);
        // The second refuses the address, and says so once.
        assert_eq!(penalties.timed_out(a, now), Some(NOAUTH_PENALTY * 2));
        assert_eq!(penalties.refusing(a, now), Some(NOAUTH_PENALTY * 2));
        assert_eq!(penalties.timed_out(a, now), None);
        assert_eq!(penalties.refusing(b, now), None);
        // It runs down in real time.
        let later = now + NOAUTH_PENALTY * 3 - PENALTY_MIN;
        assert_eq!(penalties.refusing(a, later), None);
        // A flood's worth of timeouts is capped.
        for _ in 0..1000 {
            penalties.timed_out(b, now);
        }
        assert_eq!(penalties.refusing(b, now), Some(PENALTY_MAX));
        assert_eq!(penalties.refusing(b, now + PENALTY_MAX - PENALTY_MIN), None);
    }
}
