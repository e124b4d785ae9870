//! What a server is told at start; its defaults are in [`crate::defaults`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wiresh_proto::{Limits, Secret};

use super::clients::{AuthMode, AuthorizedClients};
use super::policy::Policy;
use crate::addr::{Netblock, Network};
use crate::audit::AuditLog;
use crate::defaults::{self, StartupLimits};
use crate::exec::CommandSlots;

/// Everything a server needs to know. A running server holds one snapshot
/// per connection, taken when the connection is accepted; a reload
/// (SIGHUP) makes a new snapshot for the connections after it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The token clients must present.
    pub token: Secret,
    /// Which proofs of identity are accepted: the token, a client key, or
    /// both (`--auth`).
    pub auth: AuthMode,
    /// The client keys that may log in, by fingerprint, each with its name
    /// and policy (`authorized_clients`).
    pub clients: Arc<AuthorizedClients>,
    /// Frame size limits.
    pub limits: Limits,
    /// Most authenticated connections served at once; more are refused
    /// with an error.
    pub max_connections: usize,
    /// The budget of connections still authenticating.
    pub max_startups: StartupLimits,
    /// Most connections one address may have authenticating at once.
    pub max_startups_per_address: usize,
    /// What a source network is, for fair shares of the connections
    /// authenticating (`--source-netblock`).
    pub source_netblock: Netblock,
    /// Networks exempt from the per-address limits: the authenticating
    /// connections cap, the fair shares, and the penalties after failed
    /// or timed-out authentications.
    pub exempt: Vec<Network>,
    /// The commands running at once over all connections (and the legacy
    /// listener's); more are refused with `busy`.
    pub commands: CommandSlots,
    /// Time a client has to send the preamble and authenticate.
    pub handshake_timeout: Duration,
    /// An idle connection (no command running) is closed after this long.
    pub idle_timeout: Duration,
    /// A frame whose first byte has arrived must be complete this soon
    /// (against slow-drip peers).
    pub frame_timeout: Duration,
    /// While a command runs, the client must send a frame at least this often.
    pub keepalive: Duration,
    /// A client that takes nothing the server has for it (a command's
    /// output, a download, a listing, a refusal) for this long is dropped,
    /// and its running command killed. A slow reader only slows its
    /// command down; this is for one that reads nothing at all.
    pub send_timeout: Duration,
    /// Most stdin bytes a client may have in flight (`hello.stdin_window`).
    pub stdin_window: usize,
    /// Upper bound on every command's run time (a request may ask for less).
    pub command_timeout: Option<Duration>,
    /// On shutdown, how long running commands may go on before being killed.
    pub shutdown_grace: Duration,
    /// Time between SIGTERM and SIGKILL when a command's group is killed.
    pub kill_grace: Duration,
    /// Canonical directory that file transfers are confined to; `None`
    /// turns file transfer off.
    pub files_root: Option<PathBuf>,
    /// The server's TLS identity. `None` serves plaintext only (for
    /// embedding and tests); the `wiresh serve` binary always sets it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With TLS on: also accept plaintext connections from loopback peers.
    pub allow_plaintext: bool,
    /// What may run (`--policy`).
    pub policy: Policy,
    /// Where every command and transfer is recorded (`--audit-log`).
    pub audit: Option<Arc<AuditLog>>,
    /// Asks the allocator to give freed memory back to the system; called
    /// from a thread of its own each time the authenticated connections
    /// fall to half a large peak (`server/connections.rs` says how large;
    /// the binary passes glibc's `malloc_trim`). Fixed at start, like the
    /// limits.
    pub release_memory: Option<fn()>,
}

