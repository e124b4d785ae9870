//! A legacy command's output on its way to the client: collected (a head
//! in memory, the rest spooled to an unlinked temporary file), hashed, and
//! sent as one reply: the header with its length, then stdout, then stderr.

use std::io::{self, SeekFrom};

use md5::{Digest, Md5};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time;
use wiresh_proto::legacy::{encode_reply_header, LegacyHeader};

use super::encoding::FromUtf8;
use crate::defaults::{LEGACY_MAX_OUTPUT, LEGACY_SEND_STALL};
use crate::home::hex;

/// The `filename` the server puts in every reply header. The original sent
/// the placeholder `"xxxxx"`; the payload is a command's output, not a
/// file, and `-` is the usual name for standard output.
pub const REPLY_FILENAME: &str = "-";

/// Largest single read from a command's pipe or from a spool file, and
/// largest single socket write when sending a reply.
pub(super) const CHUNK: usize = 256 * 1024;

/// A reply whose header and payload together are at most this big, and
/// all in memory, goes out in a single write.
const COALESCE: usize = 64 * 1024;

/// Which output pipe bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// One output stream as it is collected: a head in memory and, once the
/// memory budget is spent, the rest in an unlinked temporary file.
#[derive(Debug, Default)]
struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    file_len: u64,
    last_byte: Option<u8>,
}

impl Spool {
    fn len(&self) -> u64 {
        self.mem.len() as u64 + self.file_len
    }

    async fn append(&mut self, data: &[u8], in_memory: bool) -> io::Result<()> {
        if self.file.is_none() && in_memory {
            self.mem.extend_from_slice(data);
        } else {
            let file = match &mut self.file {
                Some(file) => file,
                None => {
                    let file = tokio::task::spawn_blocking(tempfile::tempfile)
                        .await
                        .map_err(io::Error::other)??;
                    self.file.insert(File::from_std(file))
                }
            };
            file.write_all(data).await?;
            self.file_len += data.len() as u64;
        }
        if let Some(&b) = data.last() {
            self.last_byte = Some(b);
        }
        Ok(())
    }

    /// Rewinds the spool file for reading; the data written so far is
    /// flushed first (tokio writes files in the background).
    async fn rewind(&mut self) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush().await?;
            file.seek(SeekFrom::Start(0)).await?;
        }
        Ok(())
    }
}

/// A command's output while it runs: both streams, a shared memory budget,
/// and the md5 of stdout so far (stderr is hashed at the end, because the
/// payload is stdout then stderr while the two arrive interleaved).
pub(super) struct Output {
    stdout: Spool,
    stderr: Spool,
    threshold: usize,
    stdout_md5: Md5,
    /// Set when the output went over [`LEGACY_MAX_OUTPUT`] or could not be spooled:
    /// later bytes are read (so the command never blocks) and dropped.
    discarding: bool,
    /// With `--legacy-encoding`: the output of each stream, turned from
    /// UTF-8 into that encoding as it arrives (stdout, stderr).
    encode: Option<(FromUtf8, FromUtf8)>,
    /// That encoding, for wiresh's own note.
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl Output {
    pub fn new(threshold: usize, encoding: Option<&'static encoding_rs::Encoding>) -> Self {
        Output {
            stdout: Spool::default(),
            stderr: Spool::default(),
            threshold,
            stdout_md5: Md5::new(),
            discarding: false,
            encode: encoding.map(|e| (FromUtf8::new(e), FromUtf8::new(e))),
            encoding,
        }
    }

    /// Adds bytes from one stream. Returns why the command must be killed
    /// when it produced more than can be kept.
    pub async fn push(&mut self, stream: Stream, data: &[u8]) -> Option<String> {
        match &mut self.encode {
            Some((out, err)) => {
                let encoded = match stream {
                    Stream::Stdout => out.push(data, false),
                    Stream::Stderr => err.push(data, false),
                };
                self.push_bytes(stream, &encoded).await
            }
            None => self.push_bytes(stream, data).await,
        }
    }

    /// Adds bytes, already in the answer's encoding, to one stream.
    async fn push_bytes(&mut self, stream: Stream, data: &[u8]) -> Option<String> {
        if self.discarding {
            return None;
        }
        if self.stdout.len() + self.stderr.len() + data.len() as u64 > LEGACY_MAX_OUTPUT {
            self.discarding = true;
            return Some(format!(
                "output exceeded {LEGACY_MAX_OUTPUT} bytes, so only the first bytes are kept; \
                 the command's process group was killed"
            ));
        }
        let in_memory =
            self.stdout.mem.len() + self.stderr.mem.len() + data.len() <= self.threshold;
        let spool = match stream {
            Stream::Stdout => {
                self.stdout_md5.update(data);
                &mut self.stdout
            }
            Stream::Stderr => &mut self.stderr,
        };
        if let Err(e) = spool.append(data, in_memory).await {
            self.discarding = true;
            return Some(format!(
                "cannot spool the output to a temporary file ({e}); \
                 the command's process group was killed"
            ));
        }
        None
    }

    /// Completes the output: appends the note saying why the command was
    /// ended early (if it was; `wiresh: ` and a newline are added) to
    /// stderr, hashes, and builds the reply.
    pub async fn finish(mut self, ended_early: Option<String>) -> io::Result<Reply> {
        if let Some((mut out, mut err)) = self.encode.take() {
            // What the encoders held back (half a character at the end).
            let (out_tail, err_tail) = (out.push(&[], true), err.push(&[], true));
            self.push_bytes(Stream::Stdout, &out_tail).await;
            self.push_bytes(Stream::Stderr, &err_tail).await;
        }
        if let Some(why) = &ended_early {
            let last = self.stderr.last_byte.or(self.stdout.last_byte);
            let sep = if matches!(last, None | Some(b'\n')) {
                ""
            } else {
                "\n"
            };
            let note = format!("{sep}wiresh: {why}\n");
            let note = match self.encoding {
                Some(encoding) => encoding.encode(&note).0.into_owned(),
                None => note.into_bytes(),
            };
            let in_memory = true; // a few bytes; appended to the file if there is one
            self.stderr.append(&note, in_memory).await?;
        }
        let mut md5 = self.stdout_md5;
        md5.update(&self.stderr.mem);
        self.stderr.rewind().await?;
        if let Some(file) = &mut self.stderr.file {
            let mut buf = vec![0u8; CHUNK];
            let mut left = self.stderr.file_len;
            while left > 0 {
                let n = read_some(file, &mut buf, left).await?;
                md5.update(&buf[..n]);
                left -= n as u64;
            }
        }
        self.stdout.rewind().await?;
        self.stderr.rewind().await?;
        Ok(Reply {
            header: LegacyHeader {
                total_size: self.stdout.len() + self.stderr.len(),
                md5: hex(&md5.finalize()),
                filename: REPLY_FILENAME.to_string(),
            },
            stdout: self.stdout,
            stderr: self.stderr,
            ended_early,
        })
    }
}

/// Reads at most `left` bytes (and at least one) into `buf`; a spool file
/// that ends early was tampered with, which is an error.
async fn read_some(file: &mut File, buf: &mut [u8], left: u64) -> io::Result<usize> {
    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    match file.read(&mut buf[..want]).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "spool file shorter than what was written to it",
        )),
        n => Ok(n),
    }
}

