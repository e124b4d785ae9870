//! The exit statuses of the `wiresh` command: the one place each is
//! defined and the one place outcomes are mapped to them.
//!
//! `exec` and `shell` follow ssh's contract: the remote command's status
//! when there is one, 255 when wiresh itself failed. `put` and `get` follow
//! scp's: 0, or 1 when a transfer failed. On many hosts at once (fan-out),
//! one status sums them all up: see [`for_fanout`].

use wiresh_proto::{ErrorCode, ExitStatus};

use crate::client::transfer::TransferError;
use crate::client::ClientError;

/// Success.
pub const SUCCESS: i32 = 0;
/// A file transfer failed (the connection itself was fine), as scp says.
pub const TRANSFER_FAILED: i32 = 1;
/// `wiresh serve` could not start or stopped on an error.
pub const SERVE_FAILED: i32 = 1;
/// A local subcommand (`keygen`, `known-hosts`, `man`, `completions`) failed.
pub const LOCAL_FAILED: i32 = 1;
/// `put`: everything else was copied, but some local names were left
/// out because they are not UTF-8 (the protocol's paths cannot carry
/// them): rsync's status for a partial transfer.
pub const PARTIAL_TRANSFER: i32 = 23;
/// The server could not start the program, as a shell reports a command
/// it cannot find.
pub const NOT_STARTED: i32 = 127;
/// Local stdout was closed early (`| head`): 128+SIGPIPE, as for a local
/// command killed by a broken pipe.
pub const STDOUT_CLOSED: i32 = 128 + 13;
/// wiresh itself failed (cannot connect, wrong token, protocol error), as
/// ssh does.
pub const CLIENT_FAILURE: i32 = 255;
/// The command line is wrong: an unknown option, a missing or malformed
/// argument, a host list that does not parse, an unknown group, options
/// that contradict each other. Nothing was run. As clap, and most Unix
/// commands, report a usage error; for every subcommand.
pub const USAGE: i32 = 2;

/// Fan-out: some host did not succeed (its command failed, timed out, was
/// refused or was not run), though every host was reached.
pub const SOME_FAILED: i32 = 1;
/// Interrupted by Ctrl-C, twice for one host (the remote command was
/// given up on), once for a fan-out that did not end well everywhere:
/// 128+SIGINT, as a shell reports a command that died of it.
pub const INTERRUPTED: i32 = 128 + 2;
/// Fan-out stopped because this machine's disk would not keep what the
/// hosts sent (the spool of `--gather`, `--diff` and `--json` in
/// `$TMPDIR`, the files of `--outdir`) or local stdin for them: a full
/// disk, a quota, an I/O error. `EX_IOERR` of sysexits.h; neither a Ctrl-C
/// ([`INTERRUPTED`]) nor a closed stdout ([`STDOUT_CLOSED`]).
pub const LOCAL_IO: i32 = 74;

/// What a fan-out's exit status is made from.
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    /// This machine's disk would not keep the output (or stdin).
    pub local_io: bool,
    /// Local stdout was closed early.
    pub stdout_closed: bool,
    /// Ctrl-C was pressed, and some host did not end well (a host whose
    /// command handled the SIGINT and exited 0 did).
    pub interrupted: bool,
    /// Some host could not be reached, or its connection broke.
    pub unreachable: bool,
    /// Some host did not succeed.
    pub failed: bool,
    /// With `-S`: the largest of the hosts' statuses, each as a single-host
    /// `wiresh exec` would have exited.
    pub largest: Option<i32>,
}

/// The status of a fan-out: [`LOCAL_IO`] (whatever came after it: the
/// hosts it stopped look interrupted), else [`STDOUT_CLOSED`], else
/// [`INTERRUPTED`], else
/// with `-S` the largest host status (as `pdsh -S`), else
/// [`CLIENT_FAILURE`] if a host was unreachable or lost, else
/// [`SOME_FAILED`] if a host did not succeed, else [`SUCCESS`].
pub fn for_fanout(run: &Fanout) -> i32 {
    if run.local_io {
        LOCAL_IO
    } else if run.stdout_closed {
        STDOUT_CLOSED
    } else if run.interrupted {
        INTERRUPTED
    } else if let Some(largest) = run.largest {
        largest
    } else if run.unreachable {
        CLIENT_FAILURE
    } else if run.failed {
        SOME_FAILED
    } else {
        SUCCESS
    }
}

