//! Who may open a connection: a budget for connections that have not
//! authenticated yet, apart from the one for those that have, shared
//! fairly between the networks they come from.
//!
//! A stranger can open connections and say nothing (or drip a TLS
//! handshake); left unchecked, such connections fill `--max-connections`
//! and lock everyone out. As OpenSSH does with `MaxStartups`, connections
//! still in their handshake get a budget of their own ([`StartupLimits`]):
//! below `start` all are let in; from `start` to `full` a growing share of
//! new ones is dropped at random (`rate`% at `start`, all at `full`).
//!
//! That alone lets a few addresses with many connections starve everyone
//! else, so three more rules go past OpenSSH:
//!
//! - **Silence goes first, then fair shares.** Once `start` is reached, a
//!   newcomer takes the place of a connection that has sent nothing yet,
//!   if there is one: a real client speaks at once (its TLS `ClientHello`
//!   follows the TCP handshake), while silence is what a flood costs least.
//!   Failing that, connections are counted per source network (a
//!   [`Netblock`]: an IPv4 /24, an IPv6 /64 by default), and a newcomer
//!   from a network holding fewer of them than the heaviest takes the
//!   place of that network's oldest. Either way the connection dropped
//!   learns it ([`StartupPermit::evicted`]), and the newcomer is let in,
//!   never dropped at random. A flood can only crowd out itself and its
//!   own networks; whoever else comes gets in.
//! - **A cap per address.** One address (an IPv6 /64) may hold at most
//!   `per_address` of the connections authenticating. A connection over
//!   its address's share waits a moment for one of them to finish
//!   ([`Entry::place`]): a burst of real clients from one machine gets in
//!   one after another, while a flood's extra connections are turned away.
//! - **Penalties.** An address whose connections let the handshake
//!   deadline pass is refused for a while, longer each time
//!   (`super::penalties`).
//!
//! Exempt networks skip all three: they are neither capped, penalized nor
//! dropped for a newcomer (they still count toward the budget). A client
//! that proves an authorized key in its TLS handshake leaves its address's
//! count and its network's share ([`StartupPermit::proven`]): only the
//! budget still holds it, until it authenticates a moment later. A
//! connection leaves the budget when it authenticates (and takes a place in
//! `--max-connections`) or ends; the handshake deadline bounds how long it
//! can stay.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{self, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::penalties::Penalties;
use crate::addr::{peer_key, Netblock, Network};
pub use crate::defaults::StartupLimits;
use crate::defaults::SPEAK_WITHIN;
use crate::listener::RefusalLog;

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// The budget is spent (or the random early drop chose this one).
    #[error("too many connections are authenticating right now; try again in a moment")]
    Busy,
    /// This address holds its share already.
    #[error("too many connections from {0} are authenticating at once; finish or close some")]
    PerAddress(IpAddr),
    /// This address's connections keep letting the handshake deadline
    /// pass.
    #[error(
        "connections from {address} keep failing to authenticate in time; refused for {} s",
        left.as_secs() + 1
    )]
    Penalized {
        /// The address.
        address: IpAddr,
        /// How much longer it is refused.
        left: Duration,
    },
}

/// The rules of admission, from the settings.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The budget (`--max-startups`).
    pub limits: StartupLimits,
    /// Most connections one address may hold (`--max-startups-per-address`).
    pub per_address: usize,
    /// What a source network is (`--source-netblock`).
    pub netblock: Netblock,
    /// Networks exempt from the rules but the budget (`--exempt`).
    pub exempt: Vec<Network>,
}

/// One connection in the budget.
#[derive(Debug)]
struct Member {
    /// Its address, while it counts toward the address's cap.
    address: Option<IpAddr>,
    /// Its network, while it counts toward the network's share (and may be
    /// dropped for a newcomer).
    network: Option<Network>,
    /// Cancelled when it is dropped for a newcomer.
    evict: CancellationToken,
    /// A handle on its socket while it seems silent, to look again.
    probe: Option<OwnedFd>,
}

