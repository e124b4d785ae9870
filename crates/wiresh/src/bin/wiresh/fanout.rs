//! Many hosts at once: the fan-out flags' one conversion into the
//! library's fan-out (`wiresh::fanout`). Which hosts is `hosts.rs`'s.

use std::io::IsTerminal;

use tokio::runtime::Runtime;
use wiresh::client::copy::CopyFlags;
use wiresh::fanout::copy::Direction;
use wiresh::fanout::{self, Display, Host, OutputRules};
use wiresh_proto::ExecRequest;

use crate::args::{ConnectArgs, OutputArgs};

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

/// `wiresh exec` on many hosts.
pub fn exec(
    rt: &Runtime,
    hosts: Vec<Host>,
    connect: &ConnectArgs,
    request: ExecRequest,
    no_stdin: bool,
    output: &OutputArgs,
) -> i32 {
    // Like clush: input typed at a terminal is not for every host.
    let forward_stdin = !no_stdin && !std::io::stdin().is_terminal();
    fanout::exec::run(
        rt,
        fanout::exec::Plan {
            hosts,
            request,
            forward_stdin,
            options: connect.fanout_options(),
            display: output.display(),
            rules: OutputRules {
                max_output: output.max_output.0,
                raw: output.raw,
            },
            largest_status: output.largest_status,
            quiet: output.quiet,
        },
    )
}

/// `wiresh shell` on many hosts: each line on every host, gathered
/// (ClusterShell's way).
pub fn shell(rt: &Runtime, hosts: &[Host], connect: &ConnectArgs) -> i32 {
    fanout::shell::run(rt, hosts, &connect.fanout_options())
}

/// `wiresh put` or `wiresh get` on many hosts.
pub fn copy(
    rt: &Runtime,
    connect: &ConnectArgs,
    hosts: &[Host],
    direction: &Direction,
    flags: CopyFlags,
) -> i32 {
    fanout::copy::run(rt, hosts, &connect.fanout_options(), direction, flags)
}
