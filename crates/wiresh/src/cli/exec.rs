//! `wiresh exec`: one command, with this process's stdio as its own.

use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;
use wiresh_proto::{ExecRequest, ExitStatus};

use super::local::{spawn_stdin_reader, Printer, StderrStyle};
use super::{ClientError, Connection, Endpoint, CONNECT_TIMEOUT};
use crate::exit;
use crate::legacy::{LegacyClient, LegacyError};

/// Runs `req` on the endpoint's server and returns the exit status this
/// process should end with (see [`crate::exit`]).
pub fn run(rt: &Runtime, endpoint: &Endpoint, mut req: ExecRequest, forward_stdin: bool) -> i32 {
    let printer = Printer::start(StderrStyle::Plain);
    let result = rt.block_on(async {
        // The command goes out with the handshake: one round trip less.
        req.stdin = forward_stdin;
        let mut conn = Connection::connect_running(endpoint, &req).await?;
        conn.pass_stdout_to(&printer);
        let stdin = forward_stdin.then(spawn_stdin_reader);
        let status = conn
            .run(req, stdin, printer.sender(), || async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
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
pub(super) fn exit_code(result: Result<ExitStatus, ClientError>, stdout_closed: bool) -> i32 {
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
        Err(e) => {
            eprintln!("wiresh: {e}");
            exit::for_error(&e)
        }
    }
}

/// `wiresh exec --legacy`: runs `command` on a server of the original
/// protocol, whose text is in `encoding` (`None`: UTF-8, passed through).
/// That protocol has no exit status, so this returns 0 after a complete
/// answer and [`exit::CLIENT_FAILURE`] after a broken one.
pub fn run_legacy(
    rt: &Runtime,
    target: &str,
    command: &str,
    encoding: Option<&'static encoding_rs::Encoding>,
) -> i32 {
    let result = rt.block_on(async {
        let mut client = LegacyClient::connect(target, CONNECT_TIMEOUT).await?;
        client.set_encoding(encoding);
        legacy_to_stdout(&mut client, command).await
    });
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("wiresh: {e}");
            exit::CLIENT_FAILURE
        }
    }
}

/// Runs one legacy command with its answer on stdout, warning on stderr
/// when the answer's md5 does not match.
pub(super) async fn legacy_to_stdout(
    client: &mut LegacyClient,
    command: &str,
) -> Result<(), LegacyError> {
    let mut out = tokio::io::stdout();
    let reply = client.run(command, &mut out).await;
    let _ = out.flush().await;
    if let Some(warning) = reply.as_ref().ok().and_then(|r| r.md5_warning()) {
        eprintln!("wiresh: {warning}");
    }
    reply.map(drop)
}
