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

mod root;

use std::ffi::{OsStr, OsString};
use std::io::SeekFrom;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use tokio::fs::File;
use tokio::io::AsyncSeekExt;
use tracing::info;
use wiresh_proto::{ErrorCode, FileEntry, FileKind, Frame, Message, PutRequest, TransferReady};

use self::root::{refusal, RelPath, Root};
use super::refusal::Refusal;
use super::session::{not_allowed, Session};
use crate::audit::{Ending, Outcome, Verb};
use crate::conn::RecvError;
use crate::defaults::{STALE_PARTIAL, SWEEP_EVERY, TRANSFER_FRAME_WAIT};
use crate::fileio::{
    hash_prefix, is_partial_name, mode_to_apply, open_partial, partial_name, publish, unblock,
    Sink, Source, CHUNK,
};
use crate::listener::{During, End};

/// Why a file request stopped before its end.
enum Stop {
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
enum Moved {
    /// None (a listing, a directory made).
    Nothing,
    /// Received from the client (an upload).
    In(u64),
    /// Sent to the client (a download).
    Out(u64),
}

impl Moved {
    /// The audit ending of a request that moved this.
    fn ending(self, outcome: Outcome) -> Ending {
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
type Handled = Result<Moved, Stop>;

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
            Request::Put(req) => put(session, files, req).await,
            Request::Get { path, resume_from } => get(session, files, &path, resume_from).await,
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

async fn send(session: &Session, message: Message) -> Result<(), End> {
    session.answer(Frame::new(message)).await
}

/// The files root for one request: its canonical path, for the lexical
/// checks, and its open handle, beneath which everything is resolved.
struct Files {
    path: Arc<Path>,
    root: Arc<Root>,
}

impl Files {
    async fn open(path: Arc<Path>) -> Result<Files, Refusal> {
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
    fn rel(&self, path: &str) -> Result<RelPath, Refusal> {
        RelPath::parse(&self.path, path)
    }

    /// Runs `f` on the root, on a thread where blocking is fine.
    async fn beneath<T, F>(&self, f: F) -> std::io::Result<T>
    where
        F: FnOnce(&Root) -> std::io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let root = self.root.clone();
        unblock(move || f(&root)).await
    }
}

fn entry(path: String, meta: &std::fs::Metadata) -> FileEntry {
    let kind = if meta.is_file() {
        FileKind::File
    } else if meta.is_dir() {
        FileKind::Dir
    } else {
        FileKind::Other
    };
    FileEntry {
        path,
        kind,
        size: if meta.is_file() { meta.len() } else { 0 },
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
    }
}

async fn stat(session: &mut Session, files: &Files, path: &str) -> Handled {
    let rel = files.rel(path)?;
    let meta = files
        .beneath(move |root| root.metadata(&rel))
        .await
        .map_err(|e| refusal("stat", path, e))?;
    send(session, Message::Entry(entry(path.to_string(), &meta))).await?;
    Ok(Moved::Nothing)
}

async fn list(session: &mut Session, files: &Files, path: &str) -> Handled {
    let rel = files.rel(path)?;
    let dir = files
        .beneath(move |root| root.open_dir(&rel))
        .await
        .map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::NOTDIR) => Refusal::Io(format!("{path}: not a directory")),
            _ => refusal("list", path, e),
        })?;
    // Walk on a blocking thread, sending entries as they are found, so a
    // huge tree costs neither memory here nor a stall of the runtime.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FileEntry>(64);
    let walker = tokio::task::spawn_blocking(move || walk(dir, &tx));
    let mut count = 0u64;
    while let Some(e) = rx.recv().await {
        count += 1;
        send(session, Message::Entry(e)).await?;
    }
    if let Ok(Err(e)) = walker.await {
        let message = format!("listing {path} failed: {e}");
        return Err(session.fail(ErrorCode::IoError, message).await.into());
    }
    send(session, Message::ListEnd { count }).await?;
    Ok(Moved::Nothing)
}

