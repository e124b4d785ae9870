//! `cancel`: it kills the running command's process group and keeps the
//! connection, through the library client and frame by frame, with SIGKILL
//! after `--kill-grace` for a group that ignores SIGTERM, also when a
//! process that escaped the group holds the output pipe; a cancel asked
//! for before the `exec` has left the client still reaches its command.
//!
//! And `signal` (PROTOCOL.md 7.5.1): one signal to the group, which the
//! command may handle (its trap runs, it ends as it likes) or die of; no
//! kill follows; ignored when idle or unknown; and the library's
//! `Signaller` sends it behind the `exec`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::sync::{mpsc, Notify};
use wiresh::client::Output;
use wiresh_proto::{ExecRequest, Message, SignalName};

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

fn signal(name: SignalName) -> Message {
    Message::Signal { name }
}

/// `signal INT` runs the command's trap, and no kill follows: the command
/// ends as its trap says, with a status of its own choosing. (The trap
/// ends it, so that a signal that comes before `wait` cannot leave it
/// waiting out the sleep.)
#[tokio::test]
async fn signal_int_runs_the_commands_trap_and_it_ends_as_it_likes() {
    let server = Server::start();
    let (mut c, hello) = RawConn::authenticated_with_hello(server.addr, &server.token).await;
    assert!(hello.features.iter().any(|f| f == "signal"), "{hello:?}");
    let pid = c
        .start(exec(
            "trap 'echo trapped; exit 7' INT; sleep 30 >/dev/null 2>&1 & echo ready; wait",
        ))
        .await;
    assert_eq!(c.read_lines(1).await, ["ready"]);
    c.send(signal(SignalName::Int)).await;
    let run = c.finish_started(pid).await;
    assert_eq!(run.stdout, b"trapped\n");
    assert_exited(&run.status, 7);
}

/// A command that does not handle SIGINT dies of it: its `exit` says
/// signal 2 (128+2 = 130 for a shell), whatever else is in its group.
/// (The waiting program says `ready` only once SIGINT's default action is
/// in place: a shell between two commands holds a SIGINT back and may
/// start the next one first, which is its way and not what is tested.)
#[tokio::test]
async fn signal_int_kills_a_command_that_does_not_handle_it() {
    let server = Server::start();
    let mut c = server.raw().await;
    let pid = c
        .start(exec(
            "sleep 1000 >/dev/null 2>&1 & echo $!; exec python3 -c \"import signal, time; \
             signal.signal(signal.SIGINT, signal.SIG_DFL); print('ready', flush=True); \
             time.sleep(1000)\"",
        ))
        .await;
    let lines = c.read_lines(2).await;
    let bg: u32 = lines[0].parse().unwrap();
    c.send(signal(SignalName::Int)).await;
    let run = c.finish_started(pid).await;
    assert_killed(&run.status, libc::SIGINT);
    // A background job of a non-interactive shell ignores SIGINT; it is
    // killed with the group once the command has ended. (Its output goes
    // elsewhere: one that held the command's pipes would hold its `exit`
    // back, as it would without a signal.)
    assert_gone(&[bg], Some(pid), GONE_WITHIN, "the group after its end").await;
}

/// A `signal` with nothing running, or with a name this server does not
/// know (a later client's), is ignored: the connection stays, and a
/// command that is sent an unknown name runs on.
#[tokio::test]
async fn an_idle_or_unknown_signal_is_ignored() {
    let server = Server::start();
    let mut c = server.raw().await;
    c.send(signal(SignalName::Int)).await;
    let pid = c.start(exec("echo go; exec sleep 1000")).await;
    assert_eq!(c.read_lines(1).await, ["go"]);
    c.send_raw(&raw_frame(
        br#"{"type":"signal","name":"WINCH","body_len":0}"#,
        b"",
    ))
    .await;
    c.send(Message::Cancel).await;
    let run = c.finish_started(pid).await;
    assert_killed(&run.status, 15);
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");
}

/// The library's `Signaller` sends behind the `exec`, even when asked at
/// once (before the client's writer has sent the `exec`): the command dies
/// of the SIGINT rather than run its minute.
#[tokio::test]
async fn a_signal_sent_at_once_reaches_its_command() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let signaller = conn.signaller().expect("the server takes signals");
    let (tx, _rx) = mpsc::channel::<Output>(16);
    let mut sent = false;
    let interrupt_once = move || {
        let first = !std::mem::replace(&mut sent, true);
        let signaller = signaller.clone();
        async move {
            if first {
                signaller.send(SignalName::Int).await.unwrap();
            }
            never().await
        }
    };
    let req = ExecRequest::shell("exec sleep 60");
    let res = bounded(
        "the command interrupted at once",
        conn.run(req, None, &tx, interrupt_once),
    )
    .await;
    assert_killed(&res.expect("an exit status"), libc::SIGINT);
}