/// The connections of one network that may be dropped for a newcomer,
/// by age (ids grow with time).
#[derive(Debug, Default)]
struct Share {
    all: BTreeSet<u64>,
    /// Those that have sent nothing yet.
    silent: BTreeSet<u64>,
}

/// Where a connection stands when places are short: one that has sent
/// something stands above one that has not; among equals, one from a
/// network holding fewer connections authenticating stands above one from
/// a network holding more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Standing {
    spoke: bool,
    lighter: std::cmp::Reverse<usize>,
}

impl Standing {
    fn of(spoke: bool, held: usize) -> Standing {
        Standing {
            spoke,
            lighter: std::cmp::Reverse(held),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    networks: HashMap<Network, Share>,
    members: HashMap<u64, Member>,
    penalties: Penalties,
    next_id: u64,
}

impl State {
    /// Takes `id` out of every count; returns it if it was still in.
    fn remove(&mut self, id: u64) -> Option<Member> {
        let member = self.members.remove(&id)?;
        self.total -= 1;
        if let Some(address) = member.address {
            self.leave_address(address);
        }
        if let Some(network) = member.network {
            self.leave_network(network, id);
        }
        Some(member)
    }

    fn leave_address(&mut self, address: IpAddr) {
        if let Some(held) = self.per_address.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                self.per_address.remove(&address);
            }
        }
    }

    fn leave_network(&mut self, network: Network, id: u64) {
        if let Some(share) = self.networks.get_mut(&network) {
            share.all.remove(&id);
            share.silent.remove(&id);
            if share.all.is_empty() {
                self.networks.remove(&network);
            }
        }
    }

    /// How many connections `network` holds (that may be dropped).
    fn held(&self, network: Option<Network>) -> usize {
        network.map_or(0, |n| {
            self.networks.get(&n).map_or(0, |share| share.all.len())
        })
    }

    /// The connection with the weakest standing, the oldest among equals:
    /// the silent ones first, of the network holding the most; with its
    /// standing. A connection that seemed silent is looked at again (its
    /// bytes may have come since its task last looked), a few at most.
    fn weakest(&mut self) -> Option<(Standing, u64)> {
        for _ in 0..LOOK_AGAIN {
            let Some((standing, id)) = self.weakest_seeming() else {
                break;
            };
            let member = self.members.get_mut(&id);
            let spoke = member
                .as_ref()
                .and_then(|m| m.probe.as_ref())
                .is_some_and(has_spoken);
            if !standing.spoke && spoke {
                self.spoke(id);
                continue;
            }
            return Some((standing, id));
        }
        self.weakest_seeming()
    }

    /// [`State::weakest`] as far as is known.
    fn weakest_seeming(&self) -> Option<(Standing, u64)> {
        let of = |spoke: bool, pick: fn(&Share) -> Option<&u64>| {
            self.networks
                .values()
                .filter_map(|share| Some((Standing::of(spoke, share.all.len()), *pick(share)?)))
                .min_by_key(|&(standing, oldest)| (standing, oldest))
        };
        of(false, |share| share.silent.first()).or_else(|| of(true, |share| share.all.first()))
    }

    /// Connection `id` has sent something: it leaves the silent ones.
    fn spoke(&mut self, id: u64) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        member.probe = None;
        let network = member.network;
        if let Some(share) = network.and_then(|n| self.networks.get_mut(&n)) {
            share.silent.remove(&id);
        }
    }
}

/// Connections that seemed silent looked at again, at most, when a place
/// is made for a newcomer: a system call each, under the lock.
const LOOK_AGAIN: usize = 8;

/// The connections authenticating now.
#[derive(Debug)]
pub struct Startups {
    rules: Rules,
    state: Mutex<State>,
    /// Woken whenever a place is given back.
    freed: Notify,
    /// Connections waiting for a place of their address (see
    /// [`Startups::waiting_room`]).
    waiting: AtomicUsize,
    /// Silent newcomers given a moment to speak (at most [`LISTENING`]).
    listening: Arc<AtomicUsize>,
    /// Connections dropped for newcomers, logged once a second at most.
    evictions: RefusalLog,
}