/// The names in the directory `dir` that a listing shows, sorted: UTF-8
/// (others cannot be named in the protocol), not `.` or `..`, and not a
/// transfer's partial file (not a file yet).
fn listed_names(dir: &OwnedFd) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        match String::from_utf8(name) {
            Ok(name) if name != "." && name != ".." && !is_partial_name(&name) => names.push(name),
            _ => {}
        }
    }
    names.sort();
    Ok(names)
}

/// Sends every entry below the directory `dir`, a directory before its
/// contents. Each entry is looked at by its one name inside its
/// directory's handle, without following it: symlinks are reported as
/// `other` and never descended into, so a listing never leaves the tree it
/// was asked for, even if the tree changes meanwhile.
///
/// The descent keeps its own stack (one open directory and its names per
/// level) rather than recursing: a client can make a tree some two
/// thousand levels deep with one `mkdir`, which would overflow the stack
/// of the thread walking it and abort the whole server.
fn walk(dir: OwnedFd, tx: &tokio::sync::mpsc::Sender<FileEntry>) -> std::io::Result<()> {
    let here = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let names = listed_names(&dir)?.into_iter();
    let mut levels = vec![(dir, String::new(), names)];
    while let Some((dir, prefix, names)) = levels.last_mut() {
        let Some(name) = names.next() else {
            levels.pop();
            continue;
        };
        let meta = match rustix::fs::openat(&*dir, &*name, OFlags::PATH | here, Mode::empty()) {
            Ok(fd) => std::fs::File::from(fd).metadata()?,
            Err(Errno::NOENT) => continue, // removed meanwhile
            Err(e) => return Err(e.into()),
        };
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if tx.blocking_send(entry(rel.clone(), &meta)).is_err() {
            return Ok(());
        }
        if meta.is_dir() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | here;
            let child = rustix::fs::openat(&*dir, &*name, flags, Mode::empty())?;
            let names = listed_names(&child)?.into_iter();
            levels.push((child, rel, names));
        }
    }
    Ok(())
}

async fn mkdir(session: &mut Session, files: &Files, path: &str, mode: Option<u32>) -> Handled {
    let rel = files.rel(path)?;
    files
        .beneath(move |root| {
            let dir = root.make_dirs(&rel)?;
            if let Some(mode) = mode {
                // As documented: a mode that cannot be applied is no failure.
                let current = rustix::fs::fstat(&dir).map_or(0, |st| st.st_mode);
                let mode = mode_to_apply(mode, current, true);
                let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode));
            }
            Ok(())
        })
        .await
        .map_err(|e| refusal("create directory", path, e))?;
    send(session, Message::TransferOk { bytes: 0 }).await?;
    Ok(Moved::Nothing)
}

/// The shutdown grace of one transfer: once the server has been shutting
/// down for `--shutdown-grace`, a transfer still going ends with
/// `shutting_down`, as a command still running is killed then. Without
/// it, a client that keeps a transfer open (pinging, or sending slowly)
/// would hold the server's shutdown until a second signal.
struct ShutdownGrace {
    shutdown: tokio_util::sync::CancellationToken,
    grace: Duration,
    /// When this transfer saw the shutdown begin.
    since: Option<tokio::time::Instant>,
}

impl ShutdownGrace {
    fn of(session: &Session) -> ShutdownGrace {
        ShutdownGrace {
            shutdown: session.shutdown.clone(),
            grace: session.config.shutdown_grace,
            since: None,
        }
    }

    /// Resolves once the grace is over; cancel-safe, so it can stand in a
    /// `select!` beside each wait of the transfer.
    async fn over(&mut self) {
        let since = match self.since {
            Some(since) => since,
            None => {
                self.shutdown.cancelled().await;
                *self.since.insert(tokio::time::Instant::now())
            }
        };
        tokio::time::sleep_until(since + self.grace).await;
    }

