//! Every message type and every error code, checked one by one against its
//! wire name.
//!
//! The library writes each wire name exactly once (the `messages!` and
//! `error_codes!` lists in `message.rs`), and serde, `Message::TYPES`,
//! `type_name()`, `carries_body()` and `ErrorCode::as_str()` all come from
//! that one literal, so they cannot disagree with each other (and so for
//! the signal names of `signal`, from `signal_names!`). What they can
//! still be is wrong: a misspelt literal would be misspelt everywhere at
//! once. So the names are written out a second time here, on purpose, as the
//! protocol document spells them, and the matches below have no wildcard
//! arm: a new variant does not compile until it is listed here too.

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio_util::codec::Decoder;
use wiresh_proto::codec::{encode_frame, LEN_PREFIX};
use wiresh_proto::{
    EncodeError, ErrorCode, ExecRequest, ExitStatus, FileEntry, FileKind, Frame, FrameCodec, Hello,
    Message, PtyRequest, PutRequest, Secret, SignalName, TransferReady, WindowSize,
    PROTOCOL_VERSION,
};

/// The `type` of each message as `docs/PROTOCOL.md` section 5 spells it, and
/// whether its frames may carry a body.
fn documented(m: &Message) -> (&'static str, bool) {
    match m {
        Message::Hello(_) => ("hello", false),
        Message::Auth { .. } => ("auth", false),
        Message::AuthOk => ("auth_ok", false),
        Message::Exec(_) => ("exec", false),
        Message::Started { .. } => ("started", false),
        Message::Stdin => ("stdin", true),
        Message::StdinEnd => ("stdin_end", false),
        Message::StdinAck { .. } => ("stdin_ack", false),
        Message::Stdout => ("stdout", true),
        Message::Stderr => ("stderr", true),
        Message::Exit(_) => ("exit", false),
        Message::Error { .. } => ("error", false),
        Message::Cancel => ("cancel", false),
        Message::Signal { .. } => ("signal", false),
        Message::Resize(_) => ("resize", false),
        Message::Ping => ("ping", true),
        Message::Pong => ("pong", true),
        Message::Stat { .. } => ("stat", false),
        Message::Entry(_) => ("entry", false),
        Message::List { .. } => ("list", false),
        Message::ListEnd { .. } => ("list_end", false),
        Message::Mkdir { .. } => ("mkdir", false),
        Message::Put(_) => ("put", false),
        Message::Get { .. } => ("get", false),
        Message::TransferReady(_) => ("transfer_ready", false),
        Message::TransferStart { .. } => ("transfer_start", false),
        Message::FileData => ("file_data", true),
        Message::FileEnd { .. } => ("file_end", false),
        Message::TransferOk { .. } => ("transfer_ok", false),
    }
}

/// One message of every variant, with its optional fields filled in so the
/// round trips below cover them too.
fn one_of_each() -> Vec<Message> {
    let mut env = BTreeMap::new();
    env.insert("LANG".to_string(), "C".to_string());
    vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            server: "wiresh/0.1.0".into(),
            features: vec!["exec".into(), "files".into()],
            keepalive_secs: 20,
            max_body: 1 << 20,
            max_header: 4096,
            stdin_window: 1 << 20,
        }),
        Message::Auth {
            token: Secret("s3cret".into()),
        },
        Message::AuthOk,
        Message::Exec(ExecRequest {
            command: None,
            argv: Some(vec!["ls".into(), "-l".into()]),
            login_shell: true,
            env,
            cwd: Some("/tmp".into()),
            timeout_ms: Some(5000),
            stdin: true,
            pty: Some(PtyRequest {
                term: "xterm-256color".into(),
                cols: 132,
                rows: 43,
            }),
        }),
        Message::Started { pid: 4242 },
        Message::Stdin,
        Message::StdinEnd,
        Message::StdinAck { bytes: 7 },
        Message::Stdout,
        Message::Stderr,
        Message::Exit(ExitStatus {
            code: None,
            signal: Some(9),
            duration_ms: 12,
            timed_out: true,
            shutdown: false,
        }),
        Message::error(ErrorCode::Internal, "boom"),
        Message::Cancel,
        Message::Signal {
            name: SignalName::Int,
        },
        Message::Resize(WindowSize {
            cols: 100,
            rows: 30,
        }),
        Message::Ping,
        Message::Pong,
        Message::Stat {
            path: "notes/hello.txt".into(),
        },
        Message::Entry(FileEntry {
            path: "hello.txt".into(),
            kind: FileKind::File,
            size: 6,
            mode: 0o644,
            mtime: 1_767_225_600,
        }),
        Message::List {
            path: "notes".into(),
        },
        Message::ListEnd { count: 3 },
        Message::Mkdir {
            path: "notes/new".into(),
            mode: Some(0o755),
        },
        Message::Put(PutRequest {
            path: "notes/hello.txt".into(),
            size: 6,
            mode: Some(0o600),
            mtime: Some(-1),
            resume: true,
        }),
        Message::Get {
            path: "notes/hello.txt".into(),
            resume_from: 2,
        },
        Message::TransferReady(TransferReady {
            offset: 2,
            prefix_blake3: Some("ab".repeat(32)),
            size: Some(6),
            mode: Some(0o644),
            mtime: Some(0),
        }),
        Message::TransferStart { offset: 2 },
        Message::FileData,
        Message::FileEnd {
            blake3: "cd".repeat(32),
        },
        Message::TransferOk { bytes: 4 },
    ]
}

