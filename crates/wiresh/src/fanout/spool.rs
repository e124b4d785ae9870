//! The spool: one temporary file (deleted already) in `$TMPDIR` that every
//! host appends to, holding what they print for the end (`--gather`,
//! `--diff`, `--json`), or local stdin for every host; and [`NotKept`],
//! the error for what this machine's disk would not keep.
//!
//! What a host's output holds in the spool is bounded by `--max-output`
//! ([`Spooled::push`] is told how much room is left); what is left out is
//! counted, not kept, and the stream is marked cut.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes a host's stream keeps in memory before writing them to the spool.
const BLOCK: usize = 64 * 1024;

/// What a finished host may keep in memory; more goes to the spool, so a
/// thousand finished hosts hold a few MiB at most.
const KEEP: usize = 4 * 1024;

/// Size of the pieces read back from the spool.
pub(crate) const PIECE: usize = 64 * 1024;

/// Where something this machine's disk would not keep was to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The hosts' output kept for the end (`--gather`, `--diff`,
    /// `--json`): a temporary file in this directory (`$TMPDIR`).
    Spool(PathBuf),
    /// Local stdin kept for every host: a temporary file in this directory.
    Stdin(PathBuf),
    /// This file of `--outdir` (or the directory itself).
    Outdir(PathBuf),
}

/// This machine's disk would not keep what the hosts sent (or stdin for
/// them): where it was to go and why. A fan-out that meets one stops every
/// host and exits [`crate::exit::LOCAL_IO`], saying this.
#[derive(Debug, Clone)]
pub struct NotKept {
    /// Where.
    pub place: Place,
    /// Why (`ENOSPC`, `EDQUOT`, `EIO`, ...).
    pub source: Arc<io::Error>,
}

impl NotKept {
    pub(crate) fn new(place: Place, source: io::Error) -> NotKept {
        NotKept {
            place,
            source: Arc::new(source),
        }
    }

    /// Whether the disk (or a quota) is full, rather than failing.
    fn full(&self) -> bool {
        matches!(
            rustix::io::Errno::from_io_error(&self.source),
            Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
        )
    }

    /// The reason in a few words, for the summary: `No space left on device`.
    pub fn reason(&self) -> String {
        let text = self.source.to_string();
        match text.find(" (os error") {
            Some(at) => text[..at].to_string(),
            None => text,
        }
    }
}

impl fmt::Display for NotKept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = &self.source;
        match &self.place {
            Place::Spool(dir) => {
                write!(
                    f,
                    "cannot keep the hosts' output in a temporary file in {}: {source}; ",
                    dir.display()
                )?;
                if self.full() {
                    f.write_str(
                        "free some space there, or set TMPDIR to a directory with more room; \
                         `wiresh exec` can also keep less of each host (--max-output) or write \
                         each host's output to files instead (--outdir DIR)",
                    )
                } else {
                    f.write_str(
                        "set TMPDIR to a directory on another filesystem, or have `wiresh exec` \
                         write each host's output to files instead (--outdir DIR)",
                    )
                }
            }
            Place::Stdin(dir) => write!(
                f,
                "cannot keep local stdin for the hosts in a temporary file in {}: {source}; the \
                 commands were stopped before they had all of it; {}",
                dir.display(),
                if self.full() {
                    "free some space there, or set TMPDIR to a directory with more room"
                } else {
                    "set TMPDIR to a directory on another filesystem"
                }
            ),
            Place::Outdir(path) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                write!(f, "cannot write {}: {source}; ", path.display())?;
                if self.full() {
                    write!(
                        f,
                        "free some space in {}, or give --outdir a directory on a filesystem \
                         with more room",
                        dir.display()
                    )
                } else {
                    f.write_str("give --outdir a directory on another filesystem")
                }
            }
        }
    }
}

/// What a spool holds, for what its errors say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    /// The hosts' output.
    Output,
    /// Local stdin.
    Stdin,
}

impl Holding {
    /// Where a spool holding this in `dir` is, for messages.
    fn place(self, dir: &Path) -> Place {
        match self {
            Holding::Output => Place::Spool(dir.to_path_buf()),
            Holding::Stdin => Place::Stdin(dir.to_path_buf()),
        }
    }
}

/// One temporary file (deleted already) that every host appends to.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    end: AtomicU64,
    /// Where the file is (`$TMPDIR`), for messages.
    dir: PathBuf,
    holding: Holding,
}

impl Spool {
    /// A new, empty spool in `$TMPDIR`.
    pub(crate) fn new(holding: Holding) -> Result<Arc<Spool>, NotKept> {
        let dir = std::env::temp_dir();
        let file = tempfile::tempfile_in(&dir).map_err(|e| NotKept::new(holding.place(&dir), e))?;
        Ok(Arc::new(Spool {
            file,
            end: AtomicU64::new(0),
            dir,
            holding,
        }))
    }

    /// The error for `source` met on this spool.
    fn not_kept(&self, source: io::Error) -> NotKept {
        NotKept::new(self.holding.place(&self.dir), source)
    }

    /// Appends `data`; returns where it starts.
    pub(crate) fn append(&self, data: &[u8]) -> Result<u64, NotKept> {
        let at = self.end.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.file
            .write_all_at(data, at)
            .map_err(|e| self.not_kept(e))?;
        Ok(at)
    }

    /// Reads `len` bytes at `at`.
    pub(crate) fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, NotKept> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| self.not_kept(e))?;
        Ok(buf)
    }
}