    /// Ends the connection with `shutting_down`, saying how to go on (or
    /// with `auth_failed` when a reload revoked the connection's login).
    async fn end(session: &Session) -> End {
        let (code, message) = match session.revocation.reason() {
            Some(why) => (
                ErrorCode::AuthFailed,
                format!("{why}; the transfer stopped here and the connection is closed"),
            ),
            None => (
                ErrorCode::ShuttingDown,
                "server is shutting down: the transfer stopped here; `--resume` continues it \
                 once the server is back"
                    .to_string(),
            ),
        };
        session.fail(code, message).await
    }
}

/// Reads the next frame of a transfer, answering pings on the way.
async fn next_transfer_frame(
    session: &mut Session,
    grace: &mut ShutdownGrace,
) -> Result<Frame, End> {
    loop {
        let received = tokio::select! {
            received = session.conn.recv_within(TRANSFER_FRAME_WAIT) => received,
            () = grace.over() => return Err(ShutdownGrace::end(session).await),
        };
        let frame = match received {
            Ok(frame) => frame,
            Err(RecvError::Closed) => return Err(End::disconnected(During::Transfer)),
            Err(e) => return Err(session.fail_recv(e, "during a transfer").await),
        };
        match frame.message {
            Message::Ping => session.conn.pong(frame.body),
            Message::Pong => {}
            _ => return Ok(frame),
        }
    }
}

/// Reads `transfer_start` and checks its offset is 0 or the one offered.
async fn expect_start(
    session: &mut Session,
    grace: &mut ShutdownGrace,
    offered: u64,
) -> Result<u64, End> {
    let frame = next_transfer_frame(session, grace).await?;
    match frame.message {
        Message::TransferStart { offset } if offset == 0 || offset == offered => Ok(offset),
        Message::TransferStart { offset } => {
            let message =
                format!("transfer_start offset {offset} is neither 0 nor the offered {offered}");
            Err(session.fail(ErrorCode::BadRequest, message).await)
        }
        other => Err(session.unexpected(&other, "before transfer_start").await),
    }
}

/// Removes a partial file that is not to be kept, before letting go of
/// its lock (so no other transfer takes it up in between).
async fn discard(dir: Arc<OwnedFd>, part: OsString, file: File) {
    let file = file.into_std().await;
    let _ = unblock(move || {
        rustix::fs::unlinkat(&*dir, &part, AtFlags::empty())?;
        drop(file);
        Ok(())
    })
    .await;
}

/// An upload's partial file, open and locked, in its directory.
struct Upload {
    dir: Arc<OwnedFd>,
    /// The target's name in `dir`.
    name: OsString,
    /// The partial's name in `dir`.
    part: OsString,
    file: File,
}

/// Resolves an upload's target, creates its directory, and opens its
/// partial file; a fresh (not resumed) upload empties an old partial at
/// once, so that whatever space it held is free for this one.
async fn open_upload(session: &Session, files: &Files, req: &PutRequest) -> Result<Upload, Stop> {
    let rel = files.rel(&req.path)?;
    let Some((dir_rel, name)) = rel.split_last() else {
        return Err(Refusal::PathRefused {
            path: req.path.clone(),
            why: "names no file",
        }
        .into());
    };
    let name = OsString::from(name);
    let part = partial_name(&name);
    // What the name leads to now: a directory, or a way out of the root,
    // is refused with a message of its own. (The write itself goes by
    // handle, whatever the name leads to by then.)
    match files.beneath(move |root| root.metadata(&rel)).await {
        Ok(meta) if meta.is_dir() => {
            return Err(Refusal::Io(format!("{}: is a directory", req.path)).into())
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(refusal("write", &req.path, e).into())
        }
        _ => {}
    }
    let shown = dir_rel.clone();
    let dir = files
        .beneath(move |root| root.make_dirs(&dir_rel))
        .await
        .map_err(|e| refusal("create directory for", &req.path, e))?;
    let dir = Arc::new(dir);
    sweep_stale_partials(session, &dir, &part, &shown).await;
    let (at, named) = (dir.clone(), part.clone());
    let file = unblock(move || open_partial(&at, &named))
        .await
        .map_err(|e| Refusal::io("write", Path::new(&req.path), e))?;
    let file = File::from_std(file);
    if !req.resume {
        file.set_len(0)
            .await
            .map_err(|e| Refusal::io("write", Path::new(&req.path), e))?;
    }
    Ok(Upload {
        dir,
        name,
        part,
        file,
    })
}

