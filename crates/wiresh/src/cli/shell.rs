//! `wiresh shell --each-line`: line after line, each a command of its own,
//! on one persistent connection (made again when lost). The lines and the
//! loop are `lines`'s; plain `wiresh shell` is a remote login shell
//! ([`super::terminal`]).

use std::io::{self, IsTerminal, Write};

use tokio::runtime::Runtime;
use wiresh_proto::{ErrorCode, ExecRequest, ExitStatus};

use super::interrupt::Interrupts;
use super::lines::{run_lines, LineRunner, Step};
use super::print::{Printer, StderrStyle};
use crate::client::{ClientError, Connection, Endpoint};
use crate::exit;

/// Runs the shell until end of input or `exit`; returns the exit status of
/// the last command (as a shell would), or 255 if the server could not be
/// reached at all.
pub fn run(rt: &Runtime, endpoint: &Endpoint) -> i32 {
    let style = if io::stdin().is_terminal() && io::stderr().is_terminal() {
        StderrStyle::Red
    } else {
        StderrStyle::Plain
    };
    let conn = match rt.block_on(super::connect(endpoint, None)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wiresh: {e}");
            return exit::CLIENT_FAILURE;
        }
    };
    let runner = OneServer {
        conn: Some(conn),
        endpoint,
        printer: Printer::start(style),
    };
    let banner = format!("connected to {}", endpoint.target);
    run_lines(rt, runner, &format!("{}>>: ", endpoint.target), &banner)
}

/// Lines on a wiresh server, over one connection (re-made when lost).
struct OneServer<'a> {
    conn: Option<Connection>,
    endpoint: &'a Endpoint,
    printer: Printer,
}

impl LineRunner for OneServer<'_> {
    async fn run_line(&mut self, line: &str) -> Step {
        let result = self.try_line(line).await;
        self.printer.sync().await;
        match result {
            Ok(status) => {
                report_status(&status);
                Step::Ran(exit::for_status(&status))
            }
            Err(ClientError::OutputClosed) if self.printer.stdout_closed() => {
                Step::Stop(exit::STDOUT_CLOSED)
            }
            Err(e) => {
                eprintln!("wiresh: {e}");
                if !e.connection_usable() {
                    self.conn = None; // reconnect for the next line
                }
                Step::Ran(exit::CLIENT_FAILURE)
            }
        }
    }

    async fn close(self) {
        if let Some(conn) = self.conn {
            conn.close().await;
        }
    }
}

impl OneServer<'_> {
    /// Runs one line, connecting first if the previous connection was
    /// lost. A server that closed an idle connection says so before it ran
    /// anything, so the line is safely retried once on a fresh connection.
    async fn try_line(&mut self, line: &str) -> Result<ExitStatus, ClientError> {
        for attempt in 0..2 {
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => self.conn.insert(super::connect(self.endpoint, None).await?),
            };
            let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
            let cancel = interrupts.canceller(conn.signaller());
            let res = conn
                .run(ExecRequest::shell(line), None, &self.printer, cancel)
                .await;
            match res {
                // Only a command that never started is safe to run again.
                Err(ClientError::Remote {
                    code: ErrorCode::Timeout,
                    started: false,
                    ..
                }) if attempt == 0 => self.conn = None,
                other => return other,
            }
        }
        unreachable!("the second attempt always returns")
    }
}

/// Shows a non-zero status distinctly from the command's own output.
fn report_status(status: &ExitStatus) {
    let mut err = io::stderr().lock();
    let _ = if status.timed_out {
        writeln!(err, "[timed out after {} ms]", status.duration_ms)
    } else if status.shutdown {
        writeln!(err, "[killed: the server shut down]")
    } else if let Some(sig) = status.signal {
        writeln!(err, "[killed by signal {sig}]")
    } else if let Some(code) = status.code.filter(|c| *c != 0) {
        writeln!(err, "[exit {code}]")
    } else {
        Ok(())
    };
}
