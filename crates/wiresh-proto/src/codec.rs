//! Incremental frame encoding and decoding.
//!
//! Wire format of one frame:
//!
//! ```text
//! +----------------+----------------------------+------------------+
//! | header_len u32 | header: UTF-8 JSON object  | body: body_len   |
//! | big-endian     | {"type": ..., "body_len":N}| raw bytes        |
//! +----------------+----------------------------+------------------+
//! ```
//!
//! The decoder checks `header_len` against [`Limits::max_header`] before
//! waiting for (or reserving room for) the header, and `body_len` against
//! [`Limits::max_body`] as soon as the header is parsed, so a peer that claims
//! a 4 GiB frame is rejected after 4 bytes, not after the server tried to
//! buffer 4 GiB.

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::Frame;
pub use crate::limits::Limits;
use crate::message::{ErrorCode, Message};

/// Size of the header-length prefix.
pub const LEN_PREFIX: usize = 4;

/// Most bytes the decoder makes room for at once while the rest of a
/// passed-through body is decoded piece by piece.
const PASSING_PIECE: usize = 64 * 1024;

/// Why bytes from the peer could not be decoded. Each of these ends the
/// connection: after a framing error the byte stream has no trustworthy
/// boundary left.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The header length prefix exceeds the limit.
    #[error("frame header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// Claimed length.
        len: u64,
        /// Limit in force.
        max: usize,
    },
    /// `body_len` exceeds the limit.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// Claimed length.
        len: u64,
        /// Limit in force.
        max: usize,
    },
    /// The header is not a JSON object with a string `type` and an integer `body_len`.
    #[error("malformed frame header: {0}")]
    BadHeader(String),
    /// The header's `type` is not known to this version.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes of it received)")]
    Truncated(usize),
    /// Reading from the transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl DecodeError {
    /// The protocol error code to send to the peer before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::HeaderTooLarge { .. } | DecodeError::BodyTooLarge { .. } => {
                ErrorCode::FrameTooLarge
            }
            DecodeError::BadHeader(_) | DecodeError::Truncated(_) => ErrorCode::BadFrame,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The body is larger than the limit; split it into several frames.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// Body length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The encoded header is larger than the limit.
    #[error("frame header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// Header length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The message has a body but its type carries none.
    #[error("a {0} frame cannot carry a body")]
    UnexpectedBody(&'static str),
    /// JSON serialisation failed.
    #[error("cannot serialise header: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing to the transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the decoder is inside the current frame.
#[derive(Debug)]
enum State {
    /// Waiting for a length prefix and header.
    Header,
    /// The header is parsed; waiting for `len` body bytes.
    Body { message: Message, len: usize },
    /// A passed-through body ([`BodyPassing`]): `left` bytes of it are
    /// still on the stream.
    Passing { message: Message, left: usize },
}

/// Which frames the decoder hands over as soon as their header is parsed,
/// leaving the rest of their body on the stream
/// ([`FrameCodec::pass_bodies`]). A caller that can move bytes from the
/// stream to where they go without reading them (`splice(2)`) takes the
/// body from there itself.
#[derive(Debug, Clone, Copy)]
pub struct BodyPassing {
    /// Only bodies at least this long.
    pub min_len: usize,
    /// Only frames of the messages this picks.
    pub applies: fn(&Message) -> bool,
}

/// A `tokio_util` codec for wiresh frames, usable with `Framed`,
/// `FramedRead` and `FramedWrite`.
#[derive(Debug)]
pub struct FrameCodec {
    limits: Limits,
    state: State,
    passing: Option<BodyPassing>,
}

impl FrameCodec {
    /// A codec with the given limits.
    pub fn new(limits: Limits) -> Self {
        FrameCodec {
            limits,
            state: State::Header,
            passing: None,
        }
    }

    /// Passes bodies through from now on, or (`None`) no longer.
    ///
    /// A frame that `passing` picks is decoded as soon as its header is:
    /// its body holds only the bytes already read, and
    /// [`FrameCodec::body_left`] says how many more follow on the stream.
    /// The caller either takes those from the stream itself and then calls
    /// [`FrameCodec::body_moved`], or goes on decoding: each further
    /// decode then returns the next piece of the body, as a frame of the
    /// same message, until it is complete. Either way no byte is lost and
    /// no boundary moves; for output, whose frame boundaries carry no
    /// meaning, the pieces are the same bytes.
    pub fn pass_bodies(&mut self, passing: Option<BodyPassing>) {
        self.passing = passing;
    }

    /// Bytes of a passed-through body still on the stream (0 when none).
    pub fn body_left(&self) -> usize {
        match self.state {
            State::Passing { left, .. } => left,
            _ => 0,
        }
    }

    /// Records that the caller took `len` bytes of a passed-through body
    /// from the stream itself.
    ///
    /// # Panics
    /// If `len` is more than [`FrameCodec::body_left`]: the caller would
    /// have read into the next frame.
    pub fn body_moved(&mut self, len: usize) {
        let left = self.body_left();
        assert!(len <= left, "moved {len} bytes of a body with {left} left");
        if let State::Passing { left, .. } = &mut self.state {
            *left -= len;
            if *left == 0 {
                self.state = State::Header;
            }
        }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether a frame's header has been decoded and its body is still
    /// awaited (together with a non-empty read buffer, this tells a caller
    /// that a frame is in progress).
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Header)
    }

    /// Changes the limits, e.g. from the tight pre-authentication ones to
    /// the normal ones once the peer has authenticated.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Parses a header and validates it against the limits.
    fn parse_header(&self, raw: &[u8]) -> Result<(Message, usize), DecodeError> {
        let value: Value = serde_json::from_slice(raw)
            .map_err(|e| DecodeError::BadHeader(format!("header is not valid JSON ({e})")))?;
        let Value::Object(map) = &value else {
            return Err(DecodeError::BadHeader("header is not a JSON object".into()));
        };
        let type_name = match map.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => {
                return Err(DecodeError::BadHeader(
                    "header has no string field `type`".into(),
                ))
            }
        };
        let body_len = map.get("body_len").and_then(Value::as_u64).ok_or_else(|| {
            DecodeError::BadHeader("header has no non-negative integer field `body_len`".into())
        })?;
        if body_len > self.limits.max_body as u64 {
            return Err(DecodeError::BodyTooLarge {
                len: body_len,
                max: self.limits.max_body,
            });
        }
        if !Message::TYPES.contains(&type_name.as_str()) {
            return Err(DecodeError::UnknownType(type_name));
        }
        if body_len > 0 && !Message::carries_body(&type_name) {
            return Err(DecodeError::BadHeader(format!(
                "a {type_name} frame cannot carry a body (body_len {body_len})"
            )));
        }
        let message = serde_json::from_value(value)
            .map_err(|e| DecodeError::BadHeader(format!("invalid {type_name} message: {e}")))?;
        Ok((message, body_len as usize))
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(Limits::default())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let State::Header = self.state {
            if src.len() < LEN_PREFIX {
                return Ok(None);
            }
            let header_len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if header_len > self.limits.max_header {
                return Err(DecodeError::HeaderTooLarge {
                    len: header_len as u64,
                    max: self.limits.max_header,
                });
            }
            if src.len() < LEN_PREFIX + header_len {
                // The length is bounded, so reserving for it is safe and
                // saves repeated small reallocations.
                src.reserve(LEN_PREFIX + header_len - src.len());
                return Ok(None);
            }
            let (message, len) = self.parse_header(&src[LEN_PREFIX..LEN_PREFIX + header_len])?;
            src.advance(LEN_PREFIX + header_len);
            if self
                .passing
                .is_some_and(|p| len > 0 && len >= p.min_len && (p.applies)(&message))
            {
                // Handed over at once, with what of the body is here.
                let body = src.split_to(len.min(src.len())).freeze();
                if body.len() < len {
                    let left = len - body.len();
                    self.state = State::Passing {
                        message: message.clone(),
                        left,
                    };
                }
                return Ok(Some(Frame { message, body }));
            }
            self.state = State::Body { message, len };
        }
        if let State::Passing { message, left } = &mut self.state {
            if src.is_empty() {
                // Room for a good piece, not for the whole rest.
                src.reserve((*left).min(PASSING_PIECE));
                return Ok(None);
            }
            let body = src.split_to((*left).min(src.len())).freeze();
            *left -= body.len();
            let message = message.clone();
            if self.body_left() == 0 {
                self.state = State::Header;
            }
            return Ok(Some(Frame { message, body }));
        }
        let State::Body { len, .. } = self.state else {
            unreachable!("state is Body after the header is parsed");
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let body = src.split_to(len).freeze();
        let State::Body { message, .. } = std::mem::replace(&mut self.state, State::Header) else {
            unreachable!();
        };
        Ok(Some(Frame { message, body }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && matches!(self.state, State::Header) => Ok(None),
            None => Err(DecodeError::Truncated(src.len())),
        }
    }
}

/// The header as it goes on the wire: the message fields plus `body_len`.
#[derive(Serialize)]
struct WireHeader<'a> {
    #[serde(flatten)]
    message: &'a Message,
    body_len: usize,
}

