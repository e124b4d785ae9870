//! A whole server process: the wiresh listener and, when asked for, the
//! legacy one beside it, started together, stopped by one signal.
//!
//! The order matters for safety: every port is bound and every secret read
//! (as root, if started so) before privileges are dropped; the signal
//! handlers are installed before the readiness line, so no signal is
//! missed; the readiness line is printed last, when both listeners accept.
//! On the first SIGINT or SIGTERM both listeners stop accepting, and
//! running commands and transfers get the shutdown grace; a second one
//! kills every command's process group, and [`run`] returns at once
//! ([`Stopped::Forced`]) for the caller to end the process.
//!
//! SIGHUP reloads: the settings are read again (config file, token,
//! authorized clients, policy, TLS identity, audit log) and, if they are
//! valid, new connections get them; connections already open keep theirs,
//! so running commands and transfers go on untouched. A reload that fails
//! keeps the settings in force and logs why. The addresses listened on and
//! the limits on connections and commands are fixed at start. Under
//! systemd, readiness and reloads are reported with `sd_notify`
//! ([`crate::notify`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::defaults::SECOND_SIGNAL_FAREWELL;
use crate::error::SetupError;
use crate::exec::cgroup::{self, Tree};
use crate::legacy::{self, LegacyServerConfig};
use crate::notify;
use crate::privilege::Account;
use crate::server::{self, ServerConfig};

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
    /// How to read the settings again on SIGHUP; without it, SIGHUP is
    /// logged and ignored.
    pub reload: Option<Reload>,
    /// What commands are kept in (cgroups, or sessions), fixed at start.
    pub containment: Containment,
    /// Start commands from a spawn helper process (`exec::helper`), fixed
    /// at start.
    pub spawn_helper: bool,
}

/// How commands are kept together so that all they start can be killed:
/// in cgroups of their own where the server can make them (unless
/// `--no-cgroup`), with `limits`; otherwise in sessions of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Containment {
    /// Use cgroups where they can be had.
    pub cgroups: bool,
    /// Limits on each command (they need cgroups).
    pub limits: cgroup::Limits,
}

impl Containment {
    /// What a start would set up, without making anything (for `serve
    /// --check`): a note for the operator, or why the server would not
    /// start.
    pub fn check(&self) -> Result<String, SetupError> {
        let limited = self.limits != cgroup::Limits::default();
        let found = match self.cgroups {
            true => Tree::check(self.limits).map_err(|e| e.to_string()),
            false => Err("--no-cgroup was given".to_string()),
        };
        match found {
            Ok(origin) => Ok(format!(
                "each command will run in a cgroup of its own under {}{}",
                origin.display(),
                self.limits.describe()
            )),
            Err(why) if limited => Err(SetupError::Config(format!(
                "--max-pids and --max-memory need each command in a cgroup of its own, and \
                 there would be none: {why}"
            ))),
            Err(why) => Ok(format!(
                "commands will run in sessions of their own, not cgroups: {why}"
            )),
        }
    }

    /// Sets it up, before privileges are dropped (the account to become
    /// must be able to use the tree); `None` when commands are kept in
    /// sessions. Limits that cannot be had stop the server: an operator
    /// who asked for them must not be told they hold when they do not.
    pub fn set_up(&self, run_as: Option<&Account>) -> Result<Option<&'static Tree>, SetupError> {
        let limited = self.limits != cgroup::Limits::default();
        let need = |why: &dyn std::fmt::Display| {
            SetupError::Config(format!(
                "--max-pids and --max-memory need each command in a cgroup of its own, and \
                 there is none: {why}"
            ))
        };
        if !self.cgroups {
            if limited {
                return Err(need(&"--no-cgroup was given"));
            }
            info!(
                "commands run in sessions of their own (--no-cgroup): a killed one is swept until \
                 empty; processes that call setsid leave it"
            );
            return Ok(None);
        }
        let owner = run_as.map(|account| (account.uid(), account.gid()));
        match Tree::set_up(self.limits, owner) {
            Ok(tree) => {
                let tree = cgroup::install(tree)
                    .map_err(|_| SetupError::Config("cgroups are set up already".into()))?;
                info!(
                    "each command runs in a cgroup of its own under {} (killed whole with \
                     cgroup.kill){}",
                    tree.dir().display(),
                    self.limits.describe()
                );
                Ok(Some(tree))
            }
            Err(why) if limited => Err(need(&why)),
            Err(why) => {
                info!(
                    "commands run in sessions of their own, not cgroups ({why}): a killed one is \
                     swept until empty; processes that call setsid leave it. Run the server as \
                     root, or as a systemd service with Delegate=yes, for cgroups"
                );
                Ok(None)
            }
        }
    }
}

/// The legacy listener's settings beside a wiresh server's: the limits the
/// operator set for it (connections, command deadlines, the one budget of
/// running commands) and its audit log, shared; the legacy defaults for the
/// rest.
pub fn legacy_beside(server: &ServerConfig) -> LegacyServerConfig {
    LegacyServerConfig {
        max_connections: server.max_connections,
        command_timeout: server.command_timeout,
        idle_timeout: server.idle_timeout,
        kill_grace: server.kill_grace,
        shutdown_grace: server.shutdown_grace,
        commands: server.commands.clone(),
        audit: server.audit.clone(),
        ..LegacyServerConfig::default()
    }
}