/// A finished command's answer, ready to send.
pub(super) struct Reply {
    pub header: LegacyHeader,
    stdout: Spool,
    stderr: Spool,
    /// Why the command was killed before it ended by itself, if it was.
    pub ended_early: Option<String>,
}

impl Reply {
    pub fn spooled(&self) -> bool {
        self.stdout.file.is_some() || self.stderr.file.is_some()
    }
}

/// Sends a reply: the header with its length in one write (together with
/// the payload when it is small), then stdout, then stderr.
pub(super) async fn send_reply(socket: &mut TcpStream, mut reply: Reply) -> io::Result<()> {
    let mut head = encode_reply_header(&reply.header);
    let in_memory = !reply.spooled();
    if in_memory && head.len() as u64 + reply.header.total_size <= COALESCE as u64 {
        head.extend_from_slice(&reply.stdout.mem);
        head.extend_from_slice(&reply.stderr.mem);
        return write_timed(socket, &head).await;
    }
    write_timed(socket, &head).await?;
    let mut buf = Vec::new();
    for spool in [&mut reply.stdout, &mut reply.stderr] {
        write_timed(socket, &spool.mem).await?;
        if let Some(file) = &mut spool.file {
            buf.resize(CHUNK, 0);
            let mut left = spool.file_len;
            while left > 0 {
                let n = read_some(file, &mut buf, left).await?;
                write_timed(socket, &buf[..n]).await?;
                left -= n as u64;
            }
        }
    }
    Ok(())
}

/// Writes all of `data`, failing if the client takes no bytes for
/// [`LEGACY_SEND_STALL`].
async fn write_timed(socket: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(CHUNK) {
        time::timeout(LEGACY_SEND_STALL, socket.write_all(chunk))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {LEGACY_SEND_STALL:?}"),
                )
            })??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn contents(spool: &mut Spool) -> Vec<u8> {
        let mut all = spool.mem.clone();
        if let Some(file) = &mut spool.file {
            file.read_to_end(&mut all).await.unwrap();
        }
        all
    }

    #[tokio::test]
    async fn spools_past_the_threshold_and_hashes_stdout_then_stderr() {
        let mut output = Output::new(10, None);
        assert!(output.push(Stream::Stderr, b"err1-").await.is_none());
        assert!(output.push(Stream::Stdout, b"out1-").await.is_none());
        // Over the shared budget of 10: both streams go on disk from here.
        assert!(output.push(Stream::Stdout, b"out2-").await.is_none());
        assert!(output.push(Stream::Stderr, b"err2").await.is_none());
        let mut reply = output.finish(None).await.unwrap();
        assert!(reply.spooled());
        assert_eq!(reply.stdout.mem, b"out1-");
        assert_eq!(reply.stderr.mem, b"err1-");
        let payload = [
            contents(&mut reply.stdout).await,
            contents(&mut reply.stderr).await,
        ]
        .concat();
        assert_eq!(payload, b"out1-out2-err1-err2");
        assert_eq!(reply.header.total_size, payload.len() as u64);
        assert_eq!(reply.header.md5, hex(&Md5::digest(&payload)));
    }

    #[tokio::test]
    async fn a_note_says_why_a_command_ended_early() {
        let mut output = Output::new(1024, None);
        output.push(Stream::Stdout, b"partial").await;
        let mut reply = output
            .finish(Some(
                "command timed out after 1s; its group was killed".into(),
            ))
            .await
            .unwrap();
        let err = contents(&mut reply.stderr).await;
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "\nwiresh: command timed out after 1s; its group was killed\n"
        );
    }
}
