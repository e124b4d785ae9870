//! Property tests for the frame codec.
//!
//! TCP delivers a byte stream, so the decoder must give the same frames
//! whatever way the stream is cut into reads: at any single byte boundary,
//! in many random pieces, one byte at a time, or all at once (frames stuck
//! together). It must also survive any garbage a peer can send without
//! panicking and without allocating what a hostile length field claims.
//!
//! The decoding helpers drive [`FrameCodec`] exactly as `tokio_util`'s
//! `FramedRead` does: append what a read returned, call `decode` until it
//! says it needs more, and at end of stream call `decode_eof` until it
//! returns `None`.
//!
//! The last tests pin the worked example of `docs/PROTOCOL.md` byte for byte.

use std::collections::BTreeMap;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use tokio_util::codec::{Decoder, Encoder};
use wiresh_proto::codec::{encode_frame, LEN_PREFIX};
use wiresh_proto::{
    DecodeError, EncodeError, ErrorCode, ExecRequest, ExitStatus, FileEntry, FileKind, Frame,
    FrameCodec, Hello, Limits, Message, Preamble, PtyRequest, PutRequest, Secret, SignalName,
    TransferReady, WindowSize, PROTOCOL_VERSION,
};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Strings that exercise JSON escaping: plain words, arbitrary characters
/// (controls, NUL, astral planes) and a few nasty fixed ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9 ./_=-]{0,12}",
        2 => prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
        1 => select(vec![
            "",
            "\"",
            "\\",
            "\u{0}",
            "\n\r\t\u{8}\u{c}",
            "\u{7f}\u{2028}\u{2029}",
            "é☃🦀",
            "}{",
            r#"","type":"ping"#,
            "body_len",
        ])
        .prop_map(String::from),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    select(ErrorCode::ALL)
}

/// Any file-transfer message (the header-only ones).
fn file_message() -> impl Strategy<Value = Message> {
    let entry = (
        text(),
        select(vec![FileKind::File, FileKind::Dir, FileKind::Other]),
        any::<u64>(),
        any::<u32>(),
        any::<i64>(),
    )
        .prop_map(|(path, kind, size, mode, mtime)| FileEntry {
            path,
            kind,
            size,
            mode,
            mtime,
        });
    let put = (
        text(),
        any::<u64>(),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<i64>()),
        any::<bool>(),
    )
        .prop_map(|(path, size, mode, mtime, resume)| PutRequest {
            path,
            size,
            mode,
            mtime,
            resume,
        });
    let ready = (
        any::<u64>(),
        prop::option::of(text()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(offset, prefix_blake3, size, mode, mtime)| TransferReady {
            offset,
            prefix_blake3,
            size,
            mode,
            mtime,
        });
    prop_oneof![
        text().prop_map(|path| Message::Stat { path }),
        entry.prop_map(Message::Entry),
        text().prop_map(|path| Message::List { path }),
        any::<u64>().prop_map(|count| Message::ListEnd { count }),
        (text(), prop::option::of(any::<u32>()))
            .prop_map(|(path, mode)| Message::Mkdir { path, mode }),
        put.prop_map(Message::Put),
        (text(), any::<u64>()).prop_map(|(path, resume_from)| Message::Get { path, resume_from }),
        ready.prop_map(Message::TransferReady),
        any::<u64>().prop_map(|offset| Message::TransferStart { offset }),
        text().prop_map(|blake3| Message::FileEnd { blake3 }),
        any::<u64>().prop_map(|bytes| Message::TransferOk { bytes }),
    ]
}

/// Any exec request, including invalid ones (neither or both of
/// command/argv): validity is the server's business, not the codec's.
fn exec_request() -> impl Strategy<Value = ExecRequest> {
    (
        prop::option::of(text()),
        prop::option::of(prop::collection::vec(text(), 0..4)),
        prop::collection::btree_map(text(), text(), 0..4),
        prop::option::of(text()),
        prop::option::of(any::<u64>()),
        (
            any::<bool>(),
            any::<bool>(),
            prop::option::of(pty_request()),
        ),
    )
        .prop_map(
            |(command, argv, env, cwd, timeout_ms, (stdin, login_shell, pty))| ExecRequest {
                command,
                argv,
                login_shell,
                env,
                cwd,
                timeout_ms,
                stdin,
                pty,
            },
        )
}

/// Any pty request, including invalid terminal types: checking them is the
/// server's business.
fn pty_request() -> impl Strategy<Value = PtyRequest> {
    (text(), any::<u16>(), any::<u16>()).prop_map(|(term, cols, rows)| PtyRequest {
        term,
        cols,
        rows,
    })
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u16>(),
        text(),
        prop::collection::vec(text(), 0..4),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(version, server, features, keepalive_secs, max_body, max_header, stdin_window)| {
                Hello {
                    version,
                    server,
                    features,
                    keepalive_secs,
                    max_body,
                    max_header,
                    stdin_window,
                }
            },
        )
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    (
        prop::option::of(any::<i32>()),
        prop::option::of(any::<i32>()),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(code, signal, duration_ms, timed_out, shutdown)| ExitStatus {
                code,
                signal,
                duration_ms,
                timed_out,
                shutdown,
            },
        )
}