/// Reads the whole configuration again, as at start; the error says what is
/// wrong, for the log.
#[derive(Clone)]
pub struct Reload(Arc<dyn Fn() -> Result<DaemonConfig, ReloadError> + Send + Sync>);

impl Reload {
    /// Wraps the function that re-reads the configuration; its error may
    /// be of any type (the binary's carries the causes of what it read).
    pub fn new<E>(read: impl Fn() -> Result<DaemonConfig, E> + Send + Sync + 'static) -> Reload
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Reload(Arc::new(move || read().map_err(|e| ReloadError(e.into()))))
    }
}

/// Why a reload read no configuration: the reader's error, logged with
/// every cause beneath it.
#[derive(Debug)]
pub struct ReloadError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for ReloadError {}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reload(..)")
    }
}

/// What a reload cannot change, as it was at start.
struct Fixed {
    listen: SocketAddr,
    legacy: Option<SocketAddr>,
    max_connections: usize,
    max_commands: usize,
    containment: Containment,
    spawn_helper: bool,
}

impl Fixed {
    fn of(config: &DaemonConfig) -> Fixed {
        Fixed {
            listen: config.listen,
            legacy: config.legacy.as_ref().map(|(addr, _)| *addr),
            max_connections: config.server.max_connections,
            max_commands: config.server.commands.limit(),
            containment: config.containment,
            spawn_helper: config.spawn_helper,
        }
    }

