//! The exact error the decoder gives for inputs the protocol document has
//! to say something about: whole numbers written as floats, a header length
//! of 0, and a `type` this version does not know. Each case pins the
//! `DecodeError` variant, its text and the `ErrorCode` sent to the peer.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use wiresh_proto::{DecodeError, ErrorCode, ExecRequest, FrameCodec, Limits, Message};

/// A frame with this header and no body, as a peer would send it.
fn raw_frame(header: &str) -> Vec<u8> {
    let mut raw = (header.len() as u32).to_be_bytes().to_vec();
    raw.extend_from_slice(header.as_bytes());
    raw
}

/// Decodes one frame from `raw` with `limits`, in one read.
fn decode(limits: Limits, raw: &[u8]) -> Result<Option<Message>, DecodeError> {
    let mut buf = BytesMut::from(raw);
    Ok(FrameCodec::new(limits)
        .decode(&mut buf)?
        .map(|frame| frame.message))
}

/// The message of a `BadHeader`, after checking that it is one, that it is
/// sent as `bad_frame` and that `Display` shows it.
fn bad_header(header: &str) -> String {
    match decode(Limits::default(), &raw_frame(header)) {
        Err(err @ DecodeError::BadHeader(_)) => {
            assert_eq!(err.code(), ErrorCode::BadFrame, "{header}");
            let DecodeError::BadHeader(ref message) = err else {
                unreachable!()
            };
            assert_eq!(
                err.to_string(),
                format!("malformed frame header: {message}")
            );
            message.clone()
        }
        other => panic!("{header}: expected BadHeader, got {other:?}"),
    }
}

/// A JSON number with a fraction or exponent is a float to serde_json even
/// when its value is whole, and integer fields refuse floats: `5000.0` for
/// `timeout_ms` is `bad_frame`, not 5000. So is `-0`, which serde_json
/// reads as the float -0.0.
#[test]
fn whole_number_floats_in_integer_fields_are_bad_frames() {
    // The integer itself is fine.
    assert_eq!(
        decode(
            Limits::default(),
            &raw_frame(r#"{"type":"exec","command":"true","timeout_ms":5000,"body_len":0}"#)
        )
        .unwrap(),
        Some(Message::Exec(ExecRequest {
            timeout_ms: Some(5000),
            ..ExecRequest::shell("true")
        }))
    );
    assert_eq!(
        bad_header(r#"{"type":"exec","command":"true","timeout_ms":5000.0,"body_len":0}"#),
        "invalid exec message: invalid type: floating point `5000.0`, expected u64"
    );
    for (header, prefix) in [
        (
            r#"{"type":"exec","command":"true","timeout_ms":5e3,"body_len":0}"#,
            "invalid exec message: ",
        ),
        (
            r#"{"type":"exec","command":"true","timeout_ms":5000E0,"body_len":0}"#,
            "invalid exec message: ",
        ),
        (
            r#"{"type":"exec","command":"true","timeout_ms":-0,"body_len":0}"#,
            "invalid exec message: ",
        ),
        (
            r#"{"type":"started","pid":1.0,"body_len":0}"#,
            "invalid started message: ",
        ),
        (
            r#"{"type":"stdin_ack","bytes":0.0,"body_len":0}"#,
            "invalid stdin_ack message: ",
        ),
        (
            r#"{"type":"exit","code":0.0,"duration_ms":1,"body_len":0}"#,
            "invalid exit message: ",
        ),
        (
            r#"{"type":"exit","code":-0,"duration_ms":1,"body_len":0}"#,
            "invalid exit message: ",
        ),
        (
            r#"{"type":"put","path":"a","size":6,"mtime":-0,"body_len":0}"#,
            "invalid put message: ",
        ),
        (
            r#"{"type":"get","path":"a","resume_from":0.0,"body_len":0}"#,
            "invalid get message: ",
        ),
        (
            r#"{"type":"put","path":"a","size":6,"mtime":1.0,"body_len":0}"#,
            "invalid put message: ",
        ),
        (
            r#"{"type":"hello","version":1.0,"server":"s","max_body":10,"stdin_window":5,"body_len":0}"#,
            "invalid hello message: ",
        ),
        (
            r#"{"type":"hello","version":1,"server":"s","max_body":10,"max_header":65536.0,"stdin_window":5,"body_len":0}"#,
            "invalid hello message: ",
        ),
    ] {
        let message = bad_header(header);
        assert!(message.starts_with(prefix), "{header}: {message}");
        assert!(
            message.contains("invalid type: floating point"),
            "{header}: {message}"
        );
    }
    // `body_len` is read by the codec itself, with its own message.
    for header in [
        r#"{"type":"ping","body_len":0.0}"#,
        r#"{"type":"ping","body_len":1e0}"#,
        r#"{"type":"ping","body_len":-0}"#,
    ] {
        assert_eq!(
            bad_header(header),
            "header has no non-negative integer field `body_len`",
            "{header}"
        );
    }
}

/// A header length of 0 announces an empty header, and an empty string is
/// not JSON: `bad_frame`, decided from the 4 length bytes alone (the decoder
/// does not wait for more), under any limits.
#[test]
fn zero_header_length_is_a_bad_frame() {
    for limits in [Limits::default(), Limits::PRE_AUTH] {
        let err = decode(limits, &[0, 0, 0, 0]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::BadHeader(ref m)
                    if m == "header is not valid JSON (EOF while parsing a value at line 1 column 0)"
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::BadFrame);
        assert_eq!(
            err.to_string(),
            "malformed frame header: header is not valid JSON \
             (EOF while parsing a value at line 1 column 0)"
        );
        // Bytes after the prefix change nothing: they would be the next frame.
        let err = decode(limits, &[0, 0, 0, 0, 0, 0, 0, 2, b'{', b'}']).unwrap_err();
        assert!(matches!(err, DecodeError::BadHeader(_)), "{err:?}");
    }
}

/// A `type` that is not in `Message::TYPES` is `unknown_type`, compared
/// exactly (case and spaces count). It is checked after `body_len` has been
/// read and bounded, and before the body rule and the message's fields.
#[test]
fn unknown_type_is_unknown_type() {
    for t in ["launch", "Stdout", "auth_ok ", "", "other", "AUTH"] {
        assert!(!Message::TYPES.contains(&t));
        for body_len in [0, 5] {
            let header = format!(r#"{{"type":"{t}","body_len":{body_len},"path":7}}"#);
            let err = decode(Limits::default(), &raw_frame(&header)).unwrap_err();
            assert!(
                matches!(err, DecodeError::UnknownType(ref got) if got == t),
                "{header}: {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::UnknownType);
            assert_eq!(err.to_string(), format!("unknown message type {t:?}"));
        }
    }
    // What is checked before the type.
    let err = decode(
        Limits::default(),
        &raw_frame(r#"{"type":"launch","body_len":1048577}"#),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::BodyTooLarge {
                len: 1048577,
                max: 1048576
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    assert_eq!(
        bad_header(r#"{"type":"launch"}"#),
        "header has no non-negative integer field `body_len`"
    );
    assert_eq!(
        bad_header(r#"{"type":7,"body_len":0}"#),
        "header has no string field `type`"
    );
}
