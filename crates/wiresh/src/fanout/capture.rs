//! Where each host's output goes while its command runs: prefixed lines
//! to the terminal, files in `--outdir`, or a spool kept for the end
//! (gathering, diffs, JSON).
//!
//! Memory stays bounded whatever the hosts print: lines are held only
//! until their newline (at most [`MAX_LINE`]), and spooled output lives in
//! one temporary file shared by all hosts, with a small block per host in
//! memory.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::cli::print::PrintJob;
use crate::client::Output;

/// A line longer than this is printed in pieces, each with its prefix:
/// holding it whole would let one host's output grow without bound.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes a host's stream keeps in memory before writing them to the spool.
const BLOCK: usize = 64 * 1024;

/// What a finished host may keep in memory; more goes to the spool, so a
/// thousand finished hosts hold a few MiB at most.
const KEEP: usize = 4 * 1024;

/// Size of the pieces read back from the spool.
pub(crate) const PIECE: usize = 64 * 1024;

/// One temporary file (deleted already) that every host appends to.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    end: AtomicU64,
}

impl Spool {
    /// A new, empty spool.
    pub(crate) fn new() -> io::Result<Arc<Spool>> {
        Ok(Arc::new(Spool {
            file: tempfile::tempfile()?,
            end: AtomicU64::new(0),
        }))
    }

    /// Appends `data`; returns where it starts.
    pub(crate) fn append(&self, data: &[u8]) -> io::Result<u64> {
        let at = self.end.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.file.write_all_at(data, at)?;
        Ok(at)
    }

    /// Reads `len` bytes at `at`.
    pub(crate) fn read(&self, at: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }
}

/// One stream (stdout or stderr) of one host, spooled: its bytes, their
/// count and their BLAKE3.
#[derive(Debug, Default)]
pub(crate) struct Spooled {
    hasher: blake3::Hasher,
    /// Bytes in all.
    pub(crate) len: u64,
    segments: Vec<(u64, usize)>,
    block: Vec<u8>,
}

impl Spooled {
    fn push(&mut self, spool: &Spool, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        self.block.extend_from_slice(data);
        if self.block.len() >= BLOCK {
            self.flush(spool)?;
        }
        Ok(())
    }

    fn flush(&mut self, spool: &Spool) -> io::Result<()> {
        if !self.block.is_empty() {
            let at = spool.append(&self.block)?;
            self.segments.push((at, self.block.len()));
            self.block = Vec::new();
        }
        Ok(())
    }

    fn finish(&mut self, spool: &Spool) -> io::Result<()> {
        if self.block.len() > KEEP {
            self.flush(spool)?;
        }
        self.block.shrink_to_fit();
        Ok(())
    }

    /// The BLAKE3 of everything pushed.
    pub(crate) fn digest(&self) -> blake3::Hash {
        self.hasher.finalize()
    }

    /// The bytes, in pieces of at most [`PIECE`].
    pub(crate) fn pieces<'a>(
        &'a self,
        spool: &'a Spool,
    ) -> impl Iterator<Item = io::Result<Vec<u8>>> + 'a {
        let on_disk = self.segments.iter().flat_map(move |&(at, len)| {
            (0..len)
                .step_by(PIECE)
                .map(move |off| spool.read(at + off as u64, PIECE.min(len - off)))
        });
        on_disk.chain((!self.block.is_empty()).then(|| Ok(self.block.clone())))
    }

    /// All the bytes, if there are at most `limit` of them.
    pub(crate) fn read_all(&self, spool: &Spool, limit: u64) -> io::Result<Option<Vec<u8>>> {
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

/// Cuts a stream into whole lines, each prefixed with its host.
#[derive(Debug)]
pub(crate) struct Lines {
    prefix: Arc<[u8]>,
    partial: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(prefix: Arc<[u8]>) -> Lines {
        Lines {
            prefix,
            partial: Vec::new(),
        }
    }

    /// The complete lines `data` finishes, prefixed; the rest is held.
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.partial);
            out.extend_from_slice(&rest[..=newline]);
            rest = &rest[newline + 1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE {
            out.extend_from_slice(&self.prefix);
            out.extend(self.partial.drain(..MAX_LINE));
            out.push(b'\n');
        }
        out
    }

    /// The last, unfinished line, prefixed and ended.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.to_vec();
        out.append(&mut self.partial);
        out.push(b'\n');
        out
    }
}

/// Where one host's output goes.
#[derive(Debug)]
pub(crate) enum Capture {
    /// Prefixed lines to the printer (stdout, stderr).
    Live {
        printer: mpsc::Sender<PrintJob>,
        out: Lines,
        err: Lines,
    },
    /// `DIR/HOST.out` and `DIR/HOST.err`.
    Files { out: File, err: File },
    /// Kept in the spool for the end (stdout, stderr).
    Spool {
        spool: Arc<Spool>,
        streams: Box<(Spooled, Spooled)>,
    },
}