/// Any frame whose body is at most `max_body` bytes.
fn frame(max_body: usize) -> impl Strategy<Value = Frame> {
    let with_body = (
        select(vec![
            Message::Stdin,
            Message::Stdout,
            Message::Stderr,
            Message::Ping,
            Message::Pong,
            Message::FileData,
        ]),
        prop::collection::vec(any::<u8>(), 0..=max_body),
    )
        .prop_map(|(m, body)| Frame::with_body(m, body));
    let without_body = prop_oneof![
        hello().prop_map(Message::Hello),
        text().prop_map(|t| Message::Auth { token: Secret(t) }),
        Just(Message::AuthOk),
        exec_request().prop_map(Message::Exec),
        any::<u32>().prop_map(|pid| Message::Started { pid }),
        any::<u64>().prop_map(|bytes| Message::StdinAck { bytes }),
        Just(Message::StdinEnd),
        exit_status().prop_map(Message::Exit),
        (error_code(), text()).prop_map(|(code, message)| Message::Error { code, message }),
        Just(Message::Cancel),
        select(SignalName::ALL.to_vec()).prop_map(|name| Message::Signal { name }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(cols, rows)| Message::Resize(WindowSize { cols, rows })),
        file_message(),
        // Body-carrying types with an empty body.
        select(vec![
            Message::Stdin,
            Message::Stdout,
            Message::Stderr,
            Message::Ping,
            Message::Pong
        ]),
    ]
    .prop_map(Frame::new);
    prop_oneof![with_body, without_body]
}

fn frames(count: std::ops::Range<usize>, max_body: usize) -> impl Strategy<Value = Vec<Frame>> {
    prop::collection::vec(frame(max_body), count)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Encodes `frames` back to back; also returns where each frame ends.
fn encode_all(frames: &[Frame]) -> (Vec<u8>, Vec<usize>) {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut ends = Vec::with_capacity(frames.len());
    for f in frames {
        codec.encode(f, &mut buf).expect("arbitrary frames encode");
        ends.push(buf.len());
    }
    (buf.to_vec(), ends)
}

/// Feeds one read's worth of bytes and drains every complete frame.
fn feed(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    chunk: &[u8],
    out: &mut Vec<Frame>,
) -> Result<(), DecodeError> {
    buf.extend_from_slice(chunk);
    while let Some(f) = codec.decode(buf)? {
        out.push(f);
    }
    Ok(())
}

/// End of stream, as `FramedRead` handles it.
fn finish(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    out: &mut Vec<Frame>,
) -> Result<(), DecodeError> {
    while let Some(f) = codec.decode_eof(buf)? {
        out.push(f);
    }
    Ok(())
}

/// Decodes a stream delivered as `chunks`, then ends it.
fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Frame>, DecodeError> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        feed(&mut codec, &mut buf, chunk, &mut out)?;
    }
    finish(&mut codec, &mut buf, &mut out)?;
    assert!(buf.is_empty(), "bytes left over after a clean end");
    Ok(out)
}

/// Turns arbitrary indices into sorted cut points of `len` bytes and the
/// chunks between them.
fn chunks_at<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// One frame built by hand: a length prefix and exactly these header bytes.
fn raw_frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut raw = (header.len() as u32).to_be_bytes().to_vec();
    raw.extend_from_slice(header);
    raw.extend_from_slice(body);
    raw
}

/// A `ping` header of exactly `len` bytes (at least 37), padded with an
/// unknown field, which the decoder must ignore.
fn padded_ping_header(len: usize) -> Vec<u8> {
    let empty = br#"{"type":"ping","body_len":0,"pad":""}"#.len();
    assert!(len >= empty);
    let h = format!(
        r#"{{"type":"ping","body_len":0,"pad":"{}"}}"#,
        "x".repeat(len - empty)
    );
    assert_eq!(h.len(), len);
    h.into_bytes()
}

