//! File transfer on the server: `stat`, `list`, `mkdir`, `put`, `get`,
//! confined to the files root.
//!
//! Every path from a client is checked by its text ([`root::RelPath`]:
//! no `..`, no absolute path outside the root), then resolved by the
//! kernel beneath an open handle of the root ([`root::Root`]), and used
//! only through handles from then on, so that no symbolic link, whenever
//! it appears, leads a request out of the root. Uploads go to a temporary
//! `.NAME.wiresh-part` beside the target, verified with BLAKE3, fsynced and
//! renamed into place, so an interrupted or corrupted upload never leaves
//! a half-written file under the real name (and a partial can be resumed
//! after checking its prefix).
//!
//! - here: a request parsed once from its message, audited, applied;
//! - `common`: the files root opened for a request, how a handler answers
//!   and what it returns;
//! - `listing`: `stat`, `list` and `mkdir`;
//! - `put` and `get`: the two directions of a transfer, over `transfer`
//!   (the client's next transfer frame, within the shutdown grace);
//! - `root`: paths checked by their text, resolved beneath the root.

mod common;
mod get;
mod listing;
mod put;
mod root;
mod transfer;

use std::path::Path;
use std::sync::Arc;

use wiresh_proto::{Message, PutRequest};

use super::refusal::Refusal;
use super::session::Session;
use crate::audit::{Ending, Outcome, Verb};

use self::common::{Files, Handled, Stop};
use self::listing::{list, mkdir, stat};
use crate::listener::End;

/// A file request, parsed once from its message (after mini-redis's
/// `Command::from_frame`), then [applied](Request::apply).
#[derive(Debug)]
pub(super) enum Request {
    /// `stat`: one entry.
    Stat { path: String },
    /// `list`: every entry below a directory.
    List { path: String },
    /// `mkdir`: a directory and its parents.
    Mkdir { path: String, mode: Option<u32> },
    /// `put`: an upload.
    Put(PutRequest),
    /// `get`: a download, perhaps resumed.
    Get { path: String, resume_from: u64 },
}

impl Request {
    /// The file request `message` makes; any other message comes back
    /// (boxed: it is the rare case, and a large one).
    pub fn from_message(message: Message) -> Result<Request, Box<Message>> {
        Ok(match message {
            Message::Stat { path } => Request::Stat { path },
            Message::List { path } => Request::List { path },
            Message::Mkdir { path, mode } => Request::Mkdir { path, mode },
            Message::Put(req) => Request::Put(req),
            Message::Get { path, resume_from } => Request::Get { path, resume_from },
            other => return Err(Box::new(other)),
        })
    }

    /// What the audit log records it as; looking (`stat`, `list`) is not
    /// recorded.
    fn audited(&self) -> Option<(Verb, &str)> {
        match self {
            Request::Stat { .. } | Request::List { .. } => None,
            Request::Mkdir { path, .. } => Some((Verb::Mkdir, path)),
            Request::Put(req) => Some((Verb::Put, &req.path)),
            Request::Get { path, .. } => Some((Verb::Get, path)),
        }
    }

    /// Carries the request out beneath the files root.
    async fn apply(self, session: &mut Session, files: &Files) -> Handled {
        match self {
            Request::Stat { path } => stat(session, files, &path).await,
            Request::List { path } => list(session, files, &path).await,
            Request::Mkdir { path, mode } => mkdir(session, files, &path, mode).await,
            Request::Put(req) => put::put(session, files, req).await,
            Request::Get { path, resume_from } => {
                get::get(session, files, &path, resume_from).await
            }
        }
    }
}

/// The files root, if this session may use it.
fn files_root(session: &Session) -> Result<Arc<Path>, Refusal> {
    let Some(root) = &session.config.files_root else {
        return Err(Refusal::FilesDisabled);
    };
    if let Some(why) = session.config.policy.files_refusal() {
        return Err(Refusal::Forbidden(why));
    }
    match session.audit_refusal() {
        Some(refusal) => Err(refusal),
        None => Ok(Arc::from(root.as_path())),
    }
}

/// Handles one file request. `Ok` means the connection can go on.
pub(super) async fn handle(session: &mut Session, request: Request) -> Result<(), End> {
    let root = match files_root(session) {
        Ok(root) => root,
        Err(refusal) => return session.refuse("file request", refusal).await,
    };
    // A transfer's start is on record before it touches a file.
    let audited = request.audited();
    let record = audited.map(|(verb, target)| session.audit_begin(session.action(verb, target)));
    let record = match record.transpose() {
        Ok(record) => record,
        Err(refusal) => return session.refuse("file request", refusal).await,
    };
    let result = match Files::open(root).await {
        Err(refusal) => Err(Stop::Refused(refusal)),
        Ok(files) => request.apply(session, &files).await,
    };
    if let Some(record) = record {
        record.end(match &result {
            Ok(moved) => moved.ending(Outcome::Succeeded),
            Err(Stop::Refused(_)) => Ending::of(Outcome::Refused),
            Err(Stop::End(_)) => Ending::of(Outcome::Aborted),
        });
    }
    match result {
        Ok(_) => Ok(()),
        Err(Stop::Refused(refusal)) => session.refuse("file request", refusal).await,
        Err(Stop::End(end)) => Err(end),
    }
}
