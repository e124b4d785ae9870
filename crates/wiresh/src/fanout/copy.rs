//! `wiresh put` and `wiresh get` on many hosts: the same files to every
//! host, or every host's files into `DEST/HOST/` (like `pdcp`/`rpdcp`).
//! Each file is checked with BLAKE3 on arrival, as on one host.

use std::path::PathBuf;

use tokio::runtime::Runtime;

use super::{connect, each_host, report, Host, Interrupts, Kind, Options, Verdict};
use crate::cli::copy::failure_text;
use crate::client::copy::{CopyFlags, CopyProgress};
use crate::client::transfer::TransferError;
use crate::client::ClientError;
use crate::exit;
use crate::untrusted::escape;

/// Which way the files go.
#[derive(Debug, Clone)]
pub enum Direction {
    /// `put LOCAL... REMOTE`: the same files to every host.
    Put {
        /// Local files and directories.
        sources: Vec<PathBuf>,
        /// Where they go on each host.
        remote: String,
    },
    /// `get REMOTE... DEST`: each host's files into `DEST/HOST/`.
    Get {
        /// Remote files and directories.
        sources: Vec<String>,
        /// The local directory that gets one directory per host.
        dest: PathBuf,
    },
}

/// How one host's copy ended.
enum Copied {
    Done,
    /// Copied, but for this many paths whose names are not UTF-8.
    Partial(usize),
    Unreachable(ClientError),
    Failed(TransferError),
}

impl Copied {
    fn verdict(&self) -> Verdict {
        let (kind, label) = match self {
            Copied::Done => (Kind::Ok, "copied, BLAKE3 verified".to_string()),
            Copied::Partial(n) => (Kind::Failed, format!("{n} names not UTF-8 left out")),
            Copied::Unreachable(e) => (
                Kind::Unreachable,
                format!("unreachable ({})", super::reason(e)),
            ),
            Copied::Failed(e) if exit::for_transfer(e) == exit::CLIENT_FAILURE => {
                (Kind::Lost, "connection lost".to_string())
            }
            Copied::Failed(e) => (Kind::Failed, transfer_reason(e)),
        };
        Verdict { kind, label }
    }
}

/// A short reason for a failed transfer, for the summary.
fn transfer_reason(e: &TransferError) -> String {
    match e {
        TransferError::Client(ClientError::Remote { code, .. }) => format!("refused ({code})"),
        TransferError::Client(_) => "transfer failed".to_string(),
        TransferError::Local { .. } => "local file error".to_string(),
        TransferError::Unsafe(_) => "unsafe answer".to_string(),
        TransferError::Checksum(_) => "checksum mismatch".to_string(),
    }
}

/// Copies on every host; returns the exit status: 0 when every copy was
/// made, 1 when one failed, 255 when a host was unreachable or lost
/// ([`exit::for_fanout`]).
pub fn run(
    rt: &Runtime,
    hosts: &[Host],
    options: &Options,
    direction: &Direction,
    flags: CopyFlags,
) -> i32 {
    rt.block_on(async {
        let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
        let mut verdicts: Vec<(usize, Verdict)> = Vec::new();
        let not_run = each_host(
            hosts,
            options,
            &interrupts,
            |_, host| copy_one(host, options, direction, flags),
            |copied: &Copied| !matches!(copied, Copied::Done),
            |i, copied| {
                match &copied {
                    Copied::Done | Copied::Partial(_) => {}
                    Copied::Unreachable(e) => eprintln!("{}: wiresh: {e}", hosts[i].name),
                    Copied::Failed(e) => {
                        eprintln!("{}: wiresh: {}", hosts[i].name, failure_text(e))
                    }
                }
                verdicts.push((i, copied.verdict()));
            },
        )
        .await;
        for (i, _) in not_run {
            verdicts.push((
                i,
                Verdict {
                    kind: Kind::NotRun,
                    label: "not run".into(),
                },
            ));
        }
        verdicts.sort_by_key(|(i, _)| *i);
        let kinds = || verdicts.iter().map(|(_, v)| v.kind);
        // Copies that all went well go without saying.
        if kinds().any(|k| k != Kind::Ok) {
            eprint!(
                "{}",
                report::summary(
                    verdicts
                        .iter()
                        .map(|(i, v)| (hosts[*i].name.as_str(), v.clone()))
                )
            );
        }
        exit::for_fanout(&exit::Fanout {
            local_io: false,
            stdout_closed: false,
            interrupted: interrupts.count() > 0,
            unreachable: kinds().any(|k| matches!(k, Kind::Unreachable | Kind::Lost)),
            failed: kinds().any(|k| k != Kind::Ok),
            largest: None,
        })
    })
}

async fn copy_one(
    host: &Host,
    options: &Options,
    direction: &Direction,
    flags: CopyFlags,
) -> Copied {
    let mut conn = match connect(&host.endpoint, options.connect_timeout).await {
        Ok(conn) => conn,
        Err(e) => return Copied::Unreachable(e),
    };
    let mut progress = Skips(&host.name, 0);
    let result = match direction {
        Direction::Put { sources, remote } => {
            conn.put_paths(sources, remote, flags, &mut progress).await
        }
        Direction::Get { sources, dest } => {
            // Names with `/` must not reach outside DEST.
            let local = dest.join(host.name.replace('/', "_"));
            match tokio::fs::create_dir_all(&local).await {
                Ok(()) => conn.get_paths(sources, &local, flags, &mut progress).await,
                Err(source) => Err(TransferError::Local {
                    path: local,
                    source,
                }),
            }
        }
    };
    conn.close().await;
    match result {
        Ok(()) if progress.1 > 0 => Copied::Partial(progress.1),
        Ok(()) => Copied::Done,
        Err(e) => Copied::Failed(e),
    }
}

/// What one host's copy says as it goes: no progress bars (one per file
/// and host would be a blur), only what was left out, with the host's name.
struct Skips<'a>(&'a str, usize);

impl CopyProgress for Skips<'_> {
    fn unsendable(&mut self, path: &std::path::Path) -> Result<(), TransferError> {
        self.1 += 1;
        eprintln!("{}: {}", self.0, crate::cli::copy::unsendable_warning(path));
        Ok(())
    }

    fn skipped(&mut self, path: &str) {
        let path = escape(path);
        eprintln!(
            "{}: wiresh: skipping {path} (not a file or directory)",
            self.0
        );
    }
}