// ---------------------------------------------------------------------------
// (a), (b): any cut of a valid stream decodes to the same frames
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// One read boundary, tried at every byte offset: the first read yields
    /// exactly the frames that end inside it (no frame early, none held
    /// back), and the whole stream yields exactly the frames sent.
    #[test]
    fn split_once_at_every_byte_boundary(frames in frames(1..8, 64)) {
        let (bytes, ends) = encode_all(&frames);
        for cut in 0..=bytes.len() {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            feed(&mut codec, &mut buf, &bytes[..cut], &mut out).unwrap();
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(out.len(), complete, "frames after the first read, cut at {}", cut);
            feed(&mut codec, &mut buf, &bytes[cut..], &mut out).unwrap();
            finish(&mut codec, &mut buf, &mut out).unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&out, &frames, "cut at {}", cut);
        }
    }

    /// Many reads of random sizes, with bodies of a few KiB.
    #[test]
    fn random_chunking(
        frames in frames(1..8, 4096),
        cuts in prop::collection::vec(any::<Index>(), 0..48),
    ) {
        let (bytes, _) = encode_all(&frames);
        let chunks = chunks_at(&bytes, &cuts);
        prop_assert_eq!(decode_chunks(chunks).unwrap(), frames);
    }

    /// The worst case for a reader: every read returns a single byte.
    #[test]
    fn one_byte_at_a_time(frames in frames(1..6, 64)) {
        let (bytes, _) = encode_all(&frames);
        prop_assert_eq!(decode_chunks(bytes.chunks(1)).unwrap(), frames);
    }

    /// Sticky packets: every frame in one read. Also pins the header layout
    /// the protocol document promises: `type` first, `body_len` last,
    /// compact JSON, big-endian length prefix.
    #[test]
    fn all_frames_in_one_buffer(frames in frames(1..16, 4096)) {
        let (bytes, ends) = encode_all(&frames);
        let mut start = 0;
        for (f, &end) in frames.iter().zip(&ends) {
            let raw = &bytes[start..end];
            let header_len = u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
            prop_assert_eq!(LEN_PREFIX + header_len + f.body.len(), raw.len());
            let header = std::str::from_utf8(&raw[4..4 + header_len]).unwrap();
            let type_prefix = format!(r#"{{"type":"{}""#, f.message.type_name());
            let body_len_suffix = format!(r#""body_len":{}}}"#, f.body.len());
            prop_assert!(header.starts_with(&type_prefix), "{}", header);
            prop_assert!(header.ends_with(&body_len_suffix), "{}", header);
            prop_assert_eq!(&raw[4 + header_len..], &f.body[..]);
            start = end;
        }

        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        prop_assert!(buf.is_empty());
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(out, frames);
    }

    /// Forward compatibility: unknown header fields are ignored, and the
    /// order of fields does not matter.
    #[test]
    fn unknown_header_fields_are_ignored(
        f in frame(64),
        key in "[a-z_]{1,10}",
        value in prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::from),
            Just(serde_json::json!({"nested": [1, "two", {"three": null}]})),
        ],
    ) {
        let bytes = encode_frame(&f).unwrap();
        let header_len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let mut header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes[4..4 + header_len]).unwrap();
        let key = format!("x_{key}");
        header.insert(key, value);
        // serde_json's map is sorted, so this also moves `body_len` ahead of `type`.
        let header = serde_json::to_vec(&header).unwrap();
        let raw = raw_frame(&header, &bytes[4 + header_len..]);
        prop_assert_eq!(decode_chunks([&raw[..]]).unwrap(), vec![f]);
    }
}

// ---------------------------------------------------------------------------
// (c): garbage never panics and never makes the decoder allocate a claim
// ---------------------------------------------------------------------------

/// Bytes a broken or hostile peer might send.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..256);
    let random_prefix = (
        prop_oneof![any::<u32>(), 0u32..600],
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(len, rest)| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend(rest);
            v
        });
    let mut types: Vec<&'static str> = Message::TYPES.to_vec();
    types.extend(["launch", "", "Stdout", "STDIN"]);
    let plausible_header = (
        select(types),
        prop_oneof![0u64..2048, any::<u64>(), Just(u64::MAX)],
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(t, body_len, honest_prefix, rest)| {
            let header = format!(r#"{{"type":"{t}","body_len":{body_len}}}"#);
            let len = if honest_prefix {
                header.len() as u32
            } else {
                header.len() as u32 ^ 0x8000_0000
            };
            let mut v = len.to_be_bytes().to_vec();
            v.extend_from_slice(header.as_bytes());
            v.extend(rest);
            v
        });
    let mutated_stream = (
        frames(1..4, 64),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..5), 1..6),
    )
        .prop_map(|(frames, edits)| {
            let (mut v, _) = encode_all(&frames);
            for (at, byte, kind) in edits {
                let i = at.index(v.len() + 1);
                match kind {
                    0 | 1 if i < v.len() => v[i] = byte,
                    2 | 3 => v.insert(i, byte),
                    _ => v.truncate(i),
                }
            }
            v
        });
    prop_oneof![
        1 => noise,
        1 => random_prefix,
        2 => plausible_header,
        4 => mutated_stream,
    ]
}

