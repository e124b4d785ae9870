//! The `wiresh` command: a thin layer of argument parsing over the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};
use wiresh::client::{self, Endpoint, Pinning, Security, Target};
use wiresh::legacy::{self, LegacyServerConfig};
use wiresh::server::{self, ServerConfig};
use wiresh::{auth, client::exec::CLIENT_FAILURE};
use wiresh_proto::{ExecRequest, Limits, DEFAULT_PORT};

/// Run commands on another machine over TCP, with their stdout, stderr and
/// exit status kept apart and streamed as they are produced.
#[derive(Parser)]
#[command(name = "wiresh", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a server that runs commands for clients holding its token.
    Serve(ServeArgs),
    /// Run one command on a server, like `ssh host cmd`.
    ///
    /// The words after `--` are joined with spaces and run by the remote
    /// shell. Local stdin is forwarded; remote stdout and stderr go to local
    /// stdout and stderr as they arrive; wiresh exits with the remote exit
    /// code (128+N if the command died of signal N, 127 if it could not be
    /// started, 141 if local stdout was closed early, 255 if wiresh itself
    /// failed). Connections use TLS; the server's fingerprint is pinned on
    /// first use in $WIRESH_HOME/known_hosts.
    Exec(ExecArgs),
    /// Run lines one after another on one connection (interactive prompt on
    /// a terminal, script mode when stdin is piped).
    Shell(ShellArgs),
    /// Copy local files to the server, like scp: `put LOCAL... REMOTE`.
    ///
    /// REMOTE is relative to the server's --files-root. Several sources, -r,
    /// a trailing slash or an existing remote directory copy into that
    /// directory. Each file is checked with BLAKE3 and renamed into place
    /// only when complete.
    Put(PutArgs),
    /// Copy files from the server, like scp: `get REMOTE... LOCAL`.
    ///
    /// Local names come from the paths you give, never from the server. Each
    /// file is checked with BLAKE3 and renamed into place only when complete.
    Get(GetArgs),
}

#[derive(Args)]
struct CopyArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Copy directories and everything in them.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Preserve mode and modification time.
    #[arg(short = 'p', long)]
    preserve: bool,
    /// Continue an interrupted transfer (after checking the part already there).
    #[arg(long)]
    resume: bool,
    /// No progress bars.
    #[arg(short = 'q', long)]
    quiet: bool,
}

impl CopyArgs {
    fn flags(&self) -> client::copy::CopyFlags {
        client::copy::CopyFlags {
            recursive: self.recursive,
            options: client::transfer::TransferOptions {
                preserve: self.preserve,
                resume: self.resume,
            },
            quiet: self.quiet,
        }
    }
}

#[derive(Args)]
struct PutArgs {
    #[command(flatten)]
    copy: CopyArgs,
    /// Local files (and, with -r, directories), then the remote destination.
    #[arg(required = true, num_args = 2.., value_name = "LOCAL... REMOTE")]
    paths: Vec<String>,
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    copy: CopyArgs,
    /// Remote files (and, with -r, directories), then the local destination.
    #[arg(required = true, num_args = 2.., value_name = "REMOTE... LOCAL")]
    paths: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on. The default accepts only local clients; to
    /// serve other machines, give an address such as 0.0.0.0:7878.
    #[arg(
        long,
        short = 'l',
        value_name = "ADDR",
        default_value = "127.0.0.1:7878"
    )]
    listen: SocketAddr,
    /// File holding the token clients must present. Created (mode 600) with
    /// a random token if missing. [default: $WIRESH_HOME/token]
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Most connections served at once; further clients get an error.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Kill any command that runs longer than this (e.g. 30s, 5m). Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    command_timeout: Option<Duration>,
    /// Close connections idle for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15m")]
    idle_timeout: Duration,
    /// Drop a connection that starts a frame and does not finish it this soon.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    frame_timeout: Duration,
    /// Most commands running at once over all connections; more get `busy`.
    #[arg(long, value_name = "N", default_value_t = 512)]
    max_commands: usize,
    /// On SIGINT/SIGTERM, how long running commands may finish before they are killed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Largest frame body accepted, in bytes (1024 to 1048576).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = Limits::DEFAULT_MAX_BODY,
        value_parser = parse_frame_body
    )]
    max_frame_body: usize,
    /// Largest frame header accepted after authentication, in bytes (1024 to 65536).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = Limits::DEFAULT_MAX_HEADER,
        value_parser = parse_frame_header
    )]
    max_frame_header: usize,
    /// Also serve the original (legacy) Python protocol on this address. It
    /// has no authentication, so only loopback addresses are accepted.
    #[arg(long, value_name = "ADDR")]
    legacy_listen: Option<SocketAddr>,
    /// Restrict what may run: a JSON file such as
    /// {"allow_shell": false, "allowed_programs": ["uptime"], "allow_files": false}.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Append one JSON line per command and file transfer to this file. If
    /// it cannot be written, the server refuses new activity.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// When started as root: after binding and reading its files, run as
    /// this user (and so run every command as this user).
    #[arg(long, value_name = "USER")]
    run_as: Option<String>,
    /// Also accept unencrypted connections, from loopback peers only (for
    /// scripts on this machine; remote peers always need TLS).
    #[arg(long)]
    allow_plaintext: bool,
    /// Allow `put` and `get` inside this directory (and nowhere else).
    /// Without it, file transfer is off.
    #[arg(long, value_name = "DIR")]
    files_root: Option<PathBuf>,
    /// Allow --legacy-listen on a non-loopback address. Anyone who can reach
    /// it can run any command as this user: only on a network you trust.
    #[arg(long, requires = "legacy_listen")]
    legacy_allow_insecure_remote: bool,
}

