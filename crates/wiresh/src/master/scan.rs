//! What a relay sees of the frames it moves: their boundaries
//! ([`Scanner`], one per direction) and where the session stands
//! ([`Tracker`]), so that a master knows whether a connection a client
//! leaves is idle, and can be lent again, or must be closed.
//!
//! The bytes themselves pass unchanged: a relay reads only the headers,
//! and bounds them as the codec does before it holds one.

use serde::Deserialize;
use wiresh_proto::codec::LEN_PREFIX;
use wiresh_proto::Limits;

/// Why a relay stopped reading a direction.
#[derive(Debug, thiserror::Error)]
pub(super) enum ScanError {
    /// A header longer than the limit.
    #[error("a frame header of {0} bytes is over the limit")]
    HeaderTooLarge(usize),
    /// A body longer than the limit.
    #[error("a frame body of {0} bytes is over the limit")]
    BodyTooLarge(u64),
    /// A header that is not a JSON object with `type` and `body_len`.
    #[error("a malformed frame header: {0}")]
    BadHeader(String),
}

/// The fields of a header a relay looks at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    body_len: u64,
}

/// The frame boundaries in one direction of a byte stream.
#[derive(Debug)]
pub(super) struct Scanner {
    limits: Limits,
    /// The length prefix and header of the frame begun, as far as seen.
    head: Vec<u8>,
    /// Bytes of the current frame's body still to come.
    body_left: u64,
}

impl Scanner {
    /// A scanner holding frames to `limits`.
    pub(super) fn new(limits: Limits) -> Scanner {
        Scanner {
            limits,
            head: Vec::new(),
            body_left: 0,
        }
    }

    /// Whether the bytes seen end exactly at a frame's end.
    pub(super) fn at_boundary(&self) -> bool {
        self.head.is_empty() && self.body_left == 0
    }

    /// Bytes of the current frame's body still to come: what may be moved
    /// on without being looked at ([`Scanner::skip`]).
    pub(super) fn body_left(&self) -> u64 {
        self.body_left
    }

    /// Records that `len` bytes of the current body went by unseen.
    pub(super) fn skip(&mut self, len: u64) {
        debug_assert!(len <= self.body_left);
        self.body_left -= len.min(self.body_left);
    }

    /// Looks at `bytes`, the next of the stream, calling `on_frame` with
    /// the type of each frame whose header completes in them.
    pub(super) fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_frame: impl FnMut(&str),
    ) -> Result<(), ScanError> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            if self.head.len() < LEN_PREFIX {
                let n = (LEN_PREFIX - self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.head.len() == LEN_PREFIX {
                    // Bounded before any of the header is held.
                    self.header_len()?;
                }
                continue;
            }
            let want = LEN_PREFIX + self.header_len()?;
            let n = (want - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.head.len() == want {
                let head: Head<'_> = serde_json::from_slice(&self.head[LEN_PREFIX..])
                    .map_err(|e| ScanError::BadHeader(e.to_string()))?;
                if head.body_len > self.limits.max_body as u64 {
                    return Err(ScanError::BodyTooLarge(head.body_len));
                }
                on_frame(&head.kind);
                self.body_left = head.body_len;
                self.head.clear();
            }
        }
        Ok(())
    }

    /// The header length of the frame begun (its prefix is complete).
    fn header_len(&self) -> Result<usize, ScanError> {
        let prefix: [u8; LEN_PREFIX] = self.head[..LEN_PREFIX].try_into().expect("4 bytes");
        let len = u32::from_be_bytes(prefix) as usize;
        match len {
            0 => Err(ScanError::BadHeader("a header of 0 bytes".into())),
            len if len > self.limits.max_header => Err(ScanError::HeaderTooLarge(len)),
            len => Ok(len),
        }
    }
}

/// The request a connection is busy with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `exec`, until its `exit` (or the `error` that answers it).
    Exec,
    /// `stat` or `mkdir`, until their `entry`.
    Entry,
    /// `list`, until its `list_end`.
    List,
    /// `put`, until its `transfer_ok`.
    Put,
    /// `get`, until its `file_end`.
    Get,
}

/// Where a relayed session stands, from the frames of both directions:
/// whether the connection is idle, as the server sees it, once the
/// client has gone.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// The request under way, if any.
    pending: Option<Request>,
    /// The client's pings not yet answered.
    pings: u32,
    /// Something was seen that this relay does not follow: the
    /// connection is not lent again.
    lost_track: bool,
}

impl Tracker {
    /// A frame of type `kind` went from the client to the server.
    pub(super) fn client_sent(&mut self, kind: &str) {
        let request = match kind {
            "exec" => Request::Exec,
            "stat" | "mkdir" => Request::Entry,
            "list" => Request::List,
            "put" => Request::Put,
            "get" => Request::Get,
            "ping" => {
                self.pings = self.pings.saturating_add(1);
                return;
            }
            "pong" | "stdin" | "stdin_end" | "cancel" | "resize" | "transfer_start"
            | "file_data" | "file_end" => return,
            // Something newer than this relay, while a request runs: its
            // end still ends the request. Between requests: not followed.
            _ => {
                self.lost_track |= self.pending.is_none();
                return;
            }
        };
        // A second request before the first ended: the server will refuse
        // it and close, and this relay would not know where things stand.
        self.lost_track |= self.pending.is_some();
        self.pending = Some(request);
    }