/// Feeds garbage in `chunks` and checks the decoder's invariants after every
/// call. Returns how the stream ended.
fn chew(limits: Limits, bytes: &[u8], cuts: &[Index]) -> Result<Vec<Frame>, DecodeError> {
    // The buffer may hold what arrived plus what the decoder reserved for a
    // bounded header or body; BytesMut may double its allocation and may
    // round up to the original capacity (at most 64 KiB) when it reallocates.
    let bound = 2 * (bytes.len() + LEN_PREFIX + limits.max_header + limits.max_body) + 128 * 1024;
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let check = |buf: &BytesMut, r: &Result<Option<Frame>, DecodeError>| {
        assert!(
            buf.capacity() <= bound,
            "buffer grew to {} bytes (bound {bound}) after {r:?}",
            buf.capacity()
        );
        match r {
            Err(DecodeError::HeaderTooLarge { len, max }) => {
                assert_eq!(*max, limits.max_header);
                assert!(*len > limits.max_header as u64);
            }
            Err(DecodeError::BodyTooLarge { len, max }) => {
                assert_eq!(*max, limits.max_body);
                assert!(*len > limits.max_body as u64);
            }
            Ok(Some(f)) => {
                assert!(f.body.len() <= limits.max_body);
                // Whatever decodes re-encodes canonically to the same frame.
                let again = encode_frame(f).expect("a decoded frame re-encodes");
                assert_eq!(decode_chunks([&again[..]]).unwrap(), vec![f.clone()]);
            }
            _ => {}
        }
    };
    for chunk in chunks_at(bytes, cuts) {
        buf.extend_from_slice(chunk);
        loop {
            let r = codec.decode(&mut buf);
            check(&buf, &r);
            match r? {
                Some(f) => out.push(f),
                None => break,
            }
        }
    }
    loop {
        let r = codec.decode_eof(&mut buf);
        check(&buf, &r);
        match r? {
            Some(f) => out.push(f),
            None => break,
        }
    }
    assert!(buf.is_empty(), "decode_eof returned None with bytes left");
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes, cut arbitrarily, with small limits: the decoder
    /// yields frames, waits for more, or errors; it never panics, and its
    /// buffer stays bounded by the limits, not by what the bytes claim.
    #[test]
    fn garbage_with_small_limits(
        bytes in garbage(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        max_header in 0usize..512,
        max_body in 0usize..1024,
    ) {
        let _ = chew(Limits { max_header, max_body }, &bytes, &cuts);
    }

    /// The same with the default limits.
    #[test]
    fn garbage_with_default_limits(
        bytes in garbage(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let _ = chew(Limits::default(), &bytes, &cuts);
    }
}

#[test]
fn huge_claims_allocate_nothing() {
    let limits = Limits::default();
    // A 4 GiB header claim is refused from the 4-byte prefix alone.
    for len in [
        limits.max_header as u32 + 1,
        1 << 24,
        u32::MAX - 1,
        u32::MAX,
    ] {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
        let before = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, DecodeError::HeaderTooLarge { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        assert_eq!(buf.capacity(), before, "claim {len}");
    }
    // Huge body claims are refused as soon as the header is parsed.
    for len in [
        limits.max_body as u64 + 1,
        1 << 32,
        1 << 40,
        i64::MAX as u64,
        u64::MAX,
    ] {
        let header = format!(r#"{{"type":"stdout","body_len":{len}}}"#);
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&raw_frame(header.as_bytes(), b"abc")[..]);
        let before = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, DecodeError::BodyTooLarge { len: l, .. } if l == len),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        assert_eq!(buf.capacity(), before, "claim {len}");
    }
}

#[test]
fn malformed_headers_are_bad_frames() {
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"[1,2]",
        b"null",
        br#"{"body_len":0}"#,
        br#"{"type":7,"body_len":0}"#,
        br#"{"type":"ping"}"#,
        br#"{"type":"ping","body_len":-1}"#,
        br#"{"type":"ping","body_len":1.5}"#,
        br#"{"type":"ping","body_len":"3"}"#,
        br#"{"type":"exec","body_len":1}"#,
        br#"{"type":"started","body_len":0}"#,
        br#"{"type":"started","pid":-1,"body_len":0}"#,
        br#"{"type":"auth","token":5,"body_len":0}"#,
        b"{\"type\":\"ping\",\"body_len\":0}\xff",
    ];
    for header in cases {
        let raw = raw_frame(header, b"x");
        let err = decode_chunks([&raw[..]]).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadHeader(_)),
            "{}: {err}",
            header.escape_ascii()
        );
        assert_eq!(err.code(), ErrorCode::BadFrame);
    }
    let raw = raw_frame(br#"{"type":"launch","body_len":0}"#, b"");
    let err = decode_chunks([&raw[..]]).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownType(ref t) if t == "launch"));
    assert_eq!(err.code(), ErrorCode::UnknownType);
}

// ---------------------------------------------------------------------------
// (d): limits are exact
// ---------------------------------------------------------------------------

