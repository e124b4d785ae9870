//! `frame_decoder`: arbitrary bytes from a peer, fed to [`FrameCodec`] in
//! arbitrary read sizes, exactly as `tokio_util`'s `FramedRead` drives it.
//!
//! Input layout: `[mode, chunk_seed, stream...]`.
//!
//! * `mode & 3` picks the limits: 0 = default (64 KiB header, 1 MiB body),
//!   1 = [`Limits::PRE_AUTH`], 2 = tiny (48-byte header, 8-byte body),
//!   3 = small (512-byte header, 4 KiB body).
//! * `mode & 4`: the stream starts with the 8-byte connection preamble,
//!   which goes through [`Preamble::decode`] first (as the server reads it).
//! * `mode & 8`: start with [`Limits::PRE_AUTH`] and switch to the chosen
//!   limits after the first frame, as the server does after `auth`.
//! * `chunk_seed`: 0 = the whole stream in one read; n > 0 = reads of
//!   1..=n bytes, sizes drawn from a PRNG seeded with n (1 = byte by byte).
//!
//! Checks:
//! * nothing panics;
//! * the read buffer's capacity stays bounded by what was received plus the
//!   limits, never by a length the peer claims;
//! * every decoded body is within the limits, and only body-carrying types
//!   have one;
//! * the frames and the final outcome (clean end or which error) do not
//!   depend on how the stream was cut into reads;
//! * every decoded frame re-encodes with `encode_parts` and decodes back to
//!   an equal frame; the encoder under the same limits either succeeds or
//!   refuses with `HeaderTooLarge` only.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use wiresh_proto::codec::LEN_PREFIX;
use wiresh_proto::preamble::PREAMBLE_LEN;
use wiresh_proto::{EncodeError, Frame, FrameCodec, Limits, Message, Preamble};

use crate::XorShift;

/// The tiny limits of mode 2.
pub const TINY: Limits = Limits {
    max_header: 48,
    max_body: 8,
};

/// The small limits of mode 3.
pub const SMALL: Limits = Limits {
    max_header: 512,
    max_body: 4096,
};

/// What one decoding of a stream produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    /// `None`: clean end of stream; `Some(text)`: the error that ended it.
    error: Option<String>,
}

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    let (mode, seed, stream) = match data {
        [mode, seed, rest @ ..] => (*mode, *seed, rest),
        _ => (0, 0, data),
    };
    let limits = match mode & 3 {
        0 => Limits::default(),
        1 => Limits::PRE_AUTH,
        2 => TINY,
        _ => SMALL,
    };
    let auth_switch = mode & 8 != 0;
    let stream = if mode & 4 != 0 {
        let Some((pre, rest)) = stream.split_first_chunk::<PREAMBLE_LEN>() else {
            return;
        };
        match Preamble::decode(pre) {
            Ok(p) => assert_eq!(Preamble::new(p.version).encode(), *pre),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("not a wiresh client"), "{text}");
                return;
            }
        }
        rest
    } else {
        stream
    };

    let chunked = decode_stream(
        stream,
        limits,
        auth_switch,
        &chunk_sizes(seed, stream.len()),
    );
    if seed != 0 {
        let whole = decode_stream(stream, limits, auth_switch, &[stream.len()]);
        assert_eq!(
            chunked, whole,
            "decoding depends on how the stream is cut into reads"
        );
    }
}

/// Read sizes covering `len` bytes, derived from `seed`.
fn chunk_sizes(seed: u8, len: usize) -> Vec<usize> {
    if seed == 0 {
        return vec![len];
    }
    let mut rng = XorShift::new(u64::from(seed));
    let mut sizes = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = (1 + rng.below(usize::from(seed))).min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

/// Decodes `stream` read by read as `FramedRead` would, checking each step.
fn decode_stream(stream: &[u8], limits: Limits, auth_switch: bool, sizes: &[usize]) -> Outcome {
    let first = if auth_switch {
        Limits::PRE_AUTH
    } else {
        limits
    };
    let mut codec = FrameCodec::new(first);
    let widest = Limits {
        max_header: first.max_header.max(limits.max_header),
        max_body: first.max_body.max(limits.max_body),
    };
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0usize;
    let mut rest = stream;

    // One step: a decoded frame is checked and recorded, and the limits
    // switch after the first one when asked to.
    let on_frame = |codec: &mut FrameCodec, frame: Frame, frames: &mut Vec<Frame>| {
        check_frame(&frame, codec.limits());
        frames.push(frame);
        if auth_switch && frames.len() == 1 {
            codec.set_limits(limits);
        }
    };

    for &size in sizes {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let result = codec.decode(&mut buf);
            check_capacity(&buf, fed, widest);
            match result {
                Ok(Some(frame)) => on_frame(&mut codec, frame, &mut frames),
                Ok(None) => {
                    check_waiting(&codec, &buf);
                    break;
                }
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e.to_string()),
                    }
                }
            }
        }
    }
    assert!(rest.is_empty());

    // End of stream: `decode_eof` until it says there is nothing more.
    loop {
        let result = codec.decode_eof(&mut buf);
        check_capacity(&buf, fed, widest);
        match result {
            Ok(Some(frame)) => on_frame(&mut codec, frame, &mut frames),
            Ok(None) => {
                assert!(buf.is_empty(), "clean EOF with {} bytes left", buf.len());
                assert!(!codec.in_body(), "clean EOF in the middle of a body");
                return Outcome {
                    frames,
                    error: None,
                };
            }
            Err(e) => {
                return Outcome {
                    frames,
                    error: Some(e.to_string()),
                }
            }
        }
    }
}