/// The status for a remote command that ended: its code, 128+N for a
/// death by signal N, 255 for what does not fit.
pub fn for_status(status: &ExitStatus) -> i32 {
    status.shell_code()
}

/// The status after a command failed to run.
pub fn for_error(error: &ClientError) -> i32 {
    match error {
        ClientError::Remote {
            code: ErrorCode::SpawnFailed,
            ..
        } => NOT_STARTED,
        ClientError::OutputClosed => STDOUT_CLOSED,
        ClientError::Interrupted => INTERRUPTED,
        _ => CLIENT_FAILURE,
    }
}

/// The status after a failed transfer: [`CLIENT_FAILURE`] when the
/// connection failed, [`TRANSFER_FAILED`] otherwise, as scp.
pub fn for_transfer(error: &TransferError) -> i32 {
    match error {
        TransferError::Client(e) if !e.connection_usable() && !is_file_refusal(e) => CLIENT_FAILURE,
        _ => TRANSFER_FAILED,
    }
}

/// A server refusal about a file, after which the connection is fine.
fn is_file_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Remote {
            code: ErrorCode::FilesDisabled
                | ErrorCode::PathRefused
                | ErrorCode::NotFound
                | ErrorCode::IoError
                | ErrorCode::ChecksumMismatch,
            ..
        }
    )
}

/// The status after setting up failed: [`USAGE`] when what was asked is
/// wrong, else `otherwise` (the subcommand's failure status).
pub fn for_setup(error: &crate::error::SetupError, otherwise: i32) -> i32 {
    match error {
        crate::error::SetupError::Usage(_) => USAGE,
        _ => otherwise,
    }
}

/// Clamps a status to what a process can exit with.
pub fn process_code(status: i32) -> u8 {
    status.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_ssh() {
        let exited = |code, signal| ExitStatus {
            code,
            signal,
            ..Default::default()
        };
        assert_eq!(for_status(&exited(Some(3), None)), 3);
        assert_eq!(for_status(&exited(None, Some(9))), 137);
        assert_eq!(for_status(&exited(Some(300), None)), CLIENT_FAILURE);
        let spawn = ClientError::Remote {
            code: ErrorCode::SpawnFailed,
            message: String::new(),
            started: false,
        };
        assert_eq!(for_error(&spawn), NOT_STARTED);
        assert_eq!(for_error(&ClientError::Interrupted), INTERRUPTED);
        assert_eq!(
            STDOUT_CLOSED,
            128 + nix::sys::signal::Signal::SIGPIPE as i32
        );
        assert_eq!(process_code(-1), 0);
        let fanout = |f: Fanout| for_fanout(&f);
        assert_eq!(fanout(Fanout::default()), SUCCESS);
        let failed = Fanout {
            failed: true,
            ..Default::default()
        };
        assert_eq!(fanout(failed.clone()), SOME_FAILED);
        let unreachable = Fanout {
            unreachable: true,
            ..failed.clone()
        };
        assert_eq!(fanout(unreachable.clone()), CLIENT_FAILURE);
        assert_eq!(
            fanout(Fanout {
                largest: Some(7),
                ..unreachable.clone()
            }),
            7
        );
        let interrupted = Fanout {
            interrupted: true,
            ..unreachable
        };
        assert_eq!(fanout(interrupted.clone()), 130);
        let disk = Fanout {
            local_io: true,
            stdout_closed: true,
            ..interrupted
        };
        assert_eq!(fanout(disk), LOCAL_IO);
        for other in [
            SUCCESS,
            SOME_FAILED,
            CLIENT_FAILURE,
            INTERRUPTED,
            STDOUT_CLOSED,
            USAGE,
        ] {
            assert_ne!(LOCAL_IO, other, "a status of its own");
        }
        assert_eq!(process_code(256), 255);
    }
}