/// Decodes `raw` in one read, with `limits`, without ending the stream.
fn decode_one(limits: Limits, raw: &[u8]) -> Result<Option<Frame>, DecodeError> {
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::from(raw);
    codec.decode(&mut buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A header of exactly `max_header` bytes is accepted; one byte more is
    /// refused from the length prefix alone, before any header byte arrives.
    #[test]
    fn header_limit_is_exact(max_header in 40usize..4096, delta in -2isize..=2) {
        let limits = Limits { max_header, max_body: 16 };
        let len = (max_header as isize + delta) as usize;
        let raw = raw_frame(&padded_ping_header(len), b"");
        let prefix_only = decode_one(limits, &raw[..LEN_PREFIX]);
        let whole = decode_one(limits, &raw);
        if delta <= 0 {
            prop_assert!(matches!(prefix_only, Ok(None)), "{:?}", prefix_only);
            prop_assert_eq!(whole.unwrap(), Some(Frame::new(Message::Ping)));
        } else {
            let refused = matches!(
                prefix_only,
                Err(DecodeError::HeaderTooLarge { len: l, .. }) if l == len as u64
            );
            prop_assert!(refused, "prefix alone: {:?}", prefix_only);
            let refused = matches!(whole, Err(DecodeError::HeaderTooLarge { .. }));
            prop_assert!(refused, "whole frame: {:?}", whole);
        }
    }

    /// A body of exactly `max_body` bytes is accepted; one byte more is
    /// refused as soon as the header is complete, before any body arrives.
    #[test]
    fn body_limit_is_exact(max_body in 0usize..8192, delta in -2isize..=2) {
        let limits = Limits { max_header: 1024, max_body };
        let len = max_body as isize + delta;
        prop_assume!(len >= 0);
        let len = len as usize;
        let header = format!(r#"{{"type":"stdout","body_len":{len}}}"#);
        let raw = raw_frame(header.as_bytes(), &vec![7u8; len]);
        let header_only = decode_one(limits, &raw[..LEN_PREFIX + header.len()]);
        let whole = decode_one(limits, &raw);
        if delta <= 0 {
            let waits = matches!(header_only, Ok(None)) || len == 0;
            prop_assert!(waits, "{:?}", header_only);
            prop_assert_eq!(whole.unwrap(), Some(Frame::with_body(Message::Stdout, vec![7u8; len])));
        } else {
            let refused = matches!(
                header_only,
                Err(DecodeError::BodyTooLarge { len: l, .. }) if l == len as u64
            );
            prop_assert!(refused, "header alone: {:?}", header_only);
            let refused = matches!(whole, Err(DecodeError::BodyTooLarge { .. }));
            prop_assert!(refused, "whole frame: {:?}", whole);
        }
    }
}

#[test]
fn default_limits_are_exact() {
    let limits = Limits::default();
    assert_eq!(limits.max_header, 65536);
    assert_eq!(limits.max_body, 1048576);

    let at = raw_frame(&padded_ping_header(65536), b"");
    assert_eq!(
        decode_one(limits, &at).unwrap(),
        Some(Frame::new(Message::Ping))
    );
    let over = raw_frame(&padded_ping_header(65537), b"");
    assert!(matches!(
        decode_one(limits, &over[..LEN_PREFIX]),
        Err(DecodeError::HeaderTooLarge {
            len: 65537,
            max: 65536
        })
    ));

    let body = vec![0xa5u8; 1048576];
    let frame = Frame::with_body(Message::Stdout, body.clone());
    let at = encode_frame(&frame).unwrap();
    assert_eq!(decode_chunks(at.chunks(65536)).unwrap(), vec![frame]);
    let header = br#"{"type":"stdout","body_len":1048577}"#;
    assert!(matches!(
        decode_one(limits, &raw_frame(header, b"")),
        Err(DecodeError::BodyTooLarge {
            len: 1048577,
            max: 1048576
        })
    ));

    // The encoder enforces the same limit, and a refused frame leaves what
    // was already in the buffer untouched.
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(Frame::new(Message::Cancel), &mut buf).unwrap();
    let before = buf.clone();
    let mut big = body;
    big.push(0);
    let err = codec
        .encode(Frame::with_body(Message::Stdout, big), &mut buf)
        .unwrap_err();
    assert!(matches!(
        err,
        EncodeError::BodyTooLarge {
            len: 1048577,
            max: 1048576
        }
    ));
    assert_eq!(buf, before);
}

#[test]
fn encoder_header_limit_is_exact() {
    let header_len = |cmd: &str| {
        let bytes = encode_frame(&Frame::new(Message::Exec(ExecRequest::shell(cmd)))).unwrap();
        bytes.len() - LEN_PREFIX
    };
    let base = header_len("");
    let max_header = 300;
    let fits = "x".repeat(max_header - base);
    assert_eq!(header_len(&fits), max_header);
    let mut codec = FrameCodec::new(Limits {
        max_header,
        max_body: 16,
    });
    let mut buf = BytesMut::new();
    codec
        .encode(
            Frame::new(Message::Exec(ExecRequest::shell(fits.clone()))),
            &mut buf,
        )
        .unwrap();
    let before = buf.clone();
    let err = codec
        .encode(
            Frame::new(Message::Exec(ExecRequest::shell(fits + "x"))),
            &mut buf,
        )
        .unwrap_err();
    assert!(
        matches!(err, EncodeError::HeaderTooLarge { len: 301, max: 300 }),
        "{err}"
    );
    assert_eq!(buf, before);
    // And the decoder with the same limits takes back what the encoder let out.
    assert_eq!(
        decode_one(codec.limits(), &buf)
            .unwrap()
            .unwrap()
            .message
            .type_name(),
        "exec"
    );
}

#[test]
fn bodies_only_where_the_type_allows() {
    for t in Message::TYPES {
        let header = format!(r#"{{"type":"{t}","body_len":1}}"#);
        let r = decode_one(Limits::default(), &raw_frame(header.as_bytes(), b"z"));
        if Message::carries_body(t) {
            assert_eq!(r.unwrap().unwrap().body, &b"z"[..], "{t}");
        } else {
            assert!(matches!(r, Err(DecodeError::BadHeader(_))), "{t}: {r:?}");
        }
    }
    let err = FrameCodec::default()
        .encode(
            Frame::with_body(Message::Cancel, &b"z"[..]),
            &mut BytesMut::new(),
        )
        .unwrap_err();
    assert!(matches!(err, EncodeError::UnexpectedBody("cancel")));
}

// ---------------------------------------------------------------------------
// decode_eof on truncated input
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A stream that ends at a frame boundary ends cleanly; one that ends
    /// anywhere else yields the complete frames and then `Truncated`.
    #[test]
    fn decode_eof_on_truncated_streams(
        frames in frames(1..5, 256),
        at in any::<Index>(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let (bytes, ends) = encode_all(&frames);
        let end = at.index(bytes.len() + 1);
        let complete = ends.iter().filter(|&&e| e <= end).count();
        let on_boundary = end == 0 || ends.contains(&end);

        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks_at(&bytes[..end], &cuts) {
            feed(&mut codec, &mut buf, chunk, &mut out).unwrap();
        }
        let r = finish(&mut codec, &mut buf, &mut out);
        prop_assert_eq!(&out[..], &frames[..complete]);
        if on_boundary {
            prop_assert!(r.is_ok(), "{:?}", r);
            prop_assert!(buf.is_empty());
        } else {
            let err = r.unwrap_err();
            prop_assert!(matches!(err, DecodeError::Truncated(_)), "{}", err);
            prop_assert_eq!(err.code(), ErrorCode::BadFrame);
        }
    }
}

#[test]
fn decode_eof_cases() {
    let frame = Frame::with_body(Message::Stdout, &b"abcdef"[..]);
    let bytes = encode_frame(&frame).unwrap();
    let header_end = bytes.len() - 6;
    // Nothing at all, a partial prefix, a partial header, the header alone,
    // part of the body.
    for (end, ok) in [
        (0, true),
        (2, false),
        (LEN_PREFIX, false),
        (header_end - 1, false),
        (header_end, false),
        (bytes.len() - 1, false),
        (bytes.len(), true),
    ] {
        let r = decode_chunks([&bytes[..end]]);
        assert_eq!(r.is_ok(), ok, "end {end}: {r:?}");
    }
    // decode_eof also hands out frames still sitting in the buffer.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&two[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(frame.clone()));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(frame));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

// ---------------------------------------------------------------------------
// The worked example of docs/PROTOCOL.md
// ---------------------------------------------------------------------------

/// Client → server: preamble, auth, exec of `echo hi`.
fn example_client_frames() -> Vec<Frame> {
    vec![
        Frame::new(Message::Auth {
            token: Secret("s3cret".into()),
        }),
        Frame::new(Message::Exec(ExecRequest::shell("echo hi"))),
    ]
}

/// Server → client: hello, auth_ok, started, stdout, exit.
fn example_server_frames() -> Vec<Frame> {
    vec![
        Frame::new(Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            server: "wiresh/0.1.0".into(),
            features: vec![
                "exec".into(),
                "stdin".into(),
                "cancel".into(),
                "ping".into(),
                "pty".into(),
            ],
            keepalive_secs: 20,
            max_body: 1048576,
            max_header: 65536,
            stdin_window: 1048576,
        })),
        Frame::new(Message::AuthOk),
        Frame::new(Message::Started { pid: 4242 }),
        Frame::with_body(Message::Stdout, &b"hi\n"[..]),
        Frame::new(Message::Exit(ExitStatus {
            code: Some(0),
            signal: None,
            duration_ms: 2,
            timed_out: false,
            shutdown: false,
        })),
    ]
}

/// `hexdump -C` layout: offset, 16 bytes in two groups of 8, ASCII column.
fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for (j, b) in line.iter().enumerate() {
            if j == 8 {
                hex.push(' ');
            }
            hex.push_str(&format!("{b:02x} "));
        }
        let ascii: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:08x}  {hex:<49} |{ascii}|\n", i * 16));
    }
    out.push_str(&format!("{:08x}\n", bytes.len()));
    out
}