/// One stream (stdout or stderr) of one host, spooled: the bytes kept,
/// their count and their BLAKE3, and whether more came than was kept.
#[derive(Debug, Default)]
pub(crate) struct Spooled {
    hasher: blake3::Hasher,
    /// Bytes kept.
    pub(crate) len: u64,
    /// More came than was kept (`--max-output`).
    pub(crate) cut: bool,
    segments: Vec<(u64, usize)>,
    block: Vec<u8>,
}

impl Spooled {
    /// Keeps as much of `data` as `room` (bytes the host may still keep,
    /// `None` for no limit) allows, and takes what it kept off `room`.
    pub(crate) fn push(
        &mut self,
        spool: &Spool,
        data: &[u8],
        room: &mut Option<u64>,
    ) -> Result<(), NotKept> {
        let keep = match room {
            Some(left) => {
                let keep = (*left).min(data.len() as u64);
                *left -= keep;
                keep as usize
            }
            None => data.len(),
        };
        self.cut |= keep < data.len();
        let data = &data[..keep];
        self.hasher.update(data);
        self.len += data.len() as u64;
        self.block.extend_from_slice(data);
        if self.block.len() >= BLOCK {
            self.flush(spool)?;
        }
        Ok(())
    }

    fn flush(&mut self, spool: &Spool) -> Result<(), NotKept> {
        if !self.block.is_empty() {
            let at = spool.append(&self.block)?;
            self.segments.push((at, self.block.len()));
            self.block = Vec::new();
        }
        Ok(())
    }

    /// Puts the tail away: in the spool unless it is small.
    pub(crate) fn finish(&mut self, spool: &Spool) -> Result<(), NotKept> {
        if self.block.len() > KEEP {
            self.flush(spool)?;
        }
        self.block.shrink_to_fit();
        Ok(())
    }

    /// The BLAKE3 of everything kept.
    pub(crate) fn digest(&self) -> blake3::Hash {
        self.hasher.finalize()
    }

    /// The bytes kept, in pieces of at most [`PIECE`].
    pub(crate) fn pieces<'a>(
        &'a self,
        spool: &'a Spool,
    ) -> impl Iterator<Item = Result<Vec<u8>, NotKept>> + 'a {
        let on_disk = self.segments.iter().flat_map(move |&(at, len)| {
            (0..len)
                .step_by(PIECE)
                .map(move |off| spool.read(at + off as u64, PIECE.min(len - off)))
        });
        on_disk.chain((!self.block.is_empty()).then(|| Ok(self.block.clone())))
    }

    /// All the bytes kept, if there are at most `limit` of them.
    pub(crate) fn read_all(&self, spool: &Spool, limit: u64) -> Result<Option<Vec<u8>>, NotKept> {
        if self.len > limit {
            return Ok(None);
        }
        let mut all = Vec::with_capacity(self.len as usize);
        for piece in self.pieces(spool) {
            all.extend_from_slice(&piece?);
        }
        Ok(Some(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_streams_read_back_whole() {
        let spool = Spool::new(Holding::Output).unwrap();
        let (mut a, mut b) = (Spooled::default(), Spooled::default());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut unlimited = None;
        for (i, chunk) in data.chunks(7_000).enumerate() {
            // Two hosts writing in turns share the spool.
            a.push(&spool, chunk, &mut unlimited).unwrap();
            b.push(&spool, &[i as u8], &mut unlimited).unwrap();
        }
        a.finish(&spool).unwrap();
        b.finish(&spool).unwrap();
        let back: Vec<u8> = a.pieces(&spool).flat_map(|p| p.unwrap()).collect();
        assert_eq!(back, data);
        assert_eq!(a.digest(), blake3::hash(&data));
        assert_eq!(a.len, data.len() as u64);
        assert!(!a.cut);
        assert_eq!(b.read_all(&spool, 1 << 20).unwrap().unwrap().len(), 43);
        assert!(a.read_all(&spool, 10).unwrap().is_none());
    }

    #[test]
    fn a_host_keeps_what_its_room_allows_over_both_streams() {
        let spool = Spool::new(Holding::Output).unwrap();
        let (mut out, mut err) = (Spooled::default(), Spooled::default());
        let mut room = Some(100_000);
        for _ in 0..10 {
            out.push(&spool, &[b'o'; 30_000], &mut room).unwrap();
            err.push(&spool, b"e", &mut room).unwrap();
        }
        out.finish(&spool).unwrap();
        err.finish(&spool).unwrap();
        assert_eq!(room, Some(0));
        assert_eq!(out.len + err.len, 100_000);
        assert_eq!((err.len, err.cut), (3, true), "stderr after the cap");
        assert!(out.cut);
        let kept: Vec<u8> = out.pieces(&spool).flat_map(|p| p.unwrap()).collect();
        assert_eq!(kept, vec![b'o'; 99_997]);
    }

    #[test]
    fn a_full_disk_names_the_directory_and_what_to_change() {
        let full = NotKept::new(
            Place::Spool("/tmp/x".into()),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let text = full.to_string();
        for needle in [
            "/tmp/x",
            "No space left on device",
            "TMPDIR",
            "--max-output",
            "--outdir",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(full.reason(), "No space left on device");
        let outdir = NotKept::new(
            Place::Outdir("logs/web01.out".into()),
            io::Error::from_raw_os_error(libc::EIO),
        );
        let text = outdir.to_string();
        assert!(
            text.contains("logs/web01.out") && text.contains("--outdir"),
            "{text}"
        );
    }
}
