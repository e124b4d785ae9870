//! A connection that lives on: `ping` is answered between and during
//! commands (also while the client reads none of the output), and one
//! connection runs many commands one after another.

mod common;

use common::*;
use wiresh_proto::{ExecRequest, Frame, Message};

#[tokio::test]
async fn ping_pong_echoes_the_body() {
    let server = Server::start();
    let mut c = server.raw().await;
    for body in [&b""[..], b"x", b"\x00\xff\r\nbinary ping body\x00"] {
        c.send_frame(Frame::with_body(Message::Ping, body)).await;
        assert_eq!(c.expect_pong().await, body);
    }

    // While a command runs, pongs come interleaved with its frames.
    let pid = c.start(exec_with_stdin("cat")).await;
    c.send_frame(Frame::with_body(Message::Ping, &b"during"[..]))
        .await;
    assert_eq!(c.expect_pong().await, b"during"[..]);
    c.send_frame(Frame::with_body(Message::Stdin, &b"data"[..]))
        .await;
    c.send(Message::StdinEnd).await;
    let run = c.finish_started(pid).await;
    assert_eq!(run.stdout, b"data");

    let mut conn = server.connect().await;
    bounded("Connection::ping", conn.ping())
        .await
        .expect("ping");
}

#[tokio::test]
async fn pings_while_output_is_unread_do_not_end_the_command() {
    // Section 7.6: while a command runs the client may ping at any time. A
    // client whose own reader is paused (say `wiresh exec ... | less`) keeps
    // pinging every keepalive/2 while not reading, so pongs pile up behind
    // unread output. That must not end the command.
    let server = Server::start();
    let mut c = server.raw().await;
    let pid = c.start(exec("exec yes")).await;
    // Read nothing until `yes` is blocked: the server's writer is stuck.
    assert!(wait_until_stalled(pid).await.is_some(), "`yes` ended");
    const PINGS: u32 = 64;
    for i in 0..PINGS {
        c.send_frame(Frame::with_body(Message::Ping, i.to_be_bytes().to_vec()))
            .await;
    }
    c.send(Message::Cancel).await;
    let mut pongs = Vec::new();
    let status = loop {
        let f = c.recv().await;
        match f.message {
            Message::Stdout | Message::Stderr => {}
            Message::Pong => pongs.push(u32::from_be_bytes(f.body[..].try_into().unwrap())),
            Message::Exit(status) => break status,
            other => panic!(
                "the server ended the command because of unanswered pings: {other:?} \
                 (after {} pongs)",
                pongs.len()
            ),
        }
    };
    assert_killed(&status, 15);
    // Every pong answers a ping, in order (the server may skip some).
    assert!(pongs.windows(2).all(|w| w[0] < w[1]) && pongs.iter().all(|&p| p < PINGS));
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");
}

#[tokio::test]
async fn many_commands_on_one_connection() {
    let server = Server::start();
    let mut conn = server.connect().await;
    for i in 0..200 {
        let ran = sh(
            &mut conn,
            &format!("echo {i}; echo e{i} >&2; exit {}", i % 7),
        )
        .await;
        assert_exited(ran.status(), i % 7);
        assert_eq!(ran.stdout_str(), format!("{i}\n"));
        assert_eq!(ran.stderr_str(), format!("e{i}\n"));
    }
}
