//! A command's standard input: forwarded byte for byte and ended, dropped
//! when the command does not read it, and its flow control
//! (`hello.stdin_window`, `stdin_ack`): the server keeps reading the
//! connection while input sits unread, refuses input past the window,
//! acknowledges input the command closed its stdin on, sends no `stdin_ack`
//! after `exit` and ignores input that comes after it; and the library client
//! keeps to the window by itself.

mod common;

use common::*;
use wiresh_proto::{ErrorCode, ExecRequest, Frame, Message};

#[tokio::test]
async fn stdin_is_forwarded_byte_exact() {
    let server = Server::start();
    let mut conn = server.connect().await;

    // Larger than one frame body and not a multiple of anything.
    let input = binary_pattern(3 * 1024 * 1024 + 4321);
    let ran = run(&mut conn, ExecRequest::shell("cat"), Some(input.clone())).await;
    assert_exited(ran.status(), 0);
    assert!(
        ran.stdout == input,
        "cat did not return the input byte for byte"
    );

    let ran = run(&mut conn, ExecRequest::shell("wc -c"), Some(input.clone())).await;
    assert_eq!(ran.stdout_str().trim(), input.len().to_string());

    // An empty input still ends: the command sees end-of-file at once.
    let ran = run(&mut conn, ExecRequest::shell("wc -c"), Some(Vec::new())).await;
    assert_eq!(ran.stdout_str().trim(), "0");

    // Without stdin the command reads /dev/null, so `cat` ends at once.
    let ran = sh(&mut conn, "cat; echo done").await;
    assert_eq!(ran.stdout, b"done\n");

    // Input the command does not read is dropped; the next command is clean.
    let ran = run(
        &mut conn,
        ExecRequest::shell("head -c 5"),
        Some(vec![b'x'; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!(ran.stdout, b"xxxxx");
    assert_eq!(sh(&mut conn, "echo next").await.stdout, b"next\n");
}

/// The library client keeps to the window by itself: far more input than
/// the window, into a command that reads it slowly, arrives intact.
#[tokio::test]
async fn library_client_streams_stdin_larger_than_the_window() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let data = binary_pattern(5 * 1024 * 1024 + 17);
    let ran = run(
        &mut conn,
        ExecRequest {
            stdin: true,
            ..ExecRequest::shell("sleep 0.2; cat")
        },
        Some(data.clone()),
    )
    .await;
    assert_exited(ran.status(), 0);
    assert!(ran.stdout == data, "stdin came back altered");
}

/// A command that never reads its input: the client fills the whole stdin
/// window, and the server still reads the connection — a ping is answered
/// and a cancel ends the command — where it once stopped reading until the
/// command took its input.
#[tokio::test]
async fn unread_stdin_never_stops_the_server_listening() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    assert!(window >= 64 * 1024, "{hello:?}");
    let pid = raw.start(exec_with_stdin("sleep 1000")).await;
    let piece = 64 * 1024;
    for _ in 0..window / piece {
        raw.send_frame(Frame::with_body(Message::Stdin, vec![b'x'; piece]))
            .await;
    }
    raw.send_frame(Frame::with_body(Message::Ping, &b"still there?"[..]))
        .await;
    // The pipe takes 64 KiB at most, so the server holds most of the window
    // unacknowledged; the pong comes all the same.
    let mut acked = 0;
    loop {
        match raw.recv().await.message {
            Message::StdinAck { bytes } => acked += bytes,
            Message::Pong => break,
            other => panic!("expected pong or stdin_ack, got {other:?}"),
        }
    }
    assert!(
        acked < window as u64,
        "the command read nothing, yet {acked} acked"
    );
    raw.send(Message::Cancel).await;
    let run = raw.finish_started(pid).await;
    assert_killed(&run.status, libc::SIGTERM);
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the command").await;
}

/// Sending past the window is a protocol error that closes the connection.
#[tokio::test]
async fn stdin_beyond_the_window_is_refused() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    let pid = raw.start(exec_with_stdin("sleep 1000")).await;
    let piece = 256 * 1024;
    for _ in 0..=window / piece {
        if !raw
            .try_send_frame(Frame::with_body(Message::Stdin, vec![0u8; piece]))
            .await
        {
            break;
        }
    }
    loop {
        match raw.recv().await.message {
            Message::StdinAck { .. } => {}
            Message::Error { code, message } => {
                assert_eq!(code, ErrorCode::FlowControl, "{message}");
                break;
            }
            other => panic!("expected error flow_control, got {other:?}"),
        }
    }
    raw.expect_closed().await;
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the command").await;
}

