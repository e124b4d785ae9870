//! Where each host's output goes while its command runs: prefixed lines
//! to the terminal, files in `--outdir`, or the spool kept for the end
//! (gathering, diffs, JSON), at most `--max-output` of it per host.
//!
//! Memory stays bounded whatever the hosts print: lines are held only
//! until their newline (at most [`MAX_LINE`]), and spooled output lives in
//! one temporary file shared by all hosts, with a small block per host in
//! memory ([`super::spool`]). Lines bound for a terminal go through a
//! [`TerminalFilter`] unless `--raw`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::spool::{NotKept, Place, Spool, Spooled};
use crate::cli::print::PrintJob;
use crate::client::Output;
use crate::untrusted::TerminalFilter;

/// A line longer than this is printed in pieces, each with its prefix:
/// holding it whole would let one host's output grow without bound.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Why a host's output could not be taken.
#[derive(Debug)]
pub(crate) enum TakeError {
    /// Local stdout was closed (the printer is gone).
    StdoutClosed,
    /// This machine's disk would not keep it.
    NotKept(NotKept),
}

impl From<NotKept> for TakeError {
    fn from(e: NotKept) -> TakeError {
        TakeError::NotKept(e)
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

/// One stream of live output: filtered for a terminal (unless `--raw`
/// or not a terminal), then cut into prefixed lines.
#[derive(Debug)]
pub(crate) struct LiveStream {
    filter: Option<TerminalFilter>,
    lines: Lines,
}

impl LiveStream {
    /// Lines prefixed with `prefix`, filtered when `filter`.
    pub(crate) fn new(prefix: Arc<[u8]>, filter: bool) -> LiveStream {
        LiveStream {
            filter: filter.then(TerminalFilter::new),
            lines: Lines::new(prefix),
        }
    }

    /// The complete lines `data` finishes.
    fn push(&mut self, data: &[u8]) -> Vec<u8> {
        match &mut self.filter {
            Some(filter) => {
                let data = filter.push(data);
                self.lines.push(&data)
            }
            None => self.lines.push(data),
        }
    }

    /// Whatever is left, as a last line.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = match &mut self.filter {
            Some(filter) => {
                let rest = filter.finish();
                self.lines.push(&rest)
            }
            None => Vec::new(),
        };
        out.extend(self.lines.finish());
        out
    }
}

/// Where one host's output goes.
#[derive(Debug)]
pub(crate) enum Capture {
    /// Prefixed lines to the printer (stdout, stderr).
    Live {
        printer: mpsc::Sender<PrintJob>,
        out: LiveStream,
        err: LiveStream,
    },
    /// `DIR/HOST.out` and `DIR/HOST.err`.
    Files {
        out: (File, PathBuf),
        err: (File, PathBuf),
    },
    /// Kept in the spool for the end (stdout, stderr), as much as `room`
    /// (bytes this host may still keep; `None`: no limit) allows.
    Spool {
        spool: Arc<Spool>,
        streams: Box<(Spooled, Spooled)>,
        room: Option<u64>,
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

impl Captured {
    /// Whether `--max-output` cut what was kept of this host's output.
    pub(crate) fn truncated(&self) -> bool {
        self.spooled
            .as_ref()
            .is_some_and(|(out, err)| out.cut || err.cut)
    }
}

impl Capture {
    /// Output files for `name` in `dir`, created empty now.
    pub(crate) fn files(dir: &Path, name: &str) -> Result<Capture, NotKept> {
        // A name with a `/` must not reach outside DIR.
        let base = name.replace('/', "_");
        let create = |ext: &str| {
            let path = dir.join(format!("{base}.{ext}"));
            match File::create(&path) {
                Ok(file) => Ok((file, path)),
                Err(e) => Err(NotKept::new(Place::Outdir(path), e)),
            }
        };
        Ok(Capture::Files {
            out: create("out")?,
            err: create("err")?,
        })
    }

    /// Takes one chunk. Fails when the printer is gone (local stdout was
    /// closed) or a file cannot be written.
    pub(crate) async fn take(
        &mut self,
        chunk: Output,
        counts: &mut (u64, u64),
    ) -> Result<(), TakeError> {
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
                let (file, path) = if is_out { out } else { err };
                file.write_all(data)
                    .map_err(|e| NotKept::new(Place::Outdir(path.clone()), e).into())
            }
            Capture::Spool {
                spool,
                streams,
                room,
            } => {
                let stream = if is_out {
                    &mut streams.0
                } else {
                    &mut streams.1
                };
                Ok(stream.push(spool, data, room)?)
            }
        }
    }

    /// Ends the host's output: unfinished lines are printed, files
    /// flushed, the spool's tails put away.
    pub(crate) async fn finish(self, counts: (u64, u64)) -> Result<Captured, TakeError> {
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
                for (file, path) in [&mut out, &mut err] {
                    file.flush()
                        .map_err(|e| NotKept::new(Place::Outdir(path.clone()), e))?;
                }
            }
            Capture::Spool {
                spool, mut streams, ..
            } => {
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
) -> Result<(), TakeError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let bytes = Bytes::from(bytes);
    let job = PrintJob::Output(if stdout {
        Output::Stdout(bytes)
    } else {
        Output::Stderr(bytes)
    });
    printer.send(job).await.map_err(|_| TakeError::StdoutClosed)
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
    fn live_lines_for_a_terminal_are_filtered_then_prefixed() {
        let mut shown = LiveStream::new(Arc::from(&b"h: "[..]), true);
        assert_eq!(
            shown.push(b"\x1b[31mred\x1b[0m \x1b]0;t\x07\nnext\x1b"),
            b"h: \x1b[31mred\x1b[0m \\x1b]0;t\\x07\n"
        );
        assert_eq!(shown.finish(), b"h: next\\x1b\n");
        let mut raw = LiveStream::new(Arc::from(&b"h: "[..]), false);
        assert_eq!(raw.push(b"\x1b]0;t\x07\n"), b"h: \x1b]0;t\x07\n");
    }
}
