//! The command line, as clap parses it: every flag, its help and its
//! default (read from the library's one home of defaults). Turning these
//! into the library's configurations is done in `serve.rs` and
//! `client.rs`, once each.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use std::sync::LazyLock;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use wiresh::addr::{Netblock, Network};
use wiresh::client::DEFAULT_TRANSFER_TIMEOUT;
use wiresh::fanout::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_FANOUT, DEFAULT_MAX_OUTPUT};
use wiresh::server::admission::StartupLimits;
use wiresh::server::clients::AuthMode;
use wiresh::server::defaults;
use wiresh::tls::Fingerprint;
use wiresh_proto::{Limits, PROTOCOL_VERSION};

/// What `--version` says: the program's version and the protocol it speaks.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (protocol {PROTOCOL_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
});

/// Run commands on another machine over TCP, with their stdout, stderr and
/// exit status kept apart and streamed as they are produced.
#[derive(Parser)]
#[command(name = "wiresh", version = VERSION.as_str(), about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses this process's command line: clap's parse, then where
    /// `exec`'s words start (see [`ExecArgs::dashed`]).
    pub fn parse_args() -> Result<Cli, clap::Error> {
        let raw: Vec<OsString> = std::env::args_os().collect();
        // One command for both parses: its `exec` is built once.
        let mut command = Cli::command();
        let mut cli = parse_with(&mut command, &raw)?;
        if let Command::Exec(exec) = &mut cli.command {
            // Only a host operand hangs on it, and there is none when -H
            // or -g names the hosts: no second parse then.
            let named = !exec.connect.hosts.is_empty() || !exec.connect.select.groups.is_empty();
            exec.dashed =
                !named && !exec.words.is_empty() && dashed_before_words(&mut command, &raw);
        }
        Ok(cli)
    }
}

/// clap's `Cli::try_parse_from`, with `command` (built by the first call).
fn parse_with(command: &mut clap::Command, raw: &[OsString]) -> Result<Cli, clap::Error> {
    let mut matches = command.try_get_matches_from_mut(raw)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut Cli::command()))
}

/// Whether `exec`'s first word comes after a `--` that ended the options
/// (`exec [OPTIONS] -- COMMAND`: no host operand). clap drops that `--`;
/// it is found again by parsing what comes before each `--` on its own:
/// the one that parses with no word yet is it (a `--` that is an option's
/// value leaves that option without one, and does not parse).
fn dashed_before_words(command: &mut clap::Command, raw: &[OsString]) -> bool {
    raw.iter()
        .enumerate()
        .filter(|(_, arg)| *arg == "--")
        .find_map(|(k, _)| match parse_with(command, &raw[..k]) {
            Ok(Cli {
                command: Command::Exec(before),
            }) => Some(before.words.is_empty()),
            _ => None,
        })
        .unwrap_or(false)
}

