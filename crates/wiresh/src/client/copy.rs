//! `wiresh put` and `wiresh get`: copying files and trees, scp-style.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;
use wiresh_proto::{ErrorCode, FileKind};

use super::transfer::{
    is_local_dir, make_local_dir, safe_relative, TransferError, TransferOptions, TransferReport,
};
use super::{ClientError, Connection, Endpoint, DEFAULT_TRANSFER_TIMEOUT};
use crate::exit;

/// What the user asked for, beyond the paths.
#[derive(Debug, Clone, Copy)]
pub struct CopyFlags {
    /// Copy directories recursively (`-r`).
    pub recursive: bool,
    /// Transfer options (`-p`, `--resume`).
    pub options: TransferOptions,
    /// No progress output (`-q`).
    pub quiet: bool,
    /// How long to wait on the server at each step (`--transfer-timeout`).
    pub transfer_timeout: Duration,
}

impl Default for CopyFlags {
    fn default() -> CopyFlags {
        CopyFlags {
            recursive: false,
            options: TransferOptions::default(),
            quiet: false,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
        }
    }
}

/// Shows one progress bar per file on a terminal, nothing otherwise.
struct Progress {
    enabled: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    fn bar(&self, name: &str, size: u64) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(size);
        let style = ProgressStyle::with_template(
            "{msg:30!} {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} eta {eta:>4} [{bar:25}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(name.to_string());
        bar
    }
}

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

fn local_name(path: &Path) -> Result<String, TransferError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| TransferError::Local {
            path: path.to_path_buf(),
            source: std::io::Error::other("has no usable file name"),
        })
}

/// Runs an upload or download and turns the outcome into an exit status.
fn finish(result: Result<(), TransferError>) -> i32 {
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("wiresh: {e}");
            status_for(&e)
        }
    }
}

/// The exit status after a failed transfer: [`exit::CLIENT_FAILURE`] when
/// the connection failed, [`exit::TRANSFER_FAILED`] otherwise, as scp.
pub fn status_for(e: &TransferError) -> i32 {
    match e {
        TransferError::Client(c) if !c.connection_usable() && !is_file_refusal(c) => {
            exit::CLIENT_FAILURE
        }
        _ => exit::TRANSFER_FAILED,
    }
}

/// A server refusal about a file, after which the connection is fine.
fn is_file_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Remote {
            code: ErrorCode::FilesDisabled
                | ErrorCode::PathRefused
                | ErrorCode::NotFound
                | ErrorCode::IoError
                | ErrorCode::ChecksumMismatch,
            ..
        }
    )
}

/// `wiresh put LOCAL... REMOTE`.
pub fn put(
    rt: &Runtime,
    endpoint: &Endpoint,
    sources: &[PathBuf],
    remote: &str,
    flags: CopyFlags,
) -> i32 {
    finish(rt.block_on(async {
        let mut conn = Connection::connect(endpoint).await?;
        put_over(&mut conn, sources, remote, flags).await?;
        conn.close().await;
        Ok(())
    }))
}

/// `wiresh put` over a connection already made.
pub async fn put_over(
    conn: &mut Connection,
    sources: &[PathBuf],
    remote: &str,
    flags: CopyFlags,
) -> Result<(), TransferError> {
    conn.set_transfer_timeout(flags.transfer_timeout);
    let progress = Progress::new(flags.quiet);
    // Like scp: several sources, -r, a trailing slash or an existing
    // remote directory mean "into that directory".
    let into_dir = sources.len() > 1
        || remote.ends_with('/')
        || matches!(conn.stat(remote).await, Ok(e) if e.kind == FileKind::Dir);
    if into_dir && (sources.len() > 1 || remote.ends_with('/')) {
        conn.mkdir(remote, None).await?;
    }
    for source in sources {
        let name = local_name(source)?;
        let dest = if into_dir {
            remote_join(remote, &name)
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
            put_tree(conn, source, &dest, flags, &progress).await?;
        } else {
            put_one(conn, source, &dest, flags, &progress).await?;
        }
    }
    Ok(())
}

async fn put_one(
    conn: &mut Connection,
    local: &Path,
    remote: &str,
    flags: CopyFlags,
    progress: &Progress,
) -> Result<TransferReport, TransferError> {
    let size = tokio::fs::metadata(local)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let bar = progress.bar(&local.display().to_string(), size);
    let report = conn
        .put_file(local, remote, flags.options, &mut |done| {
            bar.set_position(done)
        })
        .await;
    bar.finish();
    report
}

