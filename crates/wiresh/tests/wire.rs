//! The wire itself, at the socket level: malformed frames, and bytes that
//! are not wiresh at all (answered with the exact `bad_preamble` line),
//! close only their own connection; an unsupported version is refused;
//! messages out of place are ignored or refused; and a whole session is
//! understood whether it arrives in one write or one byte at a time (sticky
//! and split packets).

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiresh_proto::{ErrorCode, ExecRequest, Frame, Message, Preamble, Secret};

fn malformed_cases() -> Vec<(&'static str, Vec<u8>, ErrorCode)> {
    vec![
        (
            "header length 0xffffffff",
            vec![0xff, 0xff, 0xff, 0xff],
            ErrorCode::FrameTooLarge,
        ),
        (
            "header length 65537",
            65537u32.to_be_bytes().to_vec(),
            ErrorCode::FrameTooLarge,
        ),
        (
            "body_len over the limit",
            raw_frame(br#"{"type":"stdin","body_len":1048577}"#, b""),
            ErrorCode::FrameTooLarge,
        ),
        (
            "header not JSON",
            raw_frame(b"this is not json", b""),
            ErrorCode::BadFrame,
        ),
        (
            "header not an object",
            raw_frame(b"[1,2,3]", b""),
            ErrorCode::BadFrame,
        ),
        ("header length 0", vec![0, 0, 0, 0], ErrorCode::BadFrame),
        (
            "no body_len",
            raw_frame(br#"{"type":"ping"}"#, b""),
            ErrorCode::BadFrame,
        ),
        (
            "unknown type",
            raw_frame(br#"{"type":"frobnicate","body_len":0}"#, b""),
            ErrorCode::UnknownType,
        ),
        (
            "body on a bodyless type",
            raw_frame(br#"{"type":"cancel","body_len":3}"#, b"abc"),
            ErrorCode::BadFrame,
        ),
        (
            "a whole number written as a float",
            raw_frame(
                br#"{"type":"exec","command":"true","timeout_ms":5000.0,"body_len":0}"#,
                b"",
            ),
            ErrorCode::BadFrame,
        ),
        (
            "body_len written with an exponent",
            raw_frame(br#"{"type":"ping","body_len":0e0}"#, b""),
            ErrorCode::BadFrame,
        ),
        (
            "ill-typed field",
            raw_frame(br#"{"type":"exec","command":42,"body_len":0}"#, b""),
            ErrorCode::BadFrame,
        ),
    ]
}

#[tokio::test]
async fn malformed_frames_close_only_their_own_connection() {
    let server = Server::start();
    // A connection that keeps working throughout, with a command running
    // across all the bad connections.
    let mut good = server.connect().await;
    assert_eq!(sh(&mut good, "echo before").await.stdout, b"before\n");
    let mut running = server.raw().await;
    let running_pid = running.start(exec_with_stdin("cat")).await;

    for (name, bytes, code) in malformed_cases() {
        // Before authentication: right after the preamble.
        let mut c = RawConn::preambled(server.addr).await;
        c.send_raw(&bytes).await;
        assert!(
            matches!(c.recv().await.message, Message::Hello(_)),
            "{name}"
        );
        // Before authentication only a small `auth` frame is allowed, so any
        // body at all is too large there.
        let pre_auth_code = if name == "body on a bodyless type" {
            ErrorCode::FrameTooLarge
        } else {
            code
        };
        let msg = c.expect_error(pre_auth_code).await;
        assert!(!msg.is_empty(), "{name}: empty message");
        c.expect_closed().await;

        // After authentication, while idle.
        let mut c = server.raw().await;
        c.send_raw(&bytes).await;
        c.expect_error(code).await;
        c.expect_closed().await;
    }

    // A frame cut off by the end of the stream.
    let mut c = server.raw().await;
    c.send_raw(&raw_frame(br#"{"type":"ping","body_len":10}"#, b"abc"))
        .await;
    c.framed.get_mut().shutdown().await.unwrap();
    c.expect_error(ErrorCode::BadFrame).await;
    c.expect_closed().await;

    // Not wiresh at all: a plain-text line, not a frame, then close.
    for junk in [
        &b"GET / HT"[..],
        b"\x00\x00\x00\x20{\"ty",
        b"WIRESx\x00\x01",
    ] {
        let text = reply_to(server.addr, junk).await;
        assert!(
            text.starts_with("WIRESH-ERROR bad_preamble"),
            "reply to {junk:?}: {text:?}"
        );
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "{text:?}"
        );
    }

    // A frame while a command runs.
    let mut c = server.raw().await;
    let pid = c.start(exec_with_stdin("cat")).await;
    c.send_raw(&raw_frame(br#"{"type":"frobnicate","body_len":0}"#, b""))
        .await;
    c.expect_error(ErrorCode::UnknownType).await;
    c.expect_closed().await;
    assert_gone(
        &[pid],
        Some(pid),
        GONE_WITHIN,
        "command survived its connection",
    )
    .await;

    // The good connections never noticed.
    assert_eq!(sh(&mut good, "echo after").await.stdout, b"after\n");
    assert!(alive(running_pid));
    running
        .send_frame(Frame::with_body(Message::Stdin, &b"still here"[..]))
        .await;
    running.send(Message::StdinEnd).await;
    let run = running.finish_started(running_pid).await;
    assert_eq!(run.stdout, b"still here");
    assert_exited(&run.status, 0);
}

/// What a server sends a peer that opens with `sent` (and then waits),
/// up to its close.
async fn reply_to(addr: std::net::SocketAddr, sent: &[u8]) -> String {
    let mut s = tcp(addr).await;
    s.write_all(sent).await.unwrap();
    let mut reply = Vec::new();
    bounded("the bad_preamble line", s.read_to_end(&mut reply))
        .await
        .expect("reading the bad_preamble line");
    String::from_utf8_lossy(&reply).into_owned()
}

/// A peer that sends fewer bytes than a preamble, and waits for an answer
/// (a legacy client's `true`), gets the `bad_preamble` line at its first
/// wrong byte, showing what it sent; the server does not wait for the
/// rest of a preamble until its handshake deadline and close unanswered.
#[tokio::test]
async fn a_short_request_that_is_no_preamble_is_answered_at_once() {
    let server = Server::start();
    let text = reply_to(server.addr, b"true").await;
    assert!(
        text.starts_with("WIRESH-ERROR bad_preamble") && text.contains(r#"(got "true")"#),
        "{text:?}"
    );
}

/// The `bad_preamble` line a peer gets, exactly: each byte it sent shown
/// once, escaped to printable ASCII (`\x00`, not `\\x00`), between quotes.
#[tokio::test]
async fn bad_preamble_line_shows_the_bytes_once() {
    let server = Server::start();
    for (sent, shown) in [
        (&b"wiresh\x00\x01"[..], r"wiresh\x00\x01"),
        (b"GET / HT", "GET / HT"),
        (b"\"\\\xff\r\n\x7f\x00'", r#"\"\\\xff\r\n\x7f\x00\'"#),
    ] {
        let reply = reply_to(server.addr, sent).await;
        assert!(reply.is_ascii(), "{reply:?}");
        assert_eq!(
            reply,
            format!(
                "WIRESH-ERROR bad_preamble: this is a wiresh server (protocol 1); \
                 not a wiresh client: the connection must start with the bytes \"WIRESH\" \
                 (got \"{shown}\"); use the wiresh client\n"
            ),
            "reply to {sent:?}"
        );
    }
}

#[tokio::test]
async fn unsupported_version_is_refused() {
    let server = Server::start();
    let mut s = tcp(server.addr).await;
    s.write_all(&Preamble::new(2).encode()).await.unwrap();
    let mut c = RawConn::from_stream(s);
    let msg = c.expect_error(ErrorCode::UnsupportedVersion).await;
    assert!(
        msg.contains('1'),
        "should name the supported version: {msg}"
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn messages_out_of_place() {
    let server = Server::start();

    // Late input and cancels between commands are ignored.
    let mut c = server.raw().await;
    c.send(Message::Cancel).await;
    c.send(Message::StdinEnd).await;
    c.send_frame(Frame::with_body(Message::Stdin, &b"late"[..]))
        .await;
    c.send(Message::Pong).await;
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");

    // A server-to-client message from the client.
    c.send(Message::Started { pid: 1 }).await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;

    // A second auth.
    let mut c = server.raw().await;
    c.send(Message::Auth {
        token: server.token.clone(),
    })
    .await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;

    // A second exec while one runs: refused, and the running one is killed
    // with the connection.
    let mut c = server.raw().await;
    let pid = c.start(exec_with_stdin("cat")).await;
    c.send(exec("echo second")).await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the running command").await;
}

/// The server may hold a command's `started` for a moment so that it
/// leaves with what follows (PROTOCOL.md 5.5); whatever follows, it comes
/// first: before an error for a frame sent right behind the `exec` (so
/// the client knows the command did run), and on its own for a command
/// that says nothing.
#[tokio::test]
async fn started_comes_first_even_when_held() {
    let server = Server::start();
    let mut c = server.raw().await;
    let mut both = frame_bytes(&Frame::new(exec_with_stdin("cat")));
    both.extend(frame_bytes(&Frame::new(Message::Started { pid: 1 })));
    c.send_raw(&both).await;
    let pid = c.expect_started().await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the running command").await;

    // Nothing behind it: `started` still comes, and the command runs on.
    let mut c = server.raw().await;
    let pid = c.start(exec_with_stdin("cat")).await;
    assert!(alive(pid));
    c.send_frame(Frame::with_body(Message::Stdin, &b"x"[..]))
        .await;
    c.send(Message::StdinEnd).await;
    let run = c.finish_started(pid).await;
    assert_eq!(run.stdout, b"x");
    assert_exited(&run.status, 0);
}

/// A whole session: preamble, auth, ping, exec with stdin, input, end.
fn whole_session(token: &Secret) -> Vec<u8> {
    let mut bytes = Preamble::new(1).encode().to_vec();
    let frames = [
        Frame::new(Message::Auth {
            token: token.clone(),
        }),
        Frame::with_body(Message::Ping, &b"p1"[..]),
        Frame::new(exec_with_stdin("cat; echo end >&2")),
        Frame::with_body(Message::Stdin, &b"hello "[..]),
        Frame::with_body(Message::Stdin, &b""[..]),
        Frame::with_body(Message::Stdin, &b"world\x00\xff"[..]),
        Frame::new(Message::StdinEnd),
    ];
    for f in &frames {
        bytes.extend(frame_bytes(f));
    }
    bytes
}

async fn check_whole_session_reply(c: &mut RawConn) {
    assert!(matches!(c.recv().await.message, Message::Hello(_)));
    assert_eq!(c.recv().await.message, Message::AuthOk);
    assert_eq!(c.expect_pong().await, b"p1"[..]);
    let run = c.finish().await;
    assert_eq!(run.stdout, b"hello world\x00\xff");
    assert_eq!(run.stderr, b"end\n");
    assert_exited(&run.status, 0);
}

#[tokio::test]
async fn whole_session_in_one_write() {
    let server = Server::start();
    let mut s = tcp(server.addr).await;
    s.write_all(&whole_session(&server.token)).await.unwrap();
    let mut c = RawConn::from_stream(s);
    check_whole_session_reply(&mut c).await;
}

#[tokio::test]
async fn whole_session_one_byte_at_a_time() {
    let server = Server::start();
    let mut s = tcp(server.addr).await;
    for b in whole_session(&server.token) {
        s.write_all(&[b]).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut c = RawConn::from_stream(s);
    check_whole_session_reply(&mut c).await;
}
