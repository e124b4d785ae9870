//! File transfer on the server: `stat`, `list`, `mkdir`, `put`, `get`,
//! confined to the files root.
//!
//! Every path from a client is resolved by [`resolve`] before anything is
//! touched: relative to the root, no `..`, and no symlink that leads out of
//! it. Uploads go to a temporary `.NAME.wiresh-part` beside the target,
//! verified with BLAKE3, fsynced and renamed into place, so an interrupted or
//! corrupted upload never leaves a half-written file under the real name
//! (and a partial can be resumed after checking its prefix).

use std::io::SeekFrom;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::fs;
use tokio::io::AsyncSeekExt;
use tokio::time;
use tracing::info;
use wiresh_proto::{ErrorCode, FileEntry, FileKind, Frame, Message, PutRequest, TransferReady};

use super::session::{AuditEntry, End, Session};
use crate::fileio::{
    hash_prefix, is_partial_name, open_partial, open_source, partial_path, publish, Sink, Source,
    CHUNK,
};

/// Most time one frame of a transfer may take to arrive.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// A refusal the client can recover from: the connection stays usable.
struct Refusal(ErrorCode, String);

impl Refusal {
    fn io(what: &str, path: &Path, e: std::io::Error) -> Refusal {
        match e.kind() {
            std::io::ErrorKind::NotFound => Refusal(
                ErrorCode::NotFound,
                format!("{}: no such file or directory", path.display()),
            ),
            _ => Refusal(
                ErrorCode::IoError,
                format!("cannot {what} {}: {e}", path.display()),
            ),
        }
    }
}

/// Handles one file request. `Ok` means the connection can go on.
pub(super) async fn handle(session: &mut Session, message: Message) -> Result<(), End> {
    let Some(root) = session.config.files_root.clone() else {
        return refuse(
            session,
            Refusal(
                ErrorCode::FilesDisabled,
                "file transfer is off on this server (start it with --files-root DIR)".into(),
            ),
        )
        .await;
    };
    if !session.config.policy.allow_files {
        let refusal = Refusal(
            ErrorCode::Forbidden,
            "file transfer is disabled by the server's policy".into(),
        );
        return refuse(session, refusal).await;
    }
    if let Some(message) = session.audit_refusal() {
        return refuse(session, Refusal(ErrorCode::Internal, message)).await;
    }
    let started = std::time::Instant::now();
    let (action, target) = match &message {
        Message::Put(req) => ("put", req.path.clone()),
        Message::Get { path, .. } => ("get", path.clone()),
        Message::Mkdir { path, .. } => ("mkdir", path.clone()),
        _ => ("", String::new()),
    };
    let result = match message {
        Message::Stat { path } => stat(session, &root, &path).await,
        Message::List { path } => list(session, &root, &path).await,
        Message::Mkdir { path, mode } => mkdir(session, &root, &path, mode).await,
        Message::Put(req) => put(session, &root, req).await,
        Message::Get { path, resume_from } => get(session, &root, &path, resume_from).await,
        other => return Err(session.unexpected(&other, "here").await),
    };
    if !action.is_empty() {
        let (outcome, bytes) = match &result {
            Ok(Ok(bytes)) => ("ok", *bytes),
            Ok(Err(_)) => ("refused", 0),
            Err(_) => ("aborted", 0),
        };
        let (bytes_in, bytes_out) = if action == "get" {
            (0, bytes)
        } else {
            (bytes, 0)
        };
        session.audit(AuditEntry {
            action,
            target: &target,
            outcome,
            status: None,
            duration: started.elapsed(),
            bytes_in,
            bytes_out,
        });
    }
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(refusal)) => refuse(session, refusal).await,
        Err(end) => Err(end),
    }
}

async fn refuse(session: &mut Session, Refusal(code, message): Refusal) -> Result<(), End> {
    info!(peer = %session.peer, "file request refused: {code}: {message}");
    send(session, Message::error(code, message)).await
}

async fn send(session: &Session, message: Message) -> Result<(), End> {
    session.send(Frame::new(message)).await
}

/// What a handler returns: `Err` ends the connection, `Ok(Err)` refuses
/// this request only; `Ok(Ok(n))` is the file bytes moved.
type Handled = Result<Result<u64, Refusal>, End>;

/// Resolves a client's path inside `root` (which is canonical), or refuses
/// it: `..` anywhere, NUL, absolute paths outside the root, and paths whose
/// existing part leads out of the root through a symlink.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, Refusal> {
    let refused = |why: &str| Refusal(ErrorCode::PathRefused, format!("{path:?}: {why}"));
    if path.contains('\0') {
        return Err(refused("contains a NUL byte"));
    }
    let requested = Path::new(path);
    let relative = if requested.is_absolute() {
        requested
            .strip_prefix(root)
            .map_err(|_| refused("absolute paths must lie inside the server's files root"))?
    } else {
        requested
    };
    let mut full = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => full.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused("`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused("not a relative path"))
            }
        }
    }
    // The longest part that exists must, with symlinks resolved, stay inside.
    let mut existing = full.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().unwrap_or(root);
    }
    let canonical = existing
        .canonicalize()
        .map_err(|_| refused("is a dangling symlink"))?;
    if !canonical.starts_with(root) {
        return Err(refused("leads outside the server's files root"));
    }
    Ok(full)
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

