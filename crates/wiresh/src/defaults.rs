//! The one home of every default, limit and timing of the two servers (the
//! wiresh protocol's and the legacy one's).
//!
//! The `serve` flags, [`ServerConfig::new`](crate::server::ServerConfig::new)
//! and [`LegacyServerConfig`](crate::legacy::LegacyServerConfig) take their
//! defaults from here; the timings the servers keep fixed are named here,
//! each with why it is what it is. This module imports nothing of the
//! crate, so that every part may read it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Settings: what `wiresh serve` does unless told otherwise.

/// Where `wiresh serve` listens: loopback only.
pub const LISTEN: &str = "127.0.0.1:7878";
/// Authenticated connections served at once (and legacy connections, on
/// the legacy listener).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections still authenticating: all let in below 64, a growing
/// share dropped at random from 30% at 64 to all at 256.
pub const MAX_STARTUPS: StartupLimits = StartupLimits {
    start: 64,
    rate: 30,
    full: 256,
};
/// Connections one address (an IPv6 /64) may have authenticating at once.
pub const MAX_STARTUPS_PER_ADDRESS: usize = 32;
/// How long a connection over its address's share waits for a place.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(2);
/// When connections authenticating are many, how long a newcomer that had
/// sent nothing when it was accepted, and would be dropped for it, gets to
/// speak: a real client's first bytes follow its TCP handshake at once, a
/// silent flood's never come.
pub const SPEAK_WITHIN: Duration = Duration::from_millis(250);
/// Leading bits of an IPv4 address that name its source network, for
/// fairness between the sources of connections authenticating: a /24.
pub const SOURCE_NETBLOCK_V4: u8 = 24;
/// The same for IPv6: a /64, what one site usually has to itself.
pub const SOURCE_NETBLOCK_V6: u8 = 64;
/// Commands running at once, over all connections of both listeners.
pub const MAX_COMMANDS: usize = 512;
/// Time to send the preamble and authenticate.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no command for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A frame once started must be complete within this.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that takes nothing of a command's output, a file transfer, a
/// listing or a refusal for this long is dropped (and its command killed).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// While a command runs, the client sends a frame at least this often.
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// Stdin bytes a client may have unacknowledged.
pub const STDIN_WINDOW: usize = 1024 * 1024;
/// On shutdown, how long running commands may go on.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Between SIGTERM and SIGKILL when a command's group is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// The `PATH` a command starts with, as `sshd` gives a login (Debian's
/// build): the account's, not the server's own.
pub const LOGIN_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/games";
/// The same for root, with the `sbin` directories.
pub const LOGIN_PATH_ROOT: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------
// Fixed timings of the wiresh server.

/// Longest a transfer under way waits for the client's next frame
/// (`transfer_start`, the next `file_data`). Not [`FRAME_TIMEOUT`], which
/// bounds one frame from its first byte to its last: this bounds the
/// silence between frames, where a client reading its disk may pause.
pub const TRANSFER_FRAME_WAIT: Duration = Duration::from_secs(60);
/// A partial upload nobody has written to for this long is removed at the
/// next upload into its directory.
pub const STALE_PARTIAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Most often one directory is looked through for stale partial files.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);
/// Longest the account commands run as is taken from an earlier look-up
/// in the user database while `/etc/passwd` stays unchanged: an edit of
/// that file takes effect at the next command, one in a database the file
/// does not hold (LDAP, sssd) within this time.
pub const ACCOUNT_RECHECK: Duration = Duration::from_secs(2);
/// Longest a command's `started` waits to leave with what follows it, so
/// that a short command's `started` and `exit` leave in one write.
pub const STARTED_HOLD: Duration = Duration::from_millis(1);
/// Longest a spliced output frame waits to gather more of what a command
/// writes fast, so that 1 GiB leaves in thousands of frames, not a
/// hundred thousand (see `server::command::output`).
pub const OUTPUT_GATHER: Duration = Duration::from_millis(1);
/// How long an `error` frame may wait for room in the queue of a peer that
/// reads nothing, before the connection closes without it.
pub const ERROR_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long a closing connection's last frames may take to leave.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// How long the plain-text `WIRESH-ERROR` line to a peer that does not
/// speak the protocol (or not over TLS) may take to leave.
pub const ERROR_LINE_WITHIN: Duration = Duration::from_secs(2);
/// How long a refused connection is watched for the first byte of a TLS
/// handshake, to tell a TLS client (answered inside TLS) from a silent one.
pub const REFUSAL_TLS_PEEK: Duration = Duration::from_millis(250);
/// How long telling a refused connection why may take, TLS handshake
/// included.
pub const REFUSAL_WITHIN: Duration = Duration::from_secs(2);
/// After a refusal, how long what the peer still sends is read and
/// dropped: closing with unread bytes would send a reset, not a FIN.
pub const CLOSE_DRAIN: Duration = Duration::from_millis(500);
/// Failed authentications one address may have within
/// [`AUTH_FAILURE_WINDOW`] before it is refused outright.
pub const AUTH_FAILURES: u32 = 5;
/// How long failed authentications are remembered.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Delay before answering a wrong token: cheap for a person who mistyped,
/// ruinous for a guesser (on top of the per-address limit).
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// What each connection that lets the handshake deadline pass costs its
/// address (as OpenSSH's `PerSourcePenalties` `grace-exceeded`): its
/// penalty grows by this much, and it is refused at once while its
/// penalty is past [`PENALTY_MIN`].
pub const NOAUTH_PENALTY: Duration = Duration::from_secs(10);
/// An address is refused only once its penalty is past this: one slow
/// login costs a real client nothing, a silent flood is refused at once.
pub const PENALTY_MIN: Duration = Duration::from_secs(15);
/// The longest penalty, however much an address has earned.
pub const PENALTY_MAX: Duration = Duration::from_secs(10 * 60);
/// Addresses with a penalty remembered at most; past that, a new one is
/// not recorded until old ones expire (memory stays bounded).
pub const PENALIZED_ADDRESSES: usize = 65_536;

