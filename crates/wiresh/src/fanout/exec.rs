//! `wiresh exec` on many hosts: one command everywhere, output shown as
//! [`Display`] says, a summary on stderr, one exit status for all.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use wiresh_proto::{ExecRequest, ExitStatus};

use super::capture::{Capture, LiveStream, TakeError};
use super::report::{self, Finished, GroupStyle, PrintError};
use super::spool::{Holding, NotKept, Place, Spool};
use super::stdin::Broadcast;
use super::{
    connect, each_host, DiskFault, Display, Host, Interrupts, Kind, Options, Outcome, OutputRules,
};
use crate::cli::print::{spawn_stdin_reader, PrintJob, Printer, StderrStyle};
use crate::client::{ClientError, Connection, Output};
use crate::exit;

/// Everything `wiresh exec` on many hosts needs.
#[derive(Debug)]
pub struct Plan {
    /// The hosts, in the order given.
    pub hosts: Vec<Host>,
    /// The command.
    pub request: ExecRequest,
    /// Send local stdin to every host.
    pub forward_stdin: bool,
    /// Parallelism, timeouts, `--fail-fast`.
    pub options: Options,
    /// How output is shown.
    pub display: Display,
    /// What is kept of each host's output, and whether a terminal gets it
    /// filtered.
    pub rules: OutputRules,
    /// `-S`: exit with the largest status of any host, as `pdsh -S` does.
    pub largest_status: bool,
    /// `-q`: no summary, even when something failed.
    pub quiet: bool,
}

/// Runs the plan; returns the exit status (see [`exit::for_fanout`]).
pub fn run(rt: &Runtime, plan: Plan) -> i32 {
    rt.block_on(async {
        let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
        let fault = DiskFault::default();
        let stdin = if plan.forward_stdin {
            match Broadcast::start(spawn_stdin_reader(), fault.clone(), interrupts.clone()) {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("wiresh: {e}");
                    return exit::LOCAL_IO;
                }
            }
        } else {
            None
        };
        let mut slots: Vec<Option<Connection>> = plan.hosts.iter().map(|_| None).collect();
        let run = Command {
            hosts: &plan.hosts,
            request: &plan.request,
            stdin: stdin.as_ref(),
            options: &plan.options,
            display: &plan.display,
            rules: plan.rules,
            interrupts: &interrupts,
            fault: &fault,
            keep_connections: false,
        };
        let mut ran = match run.run(&mut slots).await {
            Ok(ran) => ran,
            Err(e) => {
                eprintln!("wiresh: {e}");
                return exit::LOCAL_IO;
            }
        };
        for conn in slots.into_iter().flatten() {
            conn.close().await;
        }
        if let Display::Gather | Display::Diff = plan.display {
            ran.print_groups(plan.display == Display::Diff);
        }
        // A run that went well everywhere goes without saying.
        if !plan.quiet && ran.worth_a_summary() {
            eprint!("{}", ran.summary());
        }
        ran.say_not_kept();
        ran.status(plan.largest_status, interrupts.count() > 0)
    })
}

/// One command on many hosts, over connections that may be reused (the
/// shell keeps them from line to line).
pub(crate) struct Command<'a> {
    pub(crate) hosts: &'a [Host],
    pub(crate) request: &'a ExecRequest,
    pub(crate) stdin: Option<&'a Broadcast>,
    pub(crate) options: &'a Options,
    pub(crate) display: &'a Display,
    pub(crate) rules: OutputRules,
    pub(crate) interrupts: &'a Interrupts,
    /// Where a disk that would not keep the output is told, which stops
    /// every host.
    pub(crate) fault: &'a DiskFault,
    /// Keep each connection for another command (the shell); otherwise a
    /// host's connection is closed as soon as it is done, so that memory
    /// and sockets follow `--fanout`, not the number of hosts.
    pub(crate) keep_connections: bool,
}

/// What a command did on every host.
pub(crate) struct Ran {
    /// Every host, in the order given.
    pub(crate) hosts: Vec<Finished>,
    /// The spool of the gathering displays.
    spool: Option<Arc<Spool>>,
    /// Whether local stdout was closed under us.
    pub(crate) stdout_closed: bool,
    /// What this machine's disk would not keep, if anything.
    pub(crate) not_kept: Option<NotKept>,
    /// What was kept of each host, and how it is shown.
    rules: OutputRules,
}

