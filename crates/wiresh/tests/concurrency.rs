//! Many clients at once: a hundred connections open together, each running
//! its own command with its own environment.

mod common;

use common::*;
use tokio::sync::Barrier;
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
