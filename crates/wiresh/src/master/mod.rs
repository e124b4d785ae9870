//! Connection masters: ssh's ControlMaster/ControlPersist, for wiresh.
//!
//! A one-shot `wiresh exec` pays for a process start, a TCP connection, a
//! TLS handshake and the wiresh handshake. A *master* is a background
//! process that holds authenticated connections to one server and lends
//! them to the `wiresh` commands of the same user, which reach it over a
//! Unix socket in `$WIRESH_HOME/masters/`:
//!
//! - The client opens the socket, sends one line naming what it wants
//!   (`handshake`), then speaks the ordinary wiresh protocol: preamble,
//!   `auth`, requests. The master answers the handshake itself (the
//!   server's own `hello`, replayed, and `auth_ok`), then relays the
//!   client's frames to one of its connections and the server's back
//!   (`relay`), so [`crate::client::Connection`] runs over it exactly as
//!   over TCP: cancel, stdin windows, terminals, transfers, exit statuses.
//! - A master serves only the user it runs as (the socket's directory is
//!   0700 and every peer's credentials are checked, `SO_PEERCRED`), and
//!   only clients with the same settings: the socket is named after an
//!   [`Identity`] (target, credentials, pinned fingerprint), which the
//!   client repeats in its handshake.
//! - The protocol runs one request at a time per connection, so each
//!   client has a connection of its own for as long as it stays: a small
//!   pool (`pool`, at most [`DEFAULT_POOL`] by default), opened on
//!   demand; a connection goes back to the pool only when the client left
//!   it idle (no command, no transfer, no ping unanswered), and is closed
//!   otherwise, which ends whatever ran as a direct disconnect would.
//! - A master exits after its idle time with no client; when the server
//!   refuses it (a revoked key, a changed fingerprint) it tells the
//!   client, which connects directly and says why, and exits. Its
//!   connections were let in once and stay in, so it authenticates anew
//!   every [`DEFAULT_RECHECK`] to learn of a revocation, and looks at the
//!   pinned fingerprint every [`PIN_CHECK_EVERY`]. It logs what it does
//!   to `$WIRESH_HOME/masters/NAME.log` ([`serve`]).
//!
//! [`client`] is the other side: find a master and run over it, start
//! one, list and stop them; [`oneshot`] runs one command through a master
//! with no async runtime, the fast path of a one-shot `wiresh exec`.

pub mod client;
mod handshake;
mod identity;
pub mod oneshot;
mod pool;
mod relay;
mod scan;
pub mod serve;

use std::time::Duration;

pub use self::client::{
    bypass, connect, connect_in, list, start, start_masters_with, stop, Attempt, Persist, Status,
};
pub use self::identity::{Identity, Places, MASTERS_DIR};
pub use self::serve::{run, Spec, StartError};

/// Connections a master holds to its server at most: concurrent clients
/// beyond it wait for one to come back ([`POOL_WAIT`]).
pub const DEFAULT_POOL: usize = 4;

/// The most connections a master may be told to hold (`--pool`).
pub const MAX_POOL: usize = 64;

/// How long a master stays without clients when none is said.
pub const DEFAULT_PERSIST: Duration = Duration::from_secs(10 * 60);

/// How long a client waits for one of the master's connections before
/// the master turns it away (it then connects directly).
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// A pooled connection unused for this long is closed rather than lent:
/// below the server's own idle timeout (15 minutes by default), so that
/// the server never closes one just as a client starts on it.
pub const POOL_IDLE_MAX: Duration = Duration::from_secs(10 * 60);

/// How often a master looks whether its server's pinned fingerprint has
/// changed (it then exits: clients with the new pin have another
/// identity, and nothing should use the old one).
pub const PIN_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How often a master authenticates anew with a fresh connection, when
/// not told (`wiresh master --recheck`): the longest a master goes on
/// after the server revoked its key or token.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);

/// The most masters one command starts (`--persist`, or hosts' `persist`
/// settings, over a fan-out): each is a process holding connections to
/// its server, and a fan-out over hundreds of hosts should not leave
/// hundreds behind at once. Hosts past it connect directly (the next
/// command starts masters for up to as many more).
pub const MAX_STARTS: usize = 16;

/// How long a client waits for a master it started to be ready.
pub const START_WAIT: Duration = Duration::from_secs(15);