/// A place in the budget, given back when dropped.
#[derive(Debug)]
pub struct StartupPermit {
    startups: Arc<Startups>,
    id: u64,
    /// Its address, unless exempt (or proven): what a timeout penalizes.
    penalizable: Option<IpAddr>,
    evicted: CancellationToken,
}

/// A connection on its way in (see [`Startups::enter`]): it has its place,
/// or its address holds its share and it may wait for one of them to end.
#[derive(Debug)]
pub struct Entry {
    startups: Arc<Startups>,
    ip: IpAddr,
    /// Its roll for the early drop, kept for the retries.
    roll: u8,
    /// How it arrived, for the retries.
    arrival: Arrival,
    /// It would have been dropped for its silence: a place among those
    /// given a moment to speak.
    listening: Option<Waiter>,
    placed: Option<StartupPermit>,
}

/// A connection arriving: whether it has sent bytes already, and a handle
/// on its socket to tell later (a real client's TLS `ClientHello` follows
/// its TCP handshake at once; a silent flood's never comes).
#[derive(Debug, Default)]
pub struct Arrival {
    spoke: bool,
    probe: Option<OwnedFd>,
}

impl Arrival {
    /// A connection on `socket`, as accepted.
    pub fn on(socket: &impl AsFd) -> Arrival {
        let spoke = has_spoken(socket);
        Arrival {
            spoke,
            probe: (!spoke)
                .then(|| socket.as_fd().try_clone_to_owned().ok())
                .flatten(),
        }
    }

    /// A connection that has sent bytes already, or not (and cannot be
    /// looked at again).
    pub fn spoken(spoke: bool) -> Arrival {
        Arrival { spoke, probe: None }
    }
}

/// Whether the peer of `socket` has sent bytes that wait to be read.
fn has_spoken(socket: &impl AsFd) -> bool {
    rustix::io::ioctl_fionread(socket).is_ok_and(|queued| queued > 0)
}

