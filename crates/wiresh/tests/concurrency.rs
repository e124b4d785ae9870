//! Many clients at once: a hundred connections open together, each running
//! its own command with its own environment.

mod common;

use common::*;
use tokio::sync::Barrier;
use wiresh::client::Connection;
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