/// Removes the partial files in an upload's directory that nobody has
/// written to for [`STALE_PARTIAL`] and no transfer holds (besides the
/// upload's own, `keep`, which the upload itself resumes or discards). A
/// directory is looked through at most once per [`SWEEP_EVERY`], so that
/// uploading many files into one directory does not read it over and over.
async fn sweep_stale_partials(session: &Session, dir: &Arc<OwnedFd>, keep: &OsStr, rel: &RelPath) {
    let Ok(meta) = rustix::fs::fstat(&**dir) else {
        return;
    };
    if !session
        .shared
        .sweep_due((meta.st_dev, meta.st_ino), SWEEP_EVERY)
    {
        return;
    }
    let (at, keep) = (dir.clone(), keep.to_os_string());
    match unblock(move || sweep(&at, &keep, STALE_PARTIAL)).await {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => info!(
            peer = %session.peer,
            dir = %rel,
            "removed {} partial file(s) untouched for over {} h: {}",
            removed.len(),
            STALE_PARTIAL.as_secs() / 3600,
            removed.join(", ")
        ),
        Err(e) => {
            info!(peer = %session.peer, dir = %rel, "looking for stale partial files failed: {e}")
        }
    }
}

/// Removes, from `dir`, the partial files other than `keep` that are
/// older than `age` and not locked by a transfer; returns their names.
fn sweep(dir: &OwnedFd, keep: &OsStr, age: Duration) -> std::io::Result<Vec<String>> {
    let now = std::time::SystemTime::now();
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        if let Ok(name) = entry?.file_name().to_str() {
            if is_partial_name(name) && OsStr::new(name) != keep {
                names.push(name.to_string());
            }
        }
    }
    let mut removed = Vec::new();
    for name in names {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(dir, &*name, flags, Mode::empty()) else {
            continue;
        };
        let file = std::fs::File::from(fd);
        let meta = file.metadata()?;
        let idle = meta
            .modified()
            .map(|m| now.duration_since(m).unwrap_or_default());
        if !meta.is_file() || idle.map_or(true, |idle| idle < age) {
            continue;
        }
        // A transfer holds its partial's lock while it runs; and the name
        // must still be that file once we hold the lock.
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        match rustix::fs::statat(dir, &*name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_ino == meta.ino() && st.st_dev == meta.dev() => {}
            _ => continue,
        }
        rustix::fs::unlinkat(dir, &*name, AtFlags::empty())?;
        removed.push(name);
    }
    Ok(removed)
}

