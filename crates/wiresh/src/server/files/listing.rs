//! Looking and making directories: `stat`, `list` (every entry below a
//! directory, never through a symlink) and `mkdir`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use wiresh_proto::{ErrorCode, FileEntry, FileKind, Message};

use super::common::{send, Files, Handled, Moved};
use super::root::refusal;
use crate::fileio::{is_partial_name, mode_to_apply};
use crate::server::refusal::Refusal;
use crate::server::session::Session;

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

pub(super) async fn stat(session: &mut Session, files: &Files, path: &str) -> Handled {
    let rel = files.rel(path)?;
    let meta = files
        .beneath(move |root| root.metadata(&rel))
        .await
        .map_err(|e| refusal("stat", path, e))?;
    send(session, Message::Entry(entry(path.to_string(), &meta))).await?;
    Ok(Moved::Nothing)
}

pub(super) async fn list(session: &mut Session, files: &Files, path: &str) -> Handled {
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

pub(super) async fn mkdir(
    session: &mut Session,
    files: &Files,
    path: &str,
    mode: Option<u32>,
) -> Handled {
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