    /// A frame of type `kind` went from the server to the client.
    pub(super) fn server_sent(&mut self, kind: &str) {
        let ends = match (self.pending, kind) {
            (_, "pong") => {
                self.pings = self.pings.saturating_sub(1);
                false
            }
            (Some(_), "error") => true,
            (Some(Request::Exec), "exit") => true,
            (Some(Request::Entry), "entry") => true,
            (Some(Request::List), "list_end") => true,
            (Some(Request::Put), "transfer_ok") => true,
            (Some(Request::Get), "file_end") => true,
            (
                Some(_),
                "started" | "stdout" | "stderr" | "stdin_ack" | "entry" | "transfer_ready"
                | "file_data",
            ) => false,
            // Anything else (an error between requests, a frame this relay
            // does not know): the server is closing, or this relay lost
            // track.
            _ => {
                self.lost_track = true;
                false
            }
        };
        if ends {
            self.pending = None;
        }
    }

    /// Whether the connection is idle: no request under way, no ping
    /// unanswered, nothing seen that this relay does not follow.
    pub(super) fn idle(&self) -> bool {
        self.pending.is_none() && self.pings == 0 && !self.lost_track
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiresh_proto::codec::encode_frame;
    use wiresh_proto::{ExecRequest, Frame, Message};

    fn bytes(frames: &[Frame]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| encode_frame(f).unwrap().to_vec())
            .collect()
    }

    #[test]
    fn frames_are_found_however_the_bytes_are_cut() {
        let frames = [
            Frame::new(Message::Exec(ExecRequest::shell("true"))),
            Frame::with_body(Message::Stdin, vec![7u8; 1000]),
            Frame::new(Message::StdinEnd),
            Frame::with_body(Message::Ping, &b"x"[..]),
        ];
        let wire = bytes(&frames);
        for piece in [1, 3, 4, 5, 17, 1000, wire.len()] {
            let mut scanner = Scanner::new(Limits::default());
            let mut seen = Vec::new();
            for chunk in wire.chunks(piece) {
                scanner
                    .feed(chunk, |kind| seen.push(kind.to_string()))
                    .unwrap();
            }
            assert_eq!(
                seen,
                ["exec", "stdin", "stdin_end", "ping"],
                "pieces of {piece}"
            );
            assert!(scanner.at_boundary());
        }
        let mut scanner = Scanner::new(Limits::default());
        scanner.feed(&wire[..wire.len() - 1], |_| {}).unwrap();
        assert!(!scanner.at_boundary());
    }

    #[test]
    fn a_body_can_go_by_unseen() {
        let wire = bytes(&[Frame::with_body(Message::Stdout, vec![1u8; 500])]);
        let mut scanner = Scanner::new(Limits::default());
        let header_end = wire.len() - 500;
        scanner.feed(&wire[..header_end + 20], |_| {}).unwrap();
        assert_eq!(scanner.body_left(), 480);
        scanner.skip(480);
        assert!(scanner.at_boundary());
    }

    #[test]
    fn oversized_and_malformed_frames_stop_the_scan() {
        let mut scanner = Scanner::new(Limits::default());
        let err = scanner.feed(&u32::MAX.to_be_bytes(), |_| {}).unwrap_err();
        assert!(matches!(err, ScanError::HeaderTooLarge(_)), "{err}");
        let mut scanner = Scanner::new(Limits::PRE_AUTH);
        let wire = bytes(&[Frame::with_body(Message::Ping, &b"x"[..])]);
        let err = scanner.feed(&wire, |_| {}).unwrap_err();
        assert!(matches!(err, ScanError::BodyTooLarge(1)), "{err}");
        let mut scanner = Scanner::new(Limits::default());
        let err = scanner.feed(b"\0\0\0\x02{}", |_| {}).unwrap_err();
        assert!(matches!(err, ScanError::BadHeader(_)), "{err}");
    }

    #[test]
    fn a_connection_is_idle_only_between_requests() {
        let mut t = Tracker::default();
        assert!(t.idle());
        t.client_sent("exec");
        assert!(!t.idle());
        for kind in ["started", "stdout", "stdin_ack", "stderr"] {
            t.server_sent(kind);
            assert!(!t.idle(), "{kind}");
        }
        t.client_sent("ping");
        t.server_sent("exit");
        assert!(!t.idle(), "a ping is unanswered");
        t.server_sent("pong");
        assert!(t.idle());

        for (request, answers) in [
            ("stat", &["entry"][..]),
            ("mkdir", &["error"][..]),
            ("list", &["entry", "entry", "list_end"][..]),
            ("put", &["transfer_ready", "transfer_ok"][..]),
            ("get", &["transfer_ready", "file_data", "file_end"][..]),
            ("exec", &["error"][..]),
        ] {
            t.client_sent(request);
            for (i, answer) in answers.iter().enumerate() {
                assert!(!t.idle(), "{request} before {answer}");
                t.server_sent(answer);
                assert_eq!(t.idle(), i + 1 == answers.len(), "{request} after {answer}");
            }
        }
    }

    #[test]
    fn what_is_not_followed_is_never_lent_again() {
        let mut t = Tracker::default();
        t.server_sent("error");
        assert!(!t.idle(), "an error between requests: the server closes");
        let mut t = Tracker::default();
        t.client_sent("exec");
        t.client_sent("exec");
        t.server_sent("exit");
        assert!(!t.idle(), "two requests at once");
        let mut t = Tracker::default();
        t.client_sent("exec");
        t.client_sent("some_new_signal");
        t.server_sent("exit");
        assert!(t.idle(), "a newer frame within a command ends with it");
        t.client_sent("some_new_request");
        assert!(!t.idle());
    }
}