/// What a host printed, once it has finished.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// Bytes of stdout and stderr.
    pub(crate) out_len: u64,
    pub(crate) err_len: u64,
    /// Both streams, when they were spooled.
    pub(crate) spooled: Option<(Spooled, Spooled)>,
}

impl Capture {
    /// Output files for `name` in `dir`, created empty now.
    pub(crate) fn files(dir: &Path, name: &str) -> io::Result<Capture> {
        // A name with a `/` must not reach outside DIR.
        let base = name.replace('/', "_");
        Ok(Capture::Files {
            out: File::create(dir.join(format!("{base}.out")))?,
            err: File::create(dir.join(format!("{base}.err")))?,
        })
    }

    /// Takes one chunk. Fails when the printer is gone (local stdout was
    /// closed) or a file cannot be written.
    pub(crate) async fn take(&mut self, chunk: Output, counts: &mut (u64, u64)) -> io::Result<()> {
        let (is_out, data) = match &chunk {
            Output::Stdout(b) => (true, b),
            Output::Stderr(b) => (false, b),
        };
        if is_out {
            counts.0 += data.len() as u64;
        } else {
            counts.1 += data.len() as u64;
        }
        match self {
            Capture::Live { printer, out, err } => {
                let lines = if is_out {
                    out.push(data)
                } else {
                    err.push(data)
                };
                print(printer, is_out, lines).await
            }
            Capture::Files { out, err } => {
                let file = if is_out { out } else { err };
                file.write_all(data)
            }
            Capture::Spool { spool, streams } => {
                let stream = if is_out {
                    &mut streams.0
                } else {
                    &mut streams.1
                };
                stream.push(spool, data)
            }
        }
    }

    /// Ends the host's output: unfinished lines are printed, files
    /// flushed, the spool's tails put away.
    pub(crate) async fn finish(self, counts: (u64, u64)) -> io::Result<Captured> {
        let mut captured = Captured {
            out_len: counts.0,
            err_len: counts.1,
            spooled: None,
        };
        match self {
            Capture::Live {
                printer,
                mut out,
                mut err,
            } => {
                print(&printer, true, out.finish()).await?;
                print(&printer, false, err.finish()).await?;
            }
            Capture::Files { mut out, mut err } => {
                out.flush()?;
                err.flush()?;
            }
            Capture::Spool { spool, mut streams } => {
                streams.0.finish(&spool)?;
                streams.1.finish(&spool)?;
                captured.spooled = Some(*streams);
            }
        }
        Ok(captured)
    }
}

/// Hands bytes to the printer, all in one job so no other host's line
/// can come between them.
pub(crate) async fn print(
    printer: &mpsc::Sender<PrintJob>,
    stdout: bool,
    bytes: Vec<u8>,
) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let bytes = Bytes::from(bytes);
    let job = PrintJob::Output(if stdout {
        Output::Stdout(bytes)
    } else {
        Output::Stderr(bytes)
    });
    printer
        .send(job)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "local output closed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_and_prefixed() {
        let mut lines = Lines::new(Arc::from(&b"h1: "[..]));
        assert_eq!(lines.push(b"a\nb"), b"h1: a\n");
        assert_eq!(lines.push(b"c"), b"");
        assert_eq!(lines.push(b"\n\nd"), b"h1: bc\nh1: \n");
        assert_eq!(lines.finish(), b"h1: d\n");
        assert_eq!(lines.finish(), b"");
        let long = vec![b'x'; MAX_LINE + 10];
        let out = lines.push(&long);
        assert_eq!(out.len(), 4 + MAX_LINE + 1, "a too-long line is cut");
        assert_eq!(lines.finish().len(), 4 + 10 + 1);
    }

    #[test]
    fn spooled_streams_read_back_whole() {
        let spool = Spool::new().unwrap();
        let (mut a, mut b) = (Spooled::default(), Spooled::default());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (i, chunk) in data.chunks(7_000).enumerate() {
            // Two hosts writing in turns share the spool.
            a.push(&spool, chunk).unwrap();
            b.push(&spool, &[i as u8]).unwrap();
        }
        a.finish(&spool).unwrap();
        b.finish(&spool).unwrap();
        let back: Vec<u8> = a.pieces(&spool).flat_map(|p| p.unwrap()).collect();
        assert_eq!(back, data);
        assert_eq!(a.digest(), blake3::hash(&data));
        assert_eq!(a.len, data.len() as u64);
        assert_eq!(b.read_all(&spool, 1 << 20).unwrap().unwrap().len(), 43);
        assert!(a.read_all(&spool, 10).unwrap().is_none());
    }
}
