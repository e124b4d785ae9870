//! `wiresh exec`, `shell`, `put` and `get`: their operands read as ssh
//! and scp read them, then one server (the library's `cli`) or many
//! (`fanout.rs`), as the operands and flags select (`hosts.rs`).

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;
use wiresh::cli;
use wiresh::client::copy::CopyFlags;
use wiresh::client::transfer::TransferOptions;
use wiresh::client::Endpoint;
use wiresh::exit;
use wiresh::fanout::copy::Direction;
use wiresh::master::oneshot::{self, Oneshot};
use wiresh_proto::ExecRequest;

use crate::args::{CopyArgs, ExecArgs, GetArgs, PutArgs, ShellArgs};
use crate::fanout;
use crate::hosts::{split_remote, usage};

impl CopyArgs {
    fn flags(&self) -> Result<CopyFlags> {
        anyhow::ensure!(
            !self.transfer_timeout.0.is_zero(),
            "--transfer-timeout must be more than 0"
        );
        Ok(CopyFlags {
            recursive: self.recursive,
            options: TransferOptions {
                preserve: self.preserve,
                resume: self.resume,
            },
            transfer_timeout: self.transfer_timeout.0,
        })
    }
}

/// The runtime a client runs on: one thread is plenty for one connection.
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ends this process with `code` at once: a thread reading stdin may be
/// blocked on a terminal, and must not be waited for.
fn exit_now(code: i32) -> ! {
    std::process::exit(exit::process_code(code).into());
}

impl ExecArgs {
    /// ssh's reading of the words: the host operand first (unless `--`
    /// came before them, or -H or -g names the hosts), then the command;
    /// a `--` right after the host is dropped, as ssh drops it. Applies
    /// ssh's options too.
    fn command(&mut self) -> Result<Vec<String>> {
        let mut words = std::mem::take(&mut self.words);
        let named = !self.connect.hosts.is_empty() || !self.connect.select.groups.is_empty();
        if !self.dashed && !named && !words.is_empty() {
            self.connect.operand = Some(words.remove(0));
            if words.first().is_some_and(|w| w == "--") {
                words.remove(0);
            }
        }
        let sent = self.ssh.apply(&mut self.connect)?;
        self.env.extend(sent);
        Ok(words)
    }
}

/// `wiresh exec`. Exits the process itself ([`exit_now`]).
pub fn exec(mut args: ExecArgs) -> Result<i32> {
    let command = args.command()?;
    crate::master::persist(&args.connect)?;
    if args.ssh.print_settings {
        args.connect.print_settings()?;
        return Ok(exit::SUCCESS);
    }
    if command.is_empty() {
        return Err(usage(
            "no command to run: `wiresh exec HOST COMMAND...`, or `wiresh exec -- COMMAND...` \
             on the default host (`wiresh shell HOST` for a shell)",
        ));
    }
    if args.legacy {
        let host = args.connect.legacy_host()?;
        exit_now(cli::legacy::exec(
            &runtime()?,
            &host,
            &command.join(" "),
            args.encoding,
        ));
    }
    let endpoint = args.connect.endpoint_or_hosts(args.output.wants_fanout())?;
    let mut req = if args.argv {
        ExecRequest::argv(command)
    } else {
        ExecRequest::shell(command.join(" "))
    };
    req.env = args.env.into_iter().collect();
    req.cwd = args.cwd;
    req.timeout_ms = args.timeout.map(|t| t.0.as_millis() as u64);
    if let (Ok(endpoint), false) = (&endpoint, args.tty) {
        through_master(endpoint, &req, !args.no_stdin);
    }
    let rt = runtime()?;
    let code = match endpoint {
        Ok(endpoint) if args.tty => cli::terminal::run(&rt, &endpoint, req, !args.no_stdin),
        Ok(endpoint) => cli::exec::run(&rt, &endpoint, req, !args.no_stdin),
        Err(_) if args.tty => {
            anyhow::bail!("-t gives a terminal on one host; run a command on several without it")
        }
        Err(hosts) => fanout::exec(&rt, hosts, &args.connect, req, args.no_stdin, &args.output),
    };
    exit_now(code);
}

/// The fast path of a one-shot command: when a master answers for the
/// endpoint, the command runs through it with no async runtime, and this
/// process exits with its status. Otherwise the caller connects as usual
/// (directly, when a master turned this client away: no second wait).
fn through_master(endpoint: &Endpoint, req: &ExecRequest, forward_stdin: bool) {
    match oneshot::run(endpoint, req.clone(), forward_stdin) {
        Oneshot::Ran {
            result,
            stdout_closed,
        } => exit_now(cli::exec::exit_code(result, stdout_closed)),
        Oneshot::Absent => {}
        Oneshot::Declined(why) => {
            if let Some(why) = why {
                eprintln!("wiresh: {why}; connecting directly");
            }
            wiresh::master::bypass();
        }
    }
}