async fn stat(session: &mut Session, root: &Path, path: &str) -> Handled {
    let full = match resolve(root, path) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    match fs::metadata(&full).await {
        Ok(meta) => send(session, Message::Entry(entry(path.to_string(), &meta)))
            .await
            .map(|()| Ok(0)),
        Err(e) => Ok(Err(Refusal::io("stat", Path::new(path), e))),
    }
}

async fn list(session: &mut Session, root: &Path, path: &str) -> Handled {
    let full = match resolve(root, path) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    match fs::metadata(&full).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Ok(Err(Refusal(
                ErrorCode::IoError,
                format!("{path}: not a directory"),
            )))
        }
        Err(e) => return Ok(Err(Refusal::io("list", Path::new(path), e))),
    }
    // Walk on a blocking thread, sending entries as they are found, so a
    // huge tree costs neither memory here nor a stall of the runtime.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FileEntry>(64);
    let walker = tokio::task::spawn_blocking(move || walk(&full, "", &tx));
    let mut count = 0u64;
    while let Some(e) = rx.recv().await {
        count += 1;
        send(session, Message::Entry(e)).await?;
    }
    if let Ok(Err(e)) = walker.await {
        return Err(session
            .fail(ErrorCode::IoError, format!("listing {path} failed: {e}"))
            .await);
    }
    send(session, Message::ListEnd { count })
        .await
        .map(|()| Ok(0))
}

/// Sends every entry below `dir`, a directory before its contents. Symlinks
/// are reported as `other` and not followed, so a listing never leaves the
/// tree it was asked for.
fn walk(
    dir: &Path,
    prefix: &str,
    tx: &tokio::sync::mpsc::Sender<FileEntry>,
) -> std::io::Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let Some(name) = child.file_name().to_str().map(str::to_string) else {
            continue; // not UTF-8: cannot be named in the protocol
        };
        if is_partial_name(&name) {
            continue; // a transfer in progress, not a file yet
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(child.path())?;
        if tx.blocking_send(entry(rel.clone(), &meta)).is_err() {
            return Ok(());
        }
        if meta.is_dir() {
            walk(&child.path(), &rel, tx)?;
        }
    }
    Ok(())
}

async fn mkdir(session: &mut Session, root: &Path, path: &str, mode: Option<u32>) -> Handled {
    let full = match resolve(root, path) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    if let Err(e) = fs::create_dir_all(&full).await {
        return Ok(Err(Refusal::io("create directory", Path::new(path), e)));
    }
    if let Some(mode) = mode {
        let _ = fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & 0o7777)).await;
    }
    send(session, Message::TransferOk { bytes: 0 })
        .await
        .map(|()| Ok(0))
}

