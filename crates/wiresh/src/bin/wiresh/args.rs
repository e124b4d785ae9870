//! The command line, as clap parses it: every flag, its help and its
//! default (read from the library's one home of defaults). Turning these
//! into the library's configurations is done in `serve.rs` and
//! `client.rs`, once each.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wiresh::server::defaults;
use wiresh_proto::Limits;

/// Run commands on another machine over TCP, with their stdout, stderr and
/// exit status kept apart and streamed as they are produced.
#[derive(Parser)]
#[command(name = "wiresh", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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

/// A duration on the command line: `30s`, `500ms`, `5m`, `1h`, `1h 30m`,
/// or a plain number of seconds (`90`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return Duration::try_from_secs_f64(secs)
                .map(DurationArg)
                .map_err(|e| format!("{s:?}: {e}"));
        }
        humantime::parse_duration(s)
            .map(DurationArg)
            .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 30s, 500ms, 5m or 1h"))
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
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

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on. The default accepts only local clients; to
    /// serve other machines, give an address such as 0.0.0.0:7878.
    #[arg(long, short = 'l', value_name = "ADDR", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// File holding the token clients must present. Created (mode 600) with
    /// a random token if missing. [default: $WIRESH_HOME/token]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Most connections served at once; further clients get an error.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Kill any command that runs longer than this (e.g. 30s, 5m). Off by default.
    #[arg(long, value_name = "DURATION")]
    pub command_timeout: Option<DurationArg>,
    /// Close connections idle for this long.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::IDLE_TIMEOUT))]
    pub idle_timeout: DurationArg,
    /// Drop a connection that starts a frame and does not finish it this soon.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::FRAME_TIMEOUT))]
    pub frame_timeout: DurationArg,
    /// Most commands running at once over all connections; more get `busy`.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_COMMANDS)]
    pub max_commands: usize,
    /// On SIGINT/SIGTERM, how long running commands may finish before they are killed.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::SHUTDOWN_GRACE))]
    pub shutdown_grace: DurationArg,
    /// When a command is killed, how long its processes get between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(defaults::KILL_GRACE))]
    pub kill_grace: DurationArg,
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
    /// Allow --legacy-listen on a non-loopback address. Anyone who can reach
    /// it can run any command as this user: only on a network you trust.
    #[arg(long, requires = "legacy_listen")]
    pub legacy_allow_insecure_remote: bool,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// Server to connect to [default: 127.0.0.1:7878, or 127.0.0.1:8090 with --legacy].
    /// Repeatable, and a host list: -H a,b -H web[01-20] -H c:7900 runs on all of them.
    #[arg(
        long = "host",
        short = 'H',
        value_name = "HOST[:PORT]",
        env = "WIRESH_HOST"
    )]
    pub hosts: Vec<String>,
    /// File holding the server's token. [default: $WIRESH_TOKEN, else $WIRESH_HOME/token]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Expect exactly this server fingerprint (sha256:...), as printed by
    /// `wiresh serve`, instead of trusting it on first use.
    #[arg(long, value_name = "FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Connect without TLS: only to a server on loopback started with
    /// --allow-plaintext.
    #[arg(long, conflicts_with = "fingerprint")]
    pub plaintext: bool,
    #[command(flatten)]
    pub select: crate::fanout::SelectArgs,
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
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
    #[arg(short = 't', long, value_name = "DURATION")]
    pub timeout: Option<DurationArg>,
    /// Talk the original (legacy) protocol, e.g. to shared/legacy/server.py
    /// (default port 8090). It has no stdin, no exit status and mixes
    /// stderr into stdout: wiresh exits 0 after a complete answer.
    #[arg(long, conflicts_with_all = ["argv", "env", "cwd", "timeout", "token_file"])]
    pub legacy: bool,
    #[command(flatten)]
    pub output: crate::fanout::OutputArgs,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Talk the original (legacy) protocol (default port 8090).
    #[arg(long, conflicts_with = "token_file")]
    pub legacy: bool,
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
    /// Continue an interrupted transfer (after checking the part already there).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// Local files (and, with -r, directories), then the remote destination.
    #[arg(required = true, num_args = 2.., value_name = "LOCAL... REMOTE")]
    pub paths: Vec<String>,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// Remote files (and, with -r, directories), then the local destination.
    #[arg(required = true, num_args = 2.., value_name = "REMOTE... LOCAL")]
    pub paths: Vec<String>,
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
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
