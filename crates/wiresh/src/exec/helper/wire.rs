//! What the server and its spawn helper say to each other: one message per
//! `SOCK_SEQPACKET` datagram, descriptors beside it (`SCM_RIGHTS`).
//!
//! The encoding is the simplest that carries bytes that need not be UTF-8
//! (arguments, environment, paths): a tag byte, then fields in order,
//! numbers as little-endian `u32`/`i32`, byte strings and lists as a
//! `u32` count and their contents. Both ends are the same binary, so
//! there is no versioning. A message is at most [`MAX_REQUEST`] or
//! [`MAX_REPLY`] bytes: the sender refuses a longer one ([`TooLarge`]), the
//! receiver reads into a buffer of that size and refuses what was cut
//! short, and every count is checked against the bytes that are left
//! before anything is taken, so nothing is allocated past the message.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::exec::spec::Resolved;

/// The most bytes a spawn request takes: what fits in one datagram of a
/// Unix socket's default send buffer (`net.core.wmem_default`, 208 KiB),
/// with room to spare. A command whose arguments and environment need
/// more starts from the server's own threads, as without a helper.
pub(crate) const MAX_REQUEST: usize = 192 * 1024;

/// The most bytes a message from the helper takes.
pub(crate) const MAX_REPLY: usize = 4 * 1024;

/// The most bytes of an error's text the helper sends.
const MAX_ERROR_TEXT: usize = 1024;

/// How a command's standard streams come, as descriptors beside the
/// request, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// Pipes: stdin's (when `stdin`; else `/dev/null`), stdout's, stderr's.
    Pipes { stdin: bool },
    /// One terminal for all three, which becomes the controlling terminal.
    Terminal,
}

impl Stdio {
    /// How many descriptors come with the request.
    pub(crate) fn descriptors(self) -> usize {
        match self {
            Stdio::Pipes { stdin: true } => 3,
            Stdio::Pipes { stdin: false } => 2,
            Stdio::Terminal => 1,
        }
    }
}

/// Start a command: the only request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpawnRequest {
    /// Names the request in its answer: several are in flight at once,
    /// and answered in the order their commands started.
    pub id: u32,
    pub command: Resolved,
    pub stdio: Stdio,
    /// The `cgroup.procs` the command writes itself into before it runs.
    pub cgroup: Option<Vec<u8>>,
}

/// What the helper says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Up and listening (its first message).
    Ready,
    /// Request `id`'s command started as `pid`; its pidfd comes beside.
    Started { id: u32, pid: u32 },
    /// Request `id`'s command did not start: the OS error number (0 when
    /// none) and the text.
    Failed { id: u32, errno: i32, text: String },
    /// Child `pid` exited with this wait status (as `waitpid` gives it);
    /// sent before the helper reaps it.
    Exited { pid: u32, status: i32 },
}

/// A message over its size limit, not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// Why a received message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed message from the spawn helper's peer: {}",
            self.0
        )
    }
}

const SPAWN: u8 = 1;
const READY: u8 = 2;
const STARTED: u8 = 3;
const FAILED: u8 = 4;
const EXITED: u8 = 5;

impl SpawnRequest {
    /// The request's bytes; [`TooLarge`] past [`MAX_REQUEST`].
    pub(crate) fn encode(&self) -> Result<Vec<u8>, TooLarge> {
        let mut w = Writer(vec![SPAWN]);
        w.u32(self.id);
        let c = &self.command;
        w.bytes(c.program.as_os_str().as_bytes());
        w.bytes(c.arg0.as_bytes());
        w.count(c.args.len());
        for arg in &c.args {
            w.bytes(arg.as_bytes());
        }
        w.u8(c.clear_env.into());
        w.count(c.env.len());
        for (k, v) in &c.env {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
        w.optional(c.cwd.as_ref().map(|d| d.as_os_str().as_bytes()));
        w.u8(match self.stdio {
            Stdio::Pipes { stdin: false } => 0,
            Stdio::Pipes { stdin: true } => 1,
            Stdio::Terminal => 2,
        });
        w.optional(self.cgroup.as_deref());
        w.finish(MAX_REQUEST)
    }

    /// The id of a request that may not decode whole, to answer it by.
    pub(crate) fn id_of(bytes: &[u8]) -> Option<u32> {
        let mut r = Reader(bytes);
        (r.u8().ok()? == SPAWN).then(|| r.u32().ok()).flatten()
    }

    /// A request from its bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<SpawnRequest, Malformed> {
        let mut r = Reader(bytes);
        if r.u8()? != SPAWN {
            return Err(Malformed("not a spawn request"));
        }
        let id = r.u32()?;
        let program = PathBuf::from(r.os_string()?);
        let arg0 = r.os_string()?;
        let mut args = Vec::new();
        for _ in 0..r.u32()? {
            args.push(r.os_string()?);
        }
        let clear_env = r.flag()?;
        let mut env = Vec::new();
        for _ in 0..r.u32()? {
            env.push((r.os_string()?, r.os_string()?));
        }
        let cwd = r.optional()?.map(|d| PathBuf::from(OsString::from_vec(d)));
        let stdio = match r.u8()? {
            0 => Stdio::Pipes { stdin: false },
            1 => Stdio::Pipes { stdin: true },
            2 => Stdio::Terminal,
            _ => return Err(Malformed("unknown stdio")),
        };
        let cgroup = r.optional()?;
        r.end()?;
        Ok(SpawnRequest {
            id,
            command: Resolved {
                program,
                arg0,
                args,
                clear_env,
                env,
                cwd,
            },
            stdio,
            cgroup,
        })
    }
}