    /// Warns about each fixed setting the new configuration would change.
    fn warn_changes(&self, new: &Fixed) {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push(format!("listen ({} → {})", self.listen, new.listen));
        }
        if self.legacy != new.legacy {
            changed.push(format!(
                "legacy-listen ({:?} → {:?})",
                self.legacy, new.legacy
            ));
        }
        if self.max_connections != new.max_connections {
            changed.push(format!(
                "max-connections ({} → {})",
                self.max_connections, new.max_connections
            ));
        }
        if self.max_commands != new.max_commands {
            changed.push(format!(
                "max-commands ({} → {})",
                self.max_commands, new.max_commands
            ));
        }
        if self.containment != new.containment {
            changed.push("no-cgroup, max-pids and max-memory".to_string());
        }
        if self.spawn_helper != new.spawn_helper {
            changed.push("no-spawn-helper".to_string());
        }
        if !changed.is_empty() {
            warn!(
                "reload: {} cannot change while the server runs; restart it for that (the other \
                 settings are reloaded)",
                changed.join(", ")
            );
        }
    }
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
    hup: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals, SetupError> {
        let handle = |kind, name| {
            signal(kind).map_err(|e| SetupError::Config(format!("cannot handle {name}: {e}")))
        };
        Ok(ShutdownSignals {
            int: handle(SignalKind::interrupt(), "SIGINT")?,
            term: handle(SignalKind::terminate(), "SIGTERM")?,
            hup: handle(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next SIGHUP (true) or SIGINT/SIGTERM (false).
    async fn reload_or_stop(&mut self) -> bool {
        tokio::select! {
            _ = self.hup.recv() => true,
            _ = self.int.recv() => false,
            _ = self.term.recv() => false,
        }
    }

    /// Resolves on the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// How the server process stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Stopped {
    /// Every connection ended, running commands within the shutdown grace.
    Gracefully,
    /// A second signal cut the shutdown short: every command's process
    /// group was killed and the connections had a moment to say so. What
    /// is still running (blocking work of the runtime, say) is not to be
    /// waited for: the caller ends the process, with a failure status.
    Forced,
}

/// Runs the server process until it is told to stop (inside a Tokio
/// runtime). Prints the fingerprint and then the readiness line
/// (`listening on ADDR`) on stdout.
pub async fn run(config: DaemonConfig) -> Result<Stopped, SetupError> {
    let fixed = Fixed::of(&config);
    let DaemonConfig {
        listen,
        server: server_config,
        token_path,
        fingerprint,
        legacy,
        run_as,
        reload,
        containment,
        spawn_helper,
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
    if server_config.tls.is_some() {
        log_kernel_tls();
    }
    let mut signals = ShutdownSignals::install()?;
    let legacy = match legacy {
        Some((addr, legacy_config)) => Some((server::bind(addr).await?, legacy_config)),
        None => None,
    };
    // Orphans of commands come to the server, which reaps them.
    if let Err(e) = crate::exec::reaper::start() {
        warn!("cannot become a child subreaper ({e}): what commands leave behind goes to PID 1");
    }
    let tree = containment.set_up(run_as.as_ref())?;
    // Ports are bound, secrets read, cgroups made: root is no longer needed.
    if let Some(account) = &run_as {
        account.become_it()?;
        info!("running as {}", account.name());
    }
    // Now, as the account commands run as, and before any connection has
    // grown the server: a small process that starts every command.
    if spawn_helper {
        start_spawn_helper();
    }
    let shutdown = CancellationToken::new();
    let version = env!("CARGO_PKG_VERSION");
    let legacy_server = legacy.map(|(listener, legacy_config)| {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        announce(format_args!(
            "wiresh {version}: legacy protocol (no authentication) on {local}"
        ));
        tokio::spawn(legacy::server::run(
            listener,
            legacy_config,
            shutdown.clone(),
        ))
    });
    // Scripts and tests wait for the last line (printed last, so every
    // listener is up when it appears).
    announce(format_args!(
        "wiresh {version}: TLS fingerprint {fingerprint} (clients pin it on first use, or pass --fingerprint)"
    ));
    announce(format_args!(
        "wiresh {version}: listening on {local} (token file {})",
        token_path.display()
    ));
    let (settings, snapshot) = watch::channel(Arc::new(server_config));
    let modern = tokio::spawn(server::run_reloadable(listener, snapshot, shutdown.clone()));
    notify::ready(&format!("listening on {local}"));
    let mut fingerprint = fingerprint;
    while signals.reload_or_stop().await {
        match &reload {
            Some(reload) => apply_reload(reload, &fixed, &settings, &mut fingerprint).await,
            None => warn!("SIGHUP: this server cannot reload; ignored"),
        }
    }
    notify::stopping();
    shutdown.cancel();
    let servers = async move {
        let _ = modern.await;
        if let Some(legacy) = legacy_server {
            let _ = legacy.await;
        }
    };
    let stopped = stop(servers, &mut signals).await;
    if stopped == Stopped::Gracefully {
        // Its cgroup is the server's: it must be empty to be removed.
        crate::exec::helper::stop();
        if let Some(tree) = tree {
            tree.tear_down();
        }
    }
    Ok(stopped)
}

/// Tells whoever started the server a line on its stdout. A stdout that is
/// closed or broken (`wiresh serve | head -1`) is theirs to close: the
/// server serves on.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Starts the spawn helper, or says why commands start from the server's
/// own threads.
fn start_spawn_helper() {
    match crate::exec::helper::start() {
        Ok(pid) => info!("spawn helper started (pid {pid}): commands start from it"),
        Err(e) => warn!(
            "cannot start the spawn helper ({e}): commands start from the server's own threads"
        ),
    }
}

/// Says whether the kernel could take TLS records over (it does not yet:
/// they stay in rustls), for whoever reads the log about performance.
fn log_kernel_tls() {
    match crate::tls::kernel_tls() {
        crate::tls::KernelTls::Available => {
            debug!("kernel TLS (TCP_ULP \"tls\") is available; records stay in rustls")
        }
        crate::tls::KernelTls::Unavailable(why) => {
            debug!("kernel TLS (TCP_ULP \"tls\") is not available ({why}); records stay in rustls")
        }
    }
}

/// Waits for `servers` to wind down after the shutdown began, unless a
/// second signal comes first.
async fn stop(
    servers: impl std::future::Future<Output = ()>,
    signals: &mut ShutdownSignals,
) -> Stopped {
    tokio::pin!(servers);
    tokio::select! {
        () = &mut servers => return Stopped::Gracefully,
        () = signals.next() => {}
    }
    // A second signal means "now": kill every command, give the connections
    // a moment to tell their clients (`exit` with `shutdown`, then
    // `shutting_down`), and leave.
    warn!("second signal: killing all running commands and exiting");
    crate::exec::kill_all_groups();
    let _ = tokio::time::timeout(SECOND_SIGNAL_FAREWELL, servers).await;
    Stopped::Forced
}

/// Reads the configuration again and, if it is valid, hands it to new
/// connections; otherwise keeps the old one and says why.
async fn apply_reload(
    reload: &Reload,
    fixed: &Fixed,
    settings: &watch::Sender<Arc<ServerConfig>>,
    fingerprint: &mut String,
) {
    notify::reloading();
    info!("SIGHUP: reloading the configuration");
    let read = reload.0.clone();
    let result = tokio::task::spawn_blocking(move || read())
        .await
        .unwrap_or_else(|e| Err(ReloadError(e.into())));
    match result {
        Ok(new) => {
            fixed.warn_changes(&Fixed::of(&new));
            if new.fingerprint != *fingerprint {
                info!(
                    "the TLS identity changed: new connections get the fingerprint {}",
                    new.fingerprint
                );
                *fingerprint = new.fingerprint;
            }
            let (auth, clients) = (new.server.auth, new.server.clients.len());
            // In force before it is said to be: whoever reads the log line
            // and connects gets the new settings.
            settings.send_replace(Arc::new(new.server));
            info!(
                %auth,
                authorized_clients = clients,
                "configuration reloaded; new connections use it, open ones keep theirs"
            );
            notify::ready("configuration reloaded");
        }
        Err(e) => {
            error!("reload failed; the previous configuration stays in force: {e}");
            notify::ready("reload failed, previous configuration kept; see the log");
        }
    }
}
