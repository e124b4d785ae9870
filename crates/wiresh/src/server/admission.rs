//! Who may open a connection: a budget for connections that have not
//! authenticated yet, apart from the one for those that have.
//!
//! A stranger can open connections and say nothing (or drip a TLS
//! handshake); left unchecked, such connections fill `--max-connections`
//! and lock everyone out. As OpenSSH does with `MaxStartups`, connections
//! still in their handshake get a budget of their own ([`StartupLimits`]):
//! below `start` all are let in; from `start` to `full` a growing share of
//! new ones is dropped at random (`rate`% at `start`, all at `full`), so a
//! flood cannot make the server refuse deterministically whoever comes
//! next; and one address (an IPv6 /64) may hold at most `per_address` of
//! them, so a flood from one place leaves room for everyone else. A
//! connection over its address's share waits a moment for one of them to
//! finish ([`Entry::place`]): a burst of real clients from one machine
//! gets in one after another, while a flood's extra connections are turned
//! away. Exempt networks skip the per-address cap. A connection leaves the
//! budget when it authenticates (and takes a place in `--max-connections`)
//! or ends; the handshake deadline bounds how long it can stay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{self, Instant};

use crate::addr::{peer_key, Network};
pub use crate::defaults::StartupLimits;

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// The budget is spent (or the random early drop chose this one).
    #[error("too many connections are authenticating right now; try again in a moment")]
    Busy,
    /// This address holds its share already.
    #[error("too many connections from {0} are authenticating at once; finish or close some")]
    PerAddress(IpAddr),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The connections authenticating now.
#[derive(Debug)]
pub struct Startups {
    limits: StartupLimits,
    per_address: usize,
    exempt: Vec<Network>,
    counts: Mutex<Counts>,
    /// Woken whenever a place is given back.
    freed: Notify,
    /// Connections waiting for a place of their address: at most `full`
    /// wait at once, so that waiting cannot hold descriptors without bound.
    waiting: std::sync::atomic::AtomicUsize,
}

/// A place in the budget, given back when dropped.
#[derive(Debug)]
pub struct StartupPermit {
    startups: Arc<Startups>,
    key: Option<IpAddr>,
}

/// A connection on its way in (see [`Startups::enter`]): it has its place,
/// or its address holds its share and it may wait for one of them to end.
#[derive(Debug)]
pub struct Entry {
    startups: Arc<Startups>,
    ip: IpAddr,
    /// Its roll for the early drop, kept for the retries.
    roll: u8,
    placed: Option<StartupPermit>,
}

impl Entry {
    /// The connection's place, waiting up to `patience` for one when its
    /// address holds its share; says why not otherwise.
    pub async fn place(self, patience: Duration) -> Result<StartupPermit, Dropped> {
        use std::sync::atomic::Ordering;
        let Entry {
            startups,
            ip,
            roll,
            placed,
        } = self;
        if let Some(permit) = placed {
            return Ok(permit);
        }
        let deadline = Instant::now() + patience;
        let before = startups.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiter = Waiter(&startups.waiting);
        if before >= startups.limits.full {
            return Err(Dropped::PerAddress(ip));
        }
        loop {
            // Registered before trying, so a place freed in between wakes us.
            let freed = startups.freed.notified();
            match startups.try_admit(ip, roll) {
                Err(Dropped::PerAddress(_)) if Instant::now() < deadline => {
                    if time::timeout_at(deadline, freed).await.is_err() {
                        return Err(Dropped::PerAddress(ip));
                    }
                }
                other => return other,
            }
        }
    }
}