#[derive(Args)]
struct ConnectArgs {
    /// Server to connect to [default: 127.0.0.1:7878, or 127.0.0.1:8090 with --legacy]
    #[arg(
        long = "host",
        short = 'H',
        value_name = "HOST[:PORT]",
        env = "WIRESH_HOST"
    )]
    host: Option<String>,
    /// File holding the server's token. [default: $WIRESH_TOKEN, else $WIRESH_HOME/token]
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Expect exactly this server fingerprint (sha256:...), as printed by
    /// `wiresh serve`, instead of trusting it on first use.
    #[arg(long, value_name = "FINGERPRINT")]
    fingerprint: Option<String>,
    /// Connect without TLS: only to a server on loopback started with
    /// --allow-plaintext.
    #[arg(long, conflicts_with = "fingerprint")]
    plaintext: bool,
}

impl ConnectArgs {
    /// The server, its token and how to protect the connection.
    fn endpoint(&self) -> Result<Endpoint> {
        let target = self.target()?;
        let token = auth::client_token(self.token_file.as_deref())?;
        let security = if self.plaintext {
            anyhow::ensure!(
                target.is_loopback(),
                "--plaintext is allowed only for a server on loopback, not {target}: \
                 the token and all data would cross the network unencrypted"
            );
            Security::Plaintext
        } else {
            Security::Tls(Pinning {
                known_hosts: auth::wiresh_home()?.join("known_hosts"),
                fingerprint: self.fingerprint.clone(),
            })
        };
        Ok(Endpoint {
            target,
            token,
            security,
        })
    }

    /// The modern server to connect to.
    fn target(&self) -> Result<Target> {
        let host = self.host.as_deref().unwrap_or("127.0.0.1");
        Target::parse(host, DEFAULT_PORT).map_err(|e| anyhow::anyhow!("-H {host}: {e}"))
    }

    /// The legacy server to connect to, as `HOST[:PORT]`.
    fn legacy_host(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }
}

#[derive(Args)]
struct ExecArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Run the words as a program and its arguments, without a remote shell.
    #[arg(long)]
    argv: bool,
    /// Do not forward stdin (the command reads an empty input), like `ssh -n`.
    #[arg(short = 'n', long = "no-stdin")]
    no_stdin: bool,
    /// Set an environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory for the command on the server.
    #[arg(short = 'C', long = "cwd", value_name = "DIR")]
    cwd: Option<String>,
    /// Have the server kill the command after this long (e.g. 10s, 2m).
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Talk the original (legacy) protocol, e.g. to shared/legacy/server.py
    /// (default port 8090). It has no stdin, no exit status and mixes
    /// stderr into stdout: wiresh exits 0 after a complete answer.
    #[arg(long, conflicts_with_all = ["argv", "env", "cwd", "timeout", "token_file"])]
    legacy: bool,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