/// Each subcommand's arguments are built only when that subcommand is
/// parsed (or its help, completions or manual page is asked for): a
/// one-shot `exec` through a master spent about a fifth of its own CPU
/// time building `serve`'s flags and the others' that it never reads.
/// Deferred, an `Args` struct's doc comment would replace its
/// subcommand's about: theirs are plain comments.
#[derive(Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Start a server that runs commands for clients holding its token.
    Serve(Box<ServeArgs>),
    /// Run one command on a server, like `ssh host cmd`:
    /// `exec [OPTIONS] HOST COMMAND...`, or `exec [OPTIONS] -- COMMAND...`
    /// on the default host.
    ///
    /// HOST is a name, an address, HOST:PORT, [V6]:PORT or a host list
    /// (several hosts at once); with -H or -g there is no HOST operand. The
    /// words after it are joined with spaces and run by the remote shell. Local stdin is forwarded; remote stdout and stderr go to local
    /// stdout and stderr as they arrive; wiresh exits with the remote exit
    /// code (128+N if the command died of signal N, 127 if it could not be
    /// started, 141 if local stdout was closed early, 255 if wiresh itself
    /// failed). Connections use TLS; the server's fingerprint is pinned on
    /// first use in $WIRESH_HOME/known_hosts. With -t the command runs on a
    /// remote terminal, like `ssh -t`.
    Exec(ExecArgs),
    /// Open a login shell on the server, like `ssh host`: `shell [OPTIONS] [HOST]`.
    ///
    /// On a terminal: the remote shell on a remote terminal (full-screen
    /// programs work, Ctrl-C and Ctrl-Z reach it, `~.` at the start of a
    /// line disconnects, `~?` lists the escapes). With piped stdin: the
    /// remote shell reads the script, like `ssh host < script`. wiresh exits
    /// with the shell's status. --each-line runs each line as its own
    /// command instead.
    Shell(ShellArgs),
    /// Copy local files to the server, like scp: `put LOCAL... [HOST:]REMOTE`.
    ///
    /// REMOTE is relative to the server's --files-root; without HOST: the
    /// host is -H's, -g's, or the default. A local name with a colon is
    /// written ./name:x. Several sources, -r,
    /// a trailing slash or an existing remote directory copy into that
    /// directory. Each file is checked with BLAKE3 and renamed into place
    /// only when complete.
    #[command(override_usage = "wiresh put [OPTIONS] LOCAL... [HOST:]REMOTE")]
    Put(PutArgs),
    /// Copy files from the server, like scp: `get [HOST:]REMOTE... LOCAL`.
    ///
    /// Local names come from the paths you give, never from the server. Each
    /// file is checked with BLAKE3 and renamed into place only when complete.
    #[command(override_usage = "wiresh get [OPTIONS] [HOST:]REMOTE... LOCAL")]
    Get(GetArgs),
    /// Make a client key pair, so that a server can know this client by it
    /// (like ssh-keygen).
    ///
    /// Writes the key (mode 600) and its certificate to $WIRESH_HOME/client.key
    /// and client.crt, then prints the line to add to the server's
    /// authorized_clients file: the key's fingerprint and a name.
    Keygen(KeygenArgs),
    /// Keep authenticated connections to a server for the commands that
    /// follow, like ssh's ControlMaster and ControlPersist.
    ///
    /// `wiresh master -H HOST` starts a master in the background: exec,
    /// shell, put and get to that host (with the same settings) then run
    /// over its connections, without a handshake of their own. It exits
    /// after --persist of no use (10 minutes by default), when stopped, or
    /// when the server refuses it. `--persist DURATION` on the other
    /// commands starts one on demand. Only this user's commands can use it.
    Master(MasterArgs),
    /// Make the running server re-read its settings and files, dropping
    /// nothing (SIGHUP to the process in its pid file, and no other).
    ///
    /// The server of this WIRESH_HOME, or the one started with the same
    /// --pid-file. Under systemd, `systemctl reload wiresh` does the same.
    Reload(ReloadArgs),
    /// List the servers whose fingerprints are pinned, or forget one (as
    /// `ssh-keygen -R`).
    ///
    /// Pins are kept in $WIRESH_HOME/known_hosts, one `HOST:PORT sha256:...`
    /// line per server, written on the first connection to it.
    KnownHosts(KnownHostsArgs),
    /// Print a shell completion script: `wiresh completions bash > /etc/bash_completion.d/wiresh`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one per subcommand with --dir.
    Man(ManArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the key; the certificate goes beside it, ending in
    /// .crt. [default: $WIRESH_HOME/client.key]
    #[arg(long, short = 'i', value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// The client's name in the line printed for authorized_clients.
    /// [default: USER@HOSTNAME]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Args)]
pub struct KnownHostsArgs {
    /// Forget the pin of this server, found as `wiresh exec HOST` finds it
    /// (its address and port from the client settings), so that the next
    /// connection pins it anew.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub remove: Option<String>,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ReloadArgs {
    /// The running server's pid file (its `serve --pid-file`).
    /// [default: $WIRESH_HOME/server.pid]
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write wiresh.1 and wiresh-SUBCOMMAND.1 into this directory instead
    /// of printing wiresh.1 (e.g. /usr/local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A duration on the command line: `30s`, `500ms`, `5m`, `1h`, `1h 30m`,
/// or a plain number of seconds (`90`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        wiresh::config_file::parse_duration(s).map(DurationArg)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// A size on the command line: `1048576`, `512K`, `1M`, `2GiB` (K, M and
/// G are powers of 1024), or `none` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeArg(pub Option<u64>);

impl FromStr for SizeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(SizeArg(None));
        }
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            _ => {
                return Err(format!(
                    "{s:?} is not a size; use e.g. 512K, 1M, 2GiB or none"
                ))
            }
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .map(|n| SizeArg(Some(n)))
            .ok_or_else(|| format!("{s:?} is not a size; use e.g. 512K, 1M, 2GiB or none"))
    }
}

