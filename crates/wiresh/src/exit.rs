//! The exit statuses of the `wiresh` command: the one place each is
//! defined and the one place outcomes are mapped to them.
//!
//! `exec` and `shell` follow ssh's contract: the remote command's status
//! when there is one, 255 when wiresh itself failed. `put` and `get` follow
//! scp's: 0, or 1 when a transfer failed.

use wiresh_proto::{ErrorCode, ExitStatus};

use crate::client::ClientError;

/// Success.
pub const SUCCESS: i32 = 0;
/// A file transfer failed (the connection itself was fine), as scp says.
pub const TRANSFER_FAILED: i32 = 1;
/// `wiresh serve` could not start or stopped on an error.
pub const SERVE_FAILED: i32 = 1;
/// A local subcommand (`keygen`, `man`, `completions`) failed.
pub const LOCAL_FAILED: i32 = 1;
/// The server could not start the program, as a shell reports a command
/// it cannot find.
pub const NOT_STARTED: i32 = 127;
/// Local stdout was closed early (`| head`): 128+SIGPIPE, as for a local
/// command killed by a broken pipe.
pub const STDOUT_CLOSED: i32 = 128 + 13;
/// wiresh itself failed (cannot connect, wrong token, protocol error), as
/// ssh does.
pub const CLIENT_FAILURE: i32 = 255;

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
        _ => CLIENT_FAILURE,
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
        assert_eq!(for_error(&ClientError::Interrupted), CLIENT_FAILURE);
        assert_eq!(
            STDOUT_CLOSED,
            128 + nix::sys::signal::Signal::SIGPIPE as i32
        );
        assert_eq!(process_code(-1), 0);
        assert_eq!(process_code(256), 255);
    }
}