/// Reads the next frame of a transfer, answering pings on the way.
async fn next_transfer_frame(session: &mut Session) -> Result<Frame, End> {
    loop {
        let frame = match time::timeout(FRAME_TIMEOUT, session.reader.next()).await {
            Err(_) => {
                return Err(session
                    .fail(
                        ErrorCode::Timeout,
                        format!("transfer stalled for {FRAME_TIMEOUT:?}"),
                    )
                    .await)
            }
            Ok(None) => return Err(End::Error("client disconnected during a transfer".into())),
            Ok(Some(Err(e))) => return Err(session.fail_decode(e).await),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.message {
            Message::Ping => session.outbox.pong(frame.body),
            Message::Pong => {}
            _ => return Ok(frame),
        }
    }
}

/// Reads `transfer_start` and checks its offset is 0 or the one offered.
async fn expect_start(session: &mut Session, offered: u64) -> Result<u64, End> {
    let frame = next_transfer_frame(session).await?;
    match frame.message {
        Message::TransferStart { offset } if offset == 0 || offset == offered => Ok(offset),
        Message::TransferStart { offset } => Err(session
            .fail(
                ErrorCode::BadRequest,
                format!("transfer_start offset {offset} is neither 0 nor the offered {offered}"),
            )
            .await),
        other => Err(session.unexpected(&other, "before transfer_start").await),
    }
}

async fn put(session: &mut Session, root: &Path, req: PutRequest) -> Handled {
    let target = match resolve(root, &req.path) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    let Some(part) = partial_path(&target) else {
        return Ok(Err(Refusal(
            ErrorCode::PathRefused,
            format!("{:?}: names no file", req.path),
        )));
    };
    if fs::metadata(&target).await.is_ok_and(|m| m.is_dir()) {
        return Ok(Err(Refusal(
            ErrorCode::IoError,
            format!("{}: is a directory", req.path),
        )));
    }
    if let Some(parent) = target.parent() {
        if let Err(e) = fs::create_dir_all(parent).await {
            return Ok(Err(Refusal::io(
                "create directory for",
                Path::new(&req.path),
                e,
            )));
        }
    }
    let mut file = match open_partial(&part).await {
        Ok(f) => f,
        Err(e) => return Ok(Err(Refusal::io("write", Path::new(&req.path), e))),
    };
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
    let offset = expect_start(session, offered).await?;
    let hasher = match (offset, prefix) {
        (0, _) | (_, None) => blake3::Hasher::new(),
        (_, Some(h)) => h,
    };
    let positioned = async {
        file.set_len(offset).await?;
        file.seek(SeekFrom::Start(offset)).await
    };
    if let Err(e) = positioned.await {
        return Err(session
            .fail(
                ErrorCode::IoError,
                format!("cannot write {}: {e}", req.path),
            )
            .await);
    }
    let mut sink = Sink::start(file, hasher).await;
    let mut received = 0u64;
    let expected = loop {
        let frame = next_transfer_frame(session).await?;
        match frame.message {
            Message::FileData => {
                received += frame.body.len() as u64;
                if offset + received > req.size {
                    return Err(session
                        .fail(
                            ErrorCode::BadRequest,
                            format!("more data than the announced {} bytes", req.size),
                        )
                        .await);
                }
                if let Err(e) = sink.write(frame.body).await {
                    return Err(session
                        .fail(
                            ErrorCode::IoError,
                            format!("cannot write {}: {e}", req.path),
                        )
                        .await);
                }
            }
            Message::FileEnd { blake3 } => break blake3,
            other => return Err(session.unexpected(&other, "during an upload").await),
        }
    };
    let (file, hasher) = match sink.finish().await {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&part).await;
            return Ok(Err(Refusal::io("write", Path::new(&req.path), e)));
        }
    };
    let actual = hasher.finalize().to_hex().to_string();
    if offset + received != req.size || actual != expected.to_ascii_lowercase() {
        drop(file);
        let _ = fs::remove_file(&part).await;
        let why = if offset + received != req.size {
            format!("received {} of {} bytes", offset + received, req.size)
        } else {
            format!("BLAKE3 {actual} of the received data differs from the sender's {expected}")
        };
        return Ok(Err(Refusal(
            ErrorCode::ChecksumMismatch,
            format!("{}: {why}; nothing was written", req.path),
        )));
    }
    if let Err(e) = publish(file, &part, &target, req.mode, req.mtime).await {
        return Ok(Err(Refusal::io("publish", Path::new(&req.path), e)));
    }
    info!(peer = %session.peer, path = %req.path, bytes = received, resumed_at = offset, "file received");
    send(session, Message::TransferOk { bytes: received })
        .await
        .map(|()| Ok(received))
}

async fn get(session: &mut Session, root: &Path, path: &str, resume_from: u64) -> Handled {
    let full = match resolve(root, path) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    let mut file = match open_source(&full).await {
        Ok(f) => f,
        Err(e) => return Ok(Err(Refusal::io("read", Path::new(path), e))),
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            return Ok(Err(Refusal(
                ErrorCode::IoError,
                format!("{path}: not a regular file"),
            )))
        }
        Err(e) => return Ok(Err(Refusal::io("stat", Path::new(path), e))),
    };
    let size = meta.len();
    let (offered, prefix) = if resume_from > 0 && resume_from <= size {
        match hash_prefix(&mut file, resume_from).await {
            Ok(h) => (resume_from, Some(h)),
            Err(e) => return Ok(Err(Refusal::io("read", Path::new(path), e))),
        }
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
    let offset = expect_start(session, offered).await?;
    let hasher = match (offset, prefix) {
        (0, _) | (_, None) => blake3::Hasher::new(),
        (_, Some(h)) => h,
    };
    if let Err(e) = file.seek(SeekFrom::Start(offset)).await {
        return Err(session
            .fail(ErrorCode::IoError, format!("cannot read {path}: {e}"))
            .await);
    }
    // Exactly the announced size, even if the file grows meanwhile.
    let mut source = Source::start(file, size - offset, CHUNK, hasher).await;
    while let Some(chunk) = source.next().await {
        match chunk {
            Ok(body) => {
                session
                    .send(Frame::with_body(Message::FileData, body))
                    .await?
            }
            Err(e) => {
                return Err(session
                    .fail(ErrorCode::IoError, format!("cannot read {path}: {e}"))
                    .await)
            }
        }
    }
    let hasher = source.finish().await;
    let blake3 = hasher.finalize().to_hex().to_string();
    info!(peer = %session.peer, path, bytes = size - offset, resumed_at = offset, "file sent");
    send(session, Message::FileEnd { blake3 })
        .await
        .map(|()| Ok(size - offset))
}