impl Ran {
    /// The exit status of the whole run.
    pub(crate) fn status(&self, largest_status: bool, interrupted: bool) -> i32 {
        let kinds = || self.hosts.iter().map(|h| h.outcome.verdict().kind);
        exit::for_fanout(&exit::Fanout {
            local_io: self.not_kept.is_some(),
            stdout_closed: self.stdout_closed,
            // Commands that ended well after a Ctrl-C (their traps ran) say so.
            interrupted: interrupted && kinds().any(|k| k != Kind::Ok),
            unreachable: kinds().any(|k| matches!(k, Kind::Unreachable | Kind::Lost)),
            failed: kinds().any(|k| k != Kind::Ok),
            largest: largest_status
                .then(|| self.hosts.iter().filter_map(|h| h.outcome.status()).max())
                .flatten(),
        })
    }

    /// The summary of every host's outcome, and of whose output
    /// `--max-output` cut.
    pub(crate) fn summary(&self) -> String {
        let mut text = report::summary(
            self.hosts
                .iter()
                .map(|h| (h.name.as_str(), h.outcome.verdict())),
        );
        let truncated: Vec<&str> = self
            .hosts
            .iter()
            .filter(|h| h.captured.truncated())
            .map(|h| h.name.as_str())
            .collect();
        text.push_str(&report::truncated_line(&truncated, self.rules.max_output));
        text
    }

    /// Says on stderr what this machine's disk would not keep, if
    /// anything: the last word of the run.
    pub(crate) fn say_not_kept(&self) {
        if let Some(e) = &self.not_kept {
            eprintln!("wiresh: {e}");
        }
    }

    /// Whether the summary has something to tell: a host that did not
    /// succeed, output `--max-output` cut, or output the disk would not
    /// keep.
    pub(crate) fn worth_a_summary(&self) -> bool {
        !self.all_ok()
            || self.not_kept.is_some()
            || self.hosts.iter().any(|h| h.captured.truncated())
    }

    /// Whether every host ran the command and it exited 0.
    pub(crate) fn all_ok(&self) -> bool {
        self.hosts
            .iter()
            .all(|h| h.outcome.verdict().kind == Kind::Ok)
    }

    /// Prints the groups (for `--gather` and `--diff`).
    pub(crate) fn print_groups(&mut self, diff: bool) {
        let Some(spool) = &self.spool else {
            return;
        };
        let groups = report::groups(&self.hosts);
        let style = GroupStyle {
            diff,
            filter: (self.rules.filters_stdout(), self.rules.filters_stderr()),
            max_output: self.rules.max_output,
        };
        let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
        match report::print_groups(&groups, spool, style, &mut out, &mut err) {
            Ok(()) => {}
            Err(PrintError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.stdout_closed = true;
            }
            Err(PrintError::Output(e)) => eprintln!("wiresh: cannot print the output: {e}"),
            Err(PrintError::Spool(e)) => {
                self.not_kept.get_or_insert(e);
            }
        }
    }
}