impl ServerConfig {
    /// The defaults, with the given token.
    pub fn new(token: Secret) -> Self {
        ServerConfig {
            token,
            auth: AuthMode::default(),
            clients: Arc::new(AuthorizedClients::none()),
            limits: Limits::default(),
            max_connections: defaults::MAX_CONNECTIONS,
            max_startups: defaults::MAX_STARTUPS,
            max_startups_per_address: defaults::MAX_STARTUPS_PER_ADDRESS,
            source_netblock: Netblock::DEFAULT,
            exempt: Vec::new(),
            commands: CommandSlots::new(defaults::MAX_COMMANDS),
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            frame_timeout: defaults::FRAME_TIMEOUT,
            keepalive: defaults::KEEPALIVE,
            send_timeout: defaults::SEND_TIMEOUT,
            stdin_window: defaults::STDIN_WINDOW,
            command_timeout: None,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            kill_grace: defaults::KILL_GRACE,
            files_root: None,
            tls: None,
            allow_plaintext: false,
            policy: Policy::default(),
            audit: None,
            release_memory: None,
        }
    }

    /// The features this server offers, as `hello.features` lists them.
    pub fn features(&self) -> Vec<String> {
        // "pty" says the server knows terminal sessions, whether or not its
        // policy allows them (that refusal is `forbidden`, with a reason);
        // "signal", that it takes `signal` while a command runs.
        let mut features = vec!["exec", "stdin", "cancel", "ping", "pty", "signal"];
        if self.files_root.is_some() && self.policy.allow_files {
            features.push("files");
        }
        features.into_iter().map(String::from).collect()
    }
}

/// How many connections and commands a server takes on, and what that
/// costs in open files: checked against the process's open-file limit at
/// start, so that a server refuses with `busy` or `too_many_connections`
/// instead of failing to start commands when descriptors run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Authenticated connections (one descriptor each).
    pub max_connections: usize,
    /// Connections authenticating (one each, up to `full`).
    pub max_startups: StartupLimits,
    /// Running commands (a few each: pipes and a process handle).
    pub max_commands: usize,
}

impl Capacity {
    /// Descriptors the server keeps for itself: listeners, logs, the
    /// runtime, a spool file or two.
    pub const RESERVED: u64 = 64;
    /// Descriptors one running command holds: three pipes and a pidfd.
    pub const PER_COMMAND: u64 = 4;

    /// Descriptors this capacity may need at once.
    pub fn descriptors(&self) -> u64 {
        Self::RESERVED
            + self.max_connections as u64
            + self.max_startups.full as u64
            + Self::PER_COMMAND * self.max_commands as u64
    }

    /// This capacity, scaled down (all parts alike) to what `open_files`
    /// descriptors allow; `None` when it fits already.
    pub fn fit(&self, open_files: u64) -> Option<Capacity> {
        let need = self.descriptors();
        if need <= open_files {
            return None;
        }
        let budget = open_files.saturating_sub(Self::RESERVED);
        let scale = |n: usize| ((n as u64 * budget / (need - Self::RESERVED)) as usize).max(1);
        let full = scale(self.max_startups.full);
        Some(Capacity {
            max_connections: scale(self.max_connections),
            max_startups: StartupLimits {
                start: scale(self.max_startups.start).min(full),
                rate: self.max_startups.rate,
                full,
            },
            max_commands: scale(self.max_commands),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_fits_the_open_file_limit() {
        let defaults = Capacity {
            max_connections: defaults::MAX_CONNECTIONS,
            max_startups: defaults::MAX_STARTUPS,
            max_commands: defaults::MAX_COMMANDS,
        };
        assert_eq!(defaults.fit(1 << 20), None);
        let wanted = Capacity {
            max_connections: 2000,
            ..defaults
        };
        let fitted = wanted
            .fit(256)
            .expect("2000 connections do not fit in 256 files");
        assert!(fitted.descriptors() <= 256, "{fitted:?}");
        assert!(fitted.max_commands >= 1 && fitted.max_connections >= 1);
        assert!(fitted.max_startups.start <= fitted.max_startups.full);
        assert!(fitted.max_connections > fitted.max_commands, "{fitted:?}");
    }
}