async fn put(session: &mut Session, files: &Files, req: PutRequest) -> Handled {
    let shown = Path::new(&req.path);
    let Upload {
        dir,
        name,
        part,
        mut file,
    } = open_upload(session, files, &req).await?;
    // Offer to resume from a partial no longer than the file.
    let mut offered = 0;
    let mut prefix = None;
    if req.resume {
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len > 0 && len <= req.size {
            if let Ok(hasher) = hash_prefix(&mut file, len).await {
                offered = len;
                prefix = Some(hasher);
            }
        }
    }
    let ready = TransferReady {
        offset: offered,
        prefix_blake3: prefix.as_ref().map(|h| h.finalize().to_hex().to_string()),
        ..Default::default()
    };
    send(session, Message::TransferReady(ready)).await?;
    let mut grace = ShutdownGrace::of(session);
    let offset = expect_start(session, &mut grace, offered).await?;
    let hasher = match (offset, prefix) {
        (0, _) | (_, None) => blake3::Hasher::new(),
        (_, Some(h)) => h,
    };
    let positioned = async {
        file.set_len(offset).await?;
        file.seek(SeekFrom::Start(offset)).await
    };
    if let Err(e) = positioned.await {
        let message = format!("cannot write {}: {e}", req.path);
        return Err(session.fail(ErrorCode::IoError, message).await.into());
    }
    let mut sink = Sink::start(file, hasher).await;
    let received = receive(session, &mut grace, &mut sink, &req, offset).await;
    // The disk writer is done, and on a failure has let go of the partial
    // and its lock, before the client is told and before the connection's
    // end is reported: a `put --resume` sent right after must find the
    // partial free.
    let finished = sink.finish().await;
    let (expected, received) = match received {
        Ok(done) => done,
        Err(Abort::Ended(end)) => return Err(end.into()),
        Err(Abort::Failed(code, message)) => return Err(session.fail(code, message).await.into()),
        Err(Abort::NoSpace(e)) => {
            let message = no_space(&req, &dir, &part, e).await;
            return Err(session.fail(ErrorCode::IoError, message).await.into());
        }
    };
    let (file, hasher) = match finished {
        Ok(done) => done,
        // The last chunks met the full disk: after `file_end`, a refusal.
        Err(e) if is_full(&e) => {
            return Err(Refusal::Io(no_space(&req, &dir, &part, e).await).into())
        }
        Err(e) => return Err(Refusal::io("write", shown, e).into()),
    };
    let actual = hasher.finalize().to_hex().to_string();
    if offset + received != req.size || actual != expected.to_ascii_lowercase() {
        discard(dir, part, file).await;
        let why = if offset + received != req.size {
            format!("received {} of {} bytes", offset + received, req.size)
        } else {
            format!("BLAKE3 {actual} of the received data differs from the sender's {expected}")
        };
        let message = format!("{}: {why}; nothing was written", req.path);
        return Err(Refusal::ChecksumMismatch(message).into());
    }
    publish(file, dir, part, name, req.mode, req.mtime)
        .await
        .map_err(|e| Refusal::io("publish", shown, e))?;
    info!(peer = %session.peer, client = %session.identity, path = %req.path, bytes = received, resumed_at = offset, "file received");
    send(session, Message::TransferOk { bytes: received }).await?;
    Ok(Moved::In(received))
}

/// Why an upload stopped before its `file_end`.
enum Abort {
    /// The connection ended (the peer left, or was told why already).
    Ended(End),
    /// The client is to be told this, once the disk writer is done; then
    /// the connection closes.
    Failed(ErrorCode, String),
    /// The disk is full (or the quota used up): the client is told how
    /// much space the upload needs, and what to do.
    NoSpace(std::io::Error),
}

/// Whether a write failed for want of space (or quota).
fn is_full(e: &std::io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::NOSPC | Errno::DQUOT))
}

/// What a client is told when its upload ran out of space: what the
/// filesystem said, how much more the file needs than the partial now
/// holds, how much is free, and how to go on.
async fn no_space(req: &PutRequest, dir: &Arc<OwnedFd>, part: &OsStr, e: std::io::Error) -> String {
    let (at, named) = (dir.clone(), part.to_os_string());
    let measured = unblock(move || {
        let kept = rustix::fs::statat(&*at, &named, AtFlags::SYMLINK_NOFOLLOW)?.st_size;
        let fs = rustix::fs::fstatvfs(&*at)?;
        Ok((
            u64::try_from(kept).unwrap_or(0),
            fs.f_bavail.saturating_mul(fs.f_frsize),
        ))
    })
    .await;
    let path = &req.path;
    let Ok((kept, free)) = measured else {
        return format!(
            "cannot write {path}: {e}; free space on the server, then run the same put with \
             --resume to continue"
        );
    };
    let needed = req.size.saturating_sub(kept);
    format!(
        "cannot write {path}: {e}: the file needs {} more than the {} kept so far, and the \
         server's filesystem has {} free; free at least {} there, then run the same put with \
         --resume to continue from what was kept (or without --resume to start over; a \
         partial file left alone is removed after {} h)",
        bytes(needed),
        bytes(kept),
        bytes(free),
        bytes(needed.saturating_sub(free)),
        STALE_PARTIAL.as_secs() / 3600,
    )
}

/// A byte count for people: exact below 1 KiB, else in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({n} bytes)", UNITS[unit])
}

