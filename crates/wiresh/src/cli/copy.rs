//! `wiresh put` and `wiresh get` on one server: the copy itself is the
//! library's ([`crate::client::copy`]); this draws a progress bar per file
//! on a terminal, says what was left out, and gives scp's exit status.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;

use crate::client::copy::{CopyFlags, CopyProgress};
use crate::client::transfer::TransferError;
use crate::client::Endpoint;
use crate::exit;
use crate::untrusted::escape;

/// `wiresh put LOCAL... REMOTE`; `quiet`: no progress bars (`-q`).
pub fn put(
    rt: &Runtime,
    endpoint: &Endpoint,
    sources: &[PathBuf],
    remote: &str,
    flags: CopyFlags,
    quiet: bool,
) -> i32 {
    let mut progress = Bars::new(quiet);
    let copied = rt.block_on(until_ctrl_c(async {
        let mut conn = super::connect(endpoint, None).await?;
        conn.put_paths(sources, remote, flags, &mut progress)
            .await?;
        conn.close().await;
        Ok(())
    }));
    let code = progress.finish(copied);
    match progress.unsendable {
        0 => code,
        n => {
            eprintln!(
                "wiresh: {n} {} left out (names that are not UTF-8); everything else was copied",
                if n == 1 { "path was" } else { "paths were" }
            );
            if code == exit::SUCCESS {
                exit::PARTIAL_TRANSFER
            } else {
                code
            }
        }
    }
}

/// `wiresh get REMOTE... LOCAL`; `quiet`: no progress bars (`-q`).
pub fn get(
    rt: &Runtime,
    endpoint: &Endpoint,
    sources: &[String],
    local: &Path,
    flags: CopyFlags,
    quiet: bool,
) -> i32 {
    let mut progress = Bars::new(quiet);
    let copied = rt.block_on(until_ctrl_c(async {
        let mut conn = super::connect(endpoint, None).await?;
        conn.get_paths(sources, local, flags, &mut progress).await?;
        conn.close().await;
        Ok(())
    }));
    progress.finish(copied)
}

/// Runs `copy` until it ends (`Some`) or Ctrl-C comes (`None`): then the
/// copy is dropped, its connection closed, and what was copied of the
/// current file kept as a part that `--resume` continues from.
async fn until_ctrl_c<T>(copy: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        done = copy => Some(done),
        _ = tokio::signal::ctrl_c() => None,
    }
}

/// The exit status after a copy, telling the user what went wrong.
fn finish(result: Result<(), TransferError>) -> i32 {
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("wiresh: {}", failure_text(&e));
            exit::for_transfer(&e)
        }
    }
}

/// What to tell the user of a failed copy: the error and, when the
/// connection broke or stalled in the middle of a file, that the same
/// command with `--resume` continues from what was copied (scp cannot).
pub(crate) fn failure_text(e: &TransferError) -> String {
    if e.left_a_partial() {
        format!(
            "{e}; the same command with --resume continues from what was copied \
             (the part is kept as .NAME.wiresh-part)"
        )
    } else {
        e.to_string()
    }
}

/// One progress bar per file on a terminal, none otherwise; what is left
/// out is said on stderr either way.
pub(crate) struct Bars {
    enabled: bool,
    bar: ProgressBar,
    /// Paths left out because their names are not UTF-8.
    unsendable: usize,
}

impl Bars {
    /// Bars unless `quiet` or stderr is not a terminal.
    pub(crate) fn new(quiet: bool) -> Bars {
        Bars {
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: ProgressBar::hidden(),
            unsendable: 0,
        }
    }
}

impl Bars {
    /// The exit status of a copy that ended (`Some`) or was interrupted,
    /// telling the user what went wrong and how to go on.
    fn finish(&mut self, copied: Option<Result<(), TransferError>>) -> i32 {
        match copied {
            Some(result) => finish(result),
            None => {
                // The bar stays as it stood; the word goes below it.
                self.bar.abandon();
                eprintln!("wiresh: interrupted; the same command with --resume continues");
                exit::INTERRUPTED
            }
        }
    }
}

impl CopyProgress for Bars {
    fn file(&mut self, name: &str, size: u64) {
        if !self.enabled {
            return;
        }
        let style = ProgressStyle::with_template(
            "{msg:30!} {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} eta {eta:>4} [{bar:25}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.bar = ProgressBar::new(size);
        self.bar.set_style(style);
        // In `get -r`, the name comes from the server.
        self.bar.set_message(escape(name).into_owned());
    }

    fn advanced(&mut self, done: u64) {
        self.bar.set_position(done);
    }

    fn file_done(&mut self) {
        self.bar.finish();
    }

    fn skipped(&mut self, path: &str) {
        let path = escape(path);
        eprintln!("wiresh: skipping {path} (not a file or directory)");
    }

    fn unsendable(&mut self, path: &Path) -> Result<(), TransferError> {
        self.unsendable += 1;
        eprintln!("{}", unsendable_warning(path));
        Ok(())
    }
}

/// What is said of a path left out because its name is not UTF-8.
pub(crate) fn unsendable_warning(path: &Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    // Each byte that is not UTF-8 written as `\xNN`, as bash's `$'...'`.
    let mut shown = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        shown.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(shown, "\\x{byte:02x}");
        }
    }
    let path = shown;
    format!(
        "wiresh: skipping {path}: its name is not UTF-8, which wiresh's protocol cannot carry \
         (rename it to copy it)"
    )
}