// ---------------------------------------------------------------------------
// Fixed timings both servers share.

/// After a command is killed, how much longer than the kill grace the
/// server waits for its output pipes to close.
pub const DRAIN_SLACK: Duration = Duration::from_secs(2);
/// How often a killed command's session or cgroup is looked at again:
/// during the kill grace, to spare the SIGKILL once it is empty; after it,
/// to kill again what forked or hopped away in between.
pub const GROUP_GONE_POLL: Duration = Duration::from_millis(20);
/// How long past the kill grace a killed command is swept (SIGKILL every
/// [`GROUP_GONE_POLL`]) before the server gives up on what is left, and
/// says so.
pub const SWEEP_LIMIT: Duration = Duration::from_secs(5);
/// How long the server waits for the spawn helper to say it is up, or,
/// while spawn requests wait, to answer any, before it takes it for hung: it kills it,
/// starts commands itself and starts a new helper (`exec::helper`).
pub const HELPER_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before a dead spawn helper is started again; it doubles
/// up to [`HELPER_RESTART_MAX`] while helpers keep dying young.
pub const HELPER_RESTART: Duration = Duration::from_millis(100);
/// The longest wait before a spawn helper is started again.
pub const HELPER_RESTART_MAX: Duration = Duration::from_secs(30);
/// A spawn helper that lived this long died of something other than its
/// start: the next one is started after [`HELPER_RESTART`] again.
pub const HELPER_LIVED: Duration = Duration::from_secs(60);
/// The first wait after a failed `accept` (out of descriptors, say); it
/// doubles up to [`ACCEPT_BACKOFF_MAX`] while accepting keeps failing.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two failed `accept`s.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Refused connections are logged at most once per this, with a count of
/// the others.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);
/// After a second signal, how long connections get to tell their clients
/// before the process exits.
pub const SECOND_SIGNAL_FAREWELL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// The legacy listener.

/// Output a legacy command may keep in memory before spooling to disk: most
/// outputs never touch the disk, and 256 connections cost at most 2 GiB.
pub const LEGACY_SPOOL_THRESHOLD: usize = 8 * 1024 * 1024;
/// Most output one legacy command may produce. The whole output has to be
/// held (on disk, past the spool threshold) before the header can be sent,
/// so without a cap `yes` would fill the disk. Past it the command is
/// killed and the reply carries what was kept, plus a note.
pub const LEGACY_MAX_OUTPUT: u64 = 4 * 1024 * 1024 * 1024;
/// A legacy client that accepts no reply bytes for this long is given up
/// on.
pub const LEGACY_SEND_STALL: Duration = Duration::from_secs(60);
/// TCP keepalive on legacy connections (both ends): first probe after this
/// much silence. The protocol is silent while a command runs, so without
/// keepalive a vanished peer would go unnoticed; with these timers it is
/// noticed in about a minute.
pub const LEGACY_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Between two keepalive probes.
pub const LEGACY_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes before the connection is dropped.
pub const LEGACY_KEEPALIVE_PROBES: u32 = 3;

// ---------------------------------------------------------------------------

/// The budget of connections still authenticating: `start:rate:full` (the
/// type of [`MAX_STARTUPS`]; `server::admission` spends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupLimits {
    /// Below this many, every connection is let in.
    pub start: usize,
    /// Percent of new connections dropped at `start`, growing to 100 at `full`.
    pub rate: u8,
    /// At this many, every new connection is dropped.
    pub full: usize,
}

/// Why a text is not a [`StartupLimits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStartupLimits {
    /// Not three numbers with colons between, nor one number.
    #[error("{0:?} is not START:RATE:FULL (such as 64:30:256) or one number")]
    Form(String),
    /// The numbers do not fit together.
    #[error("{0:?}: START must be at least 1 and at most FULL, and RATE a percentage")]
    Range(String),
}

impl FromStr for StartupLimits {
    type Err = BadStartupLimits;

    fn from_str(s: &str) -> Result<StartupLimits, BadStartupLimits> {
        let bad = || BadStartupLimits::Form(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let number = |p: &str| p.trim().parse::<usize>().map_err(|_| bad());
        let limits = match parts.as_slice() {
            [full] => StartupLimits {
                start: number(full)?,
                rate: 100,
                full: number(full)?,
            },
            [start, rate, full] => StartupLimits {
                start: number(start)?,
                rate: u8::try_from(number(rate)?).map_err(|_| bad())?,
                full: number(full)?,
            },
            _ => return Err(bad()),
        };
        if limits.start == 0 || limits.start > limits.full || limits.rate > 100 {
            return Err(BadStartupLimits::Range(s.to_string()));
        }
        Ok(limits)
    }
}

impl fmt::Display for StartupLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        let l: StartupLimits = "10:30:100".parse().unwrap();
        assert_eq!((l.start, l.rate, l.full), (10, 30, 100));
        assert_eq!(l.to_string(), "10:30:100");
        let one: StartupLimits = "50".parse().unwrap();
        assert_eq!((one.start, one.rate, one.full), (50, 100, 50));
        for bad in ["", "0", "10:30", "10:130:100", "20:30:10", "a:b:c"] {
            assert!(bad.parse::<StartupLimits>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_budget_reads_back() {
        assert_eq!(MAX_STARTUPS.to_string().parse(), Ok(MAX_STARTUPS));
    }
}
