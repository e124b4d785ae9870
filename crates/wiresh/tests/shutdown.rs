//! Graceful shutdown on SIGTERM: new connections are refused and idle ones
//! told; running commands finish within `--shutdown-grace`, or are killed
//! when it ends, and transfers still going then stop (an upload's partial
//! kept for `--resume`); a second SIGTERM kills everything at once.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::disk::*;
use common::file_requests::*;
use common::files::*;
use common::*;
use tokio::sync::mpsc;
use wiresh::client::Output;
use wiresh_proto::{ErrorCode, ExecRequest, Frame, Message};

/// Polls until a TCP connection to `addr` is refused.
async fn wait_refused(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + BOUND;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            // Our handshake was in the listener's queue as it closed: the
            // next attempt finds no listener.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                assert!(Instant::now() < deadline, "{addr} resets, never refuses");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Checks the frames a connection received after `started` until it closed
/// during a shutdown: the command's output, then its `exit` as the last frame
/// of the command (section 7.3: "exit ends the command"), then at most an
/// `error shutting_down`. Returns what the command produced.
fn command_end(pid: u32, frames: &[Frame]) -> RawRun {
    let kinds: Vec<&str> = frames.iter().map(|f| f.message.type_name()).collect();
    let exit_at = kinds
        .iter()
        .position(|&k| k == "exit")
        .unwrap_or_else(|| panic!("no exit frame: {frames:?}"));
    for f in &frames[..exit_at] {
        assert!(
            matches!(
                f.message,
                Message::Stdout | Message::Stderr | Message::StdinAck { .. }
            ),
            "before exit, only output (and stdin acks) may come, got {:?}; all frames: {kinds:?}",
            f.message
        );
    }
    match &frames[exit_at + 1..] {
        [] => {}
        [Frame {
            message:
                Message::Error {
                    code: ErrorCode::ShuttingDown,
                    ..
                },
            ..
        }] => {}
        rest => panic!("after exit only `error shutting_down` may follow, got {rest:?}"),
    }
    let Message::Exit(status) = frames[exit_at].message.clone() else {
        unreachable!()
    };
    let mut run = RawRun {
        pid,
        stdout: Vec::new(),
        stderr: Vec::new(),
        status,
        pongs: Vec::new(),
        acked: 0,
    };
    for f in &frames[..exit_at] {
        match f.message {
            Message::Stdout => run.stdout.extend_from_slice(&f.body),
            Message::Stderr => run.stderr.extend_from_slice(&f.body),
            Message::StdinAck { bytes } => run.acked += bytes,
            _ => unreachable!("checked above"),
        }
    }
    run
}

#[tokio::test]
async fn sigterm_lets_the_running_command_finish() {
    let mut server = Server::start_with(&["--shutdown-grace", "60s"]);
    let mut idle = server.raw().await;
    let mut busy = server.raw().await;
    // The command finishes when the test says so, not after some time.
    let pid = busy
        .start(exec_with_stdin("read line; echo \"done $line\""))
        .await;

    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down").await;
    // New connections are refused at once, while the command still runs.
    wait_refused(server.addr).await;
    assert!(alive(pid));
    // The idle connection is told and closed.
    idle.expect_error(ErrorCode::ShuttingDown).await;
    idle.expect_closed().await;

    busy.send_frame(Frame::with_body(Message::Stdin, &b"go\n"[..]))
        .await;
    busy.send(Message::StdinEnd).await;
    let frames = busy.read_until_closed().await;
    let run = command_end(pid, &frames);
    assert_eq!(run.stdout, b"done go\n");
    assert_exited(&run.status, 0);

    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "server exit: {status:?}");
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "connected after the server stopped");
}

#[tokio::test]
async fn shutdown_grace_expiry_kills_the_command() {
    let mut server = Server::start_with(&["--shutdown-grace", "200ms"]);
    let mut busy = server.raw().await;
    let pid = busy.start(exec("sleep 1000")).await;
    server.signal(libc::SIGTERM);
    let frames = busy.read_until_closed().await;
    let run = command_end(pid, &frames);
    assert_killed(&run.status, 15);
    assert!(
        run.status.shutdown,
        "exit does not say the server shut down"
    );
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "server exit: {status:?}");
    assert!(!alive(pid));
}

