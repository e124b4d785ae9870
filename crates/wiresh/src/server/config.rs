//! What a server is told at start, and the one home of every default.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wiresh_proto::{Limits, Secret};

use super::audit::AuditLog;
use super::policy::Policy;

/// The default of every server setting, written once: the `serve` flags,
/// [`ServerConfig::new`] and the legacy listener's configuration all read
/// them from here.
pub mod defaults {
    use std::time::Duration;

    /// Where `wiresh serve` listens: loopback only.
    pub const LISTEN: &str = "127.0.0.1:7878";
    /// Connections served at once.
    pub const MAX_CONNECTIONS: usize = 256;
    /// Commands running at once, over all connections.
    pub const MAX_COMMANDS: usize = 512;
    /// Time to send the preamble and authenticate.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// A connection with no command for this long is closed.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    /// A frame once started must be complete within this.
    pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
    /// While a command runs, the client sends a frame at least this often.
    pub const KEEPALIVE: Duration = Duration::from_secs(20);
    /// Stdin bytes a client may have unacknowledged.
    pub const STDIN_WINDOW: usize = 1024 * 1024;
    /// On shutdown, how long running commands may go on.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Between SIGTERM and SIGKILL when a command's group is killed.
    pub const KILL_GRACE: Duration = crate::exec::spawn::DEFAULT_KILL_GRACE;
    /// Output a legacy command may keep in memory before spooling to disk.
    pub const LEGACY_SPOOL_THRESHOLD: usize = 8 * 1024 * 1024;
}

/// Everything a server needs to know, fixed at start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The token clients must present.
    pub token: Secret,
    /// Frame size limits.
    pub limits: Limits,
    /// Most connections served at once; more are refused with an error.
    pub max_connections: usize,
    /// Most commands running at once over all connections; more are
    /// refused with `busy`.
    pub max_commands: usize,
    /// Time a client has to send the preamble and authenticate.
    pub handshake_timeout: Duration,
    /// An idle connection (no command running) is closed after this long.
    pub idle_timeout: Duration,
    /// A frame whose first byte has arrived must be complete this soon
    /// (against slow-drip peers).
    pub frame_timeout: Duration,
    /// While a command runs, the client must send a frame at least this often.
    pub keepalive: Duration,
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
}

impl ServerConfig {
    /// The defaults, with the given token.
    pub fn new(token: Secret) -> Self {
        ServerConfig {
            token,
            limits: Limits::default(),
            max_connections: defaults::MAX_CONNECTIONS,
            max_commands: defaults::MAX_COMMANDS,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            frame_timeout: defaults::FRAME_TIMEOUT,
            keepalive: defaults::KEEPALIVE,
            stdin_window: defaults::STDIN_WINDOW,
            command_timeout: None,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            kill_grace: defaults::KILL_GRACE,
            files_root: None,
            tls: None,
            allow_plaintext: false,
            policy: Policy::default(),
            audit: None,
        }
    }

    /// The features this server offers, as `hello.features` lists them.
    pub fn features(&self) -> Vec<String> {
        // "pty" says the server knows terminal sessions, whether or not its
        // policy allows them (that refusal is `forbidden`, with a reason).
        let mut features = vec!["exec", "stdin", "cancel", "ping", "pty"];
        if self.files_root.is_some() && self.policy.allow_files {
            features.push("files");
        }
        features.into_iter().map(String::from).collect()
    }
}