/// `wiresh shell`: the remote login shell, on a remote terminal when stdin
/// is one (or with -t), else reading stdin; or one command per line.
/// Exits the process itself, as `exec` does.
pub fn shell(mut args: ShellArgs) -> Result<i32> {
    args.connect.operand = args.host.take();
    let env = args.ssh.apply(&mut args.connect)?;
    crate::master::persist(&args.connect)?;
    if args.ssh.print_settings {
        args.connect.print_settings()?;
        return Ok(exit::SUCCESS);
    }
    let rt = runtime()?;
    if args.legacy {
        let host = args.connect.legacy_host()?;
        exit_now(cli::legacy::shell(&rt, &host, args.encoding));
    }
    let mut login = ExecRequest::login_shell();
    login.env = env.into_iter().collect();
    let code = match args.connect.endpoint_or_hosts(false)? {
        Err(hosts) => fanout::shell(&rt, &hosts, &args.connect),
        Ok(endpoint) => {
            let tty = args.tty || (!args.no_tty && std::io::stdin().is_terminal());
            if args.each_line {
                cli::shell::run(&rt, &endpoint)
            } else if tty {
                cli::terminal::run(&rt, &endpoint, login, true)
            } else {
                cli::exec::run(&rt, &endpoint, login, true)
            }
        }
    };
    exit_now(code);
}

/// An operand that names a remote side, as text: the protocol's paths are
/// UTF-8.
fn utf8_operand(path: &OsStr) -> Result<&str> {
    path.to_str().with_context(|| {
        format!(
            "the remote path {} is not UTF-8, which wiresh's protocol cannot carry",
            path.to_string_lossy()
        )
    })
}

/// The remote path of an operand (`HOST:` alone is the files root).
fn remote_path(path: &str) -> String {
    match path {
        "" => ".".to_string(),
        path => path.to_string(),
    }
}

/// `wiresh put LOCAL... [HOST:]REMOTE`.
pub fn put(mut args: PutArgs) -> Result<i32> {
    let (dest, sources) = args.paths.split_last().expect("clap requires two paths");
    let named_remote = sources
        .iter()
        .filter_map(|s| s.to_str())
        .find(|s| split_remote(s).is_some());
    if let Some(remote) = named_remote {
        return Err(usage(format!(
            "{remote} names a remote file, but put copies local files to one remote side \
             (a local name with a colon is written ./{remote})"
        )));
    }
    let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
    let dest = utf8_operand(dest)?;
    let remote = match split_remote(dest) {
        Some((host, path)) => {
            args.copy.connect.operand = Some(host.to_string());
            remote_path(path)
        }
        None => dest.to_string(),
    };
    args.copy.connect.port = args.copy.port;
    crate::master::persist(&args.copy.connect)?;
    let flags = args.copy.flags()?;
    let rt = runtime()?;
    Ok(match args.copy.connect.endpoint_or_hosts(false)? {
        Ok(endpoint) => cli::copy::put(&rt, &endpoint, &sources, &remote, flags, args.copy.quiet),
        Err(hosts) => {
            let direction = Direction::Put { sources, remote };
            fanout::copy(&rt, &args.copy.connect, &hosts, &direction, flags)
        }
    })
}

/// `wiresh get [HOST:]REMOTE... LOCAL`.
pub fn get(mut args: GetArgs) -> Result<i32> {
    let (local, sources) = args.paths.split_last().expect("clap requires two paths");
    if let Some(local) = local.to_str().filter(|l| split_remote(l).is_some()) {
        return Err(usage(format!(
            "{local} names a remote file, but get copies to a local path \
             (a local name with a colon is written ./{local})"
        )));
    }
    let sources = sources
        .iter()
        .map(|s| utf8_operand(s))
        .collect::<Result<Vec<&str>>>()?;
    let sides: Vec<Option<(&str, &str)>> = sources.iter().map(|s| split_remote(s)).collect();
    let host = sides[0].map(|(host, _)| host);
    if sides.iter().any(|side| side.map(|(h, _)| h) != host) {
        return Err(usage(format!(
            "{} name more than one remote side; get copies from one host (or host list) at a time",
            sources.join(" ")
        )));
    }
    let sources: Vec<String> = sources
        .iter()
        .zip(&sides)
        .map(|(source, side)| {
            side.map_or_else(|| source.to_string(), |(_, path)| remote_path(path))
        })
        .collect();
    args.copy.connect.operand = host.map(str::to_string);
    args.copy.connect.port = args.copy.port;
    crate::master::persist(&args.copy.connect)?;
    let flags = args.copy.flags()?;
    let rt = runtime()?;
    Ok(match args.copy.connect.endpoint_or_hosts(false)? {
        Ok(endpoint) => cli::copy::get(
            &rt,
            &endpoint,
            &sources,
            Path::new(local),
            flags,
            args.copy.quiet,
        ),
        Err(hosts) => {
            // Like rpdcp: DEST/HOST/... for each host.
            let direction = Direction::Get {
                sources,
                dest: PathBuf::from(local),
            };
            fanout::copy(&rt, &args.copy.connect, &hosts, &direction, flags)
        }
    })
}
