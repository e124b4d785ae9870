//! `wiresh exec`, `shell`, `put` and `get`: the one conversion from
//! connection flags to an [`Endpoint`], then the library's client.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;
use wiresh::client::{self, copy::CopyFlags, transfer::TransferOptions};
use wiresh::client::{Endpoint, Pinning, Security, Target};
use wiresh::{auth, exit, home};
use wiresh_proto::{ExecRequest, DEFAULT_PORT};

use crate::args::{ConnectArgs, CopyArgs, ExecArgs, GetArgs, PutArgs, ShellArgs};
use crate::fanout::{self, Selected};
use wiresh::fanout::copy::Direction;
use wiresh::fanout::Host;

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
                known_hosts: home::wiresh_home()?.join("known_hosts"),
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
        let host = self.hosts.first().map_or("127.0.0.1", String::as_str);
        Target::parse(host, DEFAULT_PORT).with_context(|| format!("-H {host}"))
    }

    /// The legacy server to connect to, as `HOST[:PORT]`.
    fn legacy_host(&self) -> &str {
        self.hosts.first().map_or("127.0.0.1", String::as_str)
    }

    /// The one server to connect to, or the hosts of a fan-out.
    fn endpoint_or_hosts(&self, fanout_display: bool) -> Result<Result<Endpoint, Vec<Host>>> {
        Ok(match self.selected(fanout_display)? {
            Selected::Plain => Ok(self.endpoint()?),
            Selected::One(host) => Ok(host.endpoint),
            Selected::Many(hosts) => Err(hosts),
        })
    }
}

impl CopyArgs {
    fn flags(&self) -> CopyFlags {
        CopyFlags {
            recursive: self.recursive,
            options: TransferOptions {
                preserve: self.preserve,
                resume: self.resume,
            },
            quiet: self.quiet,
        }
    }
}

/// The runtime a client runs on: one thread is plenty for one connection.
pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `wiresh exec`. Exits the process itself: the thread reading stdin may
/// be blocked on a terminal, and must not be waited for.
pub fn exec(args: ExecArgs) -> Result<i32> {
    let rt = runtime()?;
    let code = if args.legacy {
        fanout::one_legacy_host(&args.connect)?;
        client::exec::run_legacy(&rt, args.connect.legacy_host(), &args.command.join(" "))
    } else {
        let endpoint = args.connect.endpoint_or_hosts(args.output.wants_fanout())?;
        let mut req = if args.argv {
            ExecRequest::argv(args.command)
        } else {
            ExecRequest::shell(args.command.join(" "))
        };
        req.env = args.env.into_iter().collect();
        req.cwd = args.cwd;
        req.timeout_ms = args.timeout.map(|t| t.0.as_millis() as u64);
        match endpoint {
            Ok(endpoint) => client::exec::run(&rt, &endpoint, req, !args.no_stdin),
            Err(hosts) => {
                let options = args.connect.fanout_options();
                fanout::exec(&rt, hosts, options, req, args.no_stdin, &args.output)
            }
        }
    };
    std::process::exit(exit::process_code(code).into());
}

/// `wiresh shell`.
pub fn shell(args: ShellArgs) -> Result<i32> {
    let rt = runtime()?;
    if args.legacy {
        fanout::one_legacy_host(&args.connect)?;
        return Ok(client::shell::run_legacy(&rt, args.connect.legacy_host()));
    }
    match args.connect.endpoint_or_hosts(false)? {
        Ok(endpoint) => Ok(client::shell::run(&rt, &endpoint)),
        Err(hosts) => {
            let options = args.connect.fanout_options();
            Ok(wiresh::fanout::shell::run(&rt, &hosts, &options))
        }
    }
}

/// `wiresh put LOCAL... REMOTE`.
pub fn put(args: PutArgs) -> Result<i32> {
    let (remote, sources) = args.paths.split_last().expect("clap requires two paths");
    let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
    let flags = args.copy.flags();
    let endpoint = match args.copy.connect.endpoint_or_hosts(false)? {
        Ok(endpoint) => endpoint,
        Err(hosts) => {
            let direction = Direction::Put {
                sources,
                remote: remote.clone(),
            };
            return fanout::copy(&args.copy.connect, &hosts, &direction, flags);
        }
    };
    Ok(client::copy::put(
        &runtime()?,
        &endpoint,
        &sources,
        remote,
        flags,
    ))
}

/// `wiresh get REMOTE... LOCAL`.
pub fn get(args: GetArgs) -> Result<i32> {
    let (local, sources) = args.paths.split_last().expect("clap requires two paths");
    let flags = args.copy.flags();
    let endpoint = match args.copy.connect.endpoint_or_hosts(false)? {
        Ok(endpoint) => endpoint,
        Err(hosts) => {
            // Like rpdcp: DEST/HOST/... for each host.
            let direction = Direction::Get {
                sources: sources.to_vec(),
                dest: PathBuf::from(local),
            };
            return fanout::copy(&args.copy.connect, &hosts, &direction, flags);
        }
    };
    Ok(client::copy::get(
        &runtime()?,
        &endpoint,
        sources,
        Path::new(local),
        flags,
    ))
}