/// The window counts what the server holds back. Input written to the
/// command but not yet acknowledged (the server may hold acknowledgements,
/// less than a quarter of the window, to send them with the command's next
/// frame) is unacknowledged for the client, and so for the server: a
/// client one byte past the window by the acknowledgements it has received
/// gets `flow_control` while the server holds some, and the connection
/// closes.
#[tokio::test]
async fn input_held_unacknowledged_counts_against_the_window() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    let piece = window.min(hello.max_body as usize).min(64 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("read");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // The command reads the first input and says so out of band (output
    // would take the held acknowledgement with it), then reads no more.
    let first = 1000;
    let line = format!(
        "head -c {first} >/dev/null; echo read > {}; exec sleep 1000",
        fifo.display()
    );
    let pid = raw.start(exec_with_stdin(&line)).await;
    raw.send_frame(Frame::with_body(Message::Stdin, vec![b'a'; first]))
        .await;
    let said = tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo));
    let said = bounded("the command to read its first input", said).await;
    assert_eq!(said.unwrap().unwrap(), "read\n");
    // Written, so owed an acknowledgement, which the server holds: none
    // has come. By the client's count `first` bytes are in flight; this
    // takes it exactly one byte past the window.
    let mut rest = window + 1 - first;
    while rest > 0 {
        let n = rest.min(piece);
        let body = Frame::with_body(Message::Stdin, vec![b'b'; n]);
        if !raw.try_send_frame(body).await {
            break;
        }
        rest -= n;
    }
    // What the server held may leave before the error, never instead.
    let message = loop {
        match raw.recv().await.message {
            Message::StdinAck { .. } => {}
            Message::Error { code, message } => {
                assert_eq!(code, ErrorCode::FlowControl, "{message}");
                break message;
            }
            other => panic!("expected error flow_control, got {other:?}"),
        }
    };
    let unacked = format!("{} bytes of stdin unacknowledged", window + 1);
    assert!(message.contains(&unacked), "{message}");
    raw.expect_closed().await;
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the command").await;
}
/// Input the command can no longer take, because it closed its standard
/// input, is acknowledged like input it read, so the window reopens while
/// the command runs on: at once for a quarter of the window, and what the
/// server held back once the input ends. No `stdin_ack` follows
/// the `exit`, and input sent after it is ignored: no acknowledgement, no
/// error, the connection goes on.
#[tokio::test]
async fn input_discarded_after_close_is_acked_and_late_input_is_ignored() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let quarter = hello.stdin_window as u64 / 4;
    let piece = (hello.max_body as u64).min(quarter).min(64 * 1024);
    let pid = raw
        .start(exec_with_stdin("exec 0<&-; echo closed; exec sleep 1000"))
        .await;
    assert_eq!(raw.read_lines(1).await, ["closed"]);
    let mut sent = 0;
    while sent < quarter {
        let len = piece.min(quarter - sent);
        raw.send_frame(Frame::with_body(Message::Stdin, vec![b'x'; len as usize]))
            .await;
        sent += len;
    }
    let mut acked = 0;
    while acked < quarter {
        match raw.recv().await.message {
            Message::StdinAck { bytes } => acked += bytes,
            other => panic!("expected stdin_ack, got {other:?}"),
        }
    }
    // Less than a quarter may be held back, until the input ends.
    raw.send_frame(Frame::with_body(Message::Stdin, vec![b'y'; 24]))
        .await;
    raw.send(Message::StdinEnd).await;
    while acked < quarter + 24 {
        match raw.recv().await.message {
            Message::StdinAck { bytes } => acked += bytes,
            other => panic!("expected stdin_ack, got {other:?}"),
        }
    }
    assert_eq!(acked, quarter + 24);
    raw.send(Message::Cancel).await;
    let run = raw.finish_started(pid).await;
    assert_killed(&run.status, libc::SIGTERM);
    assert_eq!(run.acked, 0, "an ack for input the command never had");

    // After the exit: input and its end are ignored, unacknowledged.
    raw.send_frame(Frame::with_body(Message::Stdin, &b"late"[..]))
        .await;
    raw.send(Message::StdinEnd).await;
    raw.send_frame(Frame::with_body(Message::Ping, &b"after"[..]))
        .await;
    assert_eq!(raw.expect_pong().await, b"after"[..]);
    assert_eq!(
        raw.exec(ExecRequest::shell("echo next")).await.stdout,
        b"next\n"
    );
}

