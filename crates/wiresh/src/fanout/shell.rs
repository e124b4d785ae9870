//! `wiresh shell` on many hosts: each line runs on every host, and the
//! output comes back gathered, hosts with the same output and status under
//! one header (ClusterShell's interactive mode). Connections are kept from
//! line to line, and made again for a host that lost its own. The lines
//! and the loop are the single-host shell's ([`crate::cli`]).

use futures_util::future::join_all;
use tokio::runtime::Runtime;
use wiresh_proto::ExecRequest;

use super::exec::Command;
use super::{DiskFault, Display, Host, Interrupts, Options, OutputRules};
use crate::cli::lines::{run_lines, LineRunner, Step};
use crate::client::Connection;
use crate::exit;
use crate::hostlist::fold;

/// Runs lines on every host until end of input or `exit`; returns the
/// status of the last line, as [`exit::for_fanout`] gives it.
pub fn run(rt: &Runtime, hosts: &[Host], options: &Options) -> i32 {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let banner = format!(
        "{} hosts: {}; each line runs on all of them",
        hosts.len(),
        fold(&names)
    );
    super::raise_open_files_limit(hosts.len());
    let runner = ManyHosts {
        hosts,
        options,
        slots: hosts.iter().map(|_| None).collect(),
    };
    run_lines(rt, runner, &format!("[{} hosts]>>: ", hosts.len()), &banner)
}

/// Lines on many hosts, over a connection per host kept from line to line.
struct ManyHosts<'a> {
    hosts: &'a [Host],
    options: &'a Options,
    /// Host i's connection, when it has one.
    slots: Vec<Option<Connection>>,
}

impl LineRunner for ManyHosts<'_> {
    async fn run_line(&mut self, line: &str) -> Step {
        Step::Ran(self.on_every_host(line).await)
    }

    async fn close(self) {
        join_all(self.slots.into_iter().flatten().map(Connection::close)).await;
    }
}

impl ManyHosts<'_> {
    /// Runs `line` on every host, prints what they said, gathered; returns
    /// the line's status.
    async fn on_every_host(&mut self, line: &str) -> i32 {
        // A connection the server closed while we waited for the line is
        // made again, rather than failing the line.
        join_all(self.slots.iter_mut().map(|slot| async move {
            if let Some(conn) = slot {
                if conn.ping().await.is_err() {
                    *slot = None;
                }
            }
        }))
        .await;
        let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
        let fault = DiskFault::default();
        let command = Command {
            hosts: self.hosts,
            request: &ExecRequest::shell(line),
            stdin: None,
            options: self.options,
            display: &Display::Gather,
            rules: OutputRules::default(),
            interrupts: &interrupts,
            fault: &fault,
            keep_connections: true,
        };
        let mut ran = match command.run(&mut self.slots).await {
            Ok(ran) => ran,
            Err(e) => {
                eprintln!("wiresh: {e}");
                return exit::LOCAL_IO;
            }
        };
        ran.print_groups(false);
        // All well goes without saying; anything else gets the summary.
        if !ran.all_ok() || ran.not_kept.is_some() {
            eprint!("{}", ran.summary());
        }
        ran.say_not_kept();
        ran.status(false, interrupts.count() > 0)
    }
}