/// Receives an upload's data into `sink`, up to its `file_end`; returns
/// the BLAKE3 the client announced and the bytes received.
async fn receive(
    session: &mut Session,
    grace: &mut ShutdownGrace,
    sink: &mut Sink,
    req: &PutRequest,
    offset: u64,
) -> Result<(String, u64), Abort> {
    let mut received = 0u64;
    loop {
        let frame = next_transfer_frame(session, grace)
            .await
            .map_err(Abort::Ended)?;
        match frame.message {
            Message::FileData => {
                received += frame.body.len() as u64;
                if offset + received > req.size {
                    let message = format!("more data than the announced {} bytes", req.size);
                    return Err(Abort::Failed(ErrorCode::BadRequest, message));
                }
                if let Err(e) = sink.write(frame.body).await {
                    if is_full(&e) {
                        return Err(Abort::NoSpace(e));
                    }
                    let message = format!("cannot write {}: {e}", req.path);
                    return Err(Abort::Failed(ErrorCode::IoError, message));
                }
            }
            Message::FileEnd { blake3 } => return Ok((blake3, received)),
            other => {
                let message = not_allowed(&other, "during an upload");
                return Err(Abort::Failed(ErrorCode::UnexpectedMessage, message));
            }
        }
    }
}

async fn get(session: &mut Session, files: &Files, path: &str, resume_from: u64) -> Handled {
    let shown = Path::new(path);
    let rel = files.rel(path)?;
    let file = files
        .beneath(move |root| root.open_file(&rel))
        .await
        .map_err(|e| refusal("read", path, e))?;
    let mut file = File::from_std(file);
    let meta = file
        .metadata()
        .await
        .map_err(|e| Refusal::io("stat", shown, e))?;
    if !meta.is_file() {
        return Err(Refusal::Io(format!("{path}: not a regular file")).into());
    }
    let size = meta.len();
    let (offered, prefix) = if resume_from > 0 && resume_from <= size {
        let hasher = hash_prefix(&mut file, resume_from)
            .await
            .map_err(|e| Refusal::io("read", shown, e))?;
        (resume_from, Some(hasher))
    } else {
        (0, None)
    };
    let ready = TransferReady {
        offset: offered,
        prefix_blake3: prefix.as_ref().map(|h| h.finalize().to_hex().to_string()),
        size: Some(size),
        mode: Some(meta.mode() & 0o7777),
        mtime: Some(meta.mtime()),
    };
    send(session, Message::TransferReady(ready)).await?;
    let mut grace = ShutdownGrace::of(session);
    let offset = expect_start(session, &mut grace, offered).await?;
    let hasher = match (offset, prefix) {
        (0, _) | (_, None) => blake3::Hasher::new(),
        (_, Some(h)) => h,
    };
    if let Err(e) = file.seek(SeekFrom::Start(offset)).await {
        let message = format!("cannot read {path}: {e}");
        return Err(session.fail(ErrorCode::IoError, message).await.into());
    }
    // Exactly the announced size, even if the file grows meanwhile.
    let mut source = Source::start(file, size - offset, CHUNK, hasher).await;
    loop {
        let next = tokio::select! {
            next = source.next() => next,
            () = grace.over() => return Err(ShutdownGrace::end(session).await.into()),
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(body) => {
                // A client that reads slowly cannot hold the shutdown either.
                let frame = Frame::with_body(Message::FileData, body);
                tokio::select! {
                    sent = session.answer(frame) => sent?,
                    () = grace.over() => return Err(ShutdownGrace::end(session).await.into()),
                }
            }
            Err(e) => {
                let message = format!("cannot read {path}: {e}");
                return Err(session.fail(ErrorCode::IoError, message).await.into());
            }
        }
    }
    let hasher = source.finish().await;
    let blake3 = hasher.finalize().to_hex().to_string();
    info!(peer = %session.peer, client = %session.identity, path, bytes = size - offset, resumed_at = offset, "file sent");
    send(session, Message::FileEnd { blake3 }).await?;
    Ok(Moved::Out(size - offset))
}
