//! `wiresh exec`, `shell`, `put` and `get`: one server (the library's
//! `cli`) or many (`fanout.rs`), as the flags select (`hosts.rs`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;
use wiresh::cli;
use wiresh::client::copy::CopyFlags;
use wiresh::client::transfer::TransferOptions;
use wiresh::exit;
use wiresh::fanout::copy::Direction;
use wiresh_proto::ExecRequest;

use crate::args::{CopyArgs, ExecArgs, GetArgs, PutArgs, ShellArgs};
use crate::fanout;

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

/// `wiresh exec`. Exits the process itself ([`exit_now`]).
pub fn exec(args: ExecArgs) -> Result<i32> {
    crate::master::persist(&args.connect)?;
    let rt = runtime()?;
    if args.legacy {
        let host = args.connect.legacy_host()?;
        exit_now(cli::legacy::exec(
            &rt,
            host,
            &args.command.join(" "),
            args.encoding,
        ));
    }
    let endpoint = args.connect.endpoint_or_hosts(args.output.wants_fanout())?;
    let mut req = if args.argv {
        ExecRequest::argv(args.command)
    } else {
        ExecRequest::shell(args.command.join(" "))
    };
    req.env = args.env.into_iter().collect();
    req.cwd = args.cwd;
    req.timeout_ms = args.timeout.map(|t| t.0.as_millis() as u64);
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

/// `wiresh shell`: the remote login shell, on a remote terminal when stdin
/// is one (or with -t), else reading stdin; or one command per line.
/// Exits the process itself, as `exec` does.
pub fn shell(args: ShellArgs) -> Result<i32> {
    crate::master::persist(&args.connect)?;
    let rt = runtime()?;
    if args.legacy {
        let host = args.connect.legacy_host()?;
        exit_now(cli::legacy::shell(&rt, host, args.encoding));
    }
    let code = match args.connect.endpoint_or_hosts(false)? {
        Err(hosts) => fanout::shell(&rt, &hosts, &args.connect),
        Ok(endpoint) => {
            let tty = args.tty || (!args.no_tty && std::io::stdin().is_terminal());
            if args.each_line {
                cli::shell::run(&rt, &endpoint)
            } else if tty {
                cli::terminal::run(&rt, &endpoint, ExecRequest::login_shell(), true)
            } else {
                cli::exec::run(&rt, &endpoint, ExecRequest::login_shell(), true)
            }
        }
    };
    exit_now(code);
}

/// A remote path from the command line: the protocol's paths are UTF-8.
fn remote_path(path: &std::ffi::OsStr) -> Result<&str> {
    path.to_str().with_context(|| {
        format!(
            "the remote path {} is not UTF-8, which wiresh's protocol cannot carry",
            path.to_string_lossy()
        )
    })
}

/// `wiresh put LOCAL... REMOTE`.
pub fn put(args: PutArgs) -> Result<i32> {
    crate::master::persist(&args.copy.connect)?;
    let (remote, sources) = args.paths.split_last().expect("clap requires two paths");
    let remote = remote_path(remote)?.to_string();
    let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
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

/// `wiresh get REMOTE... LOCAL`.
pub fn get(args: GetArgs) -> Result<i32> {
    crate::master::persist(&args.copy.connect)?;
    let (local, sources) = args.paths.split_last().expect("clap requires two paths");
    let sources = sources
        .iter()
        .map(|s| remote_path(s).map(str::to_string))
        .collect::<Result<Vec<String>>>()?;
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
