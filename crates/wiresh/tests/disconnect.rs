//! A command's process group ends with it: when its client disconnects
//! (closing a raw connection, or dropping the library client's future), also
//! if the group ignores SIGTERM; and when the command exits, for what it left
//! running in its group.

mod common;

use common::*;
use tokio::sync::mpsc;
use wiresh::client::Output;
use wiresh_proto::ExecRequest;

#[tokio::test]
async fn disconnect_kills_the_process_group() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // A shell with a background child: both are in the command's group.
    let pid = raw.start(exec("sleep 1000 & echo $!; wait")).await;
    let bg: u32 = raw.read_lines(1).await[0].parse().unwrap();
    assert!(alive(pid) && alive(bg));
    assert_eq!(
        proc_stat(bg).unwrap().2,
        pid,
        "background child not in the group"
    );

    drop(raw);
    assert_gone(&[pid, bg], Some(pid), GONE_WITHIN, "after the client left").await;
}

#[tokio::test]
async fn library_client_dropped_mid_command_kills_it() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let (tx, mut rx) = mpsc::channel::<Output>(16);
    let task = tokio::spawn(async move {
        let _ = conn
            .run(
                ExecRequest::shell("sleep 1000 & echo $!; echo $$; wait"),
                None,
                &tx,
                never,
            )
            .await;
    });
    let mut text = Vec::new();
    while text.iter().filter(|&&b| b == b'\n').count() < 2 {
        match bounded("the pids", rx.recv()).await {
            Some(Output::Stdout(b)) => text.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    let pids: Vec<u32> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| alive(p)));

    // Dropping the future drops the connection.
    task.abort();
    let _ = task.await;
    assert_gone(
        &pids,
        Some(pids[1]),
        GONE_WITHIN,
        "after the client was dropped",
    )
    .await;
}

#[tokio::test]
async fn disconnect_kills_a_group_that_ignores_sigterm() {
    let server = Server::start();
    let mut raw = server.raw().await;
    let pid = raw
        .start(exec("trap '' TERM; sleep 1000 & echo $!; wait"))
        .await;
    let bg: u32 = raw.read_lines(1).await[0].parse().unwrap();
    drop(raw);
    // SIGTERM is ignored, so this takes the SIGKILL after the kill grace.
    assert_gone(&[pid, bg], Some(pid), BOUND, "SIGKILL never came").await;
}

#[tokio::test]
async fn leftovers_in_the_group_end_with_the_command() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // The background child does not hold the output pipes, so the command
    // ends at once; whatever it left in its group is terminated with it.
    let run = raw
        .exec(ExecRequest::shell("sleep 1000 >/dev/null 2>&1 & echo $!"))
        .await;
    assert_exited(&run.status, 0);
    let bg: u32 = String::from_utf8(run.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_gone(&[bg], Some(run.pid), GONE_WITHIN, "left behind").await;
}
