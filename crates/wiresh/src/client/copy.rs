//! Copying files and trees, scp-style, over one connection: what
//! `wiresh put` and `wiresh get` do on each host, without a word printed.
//! The caller hears of every file, and of what is left out, through a
//! [`CopyProgress`] of its choosing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wiresh_proto::{ErrorCode, FileKind};

use super::transfer::{
    is_local_dir, make_local_dir, safe_relative, TransferError, TransferOptions, TransferReport,
};
use super::{ClientError, Connection, DEFAULT_TRANSFER_TIMEOUT};

/// How to copy, beyond the paths.
#[derive(Debug, Clone, Copy)]
pub struct CopyFlags {
    /// Copy directories recursively (`-r`).
    pub recursive: bool,
    /// Transfer options (`-p`, `--resume`).
    pub options: TransferOptions,
    /// How long to wait on the server at each step (`--transfer-timeout`).
    pub transfer_timeout: Duration,
}

impl Default for CopyFlags {
    fn default() -> CopyFlags {
        CopyFlags {
            recursive: false,
            options: TransferOptions::default(),
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
        }
    }
}

/// What a copy tells its caller as it goes: a front end draws a progress
/// bar per file and says what was left out; `()` hears nothing.
pub trait CopyProgress {
    /// A file starts: `name` as the user knows it, `size` in bytes.
    fn file(&mut self, _name: &str, _size: u64) {}
    /// Bytes of the current file done so far (from the resume offset on).
    fn advanced(&mut self, _done: u64) {}
    /// The current file is over, copied or not.
    fn file_done(&mut self) {}
    /// `path` is left out: not a file or directory (a symlink, a socket),
    /// as `scp -r` leaves them out.
    fn skipped(&mut self, _path: &str) {}
    /// `path`'s name is not UTF-8, which the protocol's paths cannot
    /// carry. `Ok` leaves it out (a directory with all it holds) and goes
    /// on with the rest: a front end says so and exits non-zero at the
    /// end, as rsync does for a partial transfer. By default the copy
    /// stops there, with that error.
    fn unsendable(&mut self, path: &Path) -> Result<(), TransferError> {
        Err(TransferError::Local {
            path: path.to_path_buf(),
            source: std::io::Error::other(
                "its name is not UTF-8, which wiresh's protocol cannot carry",
            ),
        })
    }
}

impl CopyProgress for () {}

/// Joins remote path pieces with `/`.
fn remote_join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

