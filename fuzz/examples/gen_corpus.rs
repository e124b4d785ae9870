//! Writes the committed seed corpus: `cargo run --example gen_corpus` in
//! fuzz/. Valid frames are made with the real codec, so they stay valid
//! when the protocol changes; a few malformed ones are written by hand.
//!
//! `frame_decoder` seeds start with its two control bytes (mode, chunk seed;
//! see src/frame_decoder.rs); `message_parser` seeds are bare JSON headers;
//! `legacy_header` seeds are legacy reply headers with their prefix.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use wiresh_proto::codec::encode_frame;
use wiresh_proto::legacy::{encode_reply_header, LegacyHeader};
use wiresh_proto::{
    ErrorCode, ExecRequest, ExitStatus, FileEntry, FileKind, Frame, Hello, Message, Preamble,
    PutRequest, Secret, TransferReady, PROTOCOL_VERSION,
};

/// `mode` bits of the frame_decoder input (see src/frame_decoder.rs).
const PREAMBLE: u8 = 4;
const AUTH_SWITCH: u8 = 8;
const SMALL: u8 = 3;

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&encode_frame(f).expect("seed frames encode"));
    }
    out
}

fn raw_frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

struct Writer {
    dir: PathBuf,
    count: usize,
}

impl Writer {
    fn new(root: &Path, target: &str) -> Self {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        Writer { dir, count: 0 }
    }

    fn put(&mut self, name: &str, bytes: &[u8]) {
        fs::write(self.dir.join(name), bytes).unwrap();
        self.count += 1;
    }

    /// A frame_decoder seed: control bytes, then the stream.
    fn stream(&mut self, name: &str, mode: u8, chunk_seed: u8, stream: &[u8]) {
        let mut data = vec![mode, chunk_seed];
        data.extend_from_slice(stream);
        self.put(name, &data);
    }
}

fn auth() -> Frame {
    Frame::new(Message::Auth {
        token: Secret("correct-horse-battery-staple".into()),
    })
}

fn exec_argv() -> Message {
    let mut env = BTreeMap::new();
    env.insert("LANG".to_string(), "C.UTF-8".to_string());
    Message::Exec(ExecRequest {
        command: None,
        argv: Some(vec!["grep".into(), "-c".into(), "é🦀\"\\\n".into()]),
        env,
        cwd: Some("/tmp".into()),
        timeout_ms: Some(30_000),
        stdin: true,
        ..Default::default()
    })
}

fn hello() -> Message {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        server: "wiresh/0.1.0".into(),
        features: vec![
            "exec".into(),
            "stdin".into(),
            "cancel".into(),
            "files".into(),
        ],
        keepalive_secs: 30,
        max_body: 1 << 20,
        max_header: 64 << 10,
        stdin_window: 1 << 20,
    })
}

fn exit(code: Option<i32>, signal: Option<i32>) -> Message {
    Message::Exit(ExitStatus {
        code,
        signal,
        duration_ms: 12,
        timed_out: signal.is_some(),
        shutdown: false,
    })
}

fn put_request() -> Message {
    Message::Put(PutRequest {
        path: "dir/file.bin".into(),
        size: 11,
        mode: Some(0o644),
        mtime: Some(1_700_000_000),
        resume: true,
    })
}

fn transfer_ready() -> Message {
    Message::TransferReady(TransferReady {
        offset: 5,
        prefix_blake3: Some(
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262".into(),
        ),
        size: None,
        mode: None,
        mtime: None,
    })
}

fn file_end() -> Message {
    Message::FileEnd {
        blake3: "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24".into(),
    }
}