impl fmt::Display for SizeArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(n) if n > 0 && n % (1 << 30) == 0 => write!(f, "{}G", n >> 30),
            Some(n) if n > 0 && n % (1 << 20) == 0 => write!(f, "{}M", n >> 20),
            Some(n) if n > 0 && n % (1 << 10) == 0 => write!(f, "{}K", n >> 10),
            Some(n) => n.fmt(f),
        }
    }
}

/// A frame size limit between 1 KiB and the protocol's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimit(pub usize);

impl FrameLimit {
    fn between(s: &str, max: usize) -> Result<FrameLimit, String> {
        let n: usize = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number of bytes"))?;
        if (1024..=max).contains(&n) {
            Ok(FrameLimit(n))
        } else {
            Err(format!("must be between 1024 and {max}"))
        }
    }
}

impl fmt::Display for FrameLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Frames smaller than 1 KiB would make every output chunk tiny; larger
/// than the protocol default would exceed what clients accept.
fn parse_frame_body(s: &str) -> Result<FrameLimit, String> {
    FrameLimit::between(s, Limits::DEFAULT_MAX_BODY)
}

/// Headers are small JSON objects; 1 KiB is plenty for any request a
/// client sends, and more than the protocol default is never needed.
fn parse_frame_header(s: &str) -> Result<FrameLimit, String> {
    FrameLimit::between(s, Limits::DEFAULT_MAX_HEADER)
}

/// A size in bytes: a number, or one with K, M, G or T (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return Err(format!("{s:?}: the unit is K, M, G or T")),
    };
    let bad = || format!("{s:?} is not a size (such as 512M, 2G or a number of bytes)");
    let n: u64 = number.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(bad)
}

