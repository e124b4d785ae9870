//! `message_parser`: arbitrary bytes as a frame's JSON header.
//!
//! The whole input is the header. It is parsed two ways:
//!
//! * directly, `serde_json::from_slice::<Message>`: must not panic, and
//!   whatever parses must survive a serde_json round trip (bytes and
//!   `Value`) unchanged;
//! * through the codec, as a peer would send it: a length prefix, the bytes,
//!   and a body as long as the header's `body_len` says (when that is within
//!   the default body limit), decoded by a default [`FrameCodec`] with
//!   `decode` then `decode_eof`. What the codec accepts must have the body it
//!   announced, agree with the direct parse, and round-trip through
//!   `encode_parts`.
//!
//! And the two must agree: when the direct parse succeeds and the header
//! meets the codec's own rules (an integer `body_len` within the limit, no
//! body on a type that carries none, header within the limit), the codec
//! must accept it too.

use bytes::BytesMut;
use serde_json::Value;
use tokio_util::codec::Decoder;
use wiresh_proto::{DecodeError, Frame, FrameCodec, Limits, Message};

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    let direct = serde_json::from_slice::<Message>(data);
    match &direct {
        Ok(message) => serde_round_trip(message),
        Err(e) => {
            let _ = e.to_string();
        }
    }

    let Ok(header_len) = u32::try_from(data.len()) else {
        return;
    };
    let value = serde_json::from_slice::<Value>(data).ok();
    let body_len = value
        .as_ref()
        .and_then(|v| v.get("body_len"))
        .and_then(Value::as_u64);
    let body_fits = body_len.is_some_and(|n| n <= Limits::DEFAULT_MAX_BODY as u64);
    let body: Vec<u8> = match body_len {
        Some(n) if body_fits => (0..n).map(|i| (i * 31 + 7) as u8).collect(),
        _ => Vec::new(),
    };
    let mut wire = Vec::with_capacity(4 + data.len() + body.len());
    wire.extend_from_slice(&header_len.to_be_bytes());
    wire.extend_from_slice(data);
    wire.extend_from_slice(&body);

    match decode_one(&wire) {
        Ok(frame) => {
            let value = value.expect("the codec accepted a header serde_json::Value rejects");
            assert!(value.is_object());
            assert_eq!(Some(frame.body.len() as u64), body_len);
            assert_eq!(&frame.body[..], &body[..]);
            let via_value: Message =
                serde_json::from_value(value).expect("the codec's message parses from its Value");
            assert_eq!(via_value, frame.message);
            if let Ok(message) = &direct {
                assert_eq!(
                    message, &frame.message,
                    "the codec and serde_json read the header differently"
                );
            }
            serde_round_trip(&frame.message);
            crate::frame_decoder::round_trip(&frame, Limits::default());
        }
        Err(e) => {
            let _ = e.code();
            if let (Ok(message), Some(n)) = (&direct, body_len) {
                let acceptable = data.len() <= Limits::DEFAULT_MAX_HEADER
                    && body_fits
                    && (n == 0 || Message::carries_body(message.type_name()));
                assert!(
                    !acceptable,
                    "serde_json accepts {message:?} (body_len {n}) but the codec refuses: {e}"
                );
            }
        }
    }
}

/// Decodes exactly one frame from a complete stream, as `FramedRead` would.
fn decode_one(wire: &[u8]) -> Result<Frame, DecodeError> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(wire);
    let frame = match codec.decode(&mut buf)? {
        Some(frame) => frame,
        None => match codec.decode_eof(&mut buf)? {
            Some(frame) => frame,
            None => panic!("decode_eof gave a clean end with a whole header pending"),
        },
    };
    assert!(
        buf.is_empty(),
        "one frame was sent, {} bytes are left",
        buf.len()
    );
    assert!(codec.decode_eof(&mut buf)?.is_none());
    Ok(frame)
}

/// A parsed message serialises, and parses back equal, via bytes and via
/// `Value`.
fn serde_round_trip(message: &Message) {
    let bytes = serde_json::to_vec(message).expect("a Message always serialises");
    let back: Message = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "serialised message does not parse back ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&back, message, "message changed in a serde_json round trip");
    let value = serde_json::to_value(message).expect("a Message always becomes a Value");
    assert_eq!(value["type"], message.type_name());
    let back: Message = serde_json::from_value(value).expect("Value parses back");
    assert_eq!(&back, message, "message changed in a Value round trip");
}
