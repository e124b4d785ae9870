//! Limits the server enforces: `--max-connections` and `--max-commands`
//! (refused with a reason, the slot reused afterwards), and frame sizes (the
//! 64 KiB header and 1 MiB body limits are inclusive; `--max-frame-header`
//! lowers the header limit).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use wiresh::client::ClientError;
use wiresh_proto::{ErrorCode, ExecRequest, Frame, Message};

#[tokio::test]
async fn connection_limit_is_enforced() {
    let server = Server::start_with(&["--max-connections", "2"]);
    let first = server.raw().await;
    let mut second = server.connect().await;

    // A third connection is told why, instead of hello, and closed.
    let mut third = RawConn::from_stream(tcp(server.addr).await);
    let msg = third.expect_error(ErrorCode::TooManyConnections).await;
    assert!(msg.contains('2'), "{msg}");
    third.expect_closed().await;

    // The library client reports it too.
    match server.try_connect().await {
        Err(ClientError::Remote {
            code: ErrorCode::TooManyConnections,
            ..
        }) => {}
        other => panic!("expected too_many_connections, got {other:?}"),
    }

    // The admitted connections work; when one leaves its slot is reused.
    assert_eq!(sh(&mut second, "echo in").await.stdout, b"in\n");
    drop(first);
    let deadline = Instant::now() + BOUND;
    let mut third = loop {
        match server.try_connect().await {
            Ok(c) => break c,
            Err(ClientError::Remote {
                code: ErrorCode::TooManyConnections,
                ..
            }) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("slot never freed: {e}"),
        }
    };
    assert_eq!(sh(&mut third, "echo third").await.stdout, b"third\n");
}

/// `--max-commands` bounds the commands running server-wide; one over the
/// limit gets `busy` and the connection stays usable.
#[tokio::test]
async fn command_limit_is_enforced() {
    let server = Server::start_with(&["--max-commands", "1"]);
    let mut first = server.raw().await;
    let pid = first.start(exec_with_stdin("cat")).await;
    let mut second = server.connect().await;
    let refused = run(&mut second, ExecRequest::shell("echo no"), None).await;
    match refused.result {
        Err(ClientError::Remote {
            code: ErrorCode::Busy,
            ..
        }) => {}
        other => panic!("expected busy, got {other:?}"),
    }
    first.send(Message::StdinEnd).await;
    let run_first = first.finish_started(pid).await;
    assert_exited(&run_first.status, 0);
    assert_eq!(sh(&mut second, "echo yes").await.stdout, b"yes\n");
}

#[tokio::test]
async fn header_limit_is_inclusive() {
    let server = Server::start();
    let mut c = server.raw().await;
    // A ping whose header is exactly 65536 bytes is accepted.
    let prefix = br#"{"type":"ping","body_len":2,"pad":""#;
    let suffix = br#""}"#;
    let mut header = prefix.to_vec();
    header.resize(65536 - suffix.len(), b'x');
    header.extend_from_slice(suffix);
    assert_eq!(header.len(), 65536);
    c.send_raw(&raw_frame(&header, b"ok")).await;
    assert_eq!(c.expect_pong().await, b"ok"[..]);

    // A body of exactly max_body is accepted too.
    let body = Bytes::from(binary_pattern(1024 * 1024));
    c.send_frame(Frame::with_body(Message::Ping, body.clone()))
        .await;
    assert!(c.expect_pong().await == body);

    // One more header byte is not.
    header.insert(header.len() - 2, b'x');
    c.send_raw(&raw_frame(&header, b"ok")).await;
    c.expect_error(ErrorCode::FrameTooLarge).await;
    c.expect_closed().await;
}

/// `--max-frame-header` lowers the header limit for authenticated peers.
#[tokio::test]
async fn header_limit_is_configurable() {
    let server = Server::start_with(&["--max-frame-header", "1024"]);
    // Announced in `hello`, so a client can know before it is refused.
    assert_eq!(server.connect().await.hello().max_header, 1024);
    let mut ok = server.raw().await;
    assert_eq!(
        ok.exec(ExecRequest::shell("echo small")).await.stdout,
        b"small\n"
    );
    let mut c = server.raw().await;
    c.send(exec(&format!("echo {}", "x".repeat(2000)))).await;
    c.expect_error(ErrorCode::FrameTooLarge).await;
    c.expect_closed().await;
}

/// With a low open-file limit, the server says at start that its limits
/// cannot be met and lowers them, so that commands past what the
/// descriptors allow are refused with `busy`, never `spawn_failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_lowers_the_limits_instead_of_failing_commands() {
    // Enough that their sockets and each command's pipes overflow 256
    // descriptors (and fewer than the 89 connections 256 allows).
    const CLIENTS: usize = 85;
    let server = Server::start_with_open_files(256, &["--max-connections", "2000"]);
    server.wait_for_log("the open-file limit is 256").await;
    // Connected one after another (the lowered budget of connections
    // authenticating is small), then all run a command at once.
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(server.connect().await);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move { run(&mut conn, ExecRequest::shell("sleep 2"), None).await })
        })
        .collect();
    let (mut ran, mut busy) = (0, 0);
    for task in tasks {
        match bounded("a client", task).await.unwrap().result {
            Ok(_) => ran += 1,
            Err(ClientError::Remote {
                code: ErrorCode::Busy,
                ..
            }) => busy += 1,
            Err(e) => panic!("a command failed other than with busy: {e}"),
        }
    }
    assert!(ran > 0, "nothing ran");
    assert!(
        busy > 0,
        "{ran} commands ran at once within 256 descriptors"
    );
}