fn frame_decoder(root: &Path) -> usize {
    let mut w = Writer::new(root, "frame_decoder");
    let preamble = Preamble::new(PROTOCOL_VERSION).encode();

    // Valid traffic.
    let mut s = preamble.to_vec();
    s.extend(wire(&[auth()]));
    w.stream("preamble_auth", PREAMBLE | AUTH_SWITCH, 0, &s);
    let mut s = preamble.to_vec();
    s.extend(wire(&[
        auth(),
        Frame::new(Message::Exec(ExecRequest::shell("cat; echo done >&2"))),
        Frame::with_body(Message::Stdin, &b"line one\nline two\n"[..]),
        Frame::new(Message::StdinEnd),
        Frame::new(Message::Cancel),
    ]));
    w.stream("client_session_chunked", PREAMBLE | AUTH_SWITCH, 7, &s);
    w.stream(
        "server_session_bytewise",
        0,
        1,
        &wire(&[
            Frame::new(hello()),
            Frame::new(Message::AuthOk),
            Frame::new(Message::Started { pid: 4242 }),
            Frame::with_body(Message::Stdout, &b"hi\n"[..]),
            Frame::with_body(Message::Stderr, vec![0u8, 0xff, 0x1b, b'[', b'm']),
            Frame::new(Message::StdinAck { bytes: 18 }),
            Frame::new(exit(Some(0), None)),
        ]),
    );
    w.stream("exec_argv", 0, 0, &wire(&[Frame::new(exec_argv())]));
    w.stream(
        "stdout_body",
        0,
        0,
        &wire(&[Frame::with_body(Message::Stdout, &b"hello, world\n"[..])]),
    );
    w.stream(
        "exit_signal",
        0,
        3,
        &wire(&[Frame::new(exit(None, Some(9)))]),
    );
    w.stream(
        "error",
        0,
        0,
        &wire(&[Frame::new(Message::error(
            ErrorCode::AuthFailed,
            "wrong token",
        ))]),
    );
    w.stream(
        "stdin_ack",
        0,
        2,
        &wire(&[Frame::new(Message::StdinAck { bytes: u64::MAX })]),
    );
    w.stream(
        "ping_pong",
        SMALL,
        5,
        &wire(&[
            Frame::with_body(Message::Ping, &b"1234"[..]),
            Frame::with_body(Message::Pong, &b"1234"[..]),
        ]),
    );
    w.stream(
        "put_upload",
        0,
        16,
        &wire(&[
            Frame::new(put_request()),
            Frame::new(transfer_ready()),
            Frame::new(Message::TransferStart { offset: 5 }),
            Frame::with_body(Message::FileData, &b"hello"[..]),
            Frame::with_body(Message::FileData, &b" world"[..]),
            Frame::new(file_end()),
            Frame::new(Message::TransferOk { bytes: 6 }),
        ]),
    );
    w.stream(
        "get_and_list",
        0,
        0,
        &wire(&[
            Frame::new(Message::Get {
                path: "out.log".into(),
                resume_from: 100,
            }),
            Frame::new(Message::Stat { path: ".".into() }),
            Frame::new(Message::List { path: "src".into() }),
            Frame::new(Message::Entry(FileEntry {
                path: "src/main.rs".into(),
                kind: FileKind::File,
                size: 1234,
                mode: 0o100644,
                mtime: -1,
            })),
            Frame::new(Message::ListEnd { count: 1 }),
            Frame::new(Message::Mkdir {
                path: "a/b".into(),
                mode: Some(0o755),
            }),
        ]),
    );

    // Malformed traffic.
    w.stream("bad_huge_header_len", 0, 0, &[0xff, 0xff, 0xff, 0xff, b'{']);
    w.stream(
        "bad_huge_body_len",
        0,
        0,
        &raw_frame(br#"{"type":"stdout","body_len":18446744073709551615}"#, b""),
    );
    w.stream("bad_not_json", 0, 0, &raw_frame(b"GET / HTTP/1.1", b""));
    w.stream(
        "bad_unknown_type",
        0,
        0,
        &raw_frame(br#"{"type":"launch","body_len":0}"#, b""),
    );
    w.stream(
        "bad_body_on_exec",
        0,
        0,
        &raw_frame(br#"{"type":"exec","command":"ls","body_len":2}"#, b"xx"),
    );
    w.stream("bad_zero_header_len", 0, 0, &[0, 0, 0, 0]);
    w.stream(
        "bad_preamble_http",
        PREAMBLE,
        0,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let mut s = preamble.to_vec();
    s.extend(wire(&[Frame::with_body(Message::Stdin, vec![b'x'; 64])]));
    w.stream("bad_body_before_auth", PREAMBLE | AUTH_SWITCH, 0, &s);
    let mut truncated = wire(&[Frame::with_body(Message::Stdout, &b"abcdef"[..])]);
    truncated.truncate(truncated.len() - 2);
    w.stream("bad_truncated_body", 0, 9, &truncated);
    let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    w.stream("bad_deep_nesting", 0, 0, &raw_frame(nested.as_bytes(), b""));
    w.count
}

fn message_parser(root: &Path) -> usize {
    let mut w = Writer::new(root, "message_parser");
    // The exact header bytes the codec writes (without the length prefix).
    let header = |m: Message, body: &[u8]| {
        let bytes = encode_frame(&Frame::with_body(m, body.to_vec())).unwrap();
        bytes[4..bytes.len() - body.len()].to_vec()
    };
    w.put("auth", &header(auth().message, b""));
    w.put("hello", &header(hello(), b""));
    w.put("exec_argv", &header(exec_argv(), b""));
    w.put("stdout", &header(Message::Stdout, b"hi\n"));
    w.put("exit", &header(exit(Some(1), None), b""));
    w.put("put", &header(put_request(), b""));
    w.put("transfer_ready", &header(transfer_ready(), b""));
    w.put("file_end", &header(file_end(), b""));
    w.put(
        "error_unknown_code",
        br#"{"type":"error","code":"from_the_future","message":"\u00e9\ud83e\udd80","body_len":0}"#,
    );
    w.put(
        "exit_defaults_omitted",
        br#"{ "type" : "exit", "duration_ms" : 0, "body_len" : 0 }"#,
    );
    w.put(
        "bad_duplicate_type",
        br#"{"type":"ping","type":"exec","command":"ls","body_len":0}"#,
    );
    w.put("bad_body_len_float", br#"{"type":"stdout","body_len":1.0}"#);
    w.put(
        "bad_lone_surrogate",
        br#"{"type":"stat","path":"\ud800","body_len":0}"#,
    );
    w.count
}

fn legacy_header(root: &Path) -> usize {
    let mut w = Writer::new(root, "legacy_header");
    let real = LegacyHeader {
        total_size: 12,
        md5: "6f5902ac237024bdd0c176cb93063dc4".into(),
        filename: "-".into(),
    };
    let mut with_payload = encode_reply_header(&real);
    with_payload.extend_from_slice(b"hello world\n");
    w.put("reply_with_payload", &with_payload);
    let original =
        br#"{"total_size": 12, "md5": "xxxxxxxxxxxxxxxxxxx", "filename": "xxxxx", "xxxxx": "123123"}"#;
    let mut s = (original.len() as i32).to_ne_bytes().to_vec();
    s.extend_from_slice(original);
    w.put("original_server_py", &s);
    w.put(
        "non_ascii_filename",
        &encode_reply_header(&LegacyHeader {
            total_size: u64::MAX,
            md5: String::new(),
            filename: "é🦀\"\\\u{0}".into(),
        }),
    );
    w.put("bad_negative_len", &(-5i32).to_ne_bytes());
    w.put("bad_swapped_len", &80i32.swap_bytes().to_ne_bytes());
    let mut s = 7i32.to_ne_bytes().to_vec();
    s.extend_from_slice(b"[1, 2]x");
    w.put("bad_not_object", &s);
    let json = br#"{"md5": "x"}"#;
    let mut s = (json.len() as i32).to_ne_bytes().to_vec();
    s.extend_from_slice(json);
    w.put("bad_missing_total_size", &s);
    w.put("bad_http", b"HTTP/1.1 400 Bad Request\r\n\r\n");
    w.count
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let n = frame_decoder(&root) + message_parser(&root) + legacy_header(&root);
    println!("wrote {n} seed files under {}", root.display());
}