/// Encodes `frame` with the default limits and decodes it back, checking
/// that exactly its bytes were consumed; returns the decoded frame and the
/// header as JSON.
fn through_codec(frame: &Frame) -> (Frame, Value) {
    let bytes = encode_frame(frame).expect("encodes");
    let header_len = u32::from_be_bytes(bytes[..LEN_PREFIX].try_into().unwrap()) as usize;
    let header: Value =
        serde_json::from_slice(&bytes[LEN_PREFIX..LEN_PREFIX + header_len]).expect("JSON header");
    let mut buf = BytesMut::from(&bytes[..]);
    let decoded = FrameCodec::default()
        .decode(&mut buf)
        .expect("decodes")
        .expect("a whole frame");
    assert!(buf.is_empty(), "{header}: bytes left over");
    (decoded, header)
}

#[test]
fn every_message_type_round_trips_under_its_wire_name() {
    let samples = one_of_each();

    // One sample per variant: TYPES has one name per variant, so as many
    // distinct sampled types as TYPES has names means none is missing.
    let sampled: BTreeSet<&str> = samples.iter().map(|m| documented(m).0).collect();
    assert_eq!(
        sampled.len(),
        samples.len(),
        "some variant is sampled twice"
    );
    let types: BTreeSet<&str> = Message::TYPES.iter().copied().collect();
    assert_eq!(
        types.len(),
        Message::TYPES.len(),
        "TYPES lists a name twice"
    );
    assert_eq!(sampled, types, "sampled types differ from Message::TYPES");

    for m in samples {
        let (name, body) = documented(&m);
        assert_eq!(m.type_name(), name);
        assert_eq!(Message::carries_body(name), body, "{name}");

        // serde alone: the `type` tag is the documented name, and comes first.
        let value = serde_json::to_value(&m).unwrap();
        assert_eq!(value["type"], name);
        assert_eq!(serde_json::from_value::<Message>(value).unwrap(), m);
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.starts_with(&format!(r#"{{"type":"{name}""#)), "{text}");
        assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), m);

        // The codec, with a body wherever the type allows one.
        let payload: &[u8] = if body { b"\x00\xff\r\nbody" } else { b"" };
        let frame = Frame::with_body(m.clone(), payload.to_vec());
        let (decoded, header) = through_codec(&frame);
        assert_eq!(decoded, frame);
        assert_eq!(header["type"], name);
        assert_eq!(header["body_len"], payload.len());
        if !body {
            let err = FrameCodec::default()
                .encode_parts(&m, b"x", &mut BytesMut::new())
                .unwrap_err();
            assert!(
                matches!(err, EncodeError::UnexpectedBody(t) if t == name),
                "{name}: {err}"
            );
        }
    }
    assert!(!Message::carries_body("launch"));
    assert!(!Message::carries_body(""));
}

/// Each error code as `docs/PROTOCOL.md` section 6 spells it.
fn documented_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadPreamble => "bad_preamble",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::AuthRequired => "auth_required",
        ErrorCode::AuthFailed => "auth_failed",
        ErrorCode::FrameTooLarge => "frame_too_large",
        ErrorCode::BadFrame => "bad_frame",
        ErrorCode::UnknownType => "unknown_type",
        ErrorCode::UnexpectedMessage => "unexpected_message",
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::SpawnFailed => "spawn_failed",
        ErrorCode::TooManyConnections => "too_many_connections",
        ErrorCode::Timeout => "timeout",
        ErrorCode::FlowControl => "flow_control",
        ErrorCode::ShuttingDown => "shutting_down",
        ErrorCode::Internal => "internal",
        ErrorCode::FilesDisabled => "files_disabled",
        ErrorCode::PathRefused => "path_refused",
        ErrorCode::NotFound => "not_found",
        ErrorCode::IoError => "io_error",
        ErrorCode::ChecksumMismatch => "checksum_mismatch",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Busy => "busy",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::Other => "other",
    }
}

