//! `wiresh serve`: the one conversion from flags to the daemon's
//! configuration (reading the token, the TLS identity, the policy), then
//! the daemon.

use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::{info, warn};
use wiresh::daemon::{self, DaemonConfig};
use wiresh::legacy::{check_legacy_bind, LegacyServerConfig};
use wiresh::privilege::{self, Account};
use wiresh::server::audit::AuditLog;
use wiresh::server::policy::Policy;
use wiresh::server::ServerConfig;
use wiresh::tls::ServerIdentity;
use wiresh::{auth, home};

use crate::args::ServeArgs;

/// Runs `wiresh serve` until it is stopped.
pub fn run(args: ServeArgs) -> Result<()> {
    init_logging();
    let config = configure(args)?;
    raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(daemon::run(config))?;
    Ok(())
}

/// Turns the flags into the daemon's configuration, reading and checking
/// every file they name, so that a mistake is reported before anything
/// listens.
fn configure(args: ServeArgs) -> Result<DaemonConfig> {
    anyhow::ensure!(
        !args.frame_timeout.0.is_zero(),
        "--frame-timeout must be more than 0"
    );
    anyhow::ensure!(
        !args.send_timeout.0.is_zero(),
        "--send-timeout must be more than 0"
    );
    let token_path = match args.token_file {
        Some(p) => p,
        None => auth::default_token_path()?,
    };
    let (token, created) = auth::load_or_create_token(&token_path)?;
    if created {
        info!("created a new token in {}", token_path.display());
    }
    let mut server = ServerConfig::new(token);
    server.max_connections = args.max_connections;
    server.max_commands = args.max_commands;
    server.command_timeout = args.command_timeout.map(|d| d.0);
    server.idle_timeout = args.idle_timeout.0;
    server.frame_timeout = args.frame_timeout.0;
    server.send_timeout = args.send_timeout.0;
    server.shutdown_grace = args.shutdown_grace.0;
    server.kill_grace = args.kill_grace.0;
    server.limits.max_body = args.max_frame_body.0;
    server.limits.max_header = args.max_frame_header.0;
    server.allow_plaintext = args.allow_plaintext;
    if let Some(path) = &args.policy {
        server.policy = Policy::load(path)?;
        if server.policy.shell_defeats_allow_list() {
            warn!(
                "the policy lists allowed programs but allows shell commands, which can run anything; \
                 set \"allow_shell\": false for the list to mean something"
            );
        }
    }
    if let Some(path) = &args.audit_log {
        server.audit = Some(Arc::new(AuditLog::open(path)?));
        info!("audit log: {}", path.display());
    }
    let home = home::wiresh_home()?;
    let identity = ServerIdentity::load_or_create(&home)?;
    if identity.created {
        info!("created a new TLS identity in {}", home.display());
    }
    server.tls = Some(identity.config.clone());
    if let Some(root) = &args.files_root {
        let canonical = root
            .canonicalize()
            .with_context(|| format!("--files-root {}", root.display()))?;
        anyhow::ensure!(
            canonical.is_dir(),
            "--files-root {}: not a directory",
            root.display()
        );
        info!("file transfer confined to {}", canonical.display());
        server.files_root = Some(canonical);
    }
    let legacy = match args.legacy_listen {
        Some(addr) => {
            check_legacy_bind(addr, args.legacy_allow_insecure_remote)?;
            // The legacy listener shares the operator's limits.
            Some((addr, LegacyServerConfig::sharing(&server)))
        }
        None => None,
    };
    let run_as = match &args.run_as {
        Some(_) if !privilege::is_root() => {
            anyhow::bail!("--run-as needs the server to be started as root")
        }
        Some(user) => Some(Account::lookup(user)?),
        None => {
            if privilege::is_root() {
                warn!("running as root: every command runs as root; consider --run-as USER");
            }
            None
        }
    };
    Ok(DaemonConfig {
        listen: args.listen,
        server,
        token_path,
        fingerprint: identity.fingerprint,
        legacy,
        run_as,
    })
}

fn init_logging() {
    let level = std::env::var("WIRESH_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
}

/// Lifts the soft open-file limit to the hard one: each connection and each
/// running command hold several descriptors.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
