//! A connection that lives on: `ping` is answered between and during
//! commands (also while the client reads none of the output, up to the
//! send timeout: a client that takes nothing for that long is dropped and
//! its command killed, on a terminal too), a `pong` may fall on either
//! side of a command's `exit` and the client copes, and one connection
//! runs many commands one after another.

mod common;

use common::fake_server::{FakeScript, FakeServer, FAKE_OUTPUT};
use common::*;
use wiresh::client::Connection;
use wiresh_proto::{ExecRequest, Frame, Message, PtyRequest};

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

/// Pings alone cannot hold a command for ever: a client that keeps pinging
/// but takes none of the output of `yes` (on pipes, or on a terminal) for
/// the send timeout has the command's process group killed and its
/// connection closed, as one that misses its keepalive.
#[tokio::test]
async fn a_client_that_pings_but_never_reads_is_dropped_after_the_send_timeout() {
    let terminal = Some(PtyRequest {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
    });
    for pty in [None, terminal] {
        let on = if pty.is_some() { "a terminal" } else { "pipes" };
        let server = Server::start_with(&["--send-timeout", "1s"]);
        let mut c = server.raw().await;
        let pid = c
            .start(Message::Exec(ExecRequest {
                pty,
                ..ExecRequest::shell("exec yes")
            }))
            .await;
        // `started` was read; from here on the client only pings, as a
        // client whose reader is stuck would.
        let pinging = async {
            let mut beat = 0u32;
            while c
                .try_send_frame(Frame::with_body(Message::Ping, beat.to_be_bytes().to_vec()))
                .await
            {
                beat += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await
        };
        let dropped = server.wait_for_log(
            "the client took nothing for 1s (--send-timeout) during `exec yes`; dropped; \
             the command and its processes were killed",
        );
        tokio::select! {
            () = dropped => {}
            () = pinging => unreachable!(),
        }
        assert_gone(&[pid], Some(pid), GONE_WITHIN, &format!("`yes` on {on}")).await;
        // What the server had sent before is still there to read (cut off
        // mid-frame: nothing more was written), then the connection ends.
        let mut socket = c.framed.into_inner();
        let mut sink = vec![0u8; 1 << 16];
        let closed = bounded("the connection to close", async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        closed.await;
    }
}

/// A ping sent while a command runs is answered once, as soon as the
/// server reads it, ahead of queued output: before or after the command's
/// `exit` (here the command is `true`, so it may be either). Nothing else
/// changes: the next command runs as usual.
#[tokio::test]
async fn a_pong_may_come_before_or_after_exit() {
    let server = Server::start();
    let mut c = server.raw().await;
    for i in 0..20u32 {
        c.send(exec("true")).await;
        c.send_frame(Frame::with_body(Message::Ping, i.to_be_bytes().to_vec()))
            .await;
        let mut frames = Vec::new();
        while !frames
            .iter()
            .any(|f: &Frame| matches!(f.message, Message::Exit(_)))
            || !frames.iter().any(|f| f.message == Message::Pong)
        {
            frames.push(c.recv().await);
        }
        let pongs: Vec<_> = frames
            .iter()
            .filter(|f| f.message == Message::Pong)
            .collect();
        assert_eq!(pongs.len(), 1, "{frames:?}");
        assert_eq!(pongs[0].body, i.to_be_bytes()[..]);
        let command: Vec<_> = frames
            .iter()
            .filter(|f| f.message != Message::Pong)
            .map(|f| f.message.type_name())
            .collect();
        assert_eq!(command, ["started", "exit"], "{frames:?}");
    }
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");
}

/// What a client must tolerate: a `pong` that answers nothing, before a
/// command's `started` and after its `exit`. The library client and the
/// binary ignore it, run the next command, and keep their exit status.
#[tokio::test]
async fn clients_ignore_pongs_around_a_command() {
    let fake = FakeServer::start(FakeScript {
        dirs: vec![],
        listing: vec![],
        content: |_| Vec::new(),
        announced_size: None,
    })
    .await;
    let mut conn = bounded("Connection::connect", Connection::connect(&fake.endpoint()))
        .await
        .expect("connecting to the fake server");
    for _ in 0..3 {
        let ran = sh(&mut conn, "anything").await;
        assert_exited(ran.status(), 0);
        assert_eq!(ran.stdout, FAKE_OUTPUT);
    }

    // Line by line: one command per line (the default `wiresh shell` runs
    // one login shell, which a server without terminal sessions lacks).
    let shell = fake.cmd("shell", &["--each-line".into()]);
    let out = cli_output(shell, Some(b"one\ntwo\n".to_vec())).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout, [FAKE_OUTPUT, FAKE_OUTPUT].concat());
    assert_eq!(out.stderr_str(), "");
    let exec = fake.cmd("exec", &["-n".into(), "--".into(), "x".into()]);
    let out = cli_output(exec, None).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout, FAKE_OUTPUT);
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

/// A client that sends large pings and reads none of the pongs gets some
/// of them skipped (the protocol allows it) rather than a whole control
/// queue of 1 MiB pongs parked in the server, 32 MiB a connection.
#[tokio::test]
async fn pongs_nobody_reads_are_skipped_not_hoarded() {
    let server = Server::start();
    let (mut c, hello) = server.raw_with_hello().await;
    let body = vec![b'p'; hello.max_body as usize];
    let before = status_kib(server.pid(), "VmRSS").expect("the server's memory");
    let sampler = RssSampler::start(server.pid());
    for _ in 0..48 {
        c.send_frame(Frame::with_body(Message::Ping, body.clone()))
            .await;
    }
    // The server reads on while its writes wait: measure once it has
    // taken in every ping.
    wait_until_peer_read_all(c.framed.get_ref()).await;
    let grown_kib = sampler.peak_kib().saturating_sub(before);
    eprintln!("server memory grew by {grown_kib} KiB");
    assert!(
        grown_kib < 12 * 1024,
        "the server grew by {grown_kib} KiB holding pongs nobody reads"
    );
    // The connection still works once the client reads again: a command
    // runs, and the pongs that were kept arrive whole around it (which
    // ones were skipped is the server's choice).
    c.send(Message::Exec(ExecRequest::shell("echo alive")))
        .await;
    let mut pongs = Vec::new();
    let pid = loop {
        let f = c.recv().await;
        match f.message {
            Message::Pong => pongs.push(f.body),
            Message::Started { pid } => break pid,
            other => panic!("expected pongs then started, got {other:?}"),
        }
    };
    let ran = c.finish_started(pid).await;
    assert_exited(&ran.status, 0);
    assert_eq!(ran.stdout, b"alive\n");
    pongs.extend(ran.pongs);
    assert!(pongs.len() < 48, "no pong was skipped");
    assert!(pongs.iter().all(|p| p[..] == body[..]));
}
