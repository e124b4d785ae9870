//! Time limits: a request's `timeout_ms` and the server's
//! `--command-timeout` kill the command (SIGTERM, then SIGKILL);
//! `--idle-timeout` closes an idle connection; `--frame-timeout` drops a peer
//! that leaves a frame unfinished.

mod common;

use common::*;
use wiresh_proto::{ErrorCode, ExecRequest};

#[tokio::test]
async fn request_timeout_kills_the_command() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let req = ExecRequest {
        timeout_ms: Some(300),
        ..ExecRequest::shell("echo before; sleep 30; echo after")
    };
    let ran = run(&mut conn, req, None).await;
    let status = ran.status();
    assert!(status.timed_out, "{status:?}");
    assert_killed(status, 15);
    assert_eq!(ran.stdout, b"before\n");

    // A command that ignores SIGTERM gets SIGKILL after the grace.
    let req = ExecRequest {
        timeout_ms: Some(300),
        ..ExecRequest::shell("trap '' TERM; sleep 30")
    };
    let ran = run(&mut conn, req, None).await;
    assert!(ran.status().timed_out);
    assert_killed(ran.status(), 9);

    // A command that ends in time is not marked.
    let req = ExecRequest {
        timeout_ms: Some(60_000),
        ..ExecRequest::shell("echo quick")
    };
    let ran = run(&mut conn, req, None).await;
    assert_exited(ran.status(), 0);

    // The connection is fine afterwards.
    assert_eq!(sh(&mut conn, "echo after").await.stdout, b"after\n");
}

#[tokio::test]
async fn server_command_timeout_applies_to_every_command() {
    let server = Server::start_with(&["--command-timeout", "300ms"]);
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "sleep 30").await;
    assert!(ran.status().timed_out, "{:?}", ran.status());
    assert_killed(ran.status(), 15);

    // A request cannot ask for more than the server allows.
    let req = ExecRequest {
        timeout_ms: Some(600_000),
        ..ExecRequest::shell("sleep 30")
    };
    let ran = run(&mut conn, req, None).await;
    assert!(ran.status().timed_out);

    assert_exited(sh(&mut conn, "true").await.status(), 0);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = Server::start_with(&["--idle-timeout", "300ms"]);
    let mut c = server.raw().await;
    // A command that runs longer than the idle timeout is not cut off.
    let run = c.exec(ExecRequest::shell("sleep 0.6; echo survived")).await;
    assert_eq!(run.stdout, b"survived\n");
    // Then, idle, the connection is told and closed.
    let msg = c.expect_error(ErrorCode::Timeout).await;
    assert!(msg.contains("idle"), "{msg}");
    c.expect_closed().await;
}

/// A peer that starts a frame and never finishes it (slowloris) is dropped,
/// while another connection keeps working.
#[tokio::test]
async fn a_frame_left_unfinished_is_dropped() {
    let server = Server::start_with(&["--frame-timeout", "1s"]);
    let mut slow = server.raw().await;
    // Half a header, then nothing.
    slow.send_raw(&[0, 0, 0, 40, b'{']).await;
    let mut good = server.connect().await;
    assert_eq!(sh(&mut good, "echo fine").await.stdout, b"fine\n");
    let msg = slow.expect_error(ErrorCode::Timeout).await;
    assert!(msg.contains("not completed"), "{msg}");
    slow.expect_closed().await;
}