fn parse_encoding(s: &str) -> Result<&'static encoding_rs::Encoding, String> {
    wiresh::legacy::encoding::lookup(s).map_err(|e| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// How the server writes its log (on stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file: every flag below can be written
    /// there under its own name (`max-connections = 64`). Flags and
    /// environment variables override it. [default: $WIRESH_HOME/server.toml, if it exists]
    #[arg(long, value_name = "FILE", env = "WIRESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration and every file it names, print the
    /// effective settings (secrets masked), and exit without listening.
    #[arg(long)]
    pub check: bool,
    /// Address to listen on. The default accepts only local clients; to
    /// serve other machines, give an address such as 0.0.0.0:7878.
    #[arg(long, short = 'l', value_name = "ADDR", default_value = defaults::LISTEN, env = "WIRESH_LISTEN")]
    pub listen: SocketAddr,
    /// File holding the token clients must present. Created (mode 600) with
    /// a random token if missing. [default: $WIRESH_HOME/token]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Keep the server's process id in this file while it runs, for
    /// `wiresh reload`. [default: $WIRESH_HOME/server.pid]
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Most authenticated connections served at once; further clients get
    /// an error.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections still authenticating: all are let in below START, from
    /// RATE% of new ones dropped at random at START to all at FULL (as
    /// OpenSSH's MaxStartups). From START on, a newcomer from a network
    /// holding fewer of them than the heaviest takes the place of that
    /// network's oldest instead.
    #[arg(long, value_name = "START:RATE:FULL", default_value_t = defaults::MAX_STARTUPS)]
    pub max_startups: StartupLimits,
    /// Most connections one address (an IPv6 /64) may have authenticating
    /// at once; more wait a moment for a place, then are refused. A client
    /// that presents an authorized key stops counting once its TLS
    /// handshake is done.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_STARTUPS_PER_ADDRESS)]
    pub max_startups_per_address: usize,
    /// Prefix lengths that group addresses into source networks, whose
    /// connections authenticating share the budget fairly: IPv4 bits and,
    /// after a colon, IPv6 bits (32:128 makes each address its own).
    #[arg(long, value_name = "V4[:V6]", default_value_t = Netblock::DEFAULT)]
    pub source_netblock: Netblock,
    /// A network exempt from the per-address limits (authenticating
    /// connections, fair shares, the refusal of addresses whose
    /// connections time out before authenticating, and the lockout after
    /// failed authentications), such as 10.1.0.0/16 or 127.0.0.1
    /// (repeatable).
    #[arg(long = "exempt", value_name = "ADDR[/BITS]")]
    pub exempt: Vec<Network>,
    /// Kill any command that runs longer than this (e.g. 30s, 5m). Off by default.
    #[arg(long, value_name = "DURATION")]
    pub command_timeout: Option<DurationArg>,
    /// Close connections idle for this long.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::IDLE_TIMEOUT))]
    pub idle_timeout: DurationArg,
    /// Drop a connection that starts a frame and does not finish it this soon.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::FRAME_TIMEOUT))]
    pub frame_timeout: DurationArg,
    /// Drop a client that takes nothing of a command's output, a download,
    /// a listing or a refusal for this long (its command is killed).
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::SEND_TIMEOUT))]
    pub send_timeout: DurationArg,
    /// Most commands running at once over all connections; more get `busy`.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_COMMANDS)]
    pub max_commands: usize,
    /// On SIGINT/SIGTERM, how long running commands and transfers may finish
    /// before commands are killed and transfers stopped.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::SHUTDOWN_GRACE))]
    pub shutdown_grace: DurationArg,
    /// When a command is killed, how long its processes get between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::KILL_GRACE))]
    pub kill_grace: DurationArg,
    /// Keep commands in sessions of their own even where the server could
    /// make each a cgroup (as root, or a systemd service with
    /// Delegate=yes); a killed command is then swept until its session is
    /// empty, and what calls setsid escapes.
    #[arg(long)]
    pub no_cgroup: bool,
    /// Start every command from the server process itself, not from its
    /// spawn helper (a small process of its own, `wiresh spawn-helper` in
    /// ps, whose starts cost the same however many connections the server
    /// holds).
    #[arg(long)]
    pub no_spawn_helper: bool,
    /// Most processes (and threads) each command may have at once, its
    /// cgroup's pids.max: a fork bomb stays inside its command. Needs
    /// cgroups with the pids controller; the server refuses to start
    /// without.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pids: Option<u64>,
    /// Most memory each command may use, its cgroup's memory.max: bytes,
    /// or with K, M, G or T (powers of 1024), such as 512M. Needs cgroups
    /// with the memory controller; the server refuses to start without.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Largest frame body accepted, in bytes (1024 to 1048576).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = FrameLimit(Limits::DEFAULT_MAX_BODY),
        value_parser = parse_frame_body
    )]
    pub max_frame_body: FrameLimit,
    /// Largest frame header accepted after authentication, in bytes (1024 to 65536).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = FrameLimit(Limits::DEFAULT_MAX_HEADER),
        value_parser = parse_frame_header
    )]
    pub max_frame_header: FrameLimit,
    /// Also serve the original (legacy) Python protocol on this address. It
    /// has no authentication, so only loopback addresses are accepted.
    #[arg(long, value_name = "ADDR")]
    pub legacy_listen: Option<SocketAddr>,
    /// Which proofs of identity to accept: `either` the token or an
    /// authorized client key, only the `token`, only a `key`, or `both`
    /// together.
    #[arg(long, value_name = "MODE", default_value_t = AuthMode::default())]
    pub auth: AuthMode,
    /// The client keys that may log in: one line per client, its
    /// fingerprint (from `wiresh keygen`), a name, and optionally a policy.
    /// [default: $WIRESH_HOME/authorized_clients, if it exists]
    #[arg(long, value_name = "FILE")]
    pub authorized_clients: Option<PathBuf>,
    /// Restrict what may run: a JSON file such as
    /// {"allow_shell": false, "allowed_programs": ["uptime"], "allow_files": false}.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Append one JSON line per command and file transfer to this file. If
    /// it cannot be written, the server refuses new activity.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// When started as root: after binding and reading its files, run as
    /// this user (and so run every command as this user).
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Also accept unencrypted connections, from loopback peers only (for
    /// scripts on this machine; remote peers always need TLS).
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Allow `put` and `get` inside this directory (and nowhere else).
    /// Without it, file transfer is off.
    #[arg(long, value_name = "DIR")]
    pub files_root: Option<PathBuf>,
    /// The text encoding of the legacy listener's clients, a WHATWG label
    /// such as gbk: commands are read in it and answers sent in it, as a
    /// Windows server with that console code page would. [default: bytes as they are, UTF-8]
    #[arg(long, value_name = "LABEL", requires = "legacy_listen", value_parser = parse_encoding)]
    pub legacy_encoding: Option<&'static encoding_rs::Encoding>,
    /// Allow --legacy-listen on a non-loopback address. Anyone who can reach
    /// it can run any command as this user: only on a network you trust.
    #[arg(long, requires = "legacy_listen")]
    pub legacy_allow_insecure_remote: bool,
    /// Let every local user use --legacy-listen. By default only the user
    /// the server runs commands as (and root) may: the kernel tells which
    /// user owns a loopback peer's socket.
    #[arg(long, requires = "legacy_listen")]
    pub legacy_any_user: bool,
    /// Log as lines of text or as JSON objects (one per line).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text, env = "WIRESH_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// The hosts to run on, as a host list (repeatable; pdsh's -w):
    /// -H a,b -H web[01-20] -H c:7900 runs on all of them. Without a host
    /// here, in an operand or from -g: $WIRESH_HOST, else the client
    /// settings' default host, else 127.0.0.1 (port 7878; 8090 with --legacy).
    #[arg(
        long = "host",
        short = 'H',
        visible_short_alias = 'w',
        value_name = "HOSTS"
    )]
    pub hosts: Vec<String>,
    /// File holding the server's token. [default: $WIRESH_TOKEN, else $WIRESH_HOME/token]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Expect exactly this server fingerprint (sha256:...), as printed by
    /// `wiresh serve`, instead of trusting it on first use.
    #[arg(long, value_name = "FINGERPRINT")]
    pub fingerprint: Option<Fingerprint>,
    /// Connect without TLS: only to a server on loopback started with
    /// --allow-plaintext.
    #[arg(long, conflicts_with_all = ["fingerprint", "key"])]
    pub plaintext: bool,
    /// Present this client key (made by `wiresh keygen`) to the server;
    /// `none` (or /dev/null) presents none. [default: the host's `key` in
    /// the client settings, else $WIRESH_HOME/client.key, if it exists]
    #[arg(long, short = 'i', value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Keep the connection for this long after the last command, in a
    /// master (`wiresh master`), and reuse it: like ssh's ControlPersist.
    /// Commands to the host reuse a running master whether or not this is
    /// given; 0 starts none, whatever the host's `persist` setting says.
    /// [default: the host's `persist` in the client settings, else off]
    #[arg(long, value_name = "DURATION", env = "WIRESH_PERSIST")]
    pub persist: Option<DurationArg>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// The host operand (`exec HOST ...`, `shell HOST`, `put ... HOST:PATH`),
    /// taken from the words once parsed.
    #[arg(skip)]
    pub operand: Option<String>,
    /// The port of hosts that name none: `-p` of exec and shell, `-P` of
    /// put and get.
    #[arg(skip)]
    pub port: Option<u16>,
}

