//! Many clients at once: a hundred connections open together, each running
//! its own command with its own environment.

mod common;

use common::*;
use tokio::sync::{mpsc, Barrier};
use wiresh::client::{Connection, Output};
use wiresh_proto::ExecRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_clients() {
    const CLIENTS: usize = 100;
    let server = std::sync::Arc::new(Server::start());
    let barrier = std::sync::Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (server, barrier) = (server.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut conn = server.connect().await;
                // All connections are open at once before any command runs.
                barrier.wait().await;
                let req = ExecRequest {
                    env: [("WIRESH_N".to_string(), n.to_string())].into(),
                    ..ExecRequest::shell(format!("echo {n} $WIRESH_N"))
                };
                let ran = run(&mut conn, req, None).await;
                assert_exited(ran.status(), 0);
                assert_eq!(ran.stdout_str(), format!("{n} {n}\n"));
                n
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(
            bounded("a client task", t)
                .await
                .expect("client task failed"),
        );
    }
    assert_eq!(done, (0..CLIENTS).collect::<Vec<_>>());
}

/// glibc keeps what closed connections freed; once a burst of connections
/// has halved, the server hands it back to the system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_of_connections_the_server_gives_memory_back() {
    const BURST: usize = 1000;
    wiresh::daemon::raise_open_file_limit();
    let server = Server::start_with(&[
        "--max-connections",
        "2000",
        "--max-startups",
        "1000:100:1000",
        "--max-startups-per-address",
        "1000",
    ]);
    let home = tempfile::tempdir().unwrap();
    let tls = server.tls_endpoint(home.path());
    let rss = || status_kib(server.pid(), "VmRSS").expect("the server's RSS");
    let before = rss();
    let mut held = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        held.push(
            bounded("a TLS connection", Connection::connect(&tls))
                .await
                .unwrap(),
        );
    }
    // Every connection is authenticated (and holds its memory) once its
    // `hello` has arrived; the last one's `ping` proves the server is idle.
    bounded("a ping", held.last_mut().unwrap().ping())
        .await
        .unwrap();
    let peak = rss();
    assert!(
        peak > before + 8 * 1024,
        "{BURST} TLS connections should take memory: {before} KiB -> {peak} KiB"
    );
    drop(held);
    server
        .wait_for_log_line("memory given back with a quarter of the burst left", |l| {
            // "... fell from 1000 to 500; ..." (or from 1000 to 499: the
            // connections close side by side); halving goes on below that.
            let to = l.split("fell from ").nth(1).and_then(|rest| {
                rest.split(" to ")
                    .nth(1)?
                    .split(';')
                    .next()?
                    .parse::<usize>()
                    .ok()
            });
            to.is_some_and(|to| to <= BURST / 4)
        })
        .await;
    let after = rss();
    assert!(
        after < before + (peak - before) / 2,
        "the freed memory stayed: {before} KiB before, {peak} KiB with {BURST} connections, {after} KiB after"
    );
}

/// Runs that share one output queue smaller than their number do not hold
/// a place in it while they wait for a frame: one run whose command waits
/// (until the client has read all the others' output) cannot keep the
/// others' output out of the queue. A queue of one, four runs; the ping
/// interval (10 s, half the server's keepalive) is far longer than the
/// runs need, so no ping tick frees the queue for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_sharing_a_small_output_queue_do_not_block_each_other() {
    const OTHERS: usize = 3;
    const EACH: usize = 16 * MIB;
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    rustix::fs::mkfifoat(rustix::fs::CWD, &go, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    let (tx, mut rx) = mpsc::channel::<Output>(1);
    let mut conns = Vec::new();
    for _ in 0..=OTHERS {
        conns.push(server.connect().await);
    }
    // The waiting run's command prints only once the client has read all
    // the others' output (the reader below opens the fifo then).
    let waiter = ExecRequest::shell(format!("read line < '{}' && echo \"$line\"", go.display()));
    let talker = ExecRequest::shell(format!("exec head -c {EACH} /dev/zero"));
    let runs: Vec<_> = conns
        .iter_mut()
        .enumerate()
        .map(|(i, conn)| {
            let req = if i == 0 {
                waiter.clone()
            } else {
                talker.clone()
            };
            let tx = tx.clone();
            async move { conn.run(req, None, &tx, never).await }
        })
        .collect();
    drop(tx);
    let reading = async {
        let (mut stdout, mut told) = (Vec::new(), false);
        while let Some(out) = rx.recv().await {
            match out {
                Output::Stdout(b) if b.iter().all(|&x| x == 0) => stdout.push(b.len()),
                Output::Stdout(b) => assert_eq!(&b[..], b"go\n"),
                Output::Stderr(b) => panic!("stderr: {}", String::from_utf8_lossy(&b)),
            }
            if !told && stdout.iter().sum::<usize>() == OTHERS * EACH {
                told = true;
                let go = go.clone();
                tokio::task::spawn_blocking(move || std::fs::write(go, "go\n").unwrap());
            }
        }
        (stdout.iter().sum::<usize>(), told)
    };
    let (results, (zeros, told)) = bounded("four runs sharing a queue of one", async {
        tokio::join!(futures_util::future::join_all(runs), reading)
    })
    .await;
    for result in &results {
        assert!(matches!(result, Ok(s) if s.code == Some(0)), "{result:?}");
    }
    assert_eq!((zeros, told), (OTHERS * EACH, true));
}
