//! Requests the server turns down while the connection goes on, each
//! mapped to its wire code in one place ([`Refusal::code`]).

use std::path::Path;

use wiresh_proto::{ErrorCode, Frame, Message};

use crate::exec::SpawnError;

/// Why one request (a command or a file operation) was not carried out.
/// The client gets an `error` frame; the connection stays usable.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The request itself is malformed (say, `exec` with an empty `argv`).
    #[error("{0}")]
    BadRequest(String),
    /// The server's policy does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The server runs as many commands as it may.
    #[error("the server is running its limit of {0} commands; try again later")]
    Busy(usize),
    /// The server has no file descriptors left to start a command with.
    #[error(
        "the server has run out of file descriptors and cannot start the command now; try again \
         later (its operator can raise the open-file limit or lower --max-commands)"
    )]
    OutOfDescriptors,
    /// The audit log cannot be written, so nothing may run.
    #[error("the server cannot write its audit log, so it runs nothing; tell its operator")]
    AuditBroken,
    /// The program could not be started.
    #[error(transparent)]
    NotStarted(SpawnError),
    /// File transfer is off on this server.
    #[error("file transfer is off on this server (start it with --files-root DIR)")]
    FilesDisabled,
    /// A path outside what the server allows.
    #[error("{path:?}: {why}")]
    PathRefused {
        /// The path as the client sent it.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The filesystem failed, or the file is not what the request needs.
    #[error("{0}")]
    Io(String),
    /// Uploaded data does not match its checksum or announced size.
    #[error("{0}")]
    ChecksumMismatch(String),
}

impl Refusal {
    /// The wire code for this refusal: the one place that mapping lives.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::BadRequest(_) => ErrorCode::BadRequest,
            Refusal::Forbidden(_) => ErrorCode::Forbidden,
            Refusal::Busy(_) | Refusal::OutOfDescriptors => ErrorCode::Busy,
            Refusal::AuditBroken => ErrorCode::Internal,
            Refusal::NotStarted(_) => ErrorCode::SpawnFailed,
            Refusal::FilesDisabled => ErrorCode::FilesDisabled,
            Refusal::PathRefused { .. } => ErrorCode::PathRefused,
            Refusal::NotFound(_) => ErrorCode::NotFound,
            Refusal::Io(_) => ErrorCode::IoError,
            Refusal::ChecksumMismatch(_) => ErrorCode::ChecksumMismatch,
        }
    }

    /// A filesystem error on `path` while trying to `what` it.
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Refusal {
        match e.kind() {
            std::io::ErrorKind::NotFound => Refusal::NotFound(path.display().to_string()),
            _ => Refusal::Io(format!("cannot {what} {}: {e}", path.display())),
        }
    }

    /// The refusal for a command that could not be started: `busy` when the
    /// server is out of descriptors (a passing shortage, not the
    /// program's fault), `spawn_failed` otherwise.
    pub fn not_started(e: SpawnError) -> Refusal {
        let out_of_descriptors = matches!(
            e.source.raw_os_error(),
            Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
        );
        match out_of_descriptors {
            true => Refusal::OutOfDescriptors,
            false => Refusal::NotStarted(e),
        }
    }

    /// The `error` frame that tells the client.
    pub fn frame(&self) -> Frame {
        Frame::new(Message::error(self.code(), self.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_busy_not_a_failed_program() {
        let spawn = |errno| SpawnError::new("x", std::io::Error::from_raw_os_error(errno));
        assert_eq!(
            Refusal::not_started(spawn(nix::libc::EMFILE)).code(),
            ErrorCode::Busy
        );
        assert_eq!(
            Refusal::not_started(spawn(nix::libc::ENFILE)).code(),
            ErrorCode::Busy
        );
        assert_eq!(
            Refusal::not_started(spawn(nix::libc::ENOENT)).code(),
            ErrorCode::SpawnFailed
        );
    }

    #[test]
    fn io_errors_tell_missing_files_apart() {
        let missing = Refusal::io("read", Path::new("a"), std::io::ErrorKind::NotFound.into());
        assert_eq!(missing.code(), ErrorCode::NotFound);
        assert_eq!(missing.to_string(), "a: no such file or directory");
        let denied = Refusal::io(
            "read",
            Path::new("a"),
            std::io::ErrorKind::PermissionDenied.into(),
        );
        assert_eq!(denied.code(), ErrorCode::IoError);
        assert!(denied.to_string().starts_with("cannot read a: "));
    }
}