impl Startups {
    /// A budget of `limits`, at most `per_address` per address outside
    /// the `exempt` networks.
    pub fn new(limits: StartupLimits, per_address: usize, exempt: Vec<Network>) -> Arc<Startups> {
        Arc::new(Startups {
            limits,
            per_address,
            exempt,
            counts: Mutex::default(),
            freed: Notify::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Lets a connection from `ip` in without waiting: its place, or an
    /// [`Entry`] to wait for one with when its address holds its share
    /// already; says why not otherwise. The accept loop takes this step, so
    /// that connections get their places in the order they arrived (tasks
    /// started one after another need not run in that order), and the
    /// connection's own task waits if it must ([`Entry::place`]).
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Entry, Dropped> {
        let roll = roll();
        let placed = match self.try_admit(ip, roll) {
            Ok(permit) => Some(permit),
            Err(Dropped::PerAddress(_)) => None,
            Err(busy) => return Err(busy),
        };
        Ok(Entry {
            startups: self.clone(),
            ip,
            roll,
            placed,
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a connection from `ip` in, or says why not. `roll` is a random
    /// number in 0..100, for the early drop.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr, roll: u8) -> Result<StartupPermit, Dropped> {
        let mut counts = self.counts();
        let StartupLimits { start, rate, full } = self.limits;
        if counts.total >= full {
            return Err(Dropped::Busy);
        }
        if counts.total >= start {
            // From `rate`% at `start` to 100% at `full`, linearly.
            let span = (full - start).max(1);
            let share =
                usize::from(rate) + (100 - usize::from(rate)) * (counts.total - start) / span;
            if usize::from(roll) < share {
                return Err(Dropped::Busy);
            }
        }
        let exempt = self.exempt.iter().any(|net| net.contains(ip));
        let key = (!exempt).then(|| peer_key(ip));
        if let Some(key) = key {
            let held = counts.per_address.entry(key).or_insert(0);
            if *held >= self.per_address {
                return Err(Dropped::PerAddress(ip));
            }
            *held += 1;
        }
        counts.total += 1;
        Ok(StartupPermit {
            startups: self.clone(),
            key,
        })
    }

    /// Connections authenticating now.
    pub fn authenticating(&self) -> usize {
        self.counts().total
    }
}

impl Drop for StartupPermit {
    fn drop(&mut self) {
        let mut counts = self.startups.counts();
        counts.total -= 1;
        if let Some(key) = self.key {
            if let Some(held) = counts.per_address.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    counts.per_address.remove(&key);
                }
            }
        }
        drop(counts);
        self.startups.freed.notify_waiters();
    }
}

/// One connection counted among those waiting for a place.
struct Waiter<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A random number in 0..100 for the early drop.
fn roll() -> u8 {
    let mut byte = [0u8; 1];
    // Without randomness the drop is simply not random: still bounded.
    let _ = getrandom::fill(&mut byte);
    byte[0] % 100
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entering and taking the place in one go, as a connection does.
    async fn admit(
        startups: &Arc<Startups>,
        ip: IpAddr,
        patience: Duration,
    ) -> Result<StartupPermit, Dropped> {
        startups.enter(ip)?.place(patience).await
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_the_whole_budget() {
        let startups = Startups::new("100:30:200".parse().unwrap(), 3, vec![]);
        let attacker = ip("127.0.0.2");
        let held: Vec<_> = (0..3)
            .map(|_| startups.try_admit(attacker, 99).unwrap())
            .collect();
        assert_eq!(
            startups.try_admit(attacker, 99).unwrap_err(),
            Dropped::PerAddress(attacker)
        );
        // Someone else still gets in; leaving gives the place back.
        let other = startups.try_admit(ip("127.0.0.1"), 99).unwrap();
        assert_eq!(startups.authenticating(), 4);
        drop(held);
        drop(other);
        assert_eq!(startups.authenticating(), 0);
        assert!(startups.try_admit(attacker, 99).is_ok());
    }

    #[test]
    fn drops_grow_from_start_to_full() {
        let startups = Startups::new("2:50:4".parse().unwrap(), 100, vec![]);
        let a = ip("10.0.0.1");
        let _p1 = startups.try_admit(a, 0).unwrap();
        let _p2 = startups.try_admit(a, 0).unwrap();
        // At start: 50% dropped.
        assert_eq!(startups.try_admit(a, 49).unwrap_err(), Dropped::Busy);
        let _p3 = startups.try_admit(a, 50).unwrap();
        // Halfway to full: 75%.
        assert_eq!(startups.try_admit(a, 74).unwrap_err(), Dropped::Busy);
        let _p4 = startups.try_admit(a, 75).unwrap();
        // Full: everything.
        assert_eq!(startups.try_admit(a, 99).unwrap_err(), Dropped::Busy);
    }

    #[tokio::test]
    async fn a_burst_from_one_address_waits_its_turn() {
        let startups = Startups::new("100:30:200".parse().unwrap(), 1, vec![]);
        let a = ip("127.0.0.1");
        let first = startups.try_admit(a, 99).unwrap();
        let waiting = tokio::spawn({
            let startups = startups.clone();
            async move { admit(&startups, a, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        let second = time::timeout(Duration::from_secs(30), waiting).await;
        assert!(second.unwrap().unwrap().is_ok());
        // Nobody leaves: the wait ends with a refusal.
        let _held = startups.try_admit(a, 99).unwrap();
        let refused = admit(&startups, a, Duration::from_millis(20)).await;
        assert_eq!(refused.unwrap_err(), Dropped::PerAddress(a));
    }

    /// The place is taken on entering, so a connection accepted first is
    /// let in first, whichever task runs first.
    #[tokio::test]
    async fn places_go_in_the_order_connections_enter() {
        let startups = Startups::new("100:30:200".parse().unwrap(), 1, vec![]);
        let a = ip("127.0.0.2");
        let first = startups.enter(a).unwrap();
        let second = startups.enter(a).unwrap();
        let refused = second.place(Duration::from_millis(20)).await;
        assert_eq!(refused.unwrap_err(), Dropped::PerAddress(a));
        let placed = first.place(Duration::ZERO).await;
        assert!(placed.is_ok());
        assert_eq!(startups.authenticating(), 1);
    }

    #[tokio::test]
    async fn no_more_than_full_wait_at_once() {
        let startups = Startups::new("2:50:2".parse().unwrap(), 1, vec![]);
        let a = ip("127.0.0.1");
        let _held = startups.try_admit(a, 99).unwrap();
        // Two may wait (FULL is 2); a third is refused at once.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let startups = startups.clone();
                tokio::spawn(async move { admit(&startups, a, Duration::from_secs(30)).await })
            })
            .collect();
        while startups.waiting.load(std::sync::atomic::Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let at_once = time::timeout(
            Duration::from_secs(5),
            admit(&startups, a, Duration::from_secs(30)),
        )
        .await
        .expect("refused without waiting");
        assert_eq!(at_once.unwrap_err(), Dropped::PerAddress(a));
        for w in waiters {
            w.abort();
        }
    }

    #[test]
    fn exempt_networks_skip_the_per_address_cap() {
        let exempt = vec!["127.0.0.0/8".parse().unwrap()];
        let startups = Startups::new("100:30:200".parse().unwrap(), 1, exempt);
        let _a = startups.try_admit(ip("127.0.0.1"), 99).unwrap();
        let _b = startups.try_admit(ip("127.0.0.1"), 99).unwrap();
        let _c = startups.try_admit(ip("10.0.0.1"), 99).unwrap();
        assert!(startups.try_admit(ip("10.0.0.1"), 99).is_err());
    }
}