// ssh's options that `exec` and `shell` take as ssh does, so that tools
// which drive ssh (rsync -e, GIT_SSH_COMMAND) drive wiresh.
#[derive(Args)]
pub struct SshArgs {
    /// The port of hosts that name none, as `ssh -p`. [default: the host's
    /// in the client settings, else 7878]
    #[arg(short = 'p', long = "port", value_name = "PORT", value_parser = parse_port)]
    pub port: Option<u16>,
    /// Refused with an explanation: commands run as the account the server
    /// runs as (as `ssh -l`; rsync passes it for `user@host:`).
    #[arg(short = 'l', long = "login-name", value_name = "USER", hide = true)]
    pub login: Option<String>,
    /// One of ssh's -o options that wiresh has: SendEnv=VAR (send that
    /// local variable, as -e VAR=VALUE), Port=N, ConnectTimeout=SECONDS,
    /// BatchMode=yes|no (wiresh never prompts). Others are refused.
    #[arg(short = 'o', value_name = "OPTION")]
    pub options: Vec<String>,
    /// Print how each host would be reached (address, port, pinning, key)
    /// and exit without connecting, as `ssh -G`.
    #[arg(short = 'G')]
    pub print_settings: bool,
}

/// A TCP port, 1 to 65535.
fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{s:?} is not a port (1 to 65535)")),
    }
}

