//! What every file request's handler works with: the files root opened
//! for it ([`Files`]), how it answers, and what it returns (the file bytes
//! it moved, or why it stopped).

use std::path::Path;
use std::sync::Arc;

use wiresh_proto::{Frame, Message};

use super::root::{RelPath, Root};
use crate::audit::{Ending, Outcome};
use crate::fileio::unblock;
use crate::listener::End;
use crate::server::refusal::Refusal;
use crate::server::session::Session;

/// Why a file request stopped before its end.
pub(super) enum Stop {
    /// This request is refused; the connection goes on.
    Refused(Refusal),
    /// The connection must close.
    End(End),
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Stop {
        Stop::Refused(refusal)
    }
}

impl From<End> for Stop {
    fn from(end: End) -> Stop {
        Stop::End(end)
    }
}

/// File bytes a request moved, and which way, for the audit log.
#[derive(Debug, Clone, Copy)]
pub(super) enum Moved {
    /// None (a listing, a directory made).
    Nothing,
    /// Received from the client (an upload).
    In(u64),
    /// Sent to the client (a download).
    Out(u64),
}

impl Moved {
    /// The audit ending of a request that moved this.
    pub(super) fn ending(self, outcome: Outcome) -> Ending {
        let (bytes_in, bytes_out) = match self {
            Moved::Nothing => (0, 0),
            Moved::In(bytes) => (bytes, 0),
            Moved::Out(bytes) => (0, bytes),
        };
        Ending {
            bytes_in,
            bytes_out,
            ..Ending::of(outcome)
        }
    }
}

/// What a request handler returns: the file bytes moved, or why it stopped.
pub(super) type Handled = Result<Moved, Stop>;

pub(super) async fn send(session: &Session, message: Message) -> Result<(), End> {
    session.answer(Frame::new(message)).await
}

/// The files root for one request: its canonical path, for the lexical
/// checks, and its open handle, beneath which everything is resolved.
pub(super) struct Files {
    path: Arc<Path>,
    root: Arc<Root>,
}

impl Files {
    pub(super) async fn open(path: Arc<Path>) -> Result<Files, Refusal> {
        let at = path.clone();
        let root = unblock(move || Root::open(&at)).await.map_err(|e| {
            Refusal::Io(format!(
                "the server cannot open its files root: {e}; tell its operator"
            ))
        })?;
        Ok(Files {
            path,
            root: Arc::new(root),
        })
    }

    /// A client's path, checked by its text.
    pub(super) fn rel(&self, path: &str) -> Result<RelPath, Refusal> {
        RelPath::parse(&self.path, path)
    }

    /// Runs `f` on the root, on a thread where blocking is fine.
    pub(super) async fn beneath<T, F>(&self, f: F) -> std::io::Result<T>
    where
        F: FnOnce(&Root) -> std::io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let root = self.root.clone();
        unblock(move || f(&root)).await
    }
}
