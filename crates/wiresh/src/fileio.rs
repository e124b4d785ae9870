//! File I/O shared by both ends of a transfer: the partial file beside the
//! target, prefix hashing for resume, and publishing a verified file.

use std::ffi::{OsStr, OsString};
use std::io::SeekFrom;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Size of one read when hashing or sending a file (and so of one
/// `file_data` body).
pub(crate) const CHUNK: usize = 256 * 1024;

/// Longest file name most filesystems accept.
const NAME_MAX: usize = 255;

/// Runs blocking file-system calls on a thread where blocking is fine.
pub(crate) async fn unblock<T, F>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The temporary name a transfer writes to, beside its target `name`:
/// `.NAME.wiresh-part` (or, for names too long for that, a name derived
/// from a hash of NAME). Deterministic, so `--resume` finds it again.
pub(crate) fn partial_name(name: &OsStr) -> OsString {
    let mut partial = OsString::from(".");
    partial.push(name);
    partial.push(".wiresh-part");
    if partial.len() <= NAME_MAX {
        return partial;
    }
    let digest = blake3::hash(name.as_bytes()).to_hex();
    OsString::from(format!(".wiresh-part-{}", &digest[..32]))
}

/// Whether a directory entry is a transfer's partial file (hidden from
/// listings, so a recursive copy never picks up half a file).
pub(crate) fn is_partial_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".wiresh-part") || name.starts_with(".wiresh-part-")
}

/// Opens a directory to work in by handle (a transfer's partial file and
/// its publishing happen by one name inside it).
pub(crate) fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Opens (creating) the partial file `name` in `dir` for one transfer,
/// safely (blocking):
/// - by one name inside the directory's handle, never through a symlink
///   (`O_NOFOLLOW`), and only a regular file, so a planted link cannot
///   redirect the write;
/// - with an exclusive lock, so two transfers to the same target cannot
///   interleave their bytes (the second is refused with `WouldBlock`);
/// - still named `name` once locked: a partial that was published or
///   removed while we waited for its lock is not the one to write.
pub(crate) fn open_partial(dir: &OwnedFd, name: &OsStr) -> std::io::Result<std::fs::File> {
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    loop {
        let file = std::fs::File::from(rustix::fs::openat(
            dir,
            name,
            flags,
            Mode::from_raw_mode(0o600),
        )?);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("is not a regular file"));
        }
        // The lock lives as long as the descriptor (the file), and goes with it.
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another transfer of this file is in progress",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_ino == meta.ino() && now.st_dev == meta.dev() => return Ok(file),
            Ok(_) | Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        }
    }
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

/// The mode a receiver gives what it creates when asked for `requested`:
/// the permission bits only. Set-user-ID, set-group-ID and sticky bits
/// are never taken from the other side (a sender could hand out a
/// set-user-ID program that way); a directory keeps the set-group-ID bit
/// it inherited from its parent (`current`), which is the owner's setting.
pub(crate) fn mode_to_apply(requested: u32, current: u32, is_dir: bool) -> u32 {
    const PERMISSIONS: u32 = 0o777;
    const SET_GROUP_ID: u32 = 0o2000;
    let kept = if is_dir { current & SET_GROUP_ID } else { 0 };
    requested & PERMISSIONS | kept
}