impl FrameCodec {
    /// Appends one frame made of `message` and `body` to `dst`.
    ///
    /// Taking the body as a slice lets callers frame bytes they already hold
    /// without building a [`Frame`].
    pub fn encode_parts(
        &self,
        message: &Message,
        body: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        self.encode_header(message, body.len(), dst)?;
        dst.extend_from_slice(body);
        Ok(())
    }

    /// Appends the length prefix and JSON header of a frame whose body of
    /// `body_len` bytes the caller sends right after, e.g. with a vectored
    /// write, so large bodies need not be copied into `dst`.
    pub fn encode_header(
        &self,
        message: &Message,
        body_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if body_len > self.limits.max_body {
            return Err(EncodeError::BodyTooLarge {
                len: body_len,
                max: self.limits.max_body,
            });
        }
        if body_len > 0 && !Message::carries_body(message.type_name()) {
            return Err(EncodeError::UnexpectedBody(message.type_name()));
        }
        let start = dst.len();
        dst.reserve(LEN_PREFIX + 128);
        dst.put_u32(0);
        let header = WireHeader { message, body_len };
        serde_json::to_writer((&mut *dst).writer(), &header)?;
        let header_len = dst.len() - start - LEN_PREFIX;
        if header_len > self.limits.max_header {
            dst.truncate(start);
            return Err(EncodeError::HeaderTooLarge {
                len: header_len,
                max: self.limits.max_header,
            });
        }
        dst[start..start + LEN_PREFIX].copy_from_slice(&(header_len as u32).to_be_bytes());
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_parts(&frame.message, &frame.body, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_parts(&frame.message, &frame.body, dst)
    }
}

/// Encodes one frame into a fresh buffer with default limits; handy for
/// tests and one-off writes.
pub fn encode_frame(frame: &Frame) -> Result<BytesMut, EncodeError> {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode_parts(&frame.message, &frame.body, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ExecRequest, ExitStatus};

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn worked_example_from_protocol_doc() {
        let frame = Frame::with_body(Message::Stdout, &b"hi\n"[..]);
        let bytes = encode_frame(&frame).unwrap();
        let header = br#"{"type":"stdout","body_len":3}"#;
        let mut expected = (header.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(header);
        expected.extend_from_slice(b"hi\n");
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(&bytes[..4], &[0, 0, 0, 30]);
    }

    #[test]
    fn round_trip_with_and_without_body() {
        let frames = vec![
            Frame::new(Message::Exec(ExecRequest::shell("echo hi"))),
            Frame::with_body(Message::Stdout, vec![0u8, 255, 10, 13]),
            Frame::with_body(Message::Stderr, Vec::new()),
            Frame::new(Message::Exit(ExitStatus {
                code: Some(0),
                signal: None,
                duration_ms: 12,
                timed_out: false,
                shutdown: true,
            })),
        ];
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut buf).unwrap();
        }
        assert_eq!(decode_all(&mut codec, &buf).unwrap(), frames);
    }