impl Reply {
    /// The reply's bytes (an error's text is cut to fit).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            Reply::Ready => w.u8(READY),
            Reply::Started { id, pid } => {
                w.u8(STARTED);
                w.u32(*id);
                w.u32(*pid);
            }
            Reply::Failed { id, errno, text } => {
                w.u8(FAILED);
                w.u32(*id);
                w.u32(*errno as u32);
                let mut end = text.len().min(MAX_ERROR_TEXT);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                w.bytes(&text.as_bytes()[..end]);
            }
            Reply::Exited { pid, status } => {
                w.u8(EXITED);
                w.u32(*pid);
                w.u32(*status as u32);
            }
        }
        w.finish(MAX_REPLY).expect("a reply fits")
    }

    /// A reply from its bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Reply, Malformed> {
        let mut r = Reader(bytes);
        let reply = match r.u8()? {
            READY => Reply::Ready,
            STARTED => Reply::Started {
                id: r.u32()?,
                pid: r.u32()?,
            },
            FAILED => Reply::Failed {
                id: r.u32()?,
                errno: r.u32()? as i32,
                text: String::from_utf8_lossy(r.bytes()?).into_owned(),
            },
            EXITED => Reply::Exited {
                pid: r.u32()?,
                status: r.u32()? as i32,
            },
            _ => return Err(Malformed("unknown reply")),
        };
        r.end()?;
        Ok(reply)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A count; one past `u32` can never fit a message anyway.
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }

    fn optional(&mut self, b: Option<&[u8]>) {
        self.u8(b.is_some().into());
        if let Some(b) = b {
            self.bytes(b);
        }
    }

    fn finish(self, limit: usize) -> Result<Vec<u8>, TooLarge> {
        match self.0.len() <= limit {
            true => Ok(self.0),
            false => Err(TooLarge),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.0.len() {
            return Err(Malformed("a length past the end of the message"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn flag(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("a flag neither 0 nor 1")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn os_string(&mut self) -> Result<OsString, Malformed> {
        Ok(OsString::from_vec(self.bytes()?.to_vec()))
    }

    fn optional(&mut self) -> Result<Option<Vec<u8>>, Malformed> {
        match self.flag()? {
            true => Ok(Some(self.bytes()?.to_vec())),
            false => Ok(None),
        }
    }

    fn end(&self) -> Result<(), Malformed> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(Malformed("bytes after the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SpawnRequest {
        SpawnRequest {
            id: 7,
            command: Resolved {
                program: "/bin/sh".into(),
                arg0: "sh".into(),
                args: vec!["-c".into(), OsString::from_vec(b"echo \xff".to_vec())],
                clear_env: true,
                env: vec![("HOME".into(), "/root".into()), ("A".into(), "".into())],
                cwd: Some("/tmp".into()),
            },
            stdio: Stdio::Pipes { stdin: true },
            cgroup: Some(b"/sys/fs/cgroup/x/cgroup.procs".to_vec()),
        }
    }

    #[test]
    fn requests_and_replies_come_back_as_sent() {
        let sent = request();
        assert_eq!(SpawnRequest::decode(&sent.encode().unwrap()), Ok(sent));
        let bare = SpawnRequest {
            id: u32::MAX,
            stdio: Stdio::Terminal,
            cgroup: None,
            command: Resolved {
                cwd: None,
                ..request().command
            },
        };
        assert_eq!(SpawnRequest::decode(&bare.encode().unwrap()), Ok(bare));
        for reply in [
            Reply::Ready,
            Reply::Started {
                id: 1,
                pid: 4_194_303,
            },
            Reply::Failed {
                id: 2,
                errno: 2,
                text: "No such file".into(),
            },
            Reply::Exited { pid: 7, status: 9 },
        ] {
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
        }
    }

    #[test]
    fn a_request_over_the_limit_is_refused_not_sent() {
        let mut big = request();
        big.command.args = vec![OsString::from("x".repeat(MAX_REQUEST))];
        assert_eq!(big.encode(), Err(TooLarge));
        // Just under fits.
        let overhead = request().encode().unwrap().len();
        let mut fits = request();
        let room = MAX_REQUEST - overhead + fits.command.args[1].len() - 8;
        fits.command.args[1] = OsString::from("y".repeat(room));
        assert!(fits.encode().is_ok_and(|b| b.len() <= MAX_REQUEST));
    }

    #[test]
    fn counts_past_the_message_are_refused_before_any_allocation() {
        let mut bytes = request().encode().unwrap();
        // The program's length, claiming 4 GiB.
        bytes[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SpawnRequest::decode(&bytes).is_err());
        // An argument count of 4 billion with one argument's bytes behind.
        let mut w = Writer(vec![SPAWN]);
        w.u32(1);
        w.bytes(b"/bin/true");
        w.bytes(b"true");
        w.u32(u32::MAX);
        w.bytes(b"x");
        assert!(SpawnRequest::decode(&w.0).is_err());
        // Cut short anywhere, or with bytes after the end.
        let whole = request().encode().unwrap();
        for cut in 0..whole.len() {
            assert!(SpawnRequest::decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(SpawnRequest::decode(&longer).is_err());
        assert!(Reply::decode(&[99]).is_err());
    }

    #[test]
    fn an_error_text_is_cut_to_fit_on_a_character_boundary() {
        let text = "é".repeat(MAX_REPLY);
        let bytes = Reply::Failed {
            id: 0,
            errno: 0,
            text,
        }
        .encode();
        assert!(bytes.len() <= MAX_REPLY);
        let Ok(Reply::Failed { text, .. }) = Reply::decode(&bytes) else {
            panic!("not a failure")
        };
        assert!(text.len() <= MAX_ERROR_TEXT && text.chars().all(|c| c == 'é'));
    }
}
