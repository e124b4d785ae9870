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

use tokio::fs;
use tokio::io::AsyncSeekExt;
use tracing::info;
use wiresh_proto::{ErrorCode, FileEntry, FileKind, Frame, Message, PutRequest, TransferReady};

use super::refusal::Refusal;
use super::session::{AuditEntry, Session};
use crate::conn::RecvError;
use crate::fileio::{
    hash_prefix, is_partial_name, open_partial, open_source, partial_path, publish, Sink, Source,
    CHUNK,
};
use crate::listener::End;

/// Most time one frame of a transfer may take to arrive.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

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

/// What a request handler returns: the file bytes moved, or why it stopped.
type Handled = Result<u64, Stop>;

/// Handles one file request. `Ok` means the connection can go on.
pub(super) async fn handle(session: &mut Session, message: Message) -> Result<(), End> {
    let Some(root) = session.config.files_root.clone() else {
        return session.refuse("file request", Refusal::FilesDisabled).await;
    };
    if !session.config.policy.allow_files {
        let refusal = Refusal::Forbidden("file transfer is disabled by the server's policy".into());
        return session.refuse("file request", refusal).await;
    }
    if let Some(refusal) = session.audit_refusal() {
        return session.refuse("file request", refusal).await;
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
            Ok(bytes) => ("ok", *bytes),
            Err(Stop::Refused(_)) => ("refused", 0),
            Err(Stop::End(_)) => ("aborted", 0),
        };
        let (bytes_in, bytes_out) = if action == "get" {
            (0, bytes)
        } else {
            (bytes, 0)
        };
        session.audit(AuditEntry {
            action,
            target: &target,
            pty: false,
            outcome,
            status: None,
            duration: started.elapsed(),
            bytes_in,
            bytes_out,
        });
    }
    match result {
        Ok(_) => Ok(()),
        Err(Stop::Refused(refusal)) => session.refuse("file request", refusal).await,
        Err(Stop::End(end)) => Err(end),
    }
}

async fn send(session: &Session, message: Message) -> Result<(), End> {
    session.send(Frame::new(message)).await
}

/// Resolves a client's path inside `root` (which is canonical), or refuses
/// it: `..` anywhere, NUL, absolute paths outside the root, and paths whose
/// existing part leads out of the root through a symlink.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, Refusal> {
    let refused = |why| Refusal::PathRefused {
        path: path.to_string(),
        why,
    };
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
    let full = resolve(root, path)?;
    let meta = fs::metadata(&full)
        .await
        .map_err(|e| Refusal::io("stat", Path::new(path), e))?;
    send(session, Message::Entry(entry(path.to_string(), &meta))).await?;
    Ok(0)
}

async fn list(session: &mut Session, root: &Path, path: &str) -> Handled {
    let full = resolve(root, path)?;
    let meta = fs::metadata(&full)
        .await
        .map_err(|e| Refusal::io("list", Path::new(path), e))?;
    if !meta.is_dir() {
        return Err(Refusal::Io(format!("{path}: not a directory")).into());
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
        let message = format!("listing {path} failed: {e}");
        return Err(session.fail(ErrorCode::IoError, message).await.into());
    }
    send(session, Message::ListEnd { count }).await?;
    Ok(0)
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
    let full = resolve(root, path)?;
    fs::create_dir_all(&full)
        .await
        .map_err(|e| Refusal::io("create directory", Path::new(path), e))?;
    if let Some(mode) = mode {
        let _ = fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & 0o7777)).await;
    }
    send(session, Message::TransferOk { bytes: 0 }).await?;
    Ok(0)
}

