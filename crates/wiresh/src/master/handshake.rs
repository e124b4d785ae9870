//! The few bytes between a client and a master before the wiresh protocol
//! starts: one line saying what the client wants.
//!
//! ```text
//! WIRESH-MASTER 1 session IDENTITY   then the wiresh protocol, relayed
//! WIRESH-MASTER 1 status             answered with one line of JSON
//! WIRESH-MASTER 1 stop               answered "stopping", then it stops
//! ```
//!
//! A session goes on at once with the client's preamble and `auth` (and a
//! first `exec`), all in one write; the master answers with the server's
//! `hello` and `auth_ok`, or with an `error` frame that says why it will
//! not serve this client, which then connects directly.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::time::{self, Instant};
use tokio_util::codec::Decoder;
use wiresh_proto::codec::encode_frame;
use wiresh_proto::preamble::{Preamble, PREAMBLE_LEN};
use wiresh_proto::{ErrorCode, Frame, FrameCodec, Limits, Message, Secret, PROTOCOL_VERSION};

/// How every request line starts.
const MAGIC: &str = "WIRESH-MASTER 1 ";

/// The longest request line (an identity is 64 hex digits).
const LINE_MAX: usize = 128;

/// What a client asks a master for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    /// To relay a wiresh session, for a client of this identity (hex).
    Session(String),
    /// What the master is and does.
    Status,
    /// To stop: no new clients; exit once the current ones have gone.
    Stop,
}

impl Request {
    /// The request as its line.
    pub(super) fn line(&self) -> String {
        match self {
            Request::Session(id) => format!("{MAGIC}session {id}\n"),
            Request::Status => format!("{MAGIC}status\n"),
            Request::Stop => format!("{MAGIC}stop\n"),
        }
    }

    fn parse(line: &str) -> Result<Request, String> {
        let rest = line
            .strip_prefix(MAGIC)
            .ok_or_else(|| "not a wiresh master request".to_string())?;
        match rest.split_once(' ') {
            Some(("session", id))
                if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(Request::Session(id.to_string()))
            }
            None if rest == "status" => Ok(Request::Status),
            None if rest == "stop" => Ok(Request::Stop),
            _ => Err(format!("unknown request {rest:?}")),
        }
    }
}

/// Reads the request line by `deadline`; what came after it stays in the
/// returned buffer.
pub(super) async fn read_request(
    stream: &mut UnixStream,
    deadline: Instant,
) -> Result<(Request, BytesMut), String> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(end + 1);
            let line = std::str::from_utf8(&line[..end]).map_err(|_| "a request not in UTF-8")?;
            return Ok((Request::parse(line)?, buf));
        }
        if buf.len() > LINE_MAX {
            return Err("a request line too long".into());
        }
        read_more(stream, &mut buf, deadline).await?;
    }
}

/// Reads the client's preamble and `auth` frame from `buf` and then the
/// stream, by `deadline`; returns the token, and leaves what follows (a
/// first request) in `buf`.
pub(super) async fn read_opening(
    stream: &mut UnixStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Secret, String> {
    while buf.len() < PREAMBLE_LEN {
        read_more(stream, buf, deadline).await?;
    }
    let preamble: [u8; PREAMBLE_LEN] = buf[..PREAMBLE_LEN].try_into().expect("8 bytes");
    match Preamble::decode(&preamble) {
        Ok(p) if p.version == PROTOCOL_VERSION => {}
        Ok(p) => return Err(format!("protocol version {} asked for", p.version)),
        Err(e) => return Err(e.to_string()),
    }
    buf.advance(PREAMBLE_LEN);
    // As a server reads it: one small frame, no body.
    let mut codec = FrameCodec::new(Limits::PRE_AUTH);
    loop {
        match codec.decode(buf).map_err(|e| e.to_string())? {
            Some(Frame {
                message: Message::Auth { token },
                ..
            }) => return Ok(token),
            Some(other) => {
                return Err(format!(
                    "the first frame must be `auth`, not `{}`",
                    other.message.type_name()
                ))
            }
            None => read_more(stream, buf, deadline).await?,
        }
    }
}

/// Reads what the stream has into `buf`; the stream's end is an error.
async fn read_more(
    stream: &mut UnixStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), String> {
    buf.reserve(1024);
    match time::timeout_at(deadline, stream.read_buf(buf)).await {
        Err(_) => Err("the client sent its handshake too slowly".into()),
        Ok(Ok(0)) => Err("the client left during the handshake".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("reading the handshake: {e}")),
    }
}

/// The `error` frame that turns a client away (it connects directly).
pub(super) fn refusal(code: ErrorCode, message: &str) -> Vec<u8> {
    encode_frame(&Frame::new(Message::error(code, message)))
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// The `auth_ok` frame.
pub(super) fn auth_ok() -> Vec<u8> {
    encode_frame(&Frame::new(Message::AuthOk))
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_as_written() {
        let id = "ab".repeat(32);
        for request in [Request::Session(id), Request::Status, Request::Stop] {
            let line = request.line();
            let parsed = Request::parse(line.trim_end_matches('\n')).unwrap();
            assert_eq!(parsed, request);
        }
        for bad in [
            "WIRESH-MASTER 1 session abc",
            "WIRESH-MASTER 2 status",
            "GET / HTTP/1.1",
            "WIRESH-MASTER 1 frobnicate",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
    }
}
