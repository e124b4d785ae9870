//! `wiresh exec --legacy` and `wiresh shell --legacy`: a client for any
//! server of the original protocol (`shared/legacy/server.py`, or wiresh's
//! own legacy listener).
//!
//! Compared with the original `client.py`, it streams the payload to its
//! output as it arrives (memory stays bounded whatever the size), writes
//! the bytes unchanged instead of re-decoding them, verifies `md5` when the
//! server sends a real one, bounds every size read from the wire, and never
//! waits forever on a peer that stopped sending.

use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time;
use wiresh_proto::legacy::{
    decode_header, decode_header_len, is_real_md5, LegacyHeader, LegacyHeaderError, LEN_PREFIX,
    MAX_COMMAND_LEN,
};

use super::encoding::{encode_command, ToUtf8};
use super::socket::set_keepalive;
use crate::addr::{AddrError, Target};
use crate::home::hex;
use wiresh_proto::legacy::DEFAULT_LEGACY_PORT;

/// What can go wrong talking to a legacy server. The messages are meant to
/// be shown to a user as they are.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The server's address is not `HOST[:PORT]`.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// The protocol cannot carry this command.
    #[error("{0}")]
    Unsendable(String),
    /// The server cannot be reached, stalled, or the connection broke.
    #[error("{0}")]
    Connection(String),
    /// The server's answer does not follow the protocol.
    #[error("bad answer from the server: {0}")]
    BadAnswer(#[from] LegacyHeaderError),
    /// The output could not be written locally.
    #[error("cannot write the command's output locally: {0}")]
    Output(#[source] std::io::Error),
}

type Result<T> = std::result::Result<T, LegacyError>;

/// Fails with a connection error made of `format!` arguments.
macro_rules! lost {
    ($($arg:tt)*) => {
        return Err(LegacyError::Connection(format!($($arg)*)))
    };
}

/// How long a read may wait for the next byte once an answer has started
/// (and how long sending a command may take) before the connection is
/// declared dead.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest read from the socket while streaming a payload.
const CHUNK: usize = 64 * 1024;

/// What a legacy server answered to one command. The protocol carries no
/// exit status: a complete answer is all there is to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyReply {
    /// Payload bytes received (and written out): stdout then stderr.
    pub total_size: u64,
    /// `Some(true)` when the header's md5 is a real md5 and matches the
    /// payload, `Some(false)` when it does not match (the payload was
    /// damaged, or the server is buggy: warn), `None` when the server sent a
    /// placeholder (the original sends `"xxxxxxxxxxxxxxxxxxx"`).
    pub md5_verified: Option<bool>,
    /// The md5 of the payload as received, in lowercase hex, for a warning
    /// that shows both sides.
    pub md5_actual: String,
    /// The header as the server sent it.
    pub header: LegacyHeader,
}

impl LegacyReply {
    /// The warning to print when the md5 did not match, so every caller
    /// says the same thing: the output was shown, but may be damaged.
    pub fn md5_warning(&self) -> Option<String> {
        (self.md5_verified == Some(false)).then(|| {
            format!(
                "warning: md5 mismatch: the server announced {} but the {} bytes received hash \
                 to {}; the output above may be damaged",
                self.header.md5, self.total_size, self.md5_actual
            )
        })
    }
}

/// A connection to a legacy server; commands run one after another on it.
#[derive(Debug)]
pub struct LegacyClient {
    stream: TcpStream,
    target: String,
    stall_timeout: Duration,
    answer_timeout: Option<Duration>,
    /// Set after an error that left the stream in an unknown position
    /// (mid-header or mid-payload); nothing more can be read from it.
    broken: Option<String>,
    /// The server's text encoding, if not UTF-8 (`--encoding`).
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl LegacyClient {
    /// Connects to `target` (`HOST`, `HOST:PORT`, `IPV6` or `[IPV6]:PORT`;
    /// port 8090 when none is given, as the legacy scripts use), trying each
    /// address the name resolves to, all within `timeout`.
    pub async fn connect(target: &str, timeout: Duration) -> Result<LegacyClient> {
        let parsed = Target::parse(target, DEFAULT_LEGACY_PORT)?;
        let shown = parsed.to_string();
        let Ok(stream) = time::timeout(timeout, connect_any(&parsed)).await else {
            lost!(
                "cannot connect to {shown}: no answer within {timeout:?} \
                 (is a legacy server listening there, and is the port open?)"
            );
        };
        let stream = stream?;
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream);
        Ok(LegacyClient {
            stream,
            target: shown,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            answer_timeout: None,
            broken: None,
            encoding: None,
        })
    }

    /// Sets how long any read may wait for the next byte once an answer has
    /// started arriving, and how long sending a command may take.
    pub fn set_stall_timeout(&mut self, timeout: Duration) {
        self.stall_timeout = timeout;
    }