impl Entry {
    /// The connection's place, waiting up to `patience` for one when its
    /// address holds its share, if fewer than `room` wait already (see
    /// [`Startups::waiting_room`]); says why not otherwise. One that came
    /// under pressure without a word and would have been dropped waits for
    /// `speaks` (its first bytes) first, up to [`SPEAK_WITHIN`]: a real
    /// client's are on their way.
    pub async fn place(
        self,
        patience: Duration,
        room: usize,
        speaks: impl Future<Output = ()>,
    ) -> Result<StartupPermit, Dropped> {
        let Entry {
            startups,
            ip,
            roll,
            mut arrival,
            listening,
            placed,
        } = self;
        if let Some(permit) = placed {
            return Ok(permit);
        }
        if let Some(_listening) = listening {
            if time::timeout(SPEAK_WITHIN, speaks).await.is_err() {
                return Err(Dropped::Busy);
            }
            arrival = Arrival::spoken(true);
            match startups.admit(ip, roll, &mut arrival) {
                Err(Dropped::PerAddress(_)) => {}
                other => return other,
            }
        }
        let deadline = Instant::now() + patience;
        let before = startups.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiter = Counted(&startups.waiting);
        if before >= room {
            return Err(Dropped::PerAddress(ip));
        }
        loop {
            // Registered before trying, so a place freed in between wakes us.
            let freed = startups.freed.notified();
            match startups.admit(ip, roll, &mut arrival) {
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

/// Why a wait of a connection authenticating ended early
/// ([`StartupPermit::within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The handshake deadline passed (the address is penalized for it).
    TimedOut,
    /// The connection was dropped to make room for a newcomer.
    Evicted,
}

impl StartupPermit {
    /// `work`, unless the deadline passes (then the address is penalized)
    /// or the connection is dropped for a newcomer first.
    pub async fn within<T>(
        &self,
        deadline: Instant,
        work: impl Future<Output = T>,
    ) -> Result<T, Cut> {
        tokio::select! {
            done = time::timeout_at(deadline, work) => match done {
                Ok(done) => Ok(done),
                Err(_) => {
                    self.timed_out();
                    Err(Cut::TimedOut)
                }
            },
            () = self.evicted.cancelled() => Err(Cut::Evicted),
        }
    }

    /// Resolves once the connection has been dropped to make room for a
    /// newcomer from a network with fewer connections authenticating.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// The connection let the handshake deadline pass: its address is
    /// penalized (unless exempt or proven).
    pub fn timed_out(&self) {
        let Some(address) = self.penalizable else {
            return;
        };
        let mut state = self.startups.lock();
        if let Some(left) = state.penalties.timed_out(address, Instant::now()) {
            drop(state);
            warn!(
                "{address}: its connections keep letting the handshake deadline pass; it is \
                 refused for {} s (longer if it goes on)",
                left.as_secs()
            );
        }
    }

    /// The peer has sent its first bytes: it is no longer among the silent
    /// connections that any newcomer may replace.
    pub fn spoke(&self) {
        self.startups.lock().spoke(self.id);
    }

    /// The client proved, in its TLS handshake, that it holds an
    /// authorized key: it no longer counts toward its address's cap or its
    /// network's share, cannot be dropped for a newcomer, and is not
    /// penalized; it keeps its place in the budget until it authenticates.
    pub fn proven(&mut self) {
        self.penalizable = None;
        let mut state = self.startups.lock();
        let Some(member) = state.members.get_mut(&self.id) else {
            return;
        };
        let (address, network) = (member.address.take(), member.network.take());
        member.probe = None;
        if let Some(address) = address {
            state.leave_address(address);
        }
        if let Some(network) = network {
            state.leave_network(network, self.id);
        }
        drop(state);
        self.startups.freed.notify_waiters();
    }
}

impl Startups {
    /// A budget under `rules`.
    pub fn new(rules: Rules) -> Arc<Startups> {
        Arc::new(Startups {
            rules,
            state: Mutex::default(),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            listening: Arc::default(),
            evictions: RefusalLog::saying("server", "under pressure"),
        })
    }

    /// Lets a connection from `ip` in without waiting: its place, or an
    /// [`Entry`] to wait for one with when its address holds its share
    /// already; says why not otherwise. `spoke`: it has sent bytes already
    /// (a real client's TLS `ClientHello` is often there by the time it is
    /// accepted). The accept loop takes this step, so that connections get
    /// their places in the order they arrived (tasks started one after
    /// another need not run in that order), and the connection's own task
    /// waits if it must ([`Entry::place`]).
    pub fn enter(self: &Arc<Self>, ip: IpAddr, mut arrival: Arrival) -> Result<Entry, Dropped> {
        let roll = roll();
        let mut listening = None;
        let placed = match self.admit(ip, roll, &mut arrival) {
            Ok(permit) => Some(permit),
            Err(Dropped::PerAddress(_)) => None,
            Err(Dropped::Busy) if arrival.probe.is_some() => {
                listening = Some(Waiter::within(&self.listening, LISTENING).ok_or(Dropped::Busy)?);
                None
            }
            Err(other) => return Err(other),
        };
        Ok(Entry {
            startups: self.clone(),
            ip,
            roll,
            arrival,
            listening,
            placed,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a connection from `ip` that has sent nothing yet in, or says
    /// why not. `roll` is a random number in 0..100, for the early drop.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr, roll: u8) -> Result<StartupPermit, Dropped> {
        self.admit(ip, roll, &mut Arrival::spoken(false))
    }

    /// [`Startups::try_admit`] of a connection as it `arrival`ed; its probe
    /// goes with the place, if it gets one.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        roll: u8,
        arrival: &mut Arrival,
    ) -> Result<StartupPermit, Dropped> {
        if !arrival.spoke && arrival.probe.as_ref().is_some_and(has_spoken) {
            *arrival = Arrival::spoken(true);
        }
        let spoke = arrival.spoke;
        let exempt = self.rules.exempt.iter().any(|net| net.contains(ip));
        let address = (!exempt).then(|| peer_key(ip));
        let network = (!exempt).then(|| self.rules.netblock.of(ip));
        let mut state = self.lock();
        if let Some(address) = address {
            if let Some(left) = state.penalties.refusing(address, Instant::now()) {
                return Err(Dropped::Penalized { address, left });
            }
            if state.per_address.get(&address).copied().unwrap_or(0) >= self.rules.per_address {
                return Err(Dropped::PerAddress(ip));
            }
        }
        if state.total >= self.rules.limits.start {
            self.make_room(&mut state, network, (ip, roll, spoke))?;
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.total += 1;
        if let Some(address) = address {
            *state.per_address.entry(address).or_insert(0) += 1;
        }
        if let Some(network) = network {
            let share = state.networks.entry(network).or_default();
            share.all.insert(id);
            if !spoke {
                share.silent.insert(id);
            }
        }
        let member = Member {
            address,
            network,
            evict: evicted.clone(),
            probe: arrival.probe.take().filter(|_| network.is_some() && !spoke),
        };
        state.members.insert(id, member);
        Ok(StartupPermit {
            startups: self.clone(),
            id,
            penalizable: address,
            evicted,
        })
    }

    /// Under pressure, the newcomer from `network` (`None`: exempt), which
    /// has sent bytes already or not (`spoke`), takes the place of the
    /// connection with the weakest standing, if its own is stronger (see
    /// [`Standing`]). Failing that, it faces the early drop, or the full
    /// budget.
    fn make_room(
        &self,
        state: &mut State,
        network: Option<Network>,
        (ip, roll, spoke): (IpAddr, u8, bool),
    ) -> Result<(), Dropped> {
        let own = Standing::of(spoke, state.held(network));
        let victim = state
            .weakest()
            .filter(|&(standing, _)| standing < own)
            .and_then(|(_, id)| state.remove(id));
        if let Some(victim) = victim {
            victim.evict.cancel();
            let from = victim
                .network
                .map_or(String::new(), |n| format!(" from {n}"));
            let why = format!(
                "a connection still authenticating{from} was dropped to make room for one from {ip}"
            );
            self.evictions.refused(ip_port(ip), &why);
            return Ok(());
        }
        let StartupLimits { start, rate, full } = self.rules.limits;
        if state.total >= full {
            return Err(Dropped::Busy);
        }
        // From `rate`% at `start` to 100% at `full`, linearly.
        let span = (full - start).max(1);
        let share = usize::from(rate) + (100 - usize::from(rate)) * (state.total - start) / span;
        match usize::from(roll) < share {
            true => Err(Dropped::Busy),
            false => Ok(()),
        }
    }

    /// How many connections may wait for a place of their address at
    /// once, when `free` places for authenticated connections are left:
    /// as many as the budget (FULL), or as those free places, whichever is
    /// more. A burst of clients from one host (a CI runner, a jump host)
    /// then waits its turn rather than being turned away, as far as the
    /// server has room to serve it (`--max-connections`); and waiting
    /// connections hold no more descriptors than that room was sized for.
    pub fn waiting_room(&self, free: usize) -> usize {
        self.rules.limits.full.max(free)
    }

    /// Connections authenticating now.
    pub fn authenticating(&self) -> usize {
        self.lock().total
    }
}

/// `ip` as the socket address the refusal log wants (the port is unknown
/// here, and irrelevant).
fn ip_port(ip: IpAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(ip, 0)
}

impl Drop for StartupPermit {
    fn drop(&mut self) {
        // Gone already if it was dropped for a newcomer.
        if self.startups.lock().remove(self.id).is_some() {
            self.startups.freed.notify_waiters();
        }
    }
}

/// One connection counted among those waiting for a place.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection counted among those given a moment to speak.
#[derive(Debug)]
struct Waiter(Arc<AtomicUsize>);

impl Waiter {
    /// A place among at most `most`, if there is one.
    fn within(count: &Arc<AtomicUsize>, most: usize) -> Option<Waiter> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        let waiter = Waiter(count.clone());
        (before < most).then_some(waiter)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Silent newcomers given a moment to speak at once, at most: a flood's
/// silent connections may take them all, and then the next is dropped as
/// before.
const LISTENING: usize = 64;

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

    fn startups(limits: &str, per_address: usize, exempt: &[&str]) -> Arc<Startups> {
        let limits: StartupLimits = limits.parse().unwrap();
        Startups::new(Rules {
            limits,
            per_address,
            netblock: Netblock::DEFAULT,
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        })
    }

    /// Entering and taking the place in one go, as a connection does.
    async fn enter_and_place(
        startups: &Arc<Startups>,
        ip: IpAddr,
        patience: Duration,
    ) -> Result<StartupPermit, Dropped> {
        let entry = startups.enter(ip, Arrival::spoken(false))?;
        let room = startups.waiting_room(0);
        entry.place(patience, room, std::future::pending()).await
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A connection let in that had sent its first bytes when accepted.
    fn speaking(startups: &Arc<Startups>, from: &str, roll: u8) -> StartupPermit {
        startups
            .admit(ip(from), roll, &mut Arrival::spoken(true))
            .unwrap()
    }

    #[test]
    fn one_address_cannot_take_the_whole_budget() {
        let startups = startups("100:30:200", 3, &[]);
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
        let startups = startups("2:50:4", 100, &[]);
        let a = ip("10.0.0.1");
        let _p1 = speaking(&startups, "10.0.0.1", 0);
        let _p2 = speaking(&startups, "10.0.0.1", 0);
        // At start: 50% dropped.
        assert_eq!(startups.try_admit(a, 49).unwrap_err(), Dropped::Busy);
        let _p3 = speaking(&startups, "10.0.0.1", 50);
        // Halfway to full: 75%.
        assert_eq!(startups.try_admit(a, 74).unwrap_err(), Dropped::Busy);
        let _p4 = speaking(&startups, "10.0.0.1", 75);
        // Full: everything.
        assert_eq!(startups.try_admit(a, 99).unwrap_err(), Dropped::Busy);
    }

    /// Under pressure a newcomer from a network with fewer connections
    /// takes the place of the heaviest network's oldest, which learns it
    /// was dropped; the heaviest network's own newcomers get no such help.
    #[tokio::test]
    async fn a_newcomer_from_a_lighter_network_takes_the_place_of_the_heaviest_oldest() {
        let startups = startups("4:100:4", 100, &[]);
        let flood: Vec<_> = ["10.1.1.1", "10.1.1.2", "10.2.2.1", "10.1.1.3"]
            .iter()
            .map(|a| speaking(&startups, a, 99))
            .collect();
        assert_eq!(startups.authenticating(), 4);
        // 10.1.1.0/24 holds three: a fourth from it is refused (full)...
        assert_eq!(
            startups.try_admit(ip("10.1.1.9"), 99).unwrap_err(),
            Dropped::Busy
        );
        // ...one from 10.2.2.0/24 (one held) takes the place of 10.1.1.1,
        // the oldest of the heaviest network.
        let newcomer = speaking(&startups, "10.2.2.2", 99);
        assert_eq!(startups.authenticating(), 4);
        time::timeout(Duration::from_secs(5), flood[0].evicted())
            .await
            .expect("the oldest of the heaviest network was dropped");
        assert!(!flood[1].evicted.is_cancelled() && !flood[2].evicted.is_cancelled());
        // Now both networks hold two: a third from 10.2.2.0/24 is not lighter.
        assert_eq!(
            startups.try_admit(ip("10.2.2.3"), 99).unwrap_err(),
            Dropped::Busy
        );
        // Someone who speaks from a network holding none always gets in.
        let _third = speaking(&startups, "192.0.2.1", 99);
        assert!(flood[1].evicted.is_cancelled(), "10.1.1.2 went next");
        // A dropped connection's place is not given back twice.
        drop(flood);
        drop(newcomer);
        assert_eq!(startups.authenticating(), 1);
    }

    /// Under pressure a newcomer that has spoken takes the place of a
    /// connection that has said nothing yet, whatever their networks hold;
    /// a silent newcomer never takes the place of one that has spoken.
    #[tokio::test]
    async fn silence_stands_below_speech() {
        let startups = startups("2:100:3", 100, &[]);
        let talking = speaking(&startups, "10.1.1.2", 0);
        let silent = startups.try_admit(ip("10.1.1.1"), 0).unwrap();
        // From the heaviest network, with the worst roll: still let in, in
        // the place of the one that has said nothing.
        let newcomer = speaking(&startups, "10.1.1.3", 99);
        assert!(silent.evicted.is_cancelled());
        assert!(!talking.evicted.is_cancelled() && !newcomer.evicted.is_cancelled());
        assert_eq!(startups.authenticating(), 2);
        // A silent newcomer from a network holding none: not above them.
        assert_eq!(
            startups.try_admit(ip("10.9.9.9"), 99).unwrap_err(),
            Dropped::Busy
        );
        // One that speaks after it was let in rises above the silent ones.
        drop((talking, newcomer));
        let early = startups.try_admit(ip("10.5.5.1"), 0).unwrap();
        let _other = speaking(&startups, "10.6.6.1", 0);
        early.spoke();
        let beside = startups.admit(ip("10.5.5.2"), 99, &mut Arrival::spoken(true));
        assert_eq!(beside.unwrap_err(), Dropped::Busy);
        assert!(!early.evicted.is_cancelled());
    }

    /// Whether a connection is silent is looked at again when it would be
    /// dropped for it: bytes that came since its task last looked count.
    #[tokio::test]
    async fn a_connection_that_seemed_silent_is_looked_at_again() {
        use crate::conn::tests::loopback_sockets;
        use tokio::io::AsyncWriteExt;
        let startups = startups("2:100:3", 100, &[]);
        let (mut late_client, late_server) = loopback_sockets().await;
        let (_quiet_client, quiet_server) = loopback_sockets().await;
        let late = startups.admit(ip("10.1.1.1"), 0, &mut Arrival::on(&late_server));
        let quiet = startups.admit(ip("10.1.1.2"), 0, &mut Arrival::on(&quiet_server));
        let (late, quiet) = (late.unwrap(), quiet.unwrap());
        late_client.write_all(&[0x16]).await.unwrap();
        late_server.readable().await.unwrap();
        // The oldest seeming silent one has spoken since: the next goes.
        let _newcomer = speaking(&startups, "10.2.2.1", 99);
        assert!(quiet.evicted.is_cancelled() && !late.evicted.is_cancelled());
    }

    /// A newcomer that would be dropped for its silence gets a moment to
    /// speak: one that does is let in as one that spoke; one that does
    /// not is dropped.
    #[tokio::test]
    async fn a_silent_newcomer_gets_a_moment_to_speak() {
        use crate::conn::tests::loopback_sockets;
        use tokio::io::AsyncWriteExt;
        let startups = startups("1:100:3", 100, &[]);
        let talking = speaking(&startups, "10.1.1.1", 0);
        let (mut client, socket) = loopback_sockets().await;
        let (_quiet_client, quiet_socket) = loopback_sockets().await;
        let entry = startups
            .enter(ip("10.2.2.1"), Arrival::on(&socket))
            .unwrap();
        let quiet = startups
            .enter(ip("10.3.3.1"), Arrival::on(&quiet_socket))
            .unwrap();
        client.write_all(&[0x16]).await.unwrap();
        async fn speaks(socket: &tokio::net::TcpStream) {
            let _ = socket.peek(&mut [0u8; 1]).await;
        }
        let placed = entry.place(Duration::ZERO, 3, speaks(&socket)).await;
        assert!(placed.is_ok(), "{placed:?}");
        assert!(talking.evicted.is_cancelled(), "from a heavier network");
        let dropped = quiet.place(Duration::ZERO, 3, speaks(&quiet_socket)).await;
        assert_eq!(dropped.unwrap_err(), Dropped::Busy);
    }

    /// Exempt connections and those that proved a key are never dropped
    /// for a newcomer; a proven one leaves its address's cap.
    #[test]
    fn exempt_and_proven_connections_stay() {
        let startups = startups("1:0:2", 1, &["10.9.0.0/16"]);
        let exempt = startups.try_admit(ip("10.9.0.1"), 99).unwrap();
        let mut proven = startups.try_admit(ip("10.1.1.1"), 99).unwrap();
        proven.proven();
        // Its address may hold another connection now.
        let second = startups.try_admit(ip("10.1.1.1"), 0);
        assert_eq!(
            second.unwrap_err(),
            Dropped::Busy,
            "full, but not over its cap"
        );
        assert!(!exempt.evicted.is_cancelled() && !proven.evicted.is_cancelled());
        drop(proven);
        assert!(startups.try_admit(ip("10.1.1.1"), 99).is_ok());
    }

    #[tokio::test]
    async fn an_address_whose_connections_time_out_is_refused_unless_exempt() {
        let startups = startups("100:30:200", 100, &["10.9.0.0/16"]);
        for address in ["10.1.1.1", "10.9.0.1"] {
            for _ in 0..2 {
                let permit = startups.try_admit(ip(address), 99).unwrap();
                let cut = permit
                    .within(Instant::now(), std::future::pending::<()>())
                    .await;
                assert_eq!(cut.unwrap_err(), Cut::TimedOut);
            }
        }
        match startups.try_admit(ip("10.1.1.1"), 99) {
            Err(Dropped::Penalized { address, .. }) => assert_eq!(address, ip("10.1.1.1")),
            other => panic!("expected a penalty, got {other:?}"),
        }
        // Its neighbours and the exempt network are not.
        assert!(startups.try_admit(ip("10.1.1.2"), 99).is_ok());
        assert!(startups.try_admit(ip("10.9.0.1"), 99).is_ok());
    }

    #[tokio::test]
    async fn a_burst_from_one_address_waits_its_turn() {
        let startups = startups("100:30:200", 1, &[]);
        let a = ip("127.0.0.1");
        let first = startups.try_admit(a, 99).unwrap();
        let waiting = tokio::spawn({
            let startups = startups.clone();
            async move { enter_and_place(&startups, a, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        let second = time::timeout(Duration::from_secs(30), waiting).await;
        assert!(second.unwrap().unwrap().is_ok());
        // Nobody leaves: the wait ends with a refusal.
        let _held = startups.try_admit(a, 99).unwrap();
        let refused = enter_and_place(&startups, a, Duration::from_millis(20)).await;
        assert_eq!(refused.unwrap_err(), Dropped::PerAddress(a));
    }

    /// The place is taken on entering, so a connection accepted first is
    /// let in first, whichever task runs first.
    #[tokio::test]
    async fn places_go_in_the_order_connections_enter() {
        let startups = startups("100:30:200", 1, &[]);
        let a = ip("127.0.0.2");
        let first = startups.enter(a, Arrival::spoken(false)).unwrap();
        let second = startups.enter(a, Arrival::spoken(true)).unwrap();
        let silent = std::future::pending;
        let refused = second.place(Duration::from_millis(20), 1, silent()).await;
        assert_eq!(refused.unwrap_err(), Dropped::PerAddress(a));
        let placed = first.place(Duration::ZERO, 1, silent()).await;
        assert!(placed.is_ok());
        assert_eq!(startups.authenticating(), 1);
    }

    #[tokio::test]
    async fn no_more_than_full_wait_at_once() {
        let startups = startups("2:50:2", 1, &[]);
        let a = ip("127.0.0.1");
        // The room is FULL, or the free places of authenticated
        // connections if they are more.
        assert_eq!((startups.waiting_room(0), startups.waiting_room(5)), (2, 5));
        let _held = startups.try_admit(a, 99).unwrap();
        // Two may wait (FULL is 2); a third is refused at once.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let startups = startups.clone();
                tokio::spawn(
                    async move { enter_and_place(&startups, a, Duration::from_secs(30)).await },
                )
            })
            .collect();
        while startups.waiting.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let at_once = time::timeout(
            Duration::from_secs(5),
            enter_and_place(&startups, a, Duration::from_secs(30)),
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
        let startups = startups("100:30:200", 1, &["127.0.0.0/8"]);
        let _a = startups.try_admit(ip("127.0.0.1"), 99).unwrap();
        let _b = startups.try_admit(ip("127.0.0.1"), 99).unwrap();
        let _c = startups.try_admit(ip("10.0.0.1"), 99).unwrap();
        assert!(startups.try_admit(ip("10.0.0.1"), 99).is_err());
    }
}
