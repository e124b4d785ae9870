//! A whole server process: the wiresh listener and, when asked for, the
//! legacy one beside it, started together, stopped by one signal.
//!
//! The order matters for safety: every port is bound and every secret read
//! (as root, if started so) before privileges are dropped; the signal
//! handlers are installed before the readiness line, so no signal is
//! missed; the readiness line is printed last, when both listeners accept.
//! On the first SIGINT or SIGTERM both listeners stop accepting and running
//! commands get the shutdown grace; a second one kills every command's
//! process group and exits at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::SetupError;
use crate::legacy::{self, LegacyServerConfig};
use crate::privilege::Account;
use crate::server::{self, ServerConfig};

/// After a second signal, how long connections get to tell their clients
/// before the process exits.
const SECOND_SIGNAL_FAREWELL: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything `wiresh serve` was asked to do, resolved and checked.
#[derive(Debug)]
pub struct DaemonConfig {
    /// Where the wiresh protocol is served.
    pub listen: SocketAddr,
    /// The wiresh server's settings.
    pub server: ServerConfig,
    /// The token file, named in the readiness line.
    pub token_path: PathBuf,
    /// The TLS fingerprint clients pin, printed at start.
    pub fingerprint: String,
    /// Where the legacy protocol is served, if anywhere, and how.
    pub legacy: Option<(SocketAddr, LegacyServerConfig)>,
    /// The account to become once ports are bound, when started as root.
    pub run_as: Option<Account>,
}

/// Lifts the soft open-file limit to the hard one (each connection and each
/// running command hold descriptors) and returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// SIGINT and SIGTERM, listened for from start-up (before the readiness
/// line), so that each delivery is seen exactly once.
struct ShutdownSignals {
    int: Signal,
    term: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals, SetupError> {
        let handle = |kind, name| {
            signal(kind).map_err(|e| SetupError::Config(format!("cannot handle {name}: {e}")))
        };
        Ok(ShutdownSignals {
            int: handle(SignalKind::interrupt(), "SIGINT")?,
            term: handle(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs the server process until it is told to stop (inside a Tokio
/// runtime). Prints the fingerprint and then the readiness line
/// (`listening on ADDR`) on stdout.
pub async fn run(config: DaemonConfig) -> Result<(), SetupError> {
    let DaemonConfig {
        listen,
        server: server_config,
        token_path,
        fingerprint,
        legacy,
        run_as,
    } = config;
    let listener = server::bind(listen).await?;
    let local = listener.local_addr().map_err(|source| SetupError::Bind {
        addr: listen,
        source,
        hint: "",
    })?;
    if !local.ip().is_loopback() {
        warn!(
            "listening on a non-loopback address: anyone who can reach {local} and holds the token \
             can run commands (over TLS; plaintext only from loopback peers)"
        );
    }
    let mut signals = ShutdownSignals::install()?;
    let legacy = match legacy {
        Some((addr, legacy_config)) => Some((server::bind(addr).await?, legacy_config)),
        None => None,
    };
    // Ports are bound and secrets read: root is no longer needed.
    if let Some(account) = &run_as {
        account.become_it()?;
        info!("running as {}", account.name());
    }
    let shutdown = CancellationToken::new();
    let version = env!("CARGO_PKG_VERSION");
    let legacy_server = legacy.map(|(listener, legacy_config)| {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("wiresh {version}: legacy protocol (no authentication) on {local}");
        tokio::spawn(legacy::server::run(
            listener,
            legacy_config,
            shutdown.clone(),
        ))
    });
    // Scripts and tests wait for the last line (printed last, so every
    // listener is up when it appears).
    println!(
        "wiresh {version}: TLS fingerprint {fingerprint} (clients pin it on first use, or pass --fingerprint)"
    );
    println!(
        "wiresh {version}: listening on {local} (token file {})",
        token_path.display()
    );
    let modern = tokio::spawn(server::run(listener, server_config, shutdown.clone()));
    signals.next().await;
    shutdown.cancel();
    let servers = async move {
        let _ = modern.await;
        if let Some(legacy) = legacy_server {
            let _ = legacy.await;
        }
    };
    tokio::pin!(servers);
    tokio::select! {
        () = &mut servers => return Ok(()),
        () = signals.next() => {}
    }
    // A second signal means "now": kill every command, give the connections
    // a moment to tell their clients (`exit` with `shutdown`, then
    // `shutting_down`), and leave.
    warn!("second signal: killing all running commands and exiting");
    crate::exec::kill_all_groups();
    let _ = tokio::time::timeout(SECOND_SIGNAL_FAREWELL, servers).await;
    std::process::exit(crate::exit::SERVE_FAILED);
}
