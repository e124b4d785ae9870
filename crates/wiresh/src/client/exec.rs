//! `wiresh exec`: one command, with this process's stdio as its own.

use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;
use wiresh_proto::{ErrorCode, ExecRequest};

use super::local::{spawn_stdin_reader, Printer, StderrStyle};
use super::{ClientError, Connection, Endpoint, CONNECT_TIMEOUT};
use crate::legacy::LegacyClient;

/// Exit status of the client when it fails itself (cannot connect, wrong
/// token, protocol error), as ssh does.
pub const CLIENT_FAILURE: i32 = 255;

/// Exit status when the server could not start the program, as a shell
/// reports a command it cannot find.
pub const NOT_STARTED: i32 = 127;

/// Exit status when local stdout was closed early (`| head`): 128+SIGPIPE,
/// as for a local command killed by a broken pipe.
pub const STDOUT_CLOSED: i32 = 128 + libc::SIGPIPE;

/// Runs `req` on `target` and returns the exit status this process should
/// end with: the remote code, 128+N for a remote death by signal N, or
/// [`CLIENT_FAILURE`].
pub fn run(rt: &Runtime, endpoint: &Endpoint, req: ExecRequest, forward_stdin: bool) -> i32 {
    let printer = Printer::start(StderrStyle::Plain);
    let result = rt.block_on(async {
        let mut conn = Connection::connect(endpoint).await?;
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
    match result {
        // Dropping the connection (on return) makes the server kill the command.
        Err(ClientError::OutputClosed) if stdout_closed => STDOUT_CLOSED,
        Ok(status) => {
            if status.timed_out {
                eprintln!(
                    "wiresh: the command timed out after {} ms and was killed",
                    status.duration_ms
                );
            }
            status.shell_code()
        }
        Err(e) => {
            eprintln!("wiresh: {e}");
            match e {
                ClientError::Remote {
                    code: ErrorCode::SpawnFailed,
                    ..
                } => NOT_STARTED,
                _ => CLIENT_FAILURE,
            }
        }
    }
}

/// `wiresh exec --legacy`: runs `command` on a server of the original
/// protocol. That protocol has no exit status, so this returns 0 after a
/// complete answer and [`CLIENT_FAILURE`] after a broken one.
pub fn run_legacy(rt: &Runtime, target: &str, command: &str) -> i32 {
    let result = rt.block_on(async {
        let mut client = LegacyClient::connect(target, CONNECT_TIMEOUT).await?;
        legacy_to_stdout(&mut client, command).await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wiresh: {e:#}");
            CLIENT_FAILURE
        }
    }
}

/// Runs one legacy command with its answer on stdout, warning on stderr
/// when the answer's md5 does not match.
pub(super) async fn legacy_to_stdout(
    client: &mut LegacyClient,
    command: &str,
) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let reply = client.run(command, &mut out).await;
    let _ = out.flush().await;
    if let Some(warning) = reply.as_ref().ok().and_then(|r| r.md5_warning()) {
        eprintln!("wiresh: {warning}");
    }
    reply.map(drop)
}