/// The mode a new file gets when none is asked for: `0o666` less the
/// process's umask, as `open(2)` would give it. The partial file is created
/// owner-only (its content is nobody else's business until it is
/// complete), so this is applied when it is published. The umask is read
/// from `/proc/self/status`, since setting it to read it would race with
/// other threads creating files; without `/proc`, the usual `022`.
fn default_file_mode() -> u32 {
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            u32::from_str_radix(line.trim(), 8).ok()
        })
        .unwrap_or(0o022);
    0o666 & !umask
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
/// its mode (`mode`'s permission bits, or the default a new file gets),
/// optional mtime, rename of `partial` over `name` inside `dir`,
/// fsync of the directory. Until the rename, the target keeps its old
/// content; the partial's lock is held until after it, so no other
/// transfer can take the partial up while it becomes the real file.
pub(crate) async fn publish(
    mut file: File,
    dir: Arc<OwnedFd>,
    partial: OsString,
    name: OsString,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> std::io::Result<()> {
    file.flush().await?;
    let file = file.into_std().await;
    unblock(move || {
        file.sync_all()?;
        let mode = match mode {
            Some(mode) => mode_to_apply(mode, 0, false),
            None => default_file_mode(),
        };
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(mtime) = mtime {
            file.set_modified(unix_time(mtime))?;
        }
        rustix::fs::renameat(&*dir, &partial, &*dir, &name)?;
        drop(file);
        Ok(rustix::fs::fsync(&*dir)?)
    })
    .await
}

/// Chunks of a file on their way to disk: written and hashed on a thread of
/// their own, so that disk I/O and BLAKE3 run beside the network instead of
/// between its reads.
///
/// The thread holds the file, and with it the partial's lock, until it has
/// written what was queued: [`Sink::finish`] waits for that, and whoever
/// gives up on a transfer must still call it before reporting the end, or a
/// transfer started right after finds the partial locked.
pub(crate) struct Sink {
    chunks: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    /// `None` once awaited (after a failed write).
    worker: Option<tokio::task::JoinHandle<std::io::Result<(std::fs::File, blake3::Hasher)>>>,
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
            worker: Some(worker),
        }
    }

    /// Queues a chunk; fails with the write error if the disk refused one
    /// (the writer has stopped, and let go of the file, by then).
    pub(crate) async fn write(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        let sent = match &self.chunks {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.chunks = None;
        match self.join().await {
            Err(e) => Err(e),
            Ok(_) => Err(std::io::Error::other("the file writer stopped")),
        }
    }

    /// Waits for every chunk queued to be written; returns the file and
    /// the hash.
    pub(crate) async fn finish(mut self) -> std::io::Result<(File, blake3::Hasher)> {
        self.chunks = None;
        let (file, hasher) = self.join().await?;
        Ok((File::from_std(file), hasher))
    }

    /// Waits for the writer thread to end (once).
    async fn join(&mut self) -> std::io::Result<(std::fs::File, blake3::Hasher)> {
        match self.worker.take() {
            Some(worker) => worker
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Err(std::io::Error::other("the file writer had stopped")),
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
        let short = partial_name(OsStr::new("file.txt"));
        assert_eq!(short, ".file.txt.wiresh-part");
        assert!(is_partial_name(".file.txt.wiresh-part"));
        let long = "x".repeat(250);
        let p = partial_name(OsStr::new(&long));
        let name = p.to_str().unwrap();
        assert!(name.len() <= NAME_MAX && is_partial_name(name), "{name}");
        assert_eq!(p, partial_name(OsStr::new(&long)));
        assert!(!is_partial_name("notes.txt"));
    }

    #[test]
    fn only_permission_bits_are_applied() {
        assert_eq!(mode_to_apply(0o4755, 0, false), 0o755);
        assert_eq!(mode_to_apply(0o7777, 0o7777, false), 0o777);
        assert_eq!(mode_to_apply(0o1777, 0, true), 0o777);
        assert_eq!(mode_to_apply(0o4750, 0o2755, true), 0o2750);
        assert_eq!(mode_to_apply(0o640, 0o4755, true), 0o640);
    }

    #[test]
    fn new_files_get_the_umask_default() {
        // The tests run with a umask that leaves the owner read and write.
        let mode = default_file_mode();
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
        assert_eq!(mode & !0o666, 0, "{mode:o}");
    }

    #[test]
    fn a_partial_is_locked_and_never_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        let first = open_partial(&dir, OsStr::new(".a.wiresh-part")).unwrap();
        let second = open_partial(&dir, OsStr::new(".a.wiresh-part")).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock, "{second}");
        drop(first);
        open_partial(&dir, OsStr::new(".a.wiresh-part")).unwrap();
        std::os::unix::fs::symlink("elsewhere", tmp.path().join(".b.wiresh-part")).unwrap();
        open_partial(&dir, OsStr::new(".b.wiresh-part")).unwrap_err();
        assert!(!tmp.path().join("elsewhere").exists());
    }
}