// `wiresh master`: start, list or stop masters.
#[derive(Args)]
pub struct MasterArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The most connections the master holds: each client uses one, and
    /// clients beyond wait for one (up to 5 s, then connect directly).
    #[arg(long, value_name = "N", default_value_t = wiresh::master::DEFAULT_POOL, value_parser = parse_pool)]
    pub pool: usize,
    /// How often the master authenticates anew (a fresh connection, closed
    /// again): the connections it holds were let in once, so this is the
    /// longest it goes on after the server revoked its key or token.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(wiresh::master::DEFAULT_RECHECK), value_parser = parse_recheck)]
    pub recheck: DurationArg,
    /// List the running masters: server, process, connections, clients.
    #[arg(long, conflicts_with_all = ["stop", "foreground"])]
    pub list: bool,
    /// Stop the master of the host: it takes no new clients and exits once
    /// the current ones are done.
    #[arg(long, conflicts_with = "foreground")]
    pub stop: bool,
    /// Run in the foreground, logging to stderr, rather than in the
    /// background with a log in $WIRESH_HOME/masters.
    #[arg(long)]
    pub foreground: bool,
    /// Run a master from the settings on stdin (how a master is started).
    #[arg(long = "background", hide = true)]
    pub background: bool,
    /// With --background: this is the master itself, not its launcher.
    #[arg(long, hide = true, requires = "background")]
    pub detached: bool,
}

fn parse_recheck(s: &str) -> Result<DurationArg, String> {
    match s.parse::<DurationArg>()? {
        d if d.0 < std::time::Duration::from_millis(100) => Err(format!(
            "{s:?}: authenticating anew more often than every 100ms only loads the server"
        )),
        d => Ok(d),
    }
}

fn parse_pool(s: &str) -> Result<usize, String> {
    let max = wiresh::master::MAX_POOL;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of connections (1 to {max})")),
    }
}

// Which hosts, and how many at once (every client command).
#[derive(Args)]
pub struct SelectArgs {
    /// Run on the hosts of this inventory group (repeatable).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Leave out these hosts (a host list such as web[03-05]; repeatable).
    #[arg(short = 'x', long = "exclude", value_name = "HOSTS")]
    pub exclude: Vec<String>,
    /// The client settings: how to reach each host, groups, defaults (as
    /// ssh -F). [default: $WIRESH_HOME/client.toml]
    #[arg(short = 'F', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An inventory of earlier releases (hosts.toml's format); read for
    /// this release, with a warning that says how to move it.
    #[arg(long, value_name = "FILE", hide = true, conflicts_with = "config")]
    pub inventory: Option<PathBuf>,
    /// With many hosts: most hosts worked on at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FANOUT, value_parser = parse_fanout)]
    pub fanout: usize,
    /// Give up on a host not connected and authenticated within this long.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(DEFAULT_CONNECT_TIMEOUT))]
    pub connect_timeout: DurationArg,
    /// With many hosts: launch no more hosts once one has failed.
    #[arg(long)]
    pub fail_fast: bool,
}