    #[test]
    fn oversize_header_rejected_from_prefix_alone() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, DecodeError::HeaderTooLarge { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        // Nothing was reserved for the claimed 4 GiB.
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn oversize_body_rejected_before_body_arrives() {
        let header = br#"{"type":"stdin","body_len":4294967296}"#;
        let mut raw = (header.len() as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(header);
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&raw[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, DecodeError::BodyTooLarge { .. }), "{err}");
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn non_json_and_unknown_type() {
        let frame = |h: &[u8]| {
            let mut raw = (h.len() as u32).to_be_bytes().to_vec();
            raw.extend_from_slice(h);
            raw
        };
        let mut codec = FrameCodec::default();
        let err = decode_all(&mut codec, &frame(b"not json")).unwrap_err();
        assert!(matches!(err, DecodeError::BadHeader(_)), "{err}");
        let mut codec = FrameCodec::default();
        let err = decode_all(&mut codec, &frame(br#"{"type":"launch","body_len":0}"#)).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnknownType(ref t) if t == "launch"),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::UnknownType);
        let mut codec = FrameCodec::default();
        let err = decode_all(&mut codec, &frame(br#"{"type":"exec","body_len":1}"#)).unwrap_err();
        assert!(matches!(err, DecodeError::BadHeader(_)), "{err}");
        let mut codec = FrameCodec::default();
        let err = decode_all(&mut codec, &frame(br#"[1,2]"#)).unwrap_err();
        assert!(matches!(err, DecodeError::BadHeader(_)), "{err}");
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let bytes = encode_frame(&Frame::with_body(Message::Stdout, &b"abcdef"[..])).unwrap();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 2]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(DecodeError::Truncated(_))
        ));
    }

    fn large_stdout(message: &Message) -> bool {
        *message == Message::Stdout
    }

    /// A codec that passes through `stdout` bodies of 10 bytes or more.
    fn passing() -> FrameCodec {
        let mut codec = FrameCodec::default();
        codec.pass_bodies(Some(BodyPassing {
            min_len: 10,
            applies: large_stdout,
        }));
        codec
    }

    /// The first `len - 5` bytes of a `stdout` frame of `len` bytes.
    fn all_but_five(len: usize) -> BytesMut {
        let wire = encode_frame(&Frame::with_body(Message::Stdout, vec![1u8; len])).unwrap();
        BytesMut::from(&wire[..wire.len() - 5])
    }

    /// Whatever the reads look like, passed-through bodies decoded piece by
    /// piece are the same bytes, and no other frame is touched.
    #[test]
    fn passed_bodies_decode_piece_by_piece_at_any_split() {
        let big: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let frames = [
            Frame::with_body(Message::Stdout, &b"small"[..]),
            Frame::with_body(Message::Stdout, big.clone()),
            Frame::with_body(Message::Stderr, big.clone()),
            Frame::with_body(Message::Stdout, big[..10].to_vec()),
            Frame::new(Message::StdinEnd),
        ];
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode_frame(f).unwrap())
            .collect();
        for read_size in 1..=wire.len() {
            let mut codec = passing();
            let mut buf = BytesMut::new();
            let mut got: Vec<Frame> = Vec::new();
            for chunk in wire.chunks(read_size) {
                buf.extend_from_slice(chunk);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
            let stdout: Vec<u8> = got
                .iter()
                .filter(|f| f.message == Message::Stdout)
                .flat_map(|f| f.body.to_vec())
                .collect();
            let expected: Vec<u8> = [&b"small"[..], &big, &big[..10]].concat();
            assert_eq!(stdout, expected, "read size {read_size}");
            // Frames not picked arrive whole, in their place.
            let others: Vec<&Frame> = got
                .iter()
                .filter(|f| f.message != Message::Stdout)
                .collect();
            assert_eq!(others, [&frames[2], &frames[4]], "read size {read_size}");
            assert_eq!(got.first(), Some(&frames[0]));
        }
    }

    /// A caller that takes the rest of a body from the stream itself finds
    /// the next frame right after it.
    #[test]
    fn a_body_moved_by_the_caller_leaves_the_next_frame_intact() {
        let body: Vec<u8> = (0..100u8).collect();
        let first = encode_frame(&Frame::with_body(Message::Stdout, body.clone())).unwrap();
        let mut codec = passing();
        // The header and 30 bytes of the body have been read.
        let head_end = first.len() - 70;
        let mut buf = BytesMut::from(&first[..head_end]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (frame.message, &frame.body[..]),
            (Message::Stdout, &body[..30])
        );
        assert_eq!(codec.body_left(), 70);
        assert!(buf.is_empty() && codec.in_body());
        // The caller moves the other 70 bytes elsewhere, in two goes.
        codec.body_moved(50);
        assert_eq!(codec.body_left(), 20);
        codec.body_moved(20);
        assert_eq!(codec.body_left(), 0);
        assert!(!codec.in_body());
        let mut next = encode_frame(&Frame::new(Message::StdinEnd)).unwrap();
        assert_eq!(
            codec.decode(&mut next).unwrap(),
            Some(Frame::new(Message::StdinEnd))
        );
        // Too short to be passed: decoded whole as usual.
        let short = encode_frame(&Frame::with_body(Message::Stdout, &b"abc"[..])).unwrap();
        let whole = short.len();
        let mut buf = BytesMut::from(&short[..whole - 1]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.body_left(), 0);
    }

    #[test]
    fn eof_in_a_passed_body_is_truncated() {
        let mut codec = passing();
        let mut buf = all_but_five(50);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().body.len(), 45);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(DecodeError::Truncated(0))
        ));
    }

    #[test]
    #[should_panic(expected = "moved 6 bytes of a body with 5 left")]
    fn moving_past_a_passed_body_is_a_bug() {
        let mut codec = passing();
        let mut buf = all_but_five(50);
        codec.decode(&mut buf).unwrap();
        codec.body_moved(6);
    }

    #[test]
    fn encoder_refuses_oversize_body() {
        let mut codec = FrameCodec::new(Limits {
            max_header: 1024,
            max_body: 4,
        });
        let mut buf = BytesMut::new();
        let err = codec
            .encode(Frame::with_body(Message::Stdout, vec![0u8; 5]), &mut buf)
            .unwrap_err();
        assert!(matches!(err, EncodeError::BodyTooLarge { .. }));
        assert!(buf.is_empty());
    }
}