impl Command<'_> {
    /// Runs the command on every host (`slots[i]` is host i's connection,
    /// made when missing).
    pub(crate) async fn run(&self, slots: &mut [Option<Connection>]) -> Result<Ran, NotKept> {
        let spool = match self.display {
            Display::Gather | Display::Diff | Display::Json => Some(Spool::new(Holding::Output)?),
            Display::Live | Display::Outdir(_) => None,
        };
        if let Display::Outdir(dir) = self.display {
            std::fs::create_dir_all(dir)
                .map_err(|e| NotKept::new(Place::Outdir(dir.clone()), e))?;
        }
        let printer =
            matches!(self.display, Display::Live).then(|| Printer::start(StderrStyle::Plain));
        // Hosts finish into a queue that the reporter empties: JSON lines
        // are written off the event loop, so a slow stdout never starves
        // the connections of their keepalives.
        let (finished_tx, finished_rx) = mpsc::unbounded_channel::<(usize, Finished)>();
        let json_closed = Cell::new(false);
        let reporter = self.report(finished_rx, spool.as_ref(), printer.is_some(), &json_closed);
        let engine = async {
            let jobs = self.hosts.iter().zip(slots.iter_mut());
            let not_run = each_host(
                jobs,
                self.options,
                self.interrupts,
                |i, (host, slot)| {
                    let capture = match (&self.display, &spool, &printer) {
                        (Display::Outdir(dir), _, _) => Target::Files(dir),
                        (_, Some(spool), _) => Target::Spool(spool.clone()),
                        (_, None, Some(printer)) => Target::Live(printer.sender().clone()),
                        _ => unreachable!("every display has its capture"),
                    };
                    self.run_host(i, host, slot, capture)
                },
                |host: &Finished| host.outcome.verdict().kind != Kind::Ok,
                |i, host| {
                    let _ = finished_tx.send((i, host));
                },
            )
            .await;
            for (i, (host, _)) in not_run {
                let _ = finished_tx.send((i, not_run_host(host)));
            }
            drop(finished_tx);
        };
        let ((), mut all) = tokio::join!(engine, reporter);
        all.sort_by_key(|(i, _)| *i);
        let mut stdout_closed = json_closed.get();
        if let Some(printer) = printer {
            printer.sync().await;
            stdout_closed |= printer.stdout_closed();
        }
        Ok(Ran {
            hosts: all.into_iter().map(|(_, h)| h).collect(),
            spool,
            stdout_closed,
            not_kept: self.fault.get().cloned(),
            rules: self.rules,
        })
    }

    /// Takes the hosts as they finish, until the queue ends, and reports
    /// each as the display wants: a JSON line (`--json`), or why it failed
    /// on stderr (the live display says that in turn with the lines,
    /// `live`). Sets `json_closed` once stdout would not take a line.
    async fn report(
        &self,
        mut finished: mpsc::UnboundedReceiver<(usize, Finished)>,
        spool: Option<&Arc<Spool>>,
        live: bool,
        json_closed: &Cell<bool>,
    ) -> Vec<(usize, Finished)> {
        let mut all = Vec::new();
        while let Some((i, host)) = finished.recv().await {
            let host = match (&self.display, spool) {
                (Display::Json, Some(spool)) => {
                    let (host, written) = json_line(host, spool.clone()).await;
                    match written {
                        Ok(()) => {}
                        Err(PrintError::Spool(e)) => self.fault.stop(e, self.interrupts),
                        Err(PrintError::Output(_)) if !json_closed.replace(true) => {
                            // Local stdout is gone: disconnect every host, as `| head` would.
                            self.interrupts.raise();
                            self.interrupts.raise();
                        }
                        Err(PrintError::Output(_)) => {}
                    }
                    host
                }
                _ => {
                    // (What the disk would not keep is said once, at the end.)
                    if let (Outcome::Unreachable(e) | Outcome::Failed(e), false) =
                        (&host.outcome, live)
                    {
                        eprintln!("{}: wiresh: {e}", host.name);
                    }
                    host
                }
            };
            all.push((i, host));
        }
        all
    }

    /// Runs the command on one host.
    async fn run_host(
        &self,
        id: usize,
        host: &Host,
        slot: &mut Option<Connection>,
        target: Target<'_>,
    ) -> Finished {
        let began = Instant::now();
        let finished = |outcome, captured| Finished {
            name: host.name.clone(),
            target: host.endpoint.target.to_string(),
            outcome,
            duration: began.elapsed(),
            captured,
        };
        let conn = match slot {
            Some(conn) => conn,
            None => match connect(&host.endpoint, self.options.connect_timeout).await {
                Ok(conn) => slot.insert(conn),
                Err(e) => {
                    let outcome = Outcome::Unreachable(e);
                    target.report(&host.name, &outcome).await;
                    return finished(outcome, Default::default());
                }
            },
        };
        if self.interrupts.count() > 0 {
            return finished(Outcome::NotRun, Default::default());
        }
        let mut capture = match target.capture(&host.name, self.rules) {
            Ok(c) => c,
            Err(e) => {
                self.fault.stop(e.clone(), self.interrupts);
                return finished(Outcome::NotKept(e), Default::default());
            }
        };
        let (result, counts, refused) = self.run_captured(id, conn, &mut capture).await;
        let finished_capture = capture.finish(counts).await;
        let not_kept = match (refused, &finished_capture) {
            (Some(TakeError::NotKept(e)), _) => Some(e),
            (None, Err(TakeError::NotKept(e))) => Some(e.clone()),
            _ => None,
        };
        if result.as_ref().is_err_and(|e| !e.connection_usable()) {
            *slot = None;
        }
        let outcome = self.outcome(result, not_kept);
        let captured = finished_capture.unwrap_or_default();
        target.report(&host.name, &outcome).await;
        if !self.keep_connections {
            if let Some(conn) = slot.take() {
                conn.close().await;
            }
        }
        finished(outcome, captured)
    }

    /// What became of a host whose command ended with `result`, and
    /// whose output this machine's disk would not keep when `not_kept`;
    /// stops every host when that is what it takes.
    fn outcome(
        &self,
        result: Result<ExitStatus, ClientError>,
        not_kept: Option<NotKept>,
    ) -> Outcome {
        if let Some(e) = not_kept {
            self.fault.stop(e.clone(), self.interrupts);
            return Outcome::NotKept(e);
        }
        match (result, self.fault.get()) {
            (Ok(status), _) => Outcome::Exited(status),
            // Stopped because another host's output was not kept.
            (Err(ClientError::Interrupted), Some(fault)) => Outcome::NotKept(fault.clone()),
            (Err(ClientError::OutputClosed), _) => {
                if self.interrupts.count() < 2 {
                    // Local stdout is gone (`| head`): stop every host.
                    self.interrupts.raise();
                    self.interrupts.raise();
                }
                Outcome::Failed(ClientError::OutputClosed)
            }
            (Err(e), _) => Outcome::Failed(e),
        }
    }

    /// Runs the command over `conn` (host `id`'s), its output into
    /// `capture`; how it ended, and the bytes of stdout and stderr taken.
    async fn run_captured(
        &self,
        id: usize,
        conn: &mut Connection,
        capture: &mut Capture,
    ) -> (
        Result<ExitStatus, ClientError>,
        (u64, u64),
        Option<TakeError>,
    ) {
        let (stdin, _feeding) = match self.stdin {
            Some(b) => {
                let (rx, task) = b.feed(id);
                (Some(rx), Some(task))
            }
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel::<Output>(1);
        let mut counts = (0u64, 0u64);
        let running = async {
            let tx = tx;
            let cancel = self.interrupts.canceller(conn.signaller());
            conn.run(self.request.clone(), stdin, &tx, cancel).await
        };
        let draining = async {
            let mut rx = rx; // owned, so that returning drops it
            while let Some(chunk) = rx.recv().await {
                if let Err(e) = capture.take(chunk, &mut counts).await {
                    return Some(e); // dropping `rx` ends the command: OutputClosed
                }
            }
            None
        };
        let (result, refused) = tokio::join!(running, draining);
        (result, counts, refused)
    }
}