fn example_streams() -> (Vec<u8>, Vec<u8>) {
    let mut client = Preamble::new(PROTOCOL_VERSION).encode().to_vec();
    client.extend(encode_all(&example_client_frames()).0);
    let (server, _) = encode_all(&example_server_frames());
    (client, server)
}

#[test]
fn worked_example_bytes() {
    let (client, server) = example_streams();
    assert_eq!(
        &client[..8],
        &[0x57, 0x49, 0x52, 0x45, 0x53, 0x48, 0x00, 0x01]
    );
    // Built from readable parts, then compared as bytes.
    let mut want = hex_decode("5749524553480001");
    want.extend(raw_frame(
        br#"{"type":"auth","token":"s3cret","body_len":0}"#,
        b"",
    ));
    want.extend(raw_frame(
        br#"{"type":"exec","command":"echo hi","stdin":false,"body_len":0}"#,
        b"",
    ));
    assert_eq!(client, want);

    let mut want = Vec::new();
    for (header, body) in [
        (
            &br#"{"type":"hello","version":1,"server":"wiresh/0.1.0","features":["exec","stdin","cancel","ping","pty"],"keepalive_secs":20,"max_body":1048576,"max_header":65536,"stdin_window":1048576,"body_len":0}"#[..],
            &b""[..],
        ),
        (br#"{"type":"auth_ok","body_len":0}"#, b""),
        (br#"{"type":"started","pid":4242,"body_len":0}"#, b""),
        (br#"{"type":"stdout","body_len":3}"#, b"hi\n"),
        (
            br#"{"type":"exit","code":0,"signal":null,"duration_ms":2,"timed_out":false,"body_len":0}"#,
            b"",
        ),
    ] {
        want.extend(raw_frame(header, body));
    }
    assert_eq!(server, want);

    // And both streams decode back.
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&client[8..]);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert_eq!(out, example_client_frames());
    assert_eq!(
        decode_chunks([&server[..]]).unwrap(),
        example_server_frames()
    );
}

/// The hex dumps printed in `docs/PROTOCOL.md` are exactly these bytes.
#[test]
fn protocol_doc_shows_these_bytes() {
    let (client, server) = example_streams();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !root.join("Cargo.toml").exists() {
        // The crate is being built outside the repository (e.g. packaged).
        return;
    }
    let doc = std::fs::read_to_string(root.join("docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md exists in the repository");
    for (name, bytes) in [("client", &client), ("server", &server)] {
        let dump = hexdump(bytes);
        assert!(
            doc.contains(&dump),
            "docs/PROTOCOL.md lacks the {name} -> peer dump:\n{dump}"
        );
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn hexdump_matches_the_usual_format() {
    // Exactly what `printf ... | hexdump -C` prints for these bytes.
    assert_eq!(
        hexdump(b"WIRESH\x00\x01\x00\x00\x00\x2d{\"type\":\"auth\""),
        "00000000  57 49 52 45 53 48 00 01  00 00 00 2d 7b 22 74 79  |WIRESH.....-{\"ty|\n\
         00000010  70 65 22 3a 22 61 75 74  68 22                    |pe\":\"auth\"|\n\
         0000001a\n"
    );
}

/// The terminal session of `docs/PROTOCOL.md` section 7.10, header by header.
#[test]
fn terminal_session_serialises_as_documented() {
    let header = |m: Message| {
        let bytes = encode_frame(&Frame::new(m)).unwrap();
        String::from_utf8(bytes[LEN_PREFIX..].to_vec()).unwrap()
    };
    let exec = ExecRequest {
        stdin: true,
        pty: Some(PtyRequest {
            term: "xterm-256color".into(),
            cols: 80,
            rows: 24,
        }),
        ..ExecRequest::login_shell()
    };
    assert_eq!(
        header(Message::Exec(exec)),
        r#"{"type":"exec","login_shell":true,"stdin":true,"pty":{"term":"xterm-256color","cols":80,"rows":24},"body_len":0}"#
    );
    assert_eq!(
        header(Message::Resize(WindowSize {
            cols: 120,
            rows: 40
        })),
        r#"{"type":"resize","cols":120,"rows":40,"body_len":0}"#
    );
    assert_eq!(
        header(Message::Signal {
            name: SignalName::Int
        }),
        r#"{"type":"signal","name":"INT","body_len":0}"#
    );
    let tty = ExecRequest {
        pty: Some(PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        }),
        ..ExecRequest::shell("tty")
    };
    assert_eq!(
        header(Message::Exec(tty)),
        r#"{"type":"exec","command":"tty","stdin":false,"pty":{"term":"xterm","cols":80,"rows":24},"body_len":0}"#
    );
}

#[test]
fn exec_env_and_argv_serialise_as_documented() {
    let mut env = BTreeMap::new();
    env.insert("LANG".to_string(), "C".to_string());
    let req = ExecRequest {
        command: None,
        argv: Some(vec!["ls".into(), "-l".into()]),
        env,
        cwd: Some("/tmp".into()),
        timeout_ms: Some(5000),
        stdin: true,
        ..Default::default()
    };
    let bytes = encode_frame(&Frame::new(Message::Exec(req))).unwrap();
    assert_eq!(
        &bytes[4..],
        br#"{"type":"exec","argv":["ls","-l"],"env":{"LANG":"C"},"cwd":"/tmp","timeout_ms":5000,"stdin":true,"body_len":0}"#
    );
    let bytes = encode_frame(&Frame::new(Message::error(
        ErrorCode::AuthFailed,
        "wrong token",
    )))
    .unwrap();
    assert_eq!(
        &bytes[4..],
        br#"{"type":"error","code":"auth_failed","message":"wrong token","body_len":0}"#
    );
}

/// Decodes one header (no body) with the default limits.
fn decode_header(header: &str) -> Result<Message, DecodeError> {
    let raw = raw_frame(header.as_bytes(), b"");
    Ok(decode_one(Limits::default(), &raw)?
        .expect("a whole frame")
        .message)
}

/// Defaults and `null`s exactly as section 5 of the protocol document says.
#[test]
fn documented_defaults_and_nulls() {
    // Optional fields may be left out...
    assert_eq!(
        decode_header(r#"{"type":"exec","command":"true","body_len":0}"#).unwrap(),
        Message::Exec(ExecRequest::shell("true"))
    );
    assert_eq!(
        decode_header(r#"{"body_len":0,"type":"exit","duration_ms":7}"#).unwrap(),
        Message::Exit(ExitStatus {
            duration_ms: 7,
            ..Default::default()
        })
    );
    assert_eq!(
        decode_header(
            r#"{"type":"hello","version":1,"server":"s","max_body":10,"stdin_window":5,"body_len":0}"#
        )
        .unwrap(),
        Message::Hello(Hello {
            version: 1,
            server: "s".into(),
            features: vec![],
            keepalive_secs: 0,
            max_body: 10,
            // A hello from a server older than `max_header` still decodes.
            max_header: Limits::DEFAULT_MAX_HEADER as u32,
            stdin_window: 5,
        })
    );
    // ... or be null where the document says "or null" ...
    assert_eq!(
        decode_header(
            r#"{"type":"exec","command":null,"argv":["ls"],"cwd":null,"timeout_ms":null,"body_len":0}"#
        )
        .unwrap(),
        Message::Exec(ExecRequest::argv(vec!["ls".into()]))
    );
    assert_eq!(
        decode_header(r#"{"type":"exit","code":null,"signal":15,"duration_ms":1,"body_len":0}"#)
            .unwrap(),
        Message::Exit(ExitStatus {
            signal: Some(15),
            duration_ms: 1,
            ..Default::default()
        })
    );
    // `auth` without a token: the client proves itself with its TLS
    // client certificate alone.
    assert_eq!(
        decode_header(r#"{"type":"auth","body_len":0}"#).unwrap(),
        Message::Auth {
            token: Secret::default()
        }
    );
    // ... and nowhere else.
    for header in [
        r#"{"type":"exec","command":"true","stdin":null,"body_len":0}"#,
        r#"{"type":"exec","command":"true","env":null,"body_len":0}"#,
        r#"{"type":"hello","version":1,"server":"s","features":null,"max_body":10,"body_len":0}"#,
        r#"{"type":"hello","version":1,"server":"s","max_body":10,"max_header":null,"stdin_window":5,"body_len":0}"#,
        r#"{"type":"exit","duration_ms":null,"body_len":0}"#,
        r#"{"type":"ping","body_len":null}"#,
    ] {
        assert!(
            matches!(decode_header(header), Err(DecodeError::BadHeader(_))),
            "{header}"
        );
    }
    // Required fields are required, and ranges are enforced.
    for header in [
        r#"{"type":"exit","body_len":0}"#,
        r#"{"type":"auth","token":null,"body_len":0}"#,
        r#"{"type":"error","code":"internal","body_len":0}"#,
        r#"{"type":"hello","version":65536,"server":"s","max_body":10,"body_len":0}"#,
        r#"{"type":"hello","version":1,"server":"s","max_body":10,"max_header":4294967296,"stdin_window":5,"body_len":0}"#,
        r#"{"type":"started","pid":4294967296,"body_len":0}"#,
        r#"{"type":"exit","code":2147483648,"duration_ms":1,"body_len":0}"#,
    ] {
        assert!(
            matches!(decode_header(header), Err(DecodeError::BadHeader(_))),
            "{header}"
        );
    }
    // Unknown error codes are `other`; whitespace around the JSON is fine.
    assert_eq!(
        decode_header(" \n{ \"type\" : \"error\", \"code\":\"new_code\", \"message\":\"m\", \"body_len\": 0 }\r\n")
            .unwrap(),
        Message::error(ErrorCode::Other, "m")
    );
}

/// Deeply nested JSON inside the header limit is refused, not a stack overflow.
#[test]
fn deeply_nested_header_is_a_bad_frame_not_a_crash() {
    let depth = 30_000;
    let header = format!(
        r#"{{"type":"ping","body_len":0,"x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(header.len() <= Limits::DEFAULT_MAX_HEADER);
    assert!(matches!(
        decode_header(&header),
        Err(DecodeError::BadHeader(_))
    ));
    // Moderate nesting in an unknown field is simply ignored.
    let header = format!(
        r#"{{"type":"ping","body_len":0,"x":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(decode_header(&header).unwrap(), Message::Ping);
}