    /// Sets how long to wait for the first byte of an answer. The legacy
    /// server sends nothing until the command has finished (the header
    /// needs the output's size), so this bounds the command's run time as
    /// seen from here. Default `None`: wait as long as the command runs;
    /// TCP keepalive still notices a server whose machine vanished.
    pub fn set_answer_timeout(&mut self, timeout: Option<Duration>) {
        self.answer_timeout = timeout;
    }

    /// Sets the server's text encoding (a Windows server answers in its
    /// console's code page, such as gbk): commands are sent in it and
    /// answers turned from it into UTF-8. The md5 is still checked on the
    /// bytes as they came. `None`: bytes pass unchanged.
    pub fn set_encoding(&mut self, encoding: Option<&'static encoding_rs::Encoding>) {
        self.encoding = encoding;
    }

    /// The server as `HOST:PORT`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `command` on the server and streams its answer (stdout, then
    /// stderr: the protocol joins them) to `out` as it arrives, with the md5
    /// computed on the way. Returns once exactly `total_size` bytes have
    /// been written to `out`; any error leaves this connection unusable.
    pub async fn run(
        &mut self,
        command: &str,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<LegacyReply> {
        if let Some(why) = &self.broken {
            lost!(
                "the connection to {} is unusable after an earlier error ({why}); reconnect",
                self.target
            );
        }
        let command = match self.encoding {
            Some(encoding) => encode_command(encoding, command)
                .map_err(|e| LegacyError::Unsendable(e.to_string()))?,
            None => command.as_bytes().to_vec(),
        };
        check_command(&command)?;
        let result = self.exchange(&command, out).await;
        if let Err(e) = &result {
            self.broken = Some(e.to_string());
        }
        result
    }

    /// Sends `command` and copies its answer to `out`.
    async fn exchange(
        &mut self,
        command: &[u8],
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<LegacyReply> {
        let (target, stall) = (&self.target, self.stall_timeout);
        // One write: the server takes one recv() as one command.
        match time::timeout(stall, self.stream.write_all(command)).await {
            Err(_) => {
                lost!("sending the command to {target} took over {stall:?}; is the server stuck?")
            }
            Ok(Err(e)) => lost!("cannot send the command to {target}: {e}"),
            Ok(Ok(())) => {}
        }
        let header = self.read_header().await?;
        let total = header.total_size;
        let md5_actual = self.copy_payload(total, out).await?;
        let md5_verified = is_real_md5(&header.md5).then(|| header.md5 == md5_actual);
        Ok(LegacyReply {
            total_size: total,
            md5_verified,
            md5_actual,
            header,
        })
    }

    /// Waits for the answer (as long as the command takes, or the answer
    /// timeout) and reads its header.
    async fn read_header(&mut self) -> Result<LegacyHeader> {
        let target = self.target.clone();
        let mut prefix = [0u8; LEN_PREFIX];
        // The first byte comes when the command is done, however long that takes.
        let first = match self.answer_timeout {
            Some(limit) => match time::timeout(limit, self.stream.read(&mut prefix)).await {
                Ok(read) => read,
                Err(_) => lost!(
                    "no answer from {target} within {limit:?}; the command may still be running there"
                ),
            },
            None => self.stream.read(&mut prefix).await,
        };
        let first = match first {
            Ok(n) => n,
            Err(e) => lost!("connection to {target} lost while the command ran: {e}"),
        };
        if first == 0 {
            lost!(
                "{target} closed the connection without answering; the server may have crashed, \
                 been stopped, or refused the connection (too many clients?)"
            );
        }
        self.read_exact_timed(&mut prefix[first..], "the header length")
            .await?;
        self.not_a_wiresh_server(prefix).await?;
        let header_len = decode_header_len(prefix)?;
        let mut json = vec![0u8; header_len]; // bounded by MAX_HEADER_LEN
        self.read_exact_timed(&mut json, "the header").await?;
        Ok(decode_header(&json)?)
    }

    /// Copies the `total` bytes of the answer's payload to `out` (in
    /// UTF-8 when the server has an encoding of its own); their md5.
    async fn copy_payload(
        &mut self,
        total: u64,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<String> {
        let (target, stall) = (&self.target, self.stall_timeout);
        let mut md5 = Md5::new();
        let mut decode = self.encoding.map(ToUtf8::new);
        let mut buf = vec![0u8; usize::try_from(total).unwrap_or(CHUNK).min(CHUNK)];
        let mut received = 0u64;
        while received < total {
            let want = usize::try_from(total - received)
                .unwrap_or(CHUNK)
                .min(buf.len());
            let n = match time::timeout(stall, self.stream.read(&mut buf[..want])).await {
                Err(_) => lost!(
                    "{target} sent nothing for {stall:?} after {received} of {total} bytes of output; \
                     the answer is incomplete (is the server or the network stuck?)"
                ),
                Ok(Err(e)) => lost!(
                    "connection to {target} lost after {received} of {total} bytes of output; \
                     the answer is incomplete: {e}"
                ),
                Ok(Ok(0)) => lost!(
                    "{target} closed the connection after {received} of {total} bytes of output; \
                     the answer is incomplete (the server may have crashed or been stopped)"
                ),
                Ok(Ok(n)) => n,
            };
            md5.update(&buf[..n]);
            match &mut decode {
                Some(decode) => out.write_all(&decode.push(&buf[..n], false)).await,
                None => out.write_all(&buf[..n]).await,
            }
            .map_err(LegacyError::Output)?;
            received += n as u64;
        }
        if let Some(decode) = &mut decode {
            out.write_all(&decode.push(&[], true))
                .await
                .map_err(LegacyError::Output)?;
        }
        out.flush().await.map_err(LegacyError::Output)?;
        Ok(hex(&md5.finalize()))
    }

    /// Fills `buf`, allowing [`Self::set_stall_timeout`] between bytes.
    /// A wiresh (TLS) server answers a legacy request with a line that
    /// starts `WIRESH-ERROR` (no legacy header length starts with those
    /// bytes: it would be over a gigabyte): says so, and what to do,
    /// rather than that the header length is out of bounds.
    async fn not_a_wiresh_server(&mut self, prefix: [u8; LEN_PREFIX]) -> Result<()> {
        const LINE: &[u8] = b"WIRESH-ERROR";
        if prefix[..] != LINE[..LEN_PREFIX] {
            return Ok(());
        }
        let mut rest = [0u8; LINE.len() - LEN_PREFIX];
        self.read_exact_timed(&mut rest, "the answer").await?;
        if rest[..] != LINE[LEN_PREFIX..] {
            return Ok(()); // and the header length says what is wrong
        }
        lost!(
            "{}: that is a wiresh server (TLS), not a legacy one; drop --legacy",
            self.target
        )
    }

    async fn read_exact_timed(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let (target, stall, len) = (&self.target, self.stall_timeout, buf.len());
        let mut filled = 0;
        while filled < len {
            let n = match time::timeout(stall, self.stream.read(&mut buf[filled..])).await {
                Err(_) => lost!("{target} sent nothing for {stall:?} in the middle of {what}; is the server stuck?"),
                Ok(Err(e)) => lost!("connection to {target} lost while reading {what}: {e}"),
                Ok(Ok(0)) => lost!(
                    "{target} closed the connection after {filled} of the {len} bytes of {what}; \
                     is it really a legacy server?"
                ),
                Ok(Ok(n)) => n,
            };
            filled += n;
        }
        Ok(())
    }
}

/// Refuses commands the protocol cannot carry, before anything is sent.
fn check_command(command: &[u8]) -> Result<()> {
    if command.is_empty() {
        return Err(LegacyError::Unsendable(
            "an empty command cannot be sent with the legacy protocol: the server would read \
             zero bytes as the end of the connection"
                .into(),
        ));
    }
    if command.len() > MAX_COMMAND_LEN {
        return Err(LegacyError::Unsendable(format!(
            "the command is {} bytes, but a legacy server reads at most {MAX_COMMAND_LEN} bytes as \
             one command (a longer one is cut and run as several); shorten it, put it in a script \
             on the server, or use the wiresh protocol",
            command.len()
        )));
    }
    Ok(())
}

/// Connects to the first address of `target` that accepts.
async fn connect_any(target: &Target) -> Result<TcpStream> {
    let shown = target.to_string();
    let addrs: Vec<_> = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => lost!("cannot resolve {:?}: {e}", target.host),
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => lost!(
            "cannot connect to {shown} (is a legacy server listening there? \
             server.py and `wiresh serve --legacy-listen` default to port {DEFAULT_LEGACY_PORT}): {e}"
        ),
        None => lost!("{:?} resolves to no address", target.host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_on_a_real_mismatch() {
        let reply = |md5: &str, verified| LegacyReply {
            total_size: 3,
            md5_verified: verified,
            md5_actual: "900150983cd24fb0d6963f7d28e17f72".into(),
            header: LegacyHeader {
                total_size: 3,
                md5: md5.into(),
                filename: "-".into(),
            },
        };
        assert!(reply("xxxxxxxxxxxxxxxxxxx", None).md5_warning().is_none());
        assert!(reply("900150983cd24fb0d6963f7d28e17f72", Some(true))
            .md5_warning()
            .is_none());
        let warning = reply("00000000000000000000000000000000", Some(false))
            .md5_warning()
            .unwrap();
        assert!(
            warning.contains("00000000000000000000000000000000"),
            "{warning}"
        );
        assert!(
            warning.contains("900150983cd24fb0d6963f7d28e17f72"),
            "{warning}"
        );
    }

    #[test]
    fn refuses_what_the_protocol_cannot_carry() {
        let err = check_command(b"").unwrap_err().to_string();
        assert!(err.contains("empty command"), "{err}");
        check_command("x".repeat(MAX_COMMAND_LEN).as_bytes()).unwrap();
        let err = check_command("x".repeat(MAX_COMMAND_LEN + 1).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("8096"), "{err}");
    }
}