/// Writes one host's JSON line to stdout, off the event loop.
async fn json_line(host: Finished, spool: Arc<Spool>) -> (Finished, Result<(), PrintError>) {
    let written = tokio::task::spawn_blocking(move || {
        let r = report::write_json(&host, &spool, &mut io::stdout().lock());
        (host, r)
    })
    .await;
    match written {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Where a host's output is to go (its [`Capture`] is made once the
/// host is connected).
enum Target<'a> {
    Live(mpsc::Sender<PrintJob>),
    Files(&'a std::path::Path),
    Spool(Arc<Spool>),
}

impl Target<'_> {
    fn capture(&self, name: &str, rules: OutputRules) -> Result<Capture, NotKept> {
        Ok(match self {
            Target::Live(printer) => {
                let prefix: Arc<[u8]> = format!("{name}: ").into_bytes().into();
                Capture::Live {
                    printer: printer.clone(),
                    out: LiveStream::new(prefix.clone(), rules.filters_stdout()),
                    err: LiveStream::new(prefix, rules.filters_stderr()),
                }
            }
            Target::Files(dir) => Capture::files(dir, name)?,
            Target::Spool(spool) => Capture::Spool {
                spool: spool.clone(),
                streams: Default::default(),
                room: rules.max_output,
            },
        })
    }

    /// In live mode, says on stderr, in turn with the output, why a host
    /// failed (the other displays say it when the host is reported).
    async fn report(&self, name: &str, outcome: &Outcome) {
        if let (Target::Live(printer), Outcome::Unreachable(e) | Outcome::Failed(e)) =
            (self, outcome)
        {
            let line = format!("{name}: wiresh: {e}\n").into_bytes();
            let _ = super::capture::print(printer, false, line).await;
        }
    }
}

fn not_run_host(host: &Host) -> Finished {
    Finished {
        name: host.name.clone(),
        target: host.endpoint.target.to_string(),
        outcome: Outcome::NotRun,
        duration: Default::default(),
        captured: Default::default(),
    }
}