// How the output of many hosts is shown (`exec`).
#[derive(Args)]
pub struct OutputArgs {
    /// Group hosts with identical output and exit status under one header,
    /// largest group first (like `clush -b`).
    #[arg(short = 'b', long, conflicts_with_all = ["diff", "json", "outdir"])]
    pub gather: bool,
    /// Like --gather, each group shown as a unified diff against the largest.
    #[arg(long, conflicts_with_all = ["json", "outdir"])]
    pub diff: bool,
    /// One JSON object per host per line: host, status, exit code or signal
    /// or error, stdout, stderr, duration, bytes.
    #[arg(long, conflicts_with = "outdir")]
    pub json: bool,
    /// Write each host's output to DIR/HOST.out and DIR/HOST.err; only the
    /// summary goes to the terminal.
    #[arg(long, value_name = "DIR")]
    pub outdir: Option<PathBuf>,
    /// Exit with the largest exit status of any host (like `pdsh -S`).
    #[arg(short = 'S', long = "largest-status")]
    pub largest_status: bool,
    /// With many hosts: no summary at the end, even when a host failed
    /// (its own error line and the exit status still say so). Without
    /// it, a summary comes only when something did not succeed.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// With --gather, --diff or --json: keep at most this much of each
    /// host's output (stdout and stderr together, e.g. 512K, 10M, or
    /// none); the rest is counted, not kept, and the host is reported
    /// truncated. What is kept waits in a temporary file in $TMPDIR.
    #[arg(long, value_name = "SIZE", default_value_t = SizeArg(Some(DEFAULT_MAX_OUTPUT)))]
    pub max_output: SizeArg,
    /// With many hosts: pass their output to a terminal byte for byte. By
    /// default a terminal gets text, tabs, newlines and colours, and any
    /// other control character written out as \xNN (a host cannot set
    /// the title, the clipboard, or clear the screen).
    #[arg(long)]
    pub raw: bool,
}

fn parse_fanout(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of hosts (1 or more)")),
    }
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Run the words as a program and its arguments, without a remote shell.
    #[arg(long)]
    pub argv: bool,
    /// Do not forward stdin (the command reads an empty input), like `ssh -n`.
    #[arg(short = 'n', long = "no-stdin")]
    pub no_stdin: bool,
    /// Set an environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory for the command on the server.
    #[arg(short = 'C', long = "cwd", value_name = "DIR")]
    pub cwd: Option<String>,
    /// Have the server kill the command after this long (e.g. 10s, 2m).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<DurationArg>,
    /// Run the command on a remote terminal (a pty), like `ssh -t`: for
    /// programs that need one (vi, top, less). Its stderr then comes
    /// through stdout, as on a terminal.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// No remote terminal (the default for exec), like `ssh -T`.
    #[arg(short = 'T', long = "no-tty", conflicts_with = "tty")]
    pub no_tty: bool,
    /// Talk the original (legacy) protocol, e.g. to shared/legacy/server.py
    /// (default port 8090). It has no stdin, no exit status and mixes
    /// stderr into stdout: wiresh exits 0 after a complete answer.
    #[arg(long, conflicts_with_all = ["argv", "env", "cwd", "timeout", "token_file", "tty"])]
    pub legacy: bool,
    /// With --legacy: the server's text encoding, a WHATWG label such as
    /// gbk (a Windows server answers in its console's code page). The
    /// command is sent in it and the answer turned into UTF-8.
    #[arg(long, value_name = "LABEL", requires = "legacy", value_parser = parse_encoding)]
    pub encoding: Option<&'static encoding_rs::Encoding>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// The host (unless -H or -g names the hosts, or `--` comes first),
    /// then the command and its arguments. Options end at the host: what
    /// follows it is the command, options included.
    #[arg(trailing_var_arg = true, value_name = "HOST COMMAND")]
    pub words: Vec<String>,
    /// Whether `--` came before the words: they are all the command.
    #[arg(skip)]
    pub dashed: bool,
}

#[derive(Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub ssh: SshArgs,
    /// A remote terminal even when stdin is not a terminal, like `ssh -tt`.
    #[arg(short = 't', long = "tty", conflicts_with = "each_line")]
    pub tty: bool,
    /// No remote terminal even on a terminal: the remote shell reads stdin
    /// as a script, like `ssh -T`.
    #[arg(short = 'T', long = "no-tty", conflicts_with_all = ["tty", "each_line"])]
    pub no_tty: bool,
    /// Run each line as a command of its own, with its own exit status
    /// (`[exit N]` after a failure), on one connection: the original line
    /// mode, with a `>>:` prompt and history on a terminal. `cd` and
    /// variables do not carry from one line to the next.
    #[arg(long)]
    pub each_line: bool,
    /// Talk the original (legacy) protocol (default port 8090); always one
    /// command per line.
    #[arg(long, conflicts_with_all = ["token_file", "tty", "no_tty"])]
    pub legacy: bool,
    /// With --legacy: the server's text encoding (a WHATWG label such as gbk).
    #[arg(long, value_name = "LABEL", requires = "legacy", value_parser = parse_encoding)]
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// The host (a name, an address, HOST:PORT, a host list), unless -H or
    /// -g names the hosts.
    #[arg(value_name = "HOST")]
    pub host: Option<String>,
}