/// The buffer never holds room for more than what arrived plus one
/// maximal frame (doubled, for the allocator's growth policy).
fn check_capacity(buf: &BytesMut, fed: usize, limits: Limits) {
    let bound = 2 * (fed + LEN_PREFIX + limits.max_header + limits.max_body) + 64;
    assert!(
        buf.capacity() <= bound,
        "buffer capacity {} exceeds the bound {bound} (received {fed} bytes, limits {limits:?})",
        buf.capacity()
    );
}

/// When the decoder asks for more bytes outside a body, it really lacks
/// part of the length prefix or of the header it announces.
fn check_waiting(codec: &FrameCodec, buf: &BytesMut) {
    if codec.in_body() || buf.len() < LEN_PREFIX {
        return;
    }
    let header_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    assert!(header_len <= codec.limits().max_header);
    assert!(
        buf.len() < LEN_PREFIX + header_len,
        "decoder waits although the whole header ({header_len} bytes) is buffered"
    );
}

/// Checks one decoded frame against the limits it was decoded under and
/// round-trips it through the encoder.
fn check_frame(frame: &Frame, limits: Limits) {
    let type_name = frame.message.type_name();
    assert!(Message::TYPES.contains(&type_name));
    assert!(
        frame.body.len() <= limits.max_body,
        "body of {} bytes decoded under max_body {}",
        frame.body.len(),
        limits.max_body
    );
    assert!(
        frame.body.is_empty() || Message::carries_body(type_name),
        "a {type_name} frame was decoded with a body"
    );
    round_trip(frame, limits);
}

/// `encode_parts` then `decode` gives back the same frame.
pub fn round_trip(frame: &Frame, limits: Limits) {
    // Under the same limits, the encoder may only refuse a header that grew
    // past the limit (defaults the peer omitted are written out).
    let strict = FrameCodec::new(limits);
    let mut out = BytesMut::new();
    match strict.encode_parts(&frame.message, &frame.body, &mut out) {
        Ok(()) => {
            let mut codec = FrameCodec::new(limits);
            let back = codec
                .decode(&mut out)
                .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}"))
                .expect("a whole re-encoded frame");
            assert_eq!(&back, frame, "frame changed in a round trip");
            assert!(out.is_empty() && !codec.in_body());
        }
        Err(EncodeError::HeaderTooLarge { .. }) => assert!(out.is_empty()),
        Err(e) => panic!("decoded frame does not re-encode: {e}"),
    }

    // With room for any header, the round trip must always work.
    let roomy = Limits {
        max_header: limits.max_header.max(1 << 20),
        max_body: limits.max_body,
    };
    let mut codec = FrameCodec::new(roomy);
    let mut out = BytesMut::new();
    codec
        .encode_parts(&frame.message, &frame.body, &mut out)
        .unwrap_or_else(|e| panic!("decoded frame does not re-encode: {e}"));
    let back = codec
        .decode(&mut out)
        .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}"))
        .expect("a whole re-encoded frame");
    assert_eq!(&back, frame, "frame changed in a round trip");
    assert!(out.is_empty() && !codec.in_body());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_cover_the_stream() {
        for seed in 0..=255u8 {
            for len in [0, 1, 7, 300] {
                let sizes = chunk_sizes(seed, len);
                assert_eq!(sizes.iter().sum::<usize>(), len);
                assert!(sizes.iter().all(|&n| n > 0) || len == 0);
            }
        }
    }

    #[test]
    fn huge_claims_are_fine() {
        // 4 GiB header claim, and a 4 GiB body claim.
        run(&[0, 1, 0xff, 0xff, 0xff, 0xff]);
        let header = br#"{"type":"stdout","body_len":4294967295}"#;
        let mut data = vec![0, 3];
        data.extend_from_slice(&(header.len() as u32).to_be_bytes());
        data.extend_from_slice(header);
        run(&data);
    }
}

#[cfg(test)]
mod growth_tests {
    use super::*;

    /// A header the decoder accepts can re-encode longer (defaults the
    /// peer left out are written out), so the encoder may refuse it under
    /// the same limits; `round_trip` allows exactly that and nothing else.
    #[test]
    fn reencoded_header_may_outgrow_tight_limits() {
        let header = br#"{"type":"get","path":"a","body_len":0}"#;
        assert!(header.len() <= TINY.max_header);
        let mut data = vec![2, 0];
        data.extend_from_slice(&(header.len() as u32).to_be_bytes());
        data.extend_from_slice(header);
        run(&data);

        let message = Message::Get {
            path: "a".into(),
            resume_from: 0,
        };
        let mut out = BytesMut::new();
        let err = FrameCodec::new(TINY)
            .encode_parts(&message, b"", &mut out)
            .unwrap_err();
        assert!(matches!(err, EncodeError::HeaderTooLarge { .. }), "{err}");
    }
}