/// The last component of a remote path, as the user wrote it.
fn remote_basename(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

/// The file name of a local path, as the protocol carries it: `None` when
/// it is not UTF-8 (the caller leaves the file out, and says so).
fn local_name(path: &Path) -> Result<Option<&str>, TransferError> {
    let name = path.file_name().ok_or_else(|| TransferError::Local {
        path: path.to_path_buf(),
        source: std::io::Error::other("has no usable file name"),
    })?;
    Ok(name.to_str())
}

impl Connection {
    /// Copies local files (and with `flags.recursive`, trees) to `remote`,
    /// as `wiresh put` (and scp) do: several sources, a trailing slash or
    /// an existing remote directory mean "into that directory".
    pub async fn put_paths(
        &mut self,
        sources: &[PathBuf],
        remote: &str,
        flags: CopyFlags,
        progress: &mut dyn CopyProgress,
    ) -> Result<(), TransferError> {
        self.set_transfer_timeout(flags.transfer_timeout);
        let into_dir = sources.len() > 1
            || remote.ends_with('/')
            || matches!(self.stat(remote).await, Ok(e) if e.kind == FileKind::Dir);
        if into_dir && (sources.len() > 1 || remote.ends_with('/')) {
            self.mkdir(remote, None).await?;
        }
        for source in sources {
            let Some(name) = local_name(source)? else {
                progress.unsendable(source)?;
                continue;
            };
            let dest = if into_dir {
                remote_join(remote, name)
            } else {
                remote.to_string()
            };
            if is_local_dir(source).await {
                if !flags.recursive {
                    return Err(TransferError::Local {
                        path: source.clone(),
                        source: std::io::Error::other("is a directory (use -r)"),
                    });
                }
                self.put_tree(source, &dest, flags, progress).await?;
            } else {
                self.put_one(source, &dest, flags, progress).await?;
            }
        }
        Ok(())
    }

    async fn put_one(
        &mut self,
        local: &Path,
        remote: &str,
        flags: CopyFlags,
        progress: &mut dyn CopyProgress,
    ) -> Result<TransferReport, TransferError> {
        let size = tokio::fs::metadata(local)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        progress.file(&local.display().to_string(), size);
        let report = self
            .put_file(local, remote, flags.options, &mut |done| {
                progress.advanced(done)
            })
            .await;
        progress.file_done();
        report
    }

    async fn put_tree(
        &mut self,
        local: &Path,
        remote: &str,
        flags: CopyFlags,
        progress: &mut dyn CopyProgress,
    ) -> Result<(), TransferError> {
        // Depth first, with an explicit stack: trees can be deep.
        let mut stack = vec![(local.to_path_buf(), remote.to_string())];
        while let Some((dir, remote_dir)) = stack.pop() {
            let (mode, children) = local_dir(&dir, flags.options.preserve).await?;
            self.mkdir(&remote_dir, mode).await?;
            for child in children {
                let Some(name) = local_name(&child)? else {
                    progress.unsendable(&child)?;
                    continue;
                };
                let dest = remote_join(&remote_dir, name);
                match tokio::fs::symlink_metadata(&child).await {
                    Ok(m) if m.is_dir() => stack.push((child, dest)),
                    Ok(m) if m.is_file() => {
                        self.put_one(&child, &dest, flags, progress).await?;
                    }
                    _ => progress.skipped(&child.display().to_string()),
                }
            }
        }
        Ok(())
    }

    /// Copies remote files (and with `flags.recursive`, trees) to `local`,
    /// as `wiresh get` (and scp) do: into `local` when it is a directory.
    /// Local names come from the paths asked for, never from the server.
    pub async fn get_paths(
        &mut self,
        sources: &[String],
        local: &Path,
        flags: CopyFlags,
        progress: &mut dyn CopyProgress,
    ) -> Result<(), TransferError> {
        self.set_transfer_timeout(flags.transfer_timeout);
        let into_dir = is_local_dir(local).await;
        if sources.len() > 1 && !into_dir {
            return Err(TransferError::Local {
                path: local.to_path_buf(),
                source: std::io::Error::other("is not a directory (several sources given)"),
            });
        }
        if !into_dir && !flags.recursive && ends_with_slash(local) {
            return Err(no_such_directory(local).await);
        }
        for source in sources {
            let dest = if into_dir {
                let name = remote_basename(source).ok_or_else(|| {
                    TransferError::Unsafe(format!("{source:?} has no file name to copy to"))
                })?;
                local.join(safe_relative(name)?)
            } else {
                local.to_path_buf()
            };
            let entry = self.stat(source).await?;
            match entry.kind {
                FileKind::Dir if flags.recursive => {
                    let mode = flags.options.preserve.then_some(entry.mode);
                    self.get_tree(source, &dest, mode, flags, progress).await?
                }
                FileKind::Dir => {
                    return Err(TransferError::Client(ClientError::Remote {
                        code: ErrorCode::IoError,
                        message: format!("{source}: is a directory (use -r)"),
                        started: false,
                    }))
                }
                _ => {
                    // The part file goes beside the file: its directory
                    // must be there (scp creates none either).
                    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                        if !is_local_dir(dir).await {
                            let mut dir = dir.as_os_str().to_os_string();
                            dir.push("/");
                            return Err(no_such_directory(Path::new(&dir)).await);
                        }
                    }
                    self.get_one(source, &dest, flags, progress, entry.size)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn get_one(
        &mut self,
        remote: &str,
        local: &Path,
        flags: CopyFlags,
        progress: &mut dyn CopyProgress,
        size: u64,
    ) -> Result<TransferReport, TransferError> {
        progress.file(remote, size);
        let report = self
            .get_file(remote, local, flags.options, &mut |done| {
                progress.advanced(done)
            })
            .await;
        progress.file_done();
        report
    }

    async fn get_tree(
        &mut self,
        remote: &str,
        local: &Path,
        mode: Option<u32>,
        flags: CopyFlags,
        progress: &mut dyn CopyProgress,
    ) -> Result<(), TransferError> {
        // Every name is checked by `list` before anything is created.
        let entries = self.list(remote).await?;
        make_local_dir(local, mode).await?;
        for entry in entries {
            let dest = local.join(safe_relative(&entry.path)?);
            let mode = flags.options.preserve.then_some(entry.mode);
            match entry.kind {
                FileKind::Dir => make_local_dir(&dest, mode).await?,
                FileKind::File => {
                    let source = remote_join(remote, &entry.path);
                    self.get_one(&source, &dest, flags, progress, entry.size)
                        .await?;
                }
                FileKind::Other => progress.skipped(&entry.path),
            }
        }
        Ok(())
    }
}

/// Whether a local path ends with `/`: the user means a directory.
fn ends_with_slash(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().ends_with(b"/")
}

/// The error for `dir`, named as a directory to copy into, that is not
/// one: missing, or something else.
async fn no_such_directory(dir: &Path) -> TransferError {
    use std::os::unix::ffi::OsStrExt;
    // Without its trailing slash, a file answers as a file.
    let bytes = dir.as_os_str().as_bytes();
    let bare = match bytes.iter().rposition(|&b| b != b'/') {
        Some(last) => &bytes[..=last],
        None => bytes,
    };
    let why = match tokio::fs::metadata(std::ffi::OsStr::from_bytes(bare)).await {
        Ok(_) => "not a directory",
        Err(_) => "no such directory",
    };
    TransferError::Local {
        path: dir.to_path_buf(),
        source: std::io::Error::other(why),
    }
}

/// A local directory to copy: its mode when `preserve` asks for it, and
/// its entries, in order.
async fn local_dir(
    dir: &Path,
    preserve: bool,
) -> Result<(Option<u32>, Vec<PathBuf>), TransferError> {
    use std::os::unix::fs::PermissionsExt;
    let local = |source| TransferError::Local {
        path: dir.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(dir).await.map_err(local)?;
    let mode = preserve.then_some(meta.permissions().mode() & 0o7777);
    let mut entries = tokio::fs::read_dir(dir).await.map_err(local)?;
    let mut children = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(local)? {
        children.push(entry.path());
    }
    children.sort();
    Ok((mode, children))
}
