//! `wiresh shell` on many hosts: each line runs on every host, and the
//! output comes back gathered, hosts with the same output and status under
//! one header (ClusterShell's interactive mode). Connections are kept from
//! line to line, and made again for a host that lost its own. The lines
//! and the loop are the single-host shell's ([`crate::cli`]).

use futures_util::future::join_all;
use tokio::runtime::Runtime;
use wiresh_proto::ExecRequest;

use super::exec::Command;
use super::report::Finished;
use super::{DiskFault, Display, Host, Interrupts, Options, Outcome, OutputRules};
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
        hosts: hosts.to_vec(),
        options,
        slots: hosts.iter().map(|_| None).collect(),
    };
    run_lines(rt, runner, &format!("[{} hosts]>>: ", hosts.len()), &banner)
}

/// Lines on many hosts, over a connection per host kept from line to line.
/// A host that cannot be reached is marked down, once, and left out of the
/// lines that follow (as ClusterShell does), rather than tried again and
/// reported again on every line.
struct ManyHosts<'a> {
    /// The hosts not marked down.
    hosts: Vec<Host>,
    options: &'a Options,
    /// Host i's connection, when it has one.
    slots: Vec<Option<Connection>>,
}

impl LineRunner for ManyHosts<'_> {
    async fn run_line(&mut self, line: &str) -> Step {
        if self.hosts.is_empty() {
            eprintln!("wiresh: every host is down; start `wiresh shell` again to retry them");
            return Step::Stop(exit::CLIENT_FAILURE);
        }
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
            hosts: &self.hosts,
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
        if ran.worth_a_summary() {
            eprint!("{}", ran.summary());
        }
        ran.say_not_kept();
        let status = ran.status(false, interrupts.count() > 0);
        self.mark_down(&ran.hosts);
        status
    }

    /// Leaves out of the next lines the hosts that could not be reached on
    /// this one, and says so once, with how to try them again.
    fn mark_down(&mut self, finished: &[Finished]) {
        let down: Vec<&str> = finished
            .iter()
            .filter(|h| matches!(h.outcome, Outcome::Unreachable(_)))
            .map(|h| h.name.as_str())
            .collect();
        if down.is_empty() {
            return;
        }
        eprintln!(
            "wiresh: marked down, left out of the next lines: {}; start `wiresh shell` again \
             to retry {}",
            fold(&down),
            if down.len() == 1 { "it" } else { "them" }
        );
        let mut slots = std::mem::take(&mut self.slots).into_iter();
        let kept: Vec<(Host, Option<Connection>)> = std::mem::take(&mut self.hosts)
            .into_iter()
            .zip(slots.by_ref())
            .filter(|(host, _)| !down.contains(&host.name.as_str()))
            .collect();
        (self.hosts, self.slots) = kept.into_iter().unzip();
    }
}
