//! `wiresh exec`: one command, with this process's stdio as its own.

use tokio::runtime::Runtime;
use wiresh_proto::{ExecRequest, ExitStatus};

use super::interrupt::Interrupts;
use super::print::{spawn_stdin_reader, Printer, StderrStyle};
use crate::client::{ClientError, Endpoint};
use crate::exit;

/// Runs `req` on the endpoint's server and returns the exit status this
/// process should end with (see [`crate::exit`]).
pub fn run(rt: &Runtime, endpoint: &Endpoint, mut req: ExecRequest, forward_stdin: bool) -> i32 {
    let printer = Printer::start(StderrStyle::Plain);
    let result = rt.block_on(async {
        // The command goes out with the handshake: one round trip less.
        req.stdin = forward_stdin;
        let mut conn = super::connect(endpoint, Some(&req)).await?;
        let stdin = forward_stdin.then(spawn_stdin_reader);
        let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
        let cancel = interrupts.canceller(conn.signaller());
        let status = conn.run(req, stdin, &printer, cancel).await;
        printer.sync().await;
        conn.close().await;
        status
    });
    let stdout_closed = printer.stdout_closed();
    drop(printer);
    exit_code(result, stdout_closed)
}

/// The exit status for how a command ended, telling the user what went
/// wrong on stderr. `stdout_closed`: local stdout went away first.
pub fn exit_code(result: Result<ExitStatus, ClientError>, stdout_closed: bool) -> i32 {
    match result {
        // Dropping the connection (on return) makes the server kill the command.
        Err(ClientError::OutputClosed) if stdout_closed => exit::STDOUT_CLOSED,
        Ok(status) => {
            if status.timed_out {
                eprintln!(
                    "wiresh: the command timed out after {} ms and was killed",
                    status.duration_ms
                );
            }
            if status.shutdown {
                eprintln!("wiresh: the server shut down and killed the command");
            }
            exit::for_status(&status)
        }
        Err(ClientError::Interrupted) => {
            eprintln!(
                "wiresh: interrupted twice: the remote command was cancelled and the connection \
                 closed"
            );
            exit::INTERRUPTED
        }
        Err(e) => {
            eprintln!("wiresh: {e}");
            exit::for_error(&e)
        }
    }
}
