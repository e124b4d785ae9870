//! File I/O shared by both ends of a transfer: the partial file beside the
//! target, prefix hashing for resume, and publishing a verified file.

use std::io::SeekFrom;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Size of one read when hashing or sending a file (and so of one
/// `file_data` body).
pub(crate) const CHUNK: usize = 256 * 1024;

/// Longest file name most filesystems accept.
const NAME_MAX: usize = 255;

/// The temporary name a transfer writes to, beside its target:
/// `.NAME.wiresh-part` (or, for names too long for that, a name derived
/// from a hash of NAME). Deterministic, so `--resume` finds it again.
pub(crate) fn partial_path(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?.to_str()?;
    let partial = format!(".{name}.wiresh-part");
    if partial.len() <= NAME_MAX {
        return Some(target.with_file_name(partial));
    }
    let digest = blake3::hash(name.as_bytes()).to_hex();
    Some(target.with_file_name(format!(".wiresh-part-{}", &digest[..32])))
}

/// Whether a directory entry is a transfer's partial file (hidden from
/// listings, so a recursive copy never picks up half a file).
pub(crate) fn is_partial_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".wiresh-part") || name.starts_with(".wiresh-part-")
}

/// Opens (creating) a partial file for one transfer, safely:
/// - never through a symlink (`O_NOFOLLOW`), and only a regular file, so a
///   planted link cannot redirect the write;
/// - with an exclusive lock, so two transfers to the same target cannot
///   interleave their bytes (the second is refused with `WouldBlock`).
pub(crate) async fn open_partial(path: &Path) -> std::io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .await?;
    if !file.metadata().await?.is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    // The lock lives as long as the descriptor (the file), and goes with it.
    let lock = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
    if let Err(errno) = lock {
        let e = std::io::Error::from(errno);
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "another transfer of this file is in progress",
            )
        } else {
            e
        });
    }
    Ok(file)
}

/// Opens a file to send, refusing anything but a regular file without
/// blocking on it (opening a FIFO for reading would wait for a writer).
pub(crate) async fn open_source(path: &Path) -> std::io::Result<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .await?;
    if !file.metadata().await?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Hashes the first `len` bytes of `file`, reading from its start.
pub(crate) async fn hash_prefix(file: &mut File, len: u64) -> std::io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0)).await?;
    let mut left = len;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

/// A Unix timestamp as a `SystemTime`.
pub(crate) fn unix_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Makes a fully received and verified partial file the real one: fsync,
/// optional mode and mtime, rename over the target, fsync the directory.
/// Until the rename, the target keeps its old content.
pub(crate) async fn publish(
    mut file: File,
    partial: &Path,
    target: &Path,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> std::io::Result<()> {
    file.flush().await?;
    file.sync_all().await?;
    let file = file.into_std().await;
    if let Some(mode) = mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Some(mtime) = mtime {
        file.set_modified(unix_time(mtime))?;
    }
    drop(file);
    fs::rename(partial, target).await?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).await?.sync_all().await
}

/// Chunks of a file on their way to disk: written and hashed on a thread of
/// their own, so that disk I/O and BLAKE3 run beside the network instead of
/// between its reads.
pub(crate) struct Sink {
    chunks: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    worker: tokio::task::JoinHandle<std::io::Result<(std::fs::File, blake3::Hasher)>>,
}

impl Sink {
    /// Starts writing at the file's current position, continuing `hasher`.
    pub(crate) async fn start(file: File, mut hasher: blake3::Hasher) -> Sink {
        use std::io::Write;
        let mut file = file.into_std().await;
        // A few chunks in flight: enough to overlap, little memory.
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let worker = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                hasher.update(&chunk);
            }
            Ok((file, hasher))
        });
        Sink {
            chunks: Some(chunks),
            worker,
        }
    }

    /// Queues a chunk; fails with the write error if the disk refused one.
    pub(crate) async fn write(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        let sent = match &self.chunks {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The worker stopped: it has the error.
        self.chunks = None;
        match (&mut self.worker).await {
            Ok(Err(e)) => Err(e),
            _ => Err(std::io::Error::other("the file writer stopped")),
        }
    }

    /// Waits for every chunk to be written; returns the file and the hash.
    pub(crate) async fn finish(mut self) -> std::io::Result<(File, blake3::Hasher)> {
        self.chunks = None;
        match self.worker.await {
            Ok(Ok((file, hasher))) => Ok((File::from_std(file), hasher)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// The next `len` bytes of a file, read and hashed on a thread of their own
/// and handed over in chunks of at most `chunk` bytes.
pub(crate) struct Source {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    worker: tokio::task::JoinHandle<blake3::Hasher>,
}

impl Source {
    /// Starts reading at the file's current position, continuing `hasher`.
    pub(crate) async fn start(
        file: File,
        len: u64,
        chunk: usize,
        mut hasher: blake3::Hasher,
    ) -> Source {
        use std::io::Read;
        let mut file = file.into_std().await;
        let (tx, chunks) = tokio::sync::mpsc::channel(8);
        let worker = tokio::task::spawn_blocking(move || {
            let mut left = len;
            let mut buf = bytes::BytesMut::new();
            while left > 0 {
                let want = (left as usize).min(chunk);
                buf.resize(want, 0);
                let read = match file.read(&mut buf[..want]) {
                    Ok(0) => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while being sent",
                    )),
                    other => other,
                };
                match read {
                    Ok(n) => {
                        let piece = buf.split_to(n).freeze();
                        hasher.update(&piece);
                        left -= n as u64;
                        if tx.blocking_send(Ok(piece)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
            hasher
        });
        Source { chunks, worker }
    }

    /// The next chunk, `None` once `len` bytes have been handed over.
    pub(crate) async fn next(&mut self) -> Option<std::io::Result<bytes::Bytes>> {
        self.chunks.recv().await
    }

    /// The hash of everything hashed before plus what was read.
    pub(crate) async fn finish(self) -> blake3::Hasher {
        drop(self.chunks);
        self.worker.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        let short = partial_path(Path::new("/d/file.txt")).unwrap();
        assert_eq!(short, Path::new("/d/.file.txt.wiresh-part"));
        assert!(is_partial_name(".file.txt.wiresh-part"));
        let long = "x".repeat(250);
        let p = partial_path(&Path::new("/d").join(&long)).unwrap();
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= NAME_MAX && is_partial_name(name), "{name}");
        assert_eq!(p, partial_path(&Path::new("/d").join(&long)).unwrap());
        assert!(!is_partial_name("notes.txt"));
    }
}
