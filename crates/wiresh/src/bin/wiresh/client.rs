//! `wiresh exec`, `shell`, `put` and `get`: the one conversion from
//! connection flags to an [`Endpoint`], then the library's client.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;
use wiresh::client::config::{ClientConfig, HostDefaults};
use wiresh::client::{self, copy::CopyFlags, transfer::TransferOptions};
use wiresh::client::{Endpoint, Pinning, Security, Target};
use wiresh::error::SetupError;
use wiresh::keys::{self, ClientKey};
use wiresh::{auth, exit, home};
use wiresh_proto::{ExecRequest, Secret, DEFAULT_PORT};

use crate::args::{ConnectArgs, CopyArgs, ExecArgs, GetArgs, PutArgs, ShellArgs};
use crate::fanout::{self, Selected};
use wiresh::fanout::copy::Direction;
use wiresh::fanout::Host;

impl ConnectArgs {
    /// The server, its token and how to protect the connection.
    fn endpoint(&self) -> Result<Endpoint> {
        let (target, defaults) = self.target()?;
        let client_key = self.client_key(&defaults)?;
        let token = match auth::client_token(self.token_file.as_deref()) {
            Ok(token) => token,
            // A key alone is enough for a server that knows it.
            Err(SetupError::NoToken { .. }) if client_key.is_some() => Secret::default(),
            Err(e) => return Err(e.into()),
        };
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
                fingerprint: self.fingerprint.clone().or(defaults.fingerprint),
                client_key,
            })
        };
        Ok(Endpoint {
            target,
            token,
            security,
        })
    }

    /// The client key to present: `--key`, else the host's `key` in
    /// client.toml, else `$WIRESH_HOME/client.key` when it exists. None with
    /// `--plaintext`: keys need TLS.
    pub fn client_key(&self, defaults: &HostDefaults) -> Result<Option<Arc<ClientKey>>> {
        if self.plaintext {
            return Ok(None);
        }
        let path = match self.key.as_ref().or(defaults.key.as_ref()) {
            Some(path) => path.clone(),
            None => {
                let path = keys::default_key_path()?;
                if !path.exists() {
                    return Ok(None);
                }
                path
            }
        };
        Ok(Some(Arc::new(ClientKey::load(&path)?)))
    }

    /// The modern server to connect to, and what client.toml says about
    /// it (its port applies when -H gives none).
    fn target(&self) -> Result<(Target, HostDefaults)> {
        let host = self.hosts.first().map_or("127.0.0.1", String::as_str);
        // Port 0 stands for "none given": no client connects to port 0.
        let mut target = Target::parse(host, 0).with_context(|| format!("-H {host}"))?;
        let defaults = ClientConfig::load_default()?
            .host(&target.host)
            .cloned()
            .unwrap_or_default();
        if target.port == 0 {
            target.port = defaults.port.unwrap_or(DEFAULT_PORT);
        }
        Ok((target, defaults))
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
            quiet: self.quiet,
            transfer_timeout: self.transfer_timeout.0,
        })
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
        client::exec::run_legacy(
            &rt,
            args.connect.legacy_host(),
            &args.command.join(" "),
            args.encoding,
        )
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
            Ok(endpoint) if args.tty => client::terminal::run(&rt, &endpoint, req, !args.no_stdin),
            Ok(endpoint) => client::exec::run(&rt, &endpoint, req, !args.no_stdin),
            Err(_) if args.tty => anyhow::bail!(
                "-t gives a terminal on one host; run a command on several without it"
            ),
            Err(hosts) => {
                let options = args.connect.fanout_options();
                fanout::exec(&rt, hosts, options, req, args.no_stdin, &args.output)
            }
        }
    };
    std::process::exit(exit::process_code(code).into());
}

/// `wiresh shell`: the remote login shell, on a remote terminal when stdin
/// is one (or with -t), else reading stdin; or one command per line.
/// Exits the process itself, as `exec` does.
pub fn shell(args: ShellArgs) -> Result<i32> {
    let rt = runtime()?;
    let code = if args.legacy {
        fanout::one_legacy_host(&args.connect)?;
        client::shell::run_legacy(&rt, args.connect.legacy_host(), args.encoding)
    } else {
        match args.connect.endpoint_or_hosts(false)? {
            Err(hosts) => {
                // Each line on every host, gathered (ClusterShell's way).
                let options = args.connect.fanout_options();
                wiresh::fanout::shell::run(&rt, &hosts, &options)
            }
            Ok(endpoint) => {
                let tty = args.tty || (!args.no_tty && std::io::stdin().is_terminal());
                if args.each_line {
                    client::shell::run(&rt, &endpoint)
                } else if tty {
                    client::terminal::run(&rt, &endpoint, ExecRequest::login_shell(), true)
                } else {
                    client::exec::run(&rt, &endpoint, ExecRequest::login_shell(), true)
                }
            }
        }
    };
    std::process::exit(exit::process_code(code).into());
}

/// `wiresh put LOCAL... REMOTE`.
pub fn put(args: PutArgs) -> Result<i32> {
    let (remote, sources) = args.paths.split_last().expect("clap requires two paths");
    let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
    let flags = args.copy.flags()?;
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
    let flags = args.copy.flags()?;
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