#[derive(Args)]
struct ShellArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Talk the original (legacy) protocol (default port 8090).
    #[arg(long, conflicts_with = "token_file")]
    legacy: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => match serve(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("wiresh serve: {e:#}");
                1
            }
        },
        Command::Exec(args) => exec(args).unwrap_or_else(|e| {
            eprintln!("wiresh: {e:#}");
            CLIENT_FAILURE
        }),
        Command::Shell(args) => shell(args).unwrap_or_else(|e| {
            eprintln!("wiresh: {e:#}");
            CLIENT_FAILURE
        }),
        Command::Put(args) => copy(&args.copy, |rt, endpoint| {
            let (remote, sources) = args.paths.split_last().expect("clap requires two paths");
            let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
            client::copy::put(rt, endpoint, &sources, remote, args.copy.flags())
        }),
        Command::Get(args) => copy(&args.copy, |rt, endpoint| {
            let (local, sources) = args.paths.split_last().expect("clap requires two paths");
            client::copy::get(rt, endpoint, sources, Path::new(local), args.copy.flags())
        }),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn exec(args: ExecArgs) -> Result<i32> {
    if args.legacy {
        let rt = client_runtime()?;
        let code =
            client::exec::run_legacy(&rt, args.connect.legacy_host(), &args.command.join(" "));
        std::process::exit(code);
    }
    let endpoint = args.connect.endpoint()?;
    let mut req = if args.argv {
        ExecRequest::argv(args.command)
    } else {
        ExecRequest::shell(args.command.join(" "))
    };
    req.env = args.env.into_iter().collect();
    req.cwd = args.cwd;
    req.timeout_ms = args.timeout.map(|t| t.as_millis() as u64);
    let rt = client_runtime()?;
    let code = client::exec::run(&rt, &endpoint, req, !args.no_stdin);
    // The stdin thread may be blocked reading a terminal; do not wait for it.
    std::process::exit(code);
}

/// Sets up a client for `put` or `get` and runs it.
fn copy(args: &CopyArgs, run: impl FnOnce(&tokio::runtime::Runtime, &Endpoint) -> i32) -> i32 {
    let setup = || -> Result<_> { Ok((client_runtime()?, args.connect.endpoint()?)) };
    match setup() {
        Ok((rt, endpoint)) => run(&rt, &endpoint),
        Err(e) => {
            eprintln!("wiresh: {e:#}");
            CLIENT_FAILURE
        }
    }
}

fn shell(args: ShellArgs) -> Result<i32> {
    if args.legacy {
        return Ok(client::shell::run_legacy(
            &client_runtime()?,
            args.connect.legacy_host(),
        ));
    }
    let endpoint = args.connect.endpoint()?;
    let rt = client_runtime()?;
    Ok(client::shell::run(&rt, &endpoint))
}

