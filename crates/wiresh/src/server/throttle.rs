//! Slowing down token guessing: failed authentications are answered after a
//! delay, and an address with too many recent failures is refused outright
//! for a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::defaults::{AUTH_FAILURES, AUTH_FAILURE_WINDOW};

/// Addresses remembered at most; older records are dropped first.
const MAX_TRACKED: usize = 10_000;

/// Recent authentication failures per peer address.
#[derive(Debug, Default)]
pub(super) struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// `Err(wait)` if `ip` must not try again for `wait`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip) {
            Some(&(count, since))
                if count >= AUTH_FAILURES && since.elapsed() < AUTH_FAILURE_WINDOW =>
            {
                Err(AUTH_FAILURE_WINDOW - since.elapsed())
            }
            _ => Ok(()),
        }
    }

    /// Records a failure from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < AUTH_FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                // Still full of fresh records: forget the oldest one.
                if let Some(oldest) = map.iter().min_by_key(|(_, (_, s))| *s).map(|(ip, _)| *ip) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= AUTH_FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_too_many_failures() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..AUTH_FAILURES {
            assert!(t.check(ip).is_ok());
            t.failed(ip);
        }
        assert!(t.check(ip).is_err());
        assert!(t.check(other).is_ok());
    }
}
