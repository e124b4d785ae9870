//! Uploads (`put`): into a locked `.NAME.wiresh-part` beside the target,
//! resumed after checking its prefix, verified with BLAKE3, fsynced and
//! renamed into place; stale partials swept.

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
use wiresh_proto::{ErrorCode, Message, PutRequest, TransferReady};

use super::common::{send, Files, Handled, Moved, Stop};
use super::root::{refusal, RelPath};
use super::transfer::{agree, next_transfer_frame, Agreed, ShutdownGrace};
use crate::defaults::{STALE_PARTIAL, SWEEP_EVERY};
use crate::fileio::{
    hash_prefix, is_partial_name, open_partial, partial_name, publish, unblock, Sink,
};
use crate::listener::End;
use crate::server::refusal::Refusal;
use crate::server::session::{not_allowed, Session};

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

pub(super) async fn put(session: &mut Session, files: &Files, req: PutRequest) -> Handled {
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
    let Agreed {
        offset,
        mut grace,
        hasher,
    } = agree(session, ready, prefix).await?;
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
