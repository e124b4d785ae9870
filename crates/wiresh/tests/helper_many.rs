//! 500 commands running at once, all started by the spawn helper: a new
//! command still starts and returns its output and exit status, and the
//! 500 end when their connections go. (How long a start takes against
//! running commands is measured in `bench/spawn.sh`, not here.)

mod common;

use common::*;
use futures_util::future::join_all;
use tokio::sync::mpsc;
use wiresh::client::Output;
use wiresh_proto::ExecRequest;

const RUNNING: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_command_starts_beside_500_running_ones() {
    let server = server_for(RUNNING).await;
    let helper = spawn_helper_of(server.pid()).expect("a spawn helper");
    let conns = join_all((0..RUNNING).map(|_| server.connect())).await;
    // Each says it runs, then sleeps until its connection goes.
    let mut outputs = Vec::new();
    let mut runs = Vec::new();
    for mut conn in conns {
        let (tx, rx) = mpsc::channel::<Output>(4);
        outputs.push(rx);
        runs.push(tokio::spawn(async move {
            let req = ExecRequest::shell("echo up; exec sleep 3600");
            let _ = conn.run(req, None, &tx, never).await;
        }));
    }
    for rx in &mut outputs {
        match bounded("a command's first output", rx.recv()).await {
            Some(Output::Stdout(b)) => assert_eq!(b, "up\n"),
            other => panic!("not `up`: {other:?}"),
        }
    }
    let running = children_of(helper);
    assert!(
        running.len() >= RUNNING,
        "{} children of the helper",
        running.len()
    );

    let mut conn = server.connect().await;
    let req = ExecRequest::argv(vec!["sh".into(), "-c".into(), "echo new; exit 6".into()]);
    let ran = run(&mut conn, req, None).await;
    assert_eq!(ran.stdout, b"new\n");
    assert_exited(ran.status(), 6);

    // Gone with their connections.
    runs.iter().for_each(|run| run.abort());
    join_all(runs).await;
    let left = wait_gone(&running, None, BOUND).await;
    assert!(
        left.is_empty(),
        "{} commands outlived their connections",
        left.len()
    );
}

/// Starts in flight at once, answered as their commands start (not in the
/// order asked), each reach their own connection: 64 commands started
/// together, each with its own output and exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_in_flight_together_each_reach_their_own_command() {
    const TOGETHER: usize = 64;
    let server = Server::start_with(&[
        "--max-startups",
        "1000:100:1000",
        "--max-startups-per-address",
        "1000",
    ]);
    server.wait_for_log("spawn helper started (pid ").await;
    let conns = join_all((0..TOGETHER).map(|_| server.connect())).await;
    let ran = join_all(
        conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| async move {
                let line = format!("echo {i}; exit {}", i % 50 + 1);
                let req = ExecRequest::argv(vec!["sh".into(), "-c".into(), line]);
                (i, run(&mut conn, req, None).await)
            }),
    )
    .await;
    for (i, ran) in ran {
        assert_eq!(
            ran.stdout,
            format!("{i}\n").as_bytes(),
            "command {i}'s output"
        );
        assert_exited(ran.status(), i as i32 % 50 + 1);
    }
}

/// Starts asked for all at once, far more than the helper's socket queues
/// (`net.unix.max_dgram_qlen`, 10 by default): each still starts, and
/// none waits for another to end. Requests that must wait for room do so
/// without holding a runtime thread, which the helper's replies need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_starts_larger_than_the_helpers_queue_all_run() {
    const BURST: usize = 400;
    let server = server_for(BURST).await;
    let conns = join_all((0..BURST).map(|_| server.connect())).await;
    let ran = bounded(
        "every command of the burst to run",
        join_all(
            conns
                .into_iter()
                .enumerate()
                .map(|(i, mut conn)| async move {
                    let line = format!("echo {i}");
                    let req = ExecRequest::argv(vec!["sh".into(), "-c".into(), line]);
                    (i, run(&mut conn, req, None).await)
                }),
        ),
    )
    .await;
    for (i, ran) in ran {
        assert_eq!(ran.stdout, format!("{i}\n").as_bytes(), "command {i}");
        assert_exited(ran.status(), 0);
    }
}

/// A server that takes `commands` connections and commands at once (and
/// some more), all arriving together, with its spawn helper up.
async fn server_for(commands: usize) -> Server {
    let limit = (commands + 50).to_string();
    let server = Server::start_with(&[
        "--max-connections",
        &limit,
        "--max-commands",
        &limit,
        "--max-startups",
        "1000:100:1000",
        "--max-startups-per-address",
        "1000",
    ]);
    server.wait_for_log("spawn helper started (pid ").await;
    server
}
