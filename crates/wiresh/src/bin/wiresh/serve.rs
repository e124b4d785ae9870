//! `wiresh serve`: the one conversion from settings (flags, environment,
//! config file) to the daemon's configuration (reading the token, the TLS
//! identity, the authorized clients, the policy), then the daemon. The same
//! conversion runs again on every reload (SIGHUP) and for `--check`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::{info, warn};
use wiresh::audit::AuditLog;
use wiresh::daemon::{self, Containment, DaemonConfig, Reload};
use wiresh::exec::cgroup::Limits;
use wiresh::legacy::{check_legacy_bind, LegacyServerConfig};
use wiresh::privilege::{self, Account};
use wiresh::server::clients::{self, AuthMode, AuthorizedClients};
use wiresh::server::config::Capacity;
use wiresh::server::policy::Policy;
use wiresh::server::ServerConfig;
use wiresh::tls::ServerIdentity;
use wiresh::{auth, home};
use wiresh_proto::Secret;

use crate::args::{LogFormat, ServeArgs};
use crate::settings::{self, Settings, Source};

/// Why the configuration is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At start: missing token and TLS identity are created.
    Start,
    /// `--check`: nothing is created or opened for writing.
    Check,
    /// On SIGHUP: as at start, but privileges are already dropped and the
    /// account to run as cannot change.
    Reload,
}

