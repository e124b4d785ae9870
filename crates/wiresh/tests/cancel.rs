//! `cancel`: it kills the running command's process group and keeps the
//! connection, through the library client and frame by frame, with SIGKILL
//! after `--kill-grace` for a group that ignores SIGTERM, also when a
//! process that escaped the group holds the output pipe; a cancel asked
//! for before the `exec` has left the client still reaches its command.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::sync::{mpsc, Notify};
use wiresh::client::Output;
use wiresh_proto::{ExecRequest, Message};

#[tokio::test]
async fn cancel_kills_the_command_and_keeps_the_connection() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let cancel = std::sync::Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::channel::<Output>(16);

    let request = {
        let cancel = cancel.clone();
        async move {
            let res = conn
                .run(
                    ExecRequest::shell("sleep 1000 & echo $!; wait"),
                    None,
                    &tx,
                    move || {
                        let cancel = cancel.clone();
                        async move { cancel.notified().await }
                    },
                )
                .await;
            drop(tx);
            (conn, res)
        }
    };
    let watch = async {
        let mut text = Vec::new();
        let mut bg = None;
        while let Some(out) = rx.recv().await {
            if let Output::Stdout(b) = out {
                text.extend_from_slice(&b);
            }
            if bg.is_none() && text.ends_with(b"\n") {
                let pid: u32 = String::from_utf8_lossy(&text).trim().parse().unwrap();
                assert!(alive(pid));
                bg = Some(pid);
                cancel.notify_one(); // resolves the cancel future once
            }
        }
        bg.expect("no pid printed")
    };
    let ((mut conn, res), bg) = bounded("the cancelled command", async {
        tokio::join!(request, watch)
    })
    .await;
    let status = res.expect("a cancelled command still reports its exit");
    assert_killed(&status, 15);
    assert!(!status.timed_out);
    assert_gone(
        &[bg],
        None,
        GONE_WITHIN,
        "background child survived the cancel",
    )
    .await;

    assert_eq!(sh(&mut conn, "echo again").await.stdout, b"again\n");
}

/// A cancel asked for at once, while the `exec` is still queued in the
/// client (a current-thread runtime: its writer has not run yet), goes out
/// after it, so the server kills the command instead of ignoring a cancel
/// that came before any command. Before, it overtook the `exec` and the
/// command ran its whole minute.
#[tokio::test]
async fn a_cancel_asked_for_at_once_does_not_overtake_its_exec() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let (tx, _rx) = mpsc::channel::<Output>(16);
    let mut asked = false;
    let cancel_once = move || {
        let first = !std::mem::replace(&mut asked, true);
        async move {
            if !first {
                never().await;
            }
        }
    };
    let res = bounded(
        "the command cancelled at once",
        conn.run(ExecRequest::shell("exec sleep 60"), None, &tx, cancel_once),
    )
    .await;
    let status = res.expect("a cancelled command still reports its exit");
    assert_killed(&status, 15);
    assert_eq!(sh(&mut conn, "echo again").await.stdout, b"again\n");
}

/// Frame by frame: `cancel` ends the command with SIGTERM and its `exit`
/// still comes; a `cancel` with nothing running is ignored.
#[tokio::test]
async fn cancel_frame_kills_the_command_and_an_idle_cancel_is_ignored() {
    let server = Server::start();
    let mut c = server.raw().await;
    let pid = c.start(exec("echo go; exec sleep 1000")).await;
    assert_eq!(c.read_lines(1).await, ["go"]);
    c.send(Message::Cancel).await;
    let run = c.finish_started(pid).await;
    assert_killed(&run.status, 15);
    assert!(!alive(pid));
    // A second cancel, now idle, is ignored.
    c.send(Message::Cancel).await;
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");
}

/// `serve --kill-grace`: a command that ignores SIGTERM gets SIGKILL that
/// long after the `cancel`, not after the default 2 s.
#[tokio::test]
async fn kill_grace_is_the_wait_before_sigkill() {
    let grace = Duration::from_millis(300);
    let server = Server::start_with(&["--kill-grace", "300ms"]);
    let mut c = server.raw().await;
    let pid = c
        .start(exec("trap '' TERM; echo ready; exec sleep 1000"))
        .await;
    assert_eq!(c.read_lines(1).await, ["ready"]);
    let cancelled = Instant::now();
    c.send(Message::Cancel).await;
    let run = c.finish_started(pid).await;
    let took = cancelled.elapsed();
    assert_killed(&run.status, libc::SIGKILL);
    assert!(took >= grace, "SIGKILL after {took:?}, before the grace");
    // The default grace is 2 s; this one is far shorter.
    assert!(took < Duration::from_millis(1900), "SIGKILL after {took:?}");
}

/// A killed command whose output pipe is held by a process that escaped
/// its group (`setsid`) still gets its `exit`, after the kill grace.
#[tokio::test]
async fn cancel_ends_a_command_whose_pipe_an_escaped_process_holds() {
    let server = Server::start();
    let mut raw = server.raw().await;
    let pid = raw
        .start(exec("setsid sh -c 'echo $$; exec sleep 60' & wait"))
        .await;
    let escaped: u32 = raw.read_lines(1).await[0].parse().unwrap();
    raw.send(Message::Cancel).await;
    let run = raw.finish_started(pid).await;
    kill_all(&[escaped]);
    assert!(run.status.signal.is_some(), "{:?}", run.status);
    // The connection is usable for the next command.
    assert_eq!(
        raw.exec(ExecRequest::shell("echo next")).await.stdout,
        b"next\n"
    );
}