async fn put_tree(
    conn: &mut Connection,
    local: &Path,
    remote: &str,
    flags: CopyFlags,
    progress: &Progress,
) -> Result<(), TransferError> {
    // Depth first, with an explicit stack: trees can be deep.
    let mut stack = vec![(local.to_path_buf(), remote.to_string())];
    while let Some((dir, remote_dir)) = stack.pop() {
        let meta = tokio::fs::metadata(&dir)
            .await
            .map_err(|source| TransferError::Local {
                path: dir.clone(),
                source,
            })?;
        use std::os::unix::fs::PermissionsExt;
        let mode = flags
            .options
            .preserve
            .then_some(meta.permissions().mode() & 0o7777);
        conn.mkdir(&remote_dir, mode).await?;
        let mut entries =
            tokio::fs::read_dir(&dir)
                .await
                .map_err(|source| TransferError::Local {
                    path: dir.clone(),
                    source,
                })?;
        let mut children = Vec::new();
        while let Some(entry) =
            entries
                .next_entry()
                .await
                .map_err(|source| TransferError::Local {
                    path: dir.clone(),
                    source,
                })?
        {
            children.push(entry.path());
        }
        children.sort();
        for child in children {
            let name = local_name(&child)?;
            let dest = remote_join(&remote_dir, &name);
            let meta = tokio::fs::symlink_metadata(&child).await;
            match meta {
                Ok(m) if m.is_dir() => stack.push((child, dest)),
                Ok(m) if m.is_file() => {
                    put_one(conn, &child, &dest, flags, progress).await?;
                }
                // Symlinks and special files are skipped, as scp -r skips sockets.
                _ => eprintln!(
                    "wiresh: skipping {} (not a file or directory)",
                    child.display()
                ),
            }
        }
    }
    Ok(())
}

/// `wiresh get REMOTE... LOCAL`.
pub fn get(
    rt: &Runtime,
    endpoint: &Endpoint,
    sources: &[String],
    local: &Path,
    flags: CopyFlags,
) -> i32 {
    finish(rt.block_on(async {
        let mut conn = Connection::connect(endpoint).await?;
        get_over(&mut conn, sources, local, flags).await?;
        conn.close().await;
        Ok(())
    }))
}

/// `wiresh get` over a connection already made.
pub async fn get_over(
    conn: &mut Connection,
    sources: &[String],
    local: &Path,
    flags: CopyFlags,
) -> Result<(), TransferError> {
    conn.set_transfer_timeout(flags.transfer_timeout);
    let progress = Progress::new(flags.quiet);
    let into_dir = is_local_dir(local).await;
    if sources.len() > 1 && !into_dir {
        return Err(TransferError::Local {
            path: local.to_path_buf(),
            source: std::io::Error::other("is not a directory (several sources given)"),
        });
    }
    for source in sources {
        // The local name comes from what the user asked for, never
        // from the server.
        let dest = if into_dir {
            let name = remote_basename(source).ok_or_else(|| {
                TransferError::Unsafe(format!("{source:?} has no file name to copy to"))
            })?;
            local.join(safe_relative(name)?)
        } else {
            local.to_path_buf()
        };
        let entry = conn.stat(source).await?;
        match entry.kind {
            FileKind::Dir if flags.recursive => {
                let mode = flags.options.preserve.then_some(entry.mode);
                get_tree(conn, source, &dest, mode, flags, &progress).await?
            }
            FileKind::Dir => {
                return Err(TransferError::Client(ClientError::Remote {
                    code: ErrorCode::IoError,
                    message: format!("{source}: is a directory (use -r)"),
                    started: false,
                }))
            }
            _ => {
                get_one(conn, source, &dest, flags, &progress, entry.size).await?;
            }
        }
    }
    Ok(())
}

async fn get_one(
    conn: &mut Connection,
    remote: &str,
    local: &Path,
    flags: CopyFlags,
    progress: &Progress,
    size: u64,
) -> Result<TransferReport, TransferError> {
    let bar = progress.bar(remote, size);
    let report = conn
        .get_file(remote, local, flags.options, &mut |done| {
            bar.set_position(done)
        })
        .await;
    bar.finish();
    report
}

async fn get_tree(
    conn: &mut Connection,
    remote: &str,
    local: &Path,
    mode: Option<u32>,
    flags: CopyFlags,
    progress: &Progress,
) -> Result<(), TransferError> {
    // Every name is checked by `list` before anything is created.
    let entries = conn.list(remote).await?;
    make_local_dir(local, mode).await?;
    for entry in entries {
        let dest = local.join(safe_relative(&entry.path)?);
        let mode = flags.options.preserve.then_some(entry.mode);
        match entry.kind {
            FileKind::Dir => make_local_dir(&dest, mode).await?,
            FileKind::File => {
                let source = remote_join(remote, &entry.path);
                get_one(conn, &source, &dest, flags, progress, entry.size).await?;
            }
            FileKind::Other => {
                eprintln!("wiresh: skipping {} (not a file or directory)", entry.path)
            }
        }
    }
    Ok(())
}
