//! Many hosts at once: the host-selection and fan-out flags, and their one
//! conversion into the library's fan-out (`wiresh::fanout`).
//!
//! One plain host keeps the single-host commands exactly as they were;
//! the fan-out runs when more than one host is selected, or when a
//! fan-out display (`--gather`, `--diff`, `--json`, `--outdir`) is asked for.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tokio::runtime::Runtime;
use wiresh::client::copy::CopyFlags;
use wiresh::fanout::copy::Direction;
use wiresh::fanout::{
    self, select, Display, Host, Options, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FANOUT,
};
use wiresh::home;
use wiresh::inventory::{Inventory, INVENTORY_FILE};
use wiresh_proto::{ExecRequest, DEFAULT_PORT};

use crate::args::{ConnectArgs, DurationArg};

/// Which hosts, and how many at once (every client command).
#[derive(Args)]
pub struct SelectArgs {
    /// Run on the hosts of this inventory group (repeatable).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Leave out these hosts (a host list such as web[03-05]; repeatable).
    #[arg(short = 'x', long = "exclude", value_name = "HOSTS")]
    pub exclude: Vec<String>,
    /// Host inventory: groups and per-host port, token file, fingerprint.
    /// [default: $WIRESH_HOME/hosts.toml]
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// With many hosts: most hosts worked on at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FANOUT, value_parser = parse_fanout)]
    pub fanout: usize,
    /// With many hosts: give up on a host not connected within this long.
    #[arg(long, value_name = "DURATION", default_value_t = DurationArg(DEFAULT_CONNECT_TIMEOUT))]
    pub connect_timeout: DurationArg,
    /// With many hosts: launch no more hosts once one has failed.
    #[arg(long)]
    pub fail_fast: bool,
}

/// How the output of many hosts is shown (`exec`).
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
}

impl OutputArgs {
    fn display(&self) -> Display {
        match (&self.outdir, self.gather, self.diff, self.json) {
            (Some(dir), ..) => Display::Outdir(dir.clone()),
            (None, true, _, _) => Display::Gather,
            (None, _, true, _) => Display::Diff,
            (None, _, _, true) => Display::Json,
            (None, false, false, false) => Display::Live,
        }
    }

    /// Whether these flags ask for the fan-out even on one host.
    pub fn wants_fanout(&self) -> bool {
        self.display() != Display::Live || self.largest_status
    }
}

fn parse_fanout(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of hosts (1 or more)")),
    }
}

/// The hosts selected.
pub enum Selected {
    /// One host given as it always was (or none: the default host): the
    /// single-host command runs exactly as before.
    Plain,
    /// One host, with settings from the inventory.
    One(Box<Host>),
    /// Many hosts (or one, with a fan-out display).
    Many(Vec<Host>),
}

impl ConnectArgs {
    /// Which hosts the flags select; `fanout_display` forces the fan-out.
    pub fn selected(&self, fanout_display: bool) -> Result<Selected> {
        let select = &self.select;
        if self.hosts.len() <= 1 && select.groups.is_empty() && !fanout_display {
            // `-x` alone, or with one host, is still a selection to check.
            if select.exclude.is_empty() && select.inventory.is_none() {
                let plain = match self.hosts.first() {
                    None => true,
                    Some(h) => wiresh::hostlist::expand(h).is_ok_and(|names| names == [h.trim()]),
                };
                if plain && !self.in_default_inventory()? {
                    return Ok(Selected::Plain);
                }
            }
        }
        let inventory = self.inventory()?;
        let mut selection = select::Selection {
            hosts: self.hosts.clone(),
            groups: select.groups.clone(),
            exclude: select.exclude.clone(),
        };
        if selection.hosts.is_empty() && selection.groups.is_empty() {
            selection.hosts.push("127.0.0.1".into());
        }
        let names = selection.names(&inventory)?;
        let defaults = select::Defaults {
            token_file: self.token_file.clone(),
            fingerprint: self.fingerprint.clone(),
            plaintext: self.plaintext,
            known_hosts: home::wiresh_home()?.join("known_hosts"),
            port: DEFAULT_PORT,
            client_key: self.client_key(&Default::default())?,
        };
        let mut hosts = select::hosts(&names, &inventory, &defaults)?;
        Ok(match hosts.len() {
            1 if !fanout_display => Selected::One(Box::new(hosts.remove(0))),
            _ => Selected::Many(hosts),
        })
    }

    /// The inventory named by `--inventory`, else the default one if it exists.
    fn inventory(&self) -> Result<Inventory> {
        Ok(match &self.select.inventory {
            Some(path) => Inventory::load(path, true)?,
            None => Inventory::load(&home::wiresh_home()?.join(INVENTORY_FILE), false)?,
        })
    }

    /// Whether the one host given has settings in the default inventory.
    fn in_default_inventory(&self) -> Result<bool> {
        let Some(host) = self.hosts.first() else {
            return Ok(false);
        };
        let path = match home::wiresh_home() {
            Ok(home) => home.join(INVENTORY_FILE),
            Err(_) => return Ok(false),
        };
        if !path.exists() {
            return Ok(false);
        }
        let inventory = Inventory::load(&path, false)?;
        Ok(inventory.host(host.trim()) != Default::default())
    }

    /// Runs, parallelism and timeouts for many hosts.
    pub fn fanout_options(&self) -> Options {
        Options {
            fanout: self.select.fanout,
            connect_timeout: self.select.connect_timeout.0,
            fail_fast: self.select.fail_fast,
        }
    }
}

/// `wiresh exec` on many hosts.
pub fn exec(
    rt: &Runtime,
    hosts: Vec<Host>,
    options: Options,
    request: ExecRequest,
    no_stdin: bool,
    output: &OutputArgs,
) -> i32 {
    use std::io::IsTerminal;
    // Like clush: input typed at a terminal is not for every host.
    let forward_stdin = !no_stdin && !std::io::stdin().is_terminal();
    fanout::exec::run(
        rt,
        fanout::exec::Plan {
            hosts,
            request,
            forward_stdin,
            options,
            display: output.display(),
            largest_status: output.largest_status,
        },
    )
}

/// `wiresh put` or `wiresh get` on many hosts.
pub fn copy(
    connect: &ConnectArgs,
    hosts: &[Host],
    direction: &Direction,
    flags: CopyFlags,
) -> Result<i32> {
    let rt = crate::client::runtime()?;
    let options = connect.fanout_options();
    Ok(fanout::copy::run(&rt, hosts, &options, direction, flags))
}

/// Refuses `--legacy` with many hosts.
pub fn one_legacy_host(connect: &ConnectArgs) -> Result<()> {
    let many = connect.hosts.len() > 1
        || !connect.select.groups.is_empty()
        || connect.hosts.iter().any(|h| h.contains(','));
    anyhow::ensure!(
        !many,
        "--legacy talks to one server at a time; run it once per host"
    );
    Ok(())
}