#[derive(Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Copy directories and everything in them.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Preserve mode and modification time.
    #[arg(short = 'p', long)]
    pub preserve: bool,
    /// The port of hosts that name none, as `scp -P`. [default: the host's
    /// in the client settings, else 7878]
    #[arg(short = 'P', long = "port", value_name = "PORT", value_parser = parse_port)]
    pub port: Option<u16>,
    /// Continue an interrupted transfer (after checking the part already there).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Give up when the server answers nothing, or takes none of what is
    /// sent, for this long (e.g. 30s, 5m).
    #[arg(
        long,
        value_name = "DURATION",
        env = "WIRESH_TRANSFER_TIMEOUT",
        default_value_t = DurationArg(DEFAULT_TRANSFER_TIMEOUT)
    )]
    pub transfer_timeout: DurationArg,
}

#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// Local files (and, with -r, directories), then the remote
    /// destination, as HOST:PATH or a path on the host of -H, -g or the default.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<OsString>,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// Remote files (and, with -r, directories), as HOST:PATH (one host for
    /// all) or paths on the host of -H, -g or the default; then the local
    /// destination.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<DurationArg>().map(|d| d.0);
        assert_eq!(d("90"), Ok(Duration::from_secs(90)));
        assert_eq!(d("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(d("soon").is_err());
        assert!(d("-1").is_err());
        assert_eq!(DurationArg(Duration::from_secs(900)).to_string(), "15m");
    }

    #[test]
    fn sizes() {
        let size = |s: &str| s.parse::<SizeArg>().map(|s| s.0);
        assert_eq!(size("1048576"), Ok(Some(1 << 20)));
        assert_eq!(size("512K"), Ok(Some(512 << 10)));
        assert_eq!(size("1M"), Ok(Some(1 << 20)));
        assert_eq!(size("2GiB"), Ok(Some(2 << 30)));
        assert_eq!(size("0"), Ok(Some(0)));
        assert_eq!(size("none"), Ok(None));
        assert!(size("1T").is_err() && size("M").is_err() && size("-1").is_err());
        assert!(size("99999999999G").is_err());
        assert_eq!(SizeArg(Some(DEFAULT_MAX_OUTPUT)).to_string(), "1M");
        assert_eq!(SizeArg(Some(1000)).to_string(), "1000");
    }

    #[test]
    fn exec_words_after_dashes_are_all_the_command() {
        let exec = |line: &str| {
            let raw: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
            // As parse_args does: the second parse reuses the built command.
            let mut command = Cli::command();
            let Command::Exec(args) = parse_with(&mut command, &raw).unwrap().command else {
                panic!("exec")
            };
            (args.words, dashed_before_words(&mut command, &raw))
        };
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(exec("w exec -- uptime"), (words(&["uptime"]), true));
        assert_eq!(
            exec("w exec -p 3 -- uptime -l"),
            (words(&["uptime", "-l"]), true)
        );
        assert_eq!(
            exec("w exec web01 uptime"),
            (words(&["web01", "uptime"]), false)
        );
        assert_eq!(
            exec("w exec -p 3 web01 -- x"),
            (words(&["web01", "--", "x"]), false)
        );
        assert_eq!(
            exec("w exec web01 ls -l --x"),
            (words(&["web01", "ls", "-l", "--x"]), false)
        );
        assert_eq!(exec("w exec -H a -- b"), (words(&["b"]), true));
        for unknown in [
            "w exec --timout 5s -- x",
            "w exec -v web01 x",
            "w exec -f 2 -g web x",
        ] {
            let raw: Vec<&str> = unknown.split_whitespace().collect();
            let err = Cli::try_parse_from(raw).err().expect(unknown);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{unknown}"
            );
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