/// A command that exits with input still unread: whatever of it the server
/// acknowledges comes before the `exit`, never after it, and the `exit` ends
/// the count, so the next command may at once send a whole window.
#[tokio::test]
async fn input_left_at_exit_ends_with_the_exit() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    let piece = window.min(hello.max_body as usize) / 4;
    let sent = 4 * piece;

    raw.send(exec_with_stdin("head -c 1 >/dev/null")).await;
    for _ in 0..4 {
        raw.send_frame(Frame::with_body(Message::Stdin, vec![b'x'; piece]))
            .await;
    }
    let run = raw.finish().await;
    assert_exited(&run.status, 0);
    assert!(run.acked <= sent as u64, "{} acked of {sent}", run.acked);
    // Nothing of that command after its exit: the next frame is the pong.
    raw.send_frame(Frame::with_body(Message::Ping, &b"after"[..]))
        .await;
    assert_eq!(raw.expect_pong().await, b"after"[..]);

    // A fresh window: all of it at once, before any acknowledgement.
    raw.send(exec_with_stdin("wc -c")).await;
    for _ in 0..4 {
        raw.send_frame(Frame::with_body(Message::Stdin, vec![b'y'; piece]))
            .await;
    }
    raw.send(Message::StdinEnd).await;
    let run = raw.finish().await;
    assert_exited(&run.status, 0);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        sent.to_string()
    );
    assert_eq!(run.acked, sent as u64);
}

/// Input in one-byte frames, a whole window of it, to a command that reads
/// none: the server holds about the window, not the frames it came in (each
/// one's share of the connection's read buffer and a queue entry, some 70
/// times the window).
#[tokio::test]
async fn tiny_stdin_frames_cost_about_their_window() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    let pid = raw.start(exec_with_stdin("sleep 1000")).await;
    let before = status_kib(server.pid(), "VmRSS").expect("the server's memory");
    let sampler = RssSampler::start(server.pid());
    let per_batch = 4096;
    let batch = frame_bytes(&Frame::with_body(Message::Stdin, &b"x"[..])).repeat(per_batch);
    for _ in 0..window / per_batch {
        raw.send_raw(&batch).await;
    }
    // Once the pong is back, the server has read every frame before it.
    raw.send_frame(Frame::with_body(Message::Ping, &b"all read?"[..]))
        .await;
    loop {
        match raw.recv().await.message {
            Message::StdinAck { .. } => {}
            Message::Pong => break,
            other => panic!("expected pong or stdin_ack, got {other:?}"),
        }
    }
    let grown_kib = sampler.peak_kib().saturating_sub(before);
    eprintln!("server memory grew by {grown_kib} KiB for a window of {window} bytes");
    assert!(
        grown_kib < 16 * 1024,
        "the server grew by {grown_kib} KiB for {window} bytes of input in one-byte frames"
    );
    raw.send(Message::Cancel).await;
    let run = raw.finish_started(pid).await;
    assert_killed(&run.status, libc::SIGTERM);
}