/// Runs `wiresh serve` until it is stopped (or, with `--check`, checks).
pub fn run() -> Result<()> {
    let words = settings::command_line();
    let settings = settings::load(&words)?;
    init_logging(settings.args.log_format);
    if settings.args.check {
        return check(settings);
    }
    if let Some(file) = &settings.file {
        info!("config file: {}", file.display());
    }
    let mut config = configure(&settings.args, Mode::Start, &mut Vec::new())?;
    config.reload = Some(Reload::new(move || reload(&words)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pid_file = crate::reload::path(settings.args.pid_file.as_deref())?;
    let stopped = runtime.block_on(async {
        // SIGHUP handled (never the default, which ends the process) before
        // the pid file tells `wiresh reload` where to send it.
        let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        let _pid_file = crate::reload::PidFile::write(pid_file)?;
        anyhow::Ok(daemon::run(config).await?)
    })?;
    if stopped == daemon::Stopped::Forced {
        // What is still running is left to the exit, not waited for.
        runtime.shutdown_background();
        anyhow::bail!("stopped by a second signal: every running command was killed");
    }
    Ok(())
}

/// Reads everything again from the same command line, for a reload.
fn reload(words: &[OsString]) -> Result<DaemonConfig> {
    let settings = settings::load(words)?;
    configure(&settings.args, Mode::Reload, &mut Vec::new())
}

/// `serve --check`: every setting with its value and where it came from,
/// then what the files it names hold (secrets masked), on stdout; exit 0
/// when the server would start, an error saying what is wrong otherwise.
fn check(settings: Settings) -> Result<()> {
    let mut notes = Vec::new();
    let config = configure(&settings.args, Mode::Check, &mut notes)?;
    notes.push(config.containment.check()?);
    let mut out = String::new();
    out.push_str("# wiresh serve --check: the configuration is valid\n");
    match &settings.file {
        Some(path) => out.push_str(&format!("# config file: {}\n", path.display())),
        None => out.push_str("# config file: none\n"),
    }
    for (name, value, source) in &settings.values {
        let source = match source {
            Source::Flag => "flag".to_string(),
            Source::Env => "environment".to_string(),
            Source::File(line) => format!("config file line {line}"),
            Source::Default => "default".to_string(),
        };
        match (value, default_path(name, &config)?) {
            (Some(v), _) => out.push_str(&format!("{name} = {}  # {source}\n", toml_value(v))),
            (None, Some(path)) => out.push_str(&format!(
                "{name} = {}  # default{}\n",
                toml_value(&path.display().to_string()),
                if path.exists() { "" } else { " (absent)" }
            )),
            (None, None) => out.push_str(&format!("# {name} is not set\n")),
        }
    }
    let server = &config.server;
    out.push_str(&format!(
        "# token: {} ({})\n",
        mask(&server.token),
        if server.token.is_empty() {
            "none yet".to_string()
        } else {
            auth::token_id(&server.token)
        }
    ));
    out.push_str(&format!("# TLS fingerprint: {}\n", config.fingerprint));
    let names = server.clients.names();
    out.push_str(&match names.len() {
        0 => "# authorized clients: none\n".to_string(),
        n => format!("# authorized clients: {n} ({})\n", names.join(", ")),
    });
    out.push_str(&format!(
        "# policy in force, as its JSON file would say: {}\n",
        serde_json::to_string(&server.policy)?
    ));
    for note in notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    print!("{out}");
    Ok(())
}

/// The file an unset setting stands for: the default path the server
/// reads, so that `--check` shows where it looked.
fn default_path(name: &str, config: &DaemonConfig) -> Result<Option<PathBuf>> {
    Ok(match name {
        "token-file" => Some(config.token_path.clone()),
        "authorized-clients" => Some(clients::default_path()?),
        "pid-file" => Some(crate::reload::path(None)?),
        _ => None,
    })
}

/// A value as TOML: numbers and booleans bare, anything else quoted.
fn toml_value(v: &str) -> String {
    if v == "true" || v == "false" || (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())) {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

/// A secret as `--check` shows it: its length, never its characters.
fn mask(secret: &Secret) -> String {
    format!("<masked, {} characters>", secret.expose().len())
}

/// Turns the settings into the daemon's configuration, reading and checking
/// every file they name, so that a mistake is reported before anything
/// listens (or, on reload, before anything changes). In check mode, what
/// would be created at start is noted in `notes` instead.
fn configure(args: &ServeArgs, mode: Mode, notes: &mut Vec<String>) -> Result<DaemonConfig> {
    anyhow::ensure!(
        !args.frame_timeout.0.is_zero(),
        "--frame-timeout must be more than 0"
    );
    anyhow::ensure!(
        !args.send_timeout.0.is_zero(),
        "--send-timeout must be more than 0"
    );
    anyhow::ensure!(
        args.max_startups_per_address > 0,
        "--max-startups-per-address must be at least 1"
    );
    let (token_path, token) = token(args, mode, notes)?;
    let mut server = ServerConfig::new(token);
    let capacity = capacity(args);
    server.max_connections = capacity.max_connections;
    server.max_startups = capacity.max_startups;
    server.commands = wiresh::exec::CommandSlots::new(capacity.max_commands);
    server.max_startups_per_address = args.max_startups_per_address;
    server.source_netblock = args.source_netblock;
    server.exempt = args.exempt.clone();
    server.auth = args.auth;
    server.clients = Arc::new(authorized_clients(args)?);
    server.command_timeout = args.command_timeout.map(|d| d.0);
    server.idle_timeout = args.idle_timeout.0;
    server.frame_timeout = args.frame_timeout.0;
    server.send_timeout = args.send_timeout.0;
    server.shutdown_grace = args.shutdown_grace.0;
    server.kill_grace = args.kill_grace.0;
    server.limits.max_body = args.max_frame_body.0;
    server.limits.max_header = args.max_frame_header.0;
    server.allow_plaintext = args.allow_plaintext;
    server.release_memory = crate::alloc::memory_release();
    if let Some(path) = &args.policy {
        server.policy = policy(path)?;
    }
    server.audit = audit_log(args, mode)?;
    let identity = identity(mode, notes)?;
    server.tls = identity.as_ref().map(|i| i.config.clone());
    server.files_root = files_root(args, mode)?;
    let legacy = legacy_listener(args, &server)?;
    Ok(DaemonConfig {
        listen: args.listen,
        server,
        token_path,
        fingerprint: identity.map_or_else(|| "(not created yet)".into(), |i| i.fingerprint),
        legacy,
        run_as: run_as(args, mode)?,
        reload: None,
        spawn_helper: !args.no_spawn_helper,
        containment: Containment {
            cgroups: !args.no_cgroup,
            limits: Limits {
                pids: args.max_pids,
                memory: args.max_memory,
            },
        },
    })
}

/// The token file's path and the token in it, created at start if missing
/// (in check mode, noted instead).
fn token(args: &ServeArgs, mode: Mode, notes: &mut Vec<String>) -> Result<(PathBuf, Secret)> {
    let token_path = match &args.token_file {
        Some(p) => p.clone(),
        None => auth::default_token_path()?,
    };
    if mode == Mode::Check && !token_path.exists() {
        notes.push(format!(
            "the token file {} does not exist yet; `wiresh serve` creates it",
            token_path.display()
        ));
        return Ok((token_path, Secret::default()));
    }
    let (token, created) = auth::load_or_create_token(&token_path)?;
    if created {
        info!("created a new token in {}", token_path.display());
    }
    Ok((token_path, token))
}

/// The limits asked for, fitted to the open-file limit the server can
/// raise itself to (with a warning saying what to raise when they do not
/// fit).
fn capacity(args: &ServeArgs) -> Capacity {
    let wanted = Capacity {
        max_connections: args.max_connections,
        max_startups: args.max_startups,
        max_commands: args.max_commands,
    };
    let Some((files, fitted)) =
        daemon::raise_open_file_limit().and_then(|files| Some((files, wanted.fit(files)?)))
    else {
        return wanted;
    };
    warn!(
        "the open-file limit is {files}, but {} connections, {} authenticating and {} \
         commands could need {} descriptors: serving {} connections, {} authenticating \
         and {} commands instead. Raise the limit (ulimit -n, or LimitNOFILE= in a \
         systemd unit) to serve more",
        wanted.max_connections,
        wanted.max_startups.full,
        wanted.max_commands,
        wanted.descriptors(),
        fitted.max_connections,
        fitted.max_startups.full,
        fitted.max_commands,
    );
    fitted
}

/// `--policy FILE`, with a warning when it allows what its list forbids.
fn policy(path: &Path) -> Result<Policy> {
    let policy = Policy::load(path)?;
    if policy.shell_defeats_allow_list() {
        warn!(
            "the policy lists allowed programs but allows shell commands, which can run anything; \
             set \"allow_shell\": false for the list to mean something"
        );
    }
    Ok(policy)
}

/// `--audit-log FILE`, opened (anew on every reload, so that a rotated log
/// is followed); in check mode only its directory is checked.
fn audit_log(args: &ServeArgs, mode: Mode) -> Result<Option<Arc<AuditLog>>> {
    let Some(path) = &args.audit_log else {
        return Ok(None);
    };
    if mode == Mode::Check {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            anyhow::bail!(
                "--audit-log {}: the directory {} does not exist; create it",
                path.display(),
                dir.display()
            );
        }
        return Ok(None);
    }
    let log = AuditLog::open(path)?;
    info!("audit log: {}", path.display());
    Ok(Some(Arc::new(log)))
}

/// The server's TLS identity in `$WIRESH_HOME`, created at start if missing
/// (in check mode, noted instead).
fn identity(mode: Mode, notes: &mut Vec<String>) -> Result<Option<ServerIdentity>> {
    let home = home::wiresh_home()?;
    if mode == Mode::Check && !home.join("server.key").exists() {
        notes.push(format!(
            "no TLS identity in {} yet; `wiresh serve` creates one (and prints its fingerprint)",
            home.display()
        ));
        return Ok(None);
    }
    if mode == Mode::Check {
        return Ok(Some(ServerIdentity::load(&home)?));
    }
    let identity = ServerIdentity::load_or_create(&home)?;
    if identity.created {
        info!("created a new TLS identity in {}", home.display());
    }
    Ok(Some(identity))
}

/// `--files-root DIR`, canonical: it must exist and be a directory.
fn files_root(args: &ServeArgs, mode: Mode) -> Result<Option<PathBuf>> {
    let Some(root) = &args.files_root else {
        return Ok(None);
    };
    let canonical = root.canonicalize().with_context(|| {
        format!(
            "--files-root {}: create it, or fix the path",
            root.display()
        )
    })?;
    anyhow::ensure!(
        canonical.is_dir(),
        "--files-root {}: not a directory",
        root.display()
    );
    if mode == Mode::Start {
        info!("file transfer confined to {}", canonical.display());
    }
    Ok(Some(canonical))
}

/// `--legacy-listen ADDR`: where, and the legacy server's configuration,
/// which shares the operator's limits, command budget and audit log.
fn legacy_listener(
    args: &ServeArgs,
    server: &ServerConfig,
) -> Result<Option<(SocketAddr, LegacyServerConfig)>> {
    let Some(addr) = args.legacy_listen else {
        return Ok(None);
    };
    check_legacy_bind(addr, args.legacy_allow_insecure_remote)?;
    anyhow::ensure!(
        !server.policy.restricts_programs(),
        "--legacy-listen cannot be used with a --policy that restricts programs: the \
         legacy protocol runs every command with a shell. Remove one of the two"
    );
    let mut legacy = daemon::legacy_beside(server);
    legacy.same_user_only = !args.legacy_any_user;
    legacy.encoding = args.legacy_encoding;
    Ok(Some((addr, legacy)))
}

/// `--run-as USER`: the account commands run as (only at start, and only
/// for a server started as root).
fn run_as(args: &ServeArgs, mode: Mode) -> Result<Option<Account>> {
    Ok(match (&args.run_as, mode) {
        // Dropped already at start; the account cannot change.
        (_, Mode::Reload) => None,
        (Some(_), _) if !privilege::is_root() => anyhow::bail!(
            "--run-as needs the server to be started as root; without it the server runs as \
             the user who starts it"
        ),
        (Some(user), _) => Some(Account::lookup(user)?),
        (None, _) => {
            if privilege::is_root() && mode == Mode::Start {
                warn!("running as root: every command runs as root; consider --run-as USER");
            }
            None
        }
    })
}

/// The authorized clients: `--authorized-clients FILE` (which must exist),
/// else `$WIRESH_HOME/authorized_clients` if it exists, else none.
fn authorized_clients(args: &ServeArgs) -> Result<AuthorizedClients> {
    let path = match &args.authorized_clients {
        Some(path) => path.clone(),
        None => clients::default_path()?,
    };
    if args.authorized_clients.is_none() && !path.exists() {
        anyhow::ensure!(
            matches!(args.auth, AuthMode::Either | AuthMode::Token),
            "--auth {} needs client keys, but {} does not exist: create it with one \
             line per client (the line `wiresh keygen` prints on the client), or pass \
             --authorized-clients FILE",
            args.auth,
            path.display()
        );
        return Ok(AuthorizedClients::none());
    }
    let clients = AuthorizedClients::load(&path)?;
    if clients.is_empty() && matches!(args.auth, AuthMode::Key | AuthMode::Both) {
        warn!("{} lists no client: nobody can log in", path.display());
    }
    Ok(clients)
}

/// Logs to stderr, as text or JSON lines; `WIRESH_LOG` sets the level.
/// Text is coloured only on a terminal (and without `NO_COLOR`): a log file
/// or journald gets plain lines.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let level = std::env::var("WIRESH_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_max_level(level)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