#[test]
fn every_error_code_round_trips_under_its_wire_name() {
    let names: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len(), "two codes share a name");
    assert!(ErrorCode::ALL.contains(&ErrorCode::Other));

    for &code in ErrorCode::ALL {
        let name = documented_code(code);
        assert_eq!(code.as_str(), name);
        assert_eq!(code.to_string(), name);
        assert_eq!(serde_json::to_value(code).unwrap(), json!(name));
        assert_eq!(
            serde_json::from_value::<ErrorCode>(json!(name)).unwrap(),
            code
        );

        // And inside an `error` frame, through the codec.
        let frame = Frame::new(Message::error(code, "m"));
        let (decoded, header) = through_codec(&frame);
        assert_eq!(decoded, frame);
        assert_eq!(header["code"], name);
    }
    // A code from a later version is `other`, not an error.
    assert_eq!(
        serde_json::from_value::<ErrorCode>(json!("from_the_future")).unwrap(),
        ErrorCode::Other
    );
}

/// Each signal name as `docs/PROTOCOL.md` section 5.24 spells it.
fn documented_signal(name: SignalName) -> &'static str {
    match name {
        SignalName::Hup => "HUP",
        SignalName::Int => "INT",
        SignalName::Quit => "QUIT",
        SignalName::Kill => "KILL",
        SignalName::Term => "TERM",
        SignalName::Usr1 => "USR1",
        SignalName::Usr2 => "USR2",
        SignalName::Other => "other",
    }
}

#[test]
fn every_signal_name_round_trips_and_an_unknown_one_is_other() {
    for &name in SignalName::ALL {
        let wire = documented_signal(name);
        assert_eq!(name.as_str(), wire);
        assert_eq!(serde_json::to_value(name).unwrap(), json!(wire));
        let frame = Frame::new(Message::Signal { name });
        let (decoded, header) = through_codec(&frame);
        assert_eq!(decoded, frame);
        assert_eq!(header["name"], wire);
    }
    // A name from a later client is `other` (which a server ignores), not
    // a malformed frame that would close the connection.
    let later: Message = serde_json::from_str(r#"{"type":"signal","name":"WINCH"}"#).unwrap();
    assert_eq!(
        later,
        Message::Signal {
            name: SignalName::Other
        }
    );
}

/// The message table of `docs/PROTOCOL.md` section 5 lists exactly
/// `Message::TYPES`, with a body exactly where `carries_body` says, and the
/// error table of section 6 lists every `ErrorCode` (it also lists codes
/// that only travel outside frames, such as `tls_required`).
#[test]
fn protocol_doc_tables_list_these_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !root.join("Cargo.toml").exists() {
        // The crate is being built outside the repository (e.g. packaged).
        return;
    }
    let doc = std::fs::read_to_string(root.join("docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md exists in the repository");
    let messages = table_rows(section(&doc, "## 5. Messages", "### 5.1"));
    let documented: BTreeMap<&str, bool> = messages
        .iter()
        .map(|(name, rest)| {
            let body_cell = rest.split(" | ").nth(1).unwrap_or_default();
            (*name, body_cell.starts_with("**yes**"))
        })
        .collect();
    let ours: BTreeMap<&str, bool> = Message::TYPES
        .iter()
        .map(|t| (*t, Message::carries_body(t)))
        .collect();
    assert_eq!(documented, ours, "section 5 table vs Message::TYPES");

    // The second table of 5.24 (the first is its fields).
    let signals = section(&doc, "### 5.24 `signal`", "\n## 6.");
    let signals = table_rows(section(signals, "| Name | Signal |", "\n\n"));
    let documented: BTreeSet<&str> = signals.iter().map(|(name, _)| *name).collect();
    let ours: BTreeSet<&str> = SignalName::ALL
        .iter()
        .filter(|n| **n != SignalName::Other)
        .map(|n| n.as_str())
        .collect();
    assert_eq!(documented, ours, "section 5.24 table vs SignalName::ALL");

    let errors = table_rows(section(&doc, "## 6. Error codes", "\n## 7."));
    let documented: BTreeSet<&str> = errors.iter().map(|(name, _)| *name).collect();
    for code in ErrorCode::ALL {
        assert!(
            documented.contains(code.as_str()),
            "section 6 lacks `{code}`"
        );
    }
}

/// The text of `doc` from the heading `from` up to the next `to`.
fn section<'a>(doc: &'a str, from: &str, to: &str) -> &'a str {
    let start = doc.find(from).unwrap_or_else(|| panic!("no {from:?}"));
    let len = doc[start..]
        .find(to)
        .unwrap_or_else(|| panic!("no {to:?} after {from:?}"));
    &doc[start..start + len]
}

/// Body rows (below a `|---|` line, so not headings) whose first cell is
/// one `name`: (name, rest of the row).
fn table_rows(text: &str) -> Vec<(&str, &str)> {
    let mut in_body = false;
    let mut rows = Vec::new();
    for line in text.lines() {
        if line.starts_with("|---") {
            in_body = true;
        } else if !line.starts_with('|') {
            in_body = false;
        } else if in_body {
            if let Some(row) = line.strip_prefix("| `").and_then(|l| l.split_once("` |")) {
                rows.push(row);
            }
        }
    }
    rows
}