/// Reads the next frame of a transfer, answering pings on the way.
async fn next_transfer_frame(session: &mut Session) -> Result<Frame, End> {
    loop {
        let frame = match session.conn.recv_within(FRAME_TIMEOUT).await {
            Ok(frame) => frame,
            Err(RecvError::Closed) => {
                return Err(End::Error("client disconnected during a transfer".into()))
            }
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
async fn expect_start(session: &mut Session, offered: u64) -> Result<u64, End> {
    let frame = next_transfer_frame(session).await?;
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

async fn put(session: &mut Session, root: &Path, req: PutRequest) -> Handled {
    let shown = Path::new(&req.path);
    let target = resolve(root, &req.path)?;
    let part = partial_path(&target).ok_or_else(|| Refusal::PathRefused {
        path: req.path.clone(),
        why: "names no file",
    })?;
    if fs::metadata(&target).await.is_ok_and(|m| m.is_dir()) {
        return Err(Refusal::Io(format!("{}: is a directory", req.path)).into());
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .await
            .map_err(|e| Refusal::io("create directory for", shown, e))?;
    }
    let mut file = open_partial(&part)
        .await
        .map_err(|e| Refusal::io("write", shown, e))?;
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
        let message = format!("cannot write {}: {e}", req.path);
        return Err(session.fail(ErrorCode::IoError, message).await.into());
    }
    let mut sink = Sink::start(file, hasher).await;
    let mut received = 0u64;
    let expected = loop {
        let frame = next_transfer_frame(session).await?;
        match frame.message {
            Message::FileData => {
                received += frame.body.len() as u64;
                if offset + received > req.size {
                    let message = format!("more data than the announced {} bytes", req.size);
                    return Err(session.fail(ErrorCode::BadRequest, message).await.into());
                }
                if let Err(e) = sink.write(frame.body).await {
                    let message = format!("cannot write {}: {e}", req.path);
                    return Err(session.fail(ErrorCode::IoError, message).await.into());
                }
            }
            Message::FileEnd { blake3 } => break blake3,
            other => return Err(session.unexpected(&other, "during an upload").await.into()),
        }
    };
    let (file, hasher) = match sink.finish().await {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&part).await;
            return Err(Refusal::io("write", shown, e).into());
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
        let message = format!("{}: {why}; nothing was written", req.path);
        return Err(Refusal::ChecksumMismatch(message).into());
    }
    publish(file, &part, &target, req.mode, req.mtime)
        .await
        .map_err(|e| Refusal::io("publish", shown, e))?;
    info!(peer = %session.peer, path = %req.path, bytes = received, resumed_at = offset, "file received");
    send(session, Message::TransferOk { bytes: received }).await?;
    Ok(received)
}

async fn get(session: &mut Session, root: &Path, path: &str, resume_from: u64) -> Handled {
    let shown = Path::new(path);
    let full = resolve(root, path)?;
    let mut file = open_source(&full)
        .await
        .map_err(|e| Refusal::io("read", shown, e))?;
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
    let offset = expect_start(session, offered).await?;
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
    while let Some(chunk) = source.next().await {
        match chunk {
            Ok(body) => {
                session
                    .send(Frame::with_body(Message::FileData, body))
                    .await?
            }
            Err(e) => {
                let message = format!("cannot read {path}: {e}");
                return Err(session.fail(ErrorCode::IoError, message).await.into());
            }
        }
    }
    let hasher = source.finish().await;
    let blake3 = hasher.finalize().to_hex().to_string();
    info!(peer = %session.peer, path, bytes = size - offset, resumed_at = offset, "file sent");
    send(session, Message::FileEnd { blake3 }).await?;
    Ok(size - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(root: &Path, path: &str) -> &'static str {
        match resolve(root, path) {
            Err(Refusal::PathRefused { why, .. }) => why,
            other => panic!("{path:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn resolves_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();

        assert_eq!(resolve(&root, "a.txt").unwrap(), root.join("a.txt"));
        assert_eq!(
            resolve(&root, "./sub/new/b").unwrap(),
            root.join("sub/new/b")
        );
        assert_eq!(resolve(&root, "in/c").unwrap(), root.join("in/c"));
        let absolute = root.join("sub/d");
        assert_eq!(
            resolve(&root, absolute.to_str().unwrap()).unwrap(),
            absolute
        );
        assert_eq!(resolve(&root, "").unwrap(), root);

        assert_eq!(refused(&root, "../x"), "`..` is not allowed");
        assert_eq!(refused(&root, "sub/../../x"), "`..` is not allowed");
        assert_eq!(refused(&root, "a\0b"), "contains a NUL byte");
        assert_eq!(
            refused(&root, "/etc/passwd"),
            "absolute paths must lie inside the server's files root"
        );
        assert_eq!(
            refused(&root, "out/x"),
            "leads outside the server's files root"
        );
        assert_eq!(
            refused(&root, "out"),
            "leads outside the server's files root"
        );
        assert_eq!(refused(&root, "dangling/x"), "is a dangling symlink");
    }
}
