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

/// The temporary name a transfer writes to, beside its target:
/// `.NAME.wiresh-part`. Deterministic, so `--resume` finds it again.
pub(crate) fn partial_path(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?.to_str()?;
    Some(target.with_file_name(format!(".{name}.wiresh-part")))
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