#[tokio::test]
async fn library_run_during_shutdown_returns_the_exit() {
    let mut server = Server::start_with(&["--shutdown-grace", "60s"]);
    let mut conn = server.connect().await;
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(1);
    let (tx, mut rx) = mpsc::channel::<Output>(16);
    let request = async move {
        let res = conn
            .run(
                ExecRequest::shell("echo started; read x; echo \"done $x\""),
                Some(stdin_rx),
                &tx,
                never,
            )
            .await;
        drop(tx);
        res
    };
    let drive = async {
        let mut out = Vec::new();
        let mut stdin_tx = Some(stdin_tx);
        while let Some(o) = rx.recv().await {
            if let Output::Stdout(b) = o {
                out.extend_from_slice(&b);
            }
            if out == b"started\n" {
                if let Some(tx) = stdin_tx.take() {
                    server.signal(libc::SIGTERM);
                    server.wait_for_log("shutting down").await;
                    tx.send(Bytes::from_static(b"go\n")).await.unwrap();
                }
            }
        }
        out
    };
    let (res, out) = bounded("the command during shutdown", async {
        tokio::join!(request, drive)
    })
    .await;
    assert_eq!(out, b"started\ndone go\n");
    let status = res.expect("the command's exit status, not an error");
    assert_exited(&status, 0);
    assert_eq!(server.wait_exit().await.code(), Some(0));
}

/// A second SIGTERM does not wait for the grace period: every command is
/// killed and the server exits.
#[tokio::test]
async fn second_signal_kills_everything_and_exits() {
    let mut server = Server::start_with(&["--shutdown-grace", "600s"]);
    let mut raw = server.raw().await;
    let pid = raw.start(exec("sleep 1000")).await;
    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down").await;
    server.signal(libc::SIGTERM);
    // The client is told: the exit says why, then the connection ends.
    let frames = raw.read_until_closed().await;
    let run = command_end(pid, &frames);
    assert_killed(&run.status, 9);
    assert!(
        run.status.shutdown,
        "exit does not say the server shut down"
    );
    let status = server.wait_exit().await;
    assert!(!status.success(), "{status:?}");
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "after the second signal").await;
}

/// `wiresh exec` (over TLS) whose command a second SIGTERM kills says the
/// server shut down, not a TLS library's error.
#[tokio::test]
async fn the_client_says_the_server_shut_down() {
    use tokio::io::AsyncBufReadExt;
    let mut server = Server::start_with(&["--shutdown-grace", "600s"]);
    let mut cli = server.cli("exec");
    cli.args(["--", "echo ready; sleep 1000"]);
    let mut child = cli.spawn().expect("the client starts");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = bounded("the command to start", stdout.next_line()).await;
    assert_eq!(ready.unwrap().as_deref(), Some("ready"));
    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down").await;
    server.signal(libc::SIGTERM);
    let out = bounded("the client to end", child.wait_with_output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server shut down"), "{stderr}");
    assert!(!stderr.contains("close_notify"), "{stderr}");
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    server.wait_exit().await;
}

/// An upload still going when the shutdown grace ends stops with
/// `shutting_down` (the client here keeps it open without sending, as a
/// paused or slow one would), the server exits, and the partial stays:
/// the next server offers to resume from it.
#[tokio::test]
async fn an_upload_gets_the_shutdown_grace_then_stops_and_can_resume() {
    let mut fx = Files::start_with(&["--shutdown-grace", "300ms"]);
    let data = binary_pattern(MIB);
    let mut up = fx.server.raw().await;
    raw_put_start(&mut up, "big.bin", 2 * MIB as u64)
        .await
        .unwrap();
    send_file_data(&mut up, &data).await;
    // Answered after the data: the server has taken all of it.
    up.send_frame(Frame::with_body(Message::Ping, &b"sync"[..]))
        .await;
    assert_eq!(up.expect_pong().await, b"sync"[..]);
    fx.server.signal(libc::SIGTERM);
    let message = up.expect_error(ErrorCode::ShuttingDown).await;
    assert!(message.contains("--resume"), "{message}");
    up.expect_closed().await;
    let status = fx.server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "server exit: {status:?}");

    let next = Server::start_with(&["--files-root", fx.root.to_str().unwrap()]);
    let mut again = next.raw().await;
    let ready = raw_put_offered(&mut again, "big.bin", 2 * MIB as u64).await;
    assert_eq!(ready.offset, MIB as u64, "{ready:?}");
    assert_eq!(ready.prefix_blake3, Some(hex_blake3(&data)));
}

/// A download whose client takes nothing cannot hold the shutdown either:
/// when the grace ends the connection is closed and the server exits,
/// long before the send timeout (60 s) would have dropped the client.
#[tokio::test]
async fn a_download_nobody_reads_ends_with_the_shutdown_grace() {
    let mut fx = Files::start_with(&["--shutdown-grace", "300ms"]);
    write(&fx.root.join("big.bin"), &binary_pattern(64 * MIB));
    let mut down = fx.server.raw().await;
    raw_get_start(&mut down, "big.bin").await.unwrap();
    // The server fills the socket and its queue, then waits for the client.
    wait_until_stalled(fx.server.pid()).await;
    fx.server.signal(libc::SIGTERM);
    let status = fx.server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "server exit: {status:?}");
    // What was in flight arrives, the last frame perhaps cut short by the
    // close; never the whole file.
    while let Some(Ok(frame)) = down.next().await {
        assert!(
            !matches!(frame.message, Message::FileEnd { .. }),
            "the whole file was sent"
        );
    }
}