fn serve(args: ServeArgs) -> Result<()> {
    init_logging();
    let token_path = match args.token_file {
        Some(p) => p,
        None => auth::default_token_path()?,
    };
    let (token, created) = auth::load_or_create_token(&token_path)?;
    if created {
        info!("created a new token in {}", token_path.display());
    }
    // The legacy listener shares the operator's limits.
    let legacy_config = LegacyServerConfig {
        max_connections: args.max_connections,
        command_timeout: args.command_timeout,
        idle_timeout: args.idle_timeout,
        shutdown_grace: args.shutdown_grace,
        ..LegacyServerConfig::default()
    };
    let mut config = ServerConfig::new(token);
    config.max_connections = args.max_connections;
    config.command_timeout = args.command_timeout;
    config.idle_timeout = args.idle_timeout;
    anyhow::ensure!(
        !args.frame_timeout.is_zero(),
        "--frame-timeout must be more than 0"
    );
    config.frame_timeout = args.frame_timeout;
    config.max_commands = args.max_commands;
    config.shutdown_grace = args.shutdown_grace;
    config.limits.max_body = args.max_frame_body;
    config.limits.max_header = args.max_frame_header;
    if let Some(path) = &args.policy {
        config.policy = server::policy::Policy::load(path)?;
        if config.policy.shell_defeats_allow_list() {
            warn!(
                "the policy lists allowed programs but allows shell commands, which can run anything; \
                 set \"allow_shell\": false for the list to mean something"
            );
        }
    }
    if let Some(path) = &args.audit_log {
        config.audit = Some(std::sync::Arc::new(server::audit::AuditLog::open(path)?));
        info!("audit log: {}", path.display());
    }
    let identity = wiresh::tls::ServerIdentity::load_or_create(&auth::wiresh_home()?)?;
    if identity.created {
        info!(
            "created a new TLS identity in {}",
            auth::wiresh_home()?.display()
        );
    }
    config.tls = Some(identity.config.clone());
    config.allow_plaintext = args.allow_plaintext;
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
        config.files_root = Some(canonical);
    }
    if let Some(addr) = args.legacy_listen {
        legacy::check_legacy_bind(addr, args.legacy_allow_insecure_remote)?;
    }
    let run_as = match &args.run_as {
        Some(_) if !wiresh::privilege::is_root() => {
            anyhow::bail!("--run-as needs the server to be started as root")
        }
        Some(user) => Some(wiresh::privilege::Account::lookup(user)?),
        None => {
            if wiresh::privilege::is_root() {
                warn!("running as root: every command runs as root; consider --run-as USER");
            }
            None
        }
    };
    raise_fd_limit();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let listener = server::bind(args.listen).await?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() {
            warn!(
                "listening on a non-loopback address: anyone who can reach {local} and holds the token \
                 can run commands (over TLS; plaintext only from loopback peers)"
            );
        }
        let mut signals = ShutdownSignals::install()?;
        let legacy_listener = match args.legacy_listen {
            Some(addr) => Some(server::bind(addr).await?),
            None => None,
        };
        // Ports are bound and secrets read: root is no longer needed.
        if let Some(account) = &run_as {
            account.become_it()?;
            info!("running as {}", args.run_as.as_deref().unwrap_or_default());
        }
        // One signal stops both listeners.
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
            let mut rx = stop.subscribe();
            async move {
                let _ = rx.recv().await;
            }
        };
        let legacy_server = legacy_listener.map(|listener| {
            let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
            println!("wiresh {}: legacy protocol (no authentication) on {local}", env!("CARGO_PKG_VERSION"));
            tokio::spawn(legacy::server::run(listener, legacy_config, stopped(&stop)))
        });
        // Scripts and tests wait for this line (printed last, so every
        // listener is up when it appears).
        println!(
            "wiresh {}: TLS fingerprint {} (clients pin it on first use, or pass --fingerprint)",
            env!("CARGO_PKG_VERSION"),
            identity.fingerprint
        );
        println!(
            "wiresh {}: listening on {local} (token file {})",
            env!("CARGO_PKG_VERSION"),
            token_path.display()
        );
        let modern = tokio::spawn(server::run(listener, config, stopped(&stop)));
        signals.next().await;
        let _ = stop.send(());
        // A second signal means "now": kill every command and leave.
        tokio::spawn(async move {
            signals.next().await;
            warn!("second signal: killing all running commands and exiting");
            wiresh::process::kill_all_groups();
            std::process::exit(1);
        });
        let _ = modern.await;
        if let Some(legacy) = legacy_server {
            let _ = legacy.await;
        }
        Ok(())
    })
}

/// SIGINT and SIGTERM, listened for from start-up (before the readiness
/// line), so that each delivery is seen exactly once.
struct ShutdownSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
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
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Parses `90`, `90s`, `500ms`, `5m` or `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 30s, 500ms, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Frames smaller than 1 KiB would make every output chunk tiny; larger
/// than the protocol default would exceed what clients accept.
fn parse_frame_body(s: &str) -> Result<usize, String> {
    parse_bytes_between(s, 1024, Limits::DEFAULT_MAX_BODY)
}

/// Headers are small JSON objects; 1 KiB is plenty for any request a
/// client sends, and more than the protocol default is never needed.
fn parse_frame_header(s: &str) -> Result<usize, String> {
    parse_bytes_between(s, 1024, Limits::DEFAULT_MAX_HEADER)
}

fn parse_bytes_between(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
