//! Authentication: a wrong token is refused, and nothing pipelined behind it
//! runs; the token is the token file's trimmed text, compared byte for
//! byte; nothing but `auth` is accepted first (a frame the decoder refuses
//! gets its framing error); an unauthenticated peer may send only one small
//! frame; repeated wrong tokens are rate limited.

mod common;

use common::*;
use wiresh::client::ClientError;
use wiresh_proto::{ErrorCode, Frame, Message, Preamble, Secret};

#[tokio::test]
async fn wrong_token_is_refused() {
    let server = Server::start();
    let wrong = "not-the-token-4242424242424242";

    let (mut c, _) = RawConn::greeted(server.addr).await;
    c.send(Message::Auth {
        token: Secret(wrong.into()),
    })
    .await;
    let msg = c.expect_error(ErrorCode::AuthFailed).await;
    assert!(msg.contains("token"), "{msg}");
    c.expect_closed().await;

    // A pipelined exec after a wrong token is not acted on.
    let marker = server.home().join("pwned");
    let mut bytes = Preamble::new(1).encode().to_vec();
    bytes.extend(frame_bytes(&Frame::new(Message::Auth {
        token: Secret(wrong.into()),
    })));
    bytes.extend(frame_bytes(&Frame::new(exec(&format!(
        "touch {}",
        marker.display()
    )))));
    let mut c = RawConn::from_stream(tcp(server.addr).await);
    c.send_raw(&bytes).await;
    assert!(matches!(c.recv().await.message, Message::Hello(_)));
    c.expect_error(ErrorCode::AuthFailed).await;
    c.expect_closed().await;
    assert!(!marker.exists(), "a command ran without authentication");

    // The library client reports it.
    let err = connect_with_token(&server, wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                code: ErrorCode::AuthFailed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("token"), "{err}");

    // The failures are logged, the token is not.
    server.wait_for_log("auth_failed").await;
    assert!(!server.log().contains(wrong), "the log shows the token");
    assert!(!server.log().contains(server.token.expose()));
}

/// The token is the token file's text with surrounding whitespace trimmed
/// (a file the server creates holds 64 lowercase hex digits and a newline);
/// what arrives in `auth.token` is compared with it byte for byte: not
/// trimmed, not case-folded.
#[tokio::test]
async fn token_is_the_trimmed_file_compared_exactly() {
    let server = Server::start();
    let created = std::fs::read_to_string(server.home().join("token")).unwrap();
    let (hex, newline) = created.split_at(64);
    assert_eq!(newline, "\n", "{created:?}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{created:?}"
    );

    // An operator's own file, with whitespace around the token.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let token = "An-Operator.Chose_This-Token-0123456789";
    std::fs::write(&file, format!(" \t{token}\r\n\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let server = Server::start_with(&["--token-file", file.to_str().unwrap()]);
    assert_eq!(server.token.expose(), token);
    drop(server.raw().await); // the trimmed text authenticates

    for wrong in [
        format!("{token}\n"),
        format!(" {token}"),
        token.to_lowercase(),
        token[..token.len() - 1].to_string(),
    ] {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send(Message::Auth {
            token: Secret(wrong.clone()),
        })
        .await;
        c.expect_error(ErrorCode::AuthFailed).await;
        c.expect_closed().await;
    }
}

async fn connect_with_token(
    server: &Server,
    token: &str,
) -> Result<wiresh::client::Connection, ClientError> {
    bounded(
        "Connection::connect",
        wiresh::client::Connection::connect(&wiresh::client::Endpoint {
            token: Secret(token.into()),
            ..server.endpoint()
        }),
    )
    .await
}

#[tokio::test]
async fn requests_before_auth_are_refused() {
    let server = Server::start();
    for first in [
        Frame::new(exec("echo hi")),
        Frame::new(Message::Ping),
        Frame::new(Message::StdinEnd),
    ] {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send_frame(first.clone()).await;
        c.expect_error(ErrorCode::AuthRequired).await;
        c.expect_closed().await;
    }
}

/// What a first frame that is not `auth` gets. The frame decoder judges a
/// frame before the server looks at what it is, so a frame it cannot decode
/// gets the decoder's code (`unknown_type`, `bad_frame`, `frame_too_large`,
/// `body_len` being checked before `type`), and only a valid frame of
/// another type gets `auth_required`, an `error` frame included.
#[tokio::test]
async fn a_first_frame_the_decoder_refuses_gets_its_code_not_auth_required() {
    let server = Server::start();
    for (first, code) in [
        (
            raw_frame(br#"{"type":"frobnicate","body_len":0}"#, b""),
            ErrorCode::UnknownType,
        ),
        (
            raw_frame(br#"{"type":"Auth","token":"x","body_len":0}"#, b""),
            ErrorCode::UnknownType,
        ),
        (
            raw_frame(br#"{"type":"frobnicate","body_len":1}"#, b"x"),
            ErrorCode::FrameTooLarge,
        ),
        (vec![0, 0, 0, 0], ErrorCode::BadFrame),
        // An `auth` without a token is valid (a client key may stand in for
        // it): this server, with no keys, refuses the credentials.
        (
            raw_frame(br#"{"type":"auth","body_len":0}"#, b""),
            ErrorCode::AuthFailed,
        ),
        (
            raw_frame(br#"{"type":"auth","token":null,"body_len":0}"#, b""),
            ErrorCode::BadFrame,
        ),
        (
            raw_frame(
                br#"{"type":"error","code":"no_such_code","message":"hi","body_len":0}"#,
                b"",
            ),
            ErrorCode::AuthRequired,
        ),
    ] {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send_raw(&first).await;
        let message = c.expect_error(code).await;
        assert!(!message.is_empty());
        c.expect_closed().await;
    }
}

/// Before authenticating, a peer may send one small frame and nothing with
/// a body: a stranger cannot make the server buffer or parse much.
#[tokio::test]
async fn unauthenticated_peers_may_send_only_a_small_frame() {
    let server = Server::start();
    let big_token = Frame::new(Message::Auth {
        token: Secret("x".repeat(5000)),
    });
    let with_body = Frame::with_body(Message::Ping, &b"p"[..]);
    for first in [big_token, with_body] {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send_frame(first).await;
        c.expect_error(ErrorCode::FrameTooLarge).await;
        c.expect_closed().await;
    }
    // After authenticating, the normal limits apply.
    let mut c = server.raw().await;
    c.send_frame(Frame::with_body(Message::Ping, vec![7u8; 100_000]))
        .await;
    assert_eq!(c.recv().await.body.len(), 100_000);
}

/// Wrong tokens are answered slowly, and an address that keeps guessing is
/// refused outright (`rate_limited`), even with the right token.
#[tokio::test]
async fn repeated_wrong_tokens_are_rate_limited() {
    let server = Server::start();
    let mut refused_for_rate = false;
    for _ in 0..8 {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send(Message::Auth {
            token: Secret("wrong".into()),
        })
        .await;
        match c.recv().await.message {
            Message::Error {
                code: ErrorCode::AuthFailed,
                ..
            } => {}
            Message::Error {
                code: ErrorCode::RateLimited,
                ..
            } => {
                refused_for_rate = true;
                break;
            }
            other => panic!("expected auth_failed or rate_limited, got {other:?}"),
        }
    }
    assert!(refused_for_rate, "never rate limited after 8 wrong tokens");
    let (mut c, _) = RawConn::greeted(server.addr).await;
    c.send(Message::Auth {
        token: server.token.clone(),
    })
    .await;
    c.expect_error(ErrorCode::RateLimited).await;
}
