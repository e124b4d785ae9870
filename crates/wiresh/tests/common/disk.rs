//! Data and files on disk for the transfer tests: test data, BLAKE3s,
//! reading and writing files, the `.NAME.wiresh-part` partial names (and
//! whether a transfer holds one), what a directory holds, and a small
//! filesystem to fill up ([`SmallFs`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{binary_pattern, MIB};

/// Every byte value, several times and in several orders, then a few MiB of
/// pattern so the file spans many `file_data` frames.
pub fn all_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend((0..=255u8).rev());
    v.extend((0..=255u8).flat_map(|b| [b, b, 0, 0xff, b'\n', b'\r']));
    v.extend(binary_pattern(3 * MIB + 77));
    v
}

pub fn hex_blake3(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// BLAKE3 of a file, streamed.
pub fn file_blake3(path: &Path) -> String {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf).expect("reading a file to hash it");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().to_hex().to_string()
}

/// Writes `len` bytes (a multiple of 1 MiB) of distinct 1 MiB blocks and
/// returns their BLAKE3.
pub fn write_big(path: &Path, len: usize) -> String {
    assert_eq!(len % MIB, 0);
    let mut block = binary_pattern(MIB);
    let mut hasher = blake3::Hasher::new();
    let mut f = std::io::BufWriter::with_capacity(MIB, std::fs::File::create(path).unwrap());
    for i in 0..(len / MIB) as u64 {
        // Each block is stamped with its number, so a block sent twice or
        // out of order changes the checksum.
        block[..8].copy_from_slice(&i.to_le_bytes());
        block[MIB - 8..].copy_from_slice(&(!i).to_le_bytes());
        hasher.update(&block);
        f.write_all(&block).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
    hasher.finalize().to_hex().to_string()
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The temporary name a transfer writes to: `.NAME.wiresh-part` beside it.
pub fn part_of(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap().to_str().unwrap();
    target.with_file_name(format!(".{name}.wiresh-part"))
}

/// Whether a transfer holds the `flock` on the partial `part` right now: a
/// transfer holds it from opening the partial until its disk writer is
/// done. Tries to take the lock without waiting (and lets go at once). A
/// partial that does not exist is not locked.
pub fn part_locked(part: &Path) -> bool {
    use rustix::fs::{flock, FlockOperation};
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => panic!("cannot open {}: {e}", part.display()),
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => false,
        Err(rustix::io::Errno::WOULDBLOCK) => true,
        Err(e) => panic!("cannot lock {}: {e}", part.display()),
    }
}

/// What a directory holds, recursively: relative path → a short description
/// (`dir`, `file <len> <blake3>`, `symlink -> target`, `other`).
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().into_string().unwrap();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(&e.path(), &rel, out);
            } else if meta.is_file() {
                let desc = format!("file {} {}", meta.len(), file_blake3(&e.path()));
                out.insert(rel, desc);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                out.insert(rel, format!("symlink -> {}", target.display()));
            } else {
                out.insert(rel, "other".into());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

/// Every path below `dir` (not following symlinks).
pub fn all_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Part files (`.NAME.wiresh-part`) anywhere below `dir`.
pub fn parts_below(dir: &Path) -> Vec<PathBuf> {
    all_paths(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".wiresh-part"))
        })
        .collect()
}

pub fn set_mtime(path: &Path, unix_secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(unix_secs))
        .unwrap();
}

/// A tmpfs of a few MiB mounted for a test (to fill it up for real),
/// unmounted when dropped.
pub struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` on the existing directory `dir`; `None`,
    /// after saying why on stderr, where this process may not mount (it
    /// needs root, or `CAP_SYS_ADMIN`).
    pub fn mount(dir: &Path, bytes: usize) -> Option<SmallFs> {
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallFs {
                dir: dir.to_path_buf(),
            }),
            Ok(out) => {
                super::skip::skipped(&format!(
                    "cannot mount a {bytes}-byte tmpfs on {} to fill it up ({}); \
                     this test needs root (CAP_SYS_ADMIN)",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                None
            }
            Err(e) => {
                super::skip::skipped(&format!(
                    "cannot run mount(8) to make a small filesystem: {e}"
                ));
                None
            }
        }
    }

    /// Bytes free on it for an unprivileged writer.
    pub fn free(&self) -> u64 {
        let fs = rustix::fs::statvfs(&self.dir).expect("statvfs of the small filesystem");
        fs.f_bavail * fs.f_frsize
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: a server killed a moment ago may still hold it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
