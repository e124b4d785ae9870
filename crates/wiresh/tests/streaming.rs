//! Large output: 256 MiB through the library client while the server's
//! memory stays bounded, and backpressure that stops the producing command
//! while the client reads nothing (over plaintext and TLS); output exact
//! on both of the server's paths (spliced past its first MiB over
//! plaintext, copied over TLS).

mod common;

use std::time::Instant;

use common::*;
use tokio::sync::mpsc;
use wiresh::client::{Connection, Output};
use wiresh_proto::ExecRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_256_mib_with_bounded_server_memory() {
    streams_256_mib(false).await;
}

/// The same over TLS, where a command's output is read from its pipe into
/// memory to be encrypted: the server's memory stays bounded all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_256_mib_over_tls_with_bounded_server_memory() {
    streams_256_mib(true).await;
}

async fn streams_256_mib(tls: bool) {
    const TOTAL: u64 = 256 * 1024 * 1024;
    const PAUSE_AT: u64 = 16 * 1024 * 1024;
    // The target is 32 MiB in release; tests run the debug binary.
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    // What may sit between the producer and the client while the client
    // reads nothing: pipe, server queues, both socket buffers (the receive
    // buffer autotunes up to net.ipv4.tcp_rmem's max, 32 MiB here).
    const IN_FLIGHT_LIMIT: u64 = 96 * 1024 * 1024;

    let server = Server::start();
    let sampler = RssSampler::start(server.pid());
    let baseline_kib = status_kib(server.pid(), "VmRSS").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut conn = match tls {
        true => Connection::connect(&server.tls_endpoint(home.path()))
            .await
            .unwrap(),
        false => server.connect().await,
    };
    let (tx, mut rx) = mpsc::channel::<Output>(4);
    let req = ExecRequest::shell(format!("exec head -c {TOTAL} /dev/zero"));
    let running = tokio::spawn(async move {
        let res = conn.run(req, None, &tx, never).await;
        drop(tx);
        res
    });

    let zeros = vec![0u8; 1024 * 1024];
    let mut received = 0u64;
    let mut paused = false;
    let begun = Instant::now();
    while let Some(out) = bounded("output of the 256 MiB command", rx.recv()).await {
        let chunk = match out {
            Output::Stdout(b) => b,
            Output::Stderr(b) => panic!("unexpected stderr: {:?}", String::from_utf8_lossy(&b)),
        };
        assert!(chunk.len() <= zeros.len(), "chunk of {} bytes", chunk.len());
        assert!(chunk[..] == zeros[..chunk.len()], "output corrupted");
        received += chunk.len() as u64;
        if !paused && received >= PAUSE_AT {
            paused = true;
            // Stop reading. Backpressure must stop the producer long before
            // it has written everything, and the server must not buffer.
            let producers = commands_of(server.pid());
            assert_eq!(producers.len(), 1, "server children: {producers:?}");
            let stalled_at = wait_until_stalled(producers[0]).await.unwrap_or_else(|| {
                panic!(
                    "the producer wrote all {TOTAL} bytes while the client had read only \
                     {received}: no backpressure"
                )
            });
            let in_flight = stalled_at - received;
            let rss_kib = status_kib(server.pid(), "VmRSS").unwrap();
            eprintln!(
                "paused at {received} bytes: producer stalled at {stalled_at} ({} MiB in flight), \
                 server VmRSS {rss_kib} KiB",
                in_flight >> 20
            );
            assert!(stalled_at < TOTAL);
            assert!(
                in_flight < IN_FLIGHT_LIMIT,
                "{in_flight} bytes between producer and client while the client is paused"
            );
            assert!(
                sampler.peak_kib() < RSS_LIMIT_KIB,
                "server VmRSS peaked at {} KiB while the client was paused",
                sampler.peak_kib()
            );
        }
    }
    let elapsed = begun.elapsed();
    let result = bounded("the run to return", running).await.unwrap();
    assert_exited(&result.expect("the 256 MiB command"), 0);
    assert_eq!(received, TOTAL, "not all output arrived");

    let hwm_kib = status_kib(server.pid(), "VmHWM").unwrap();
    let peak_kib = sampler.peak_kib();
    eprintln!(
        "256 MiB in {elapsed:?} ({:.0} MiB/s); server VmRSS baseline {baseline_kib} KiB, \
         sampled peak {peak_kib} KiB, VmHWM {hwm_kib} KiB",
        256.0 / elapsed.as_secs_f64()
    );
    assert!(paused);
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "server VmRSS peaked at {peak_kib} KiB"
    );
    assert!(hwm_kib < RSS_LIMIT_KIB, "server VmHWM {hwm_kib} KiB");
}

/// Output of every size and kind arrives byte for byte, stdout and stderr
/// apart, on both of the server's paths: over plaintext a command's pipes
/// are copied for their first MiB and then spliced into the socket
/// (zero-copy); over TLS they are read and copied throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_exact_on_the_spliced_and_the_copying_path() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Binary, larger than the pipe and the largest frame, odd-sized; more
    // than a MiB on stderr too, so that both pipes reach the splice.
    let pattern = binary_pattern(5 * MIB + 12_345);
    std::fs::write(&data, &pattern).unwrap();
    let err_len = MIB + 70_000;
    let line = format!(
        "cat '{f}'; printf 'to stderr\\n' >&2; head -c {err_len} '{f}' >&2; printf x; sleep 0.1; printf y",
        f = data.display()
    );
    let mut stdout = pattern.clone();
    stdout.extend_from_slice(b"xy");
    let mut stderr = b"to stderr\n".to_vec();
    stderr.extend_from_slice(&pattern[..err_len]);

    let home = tempfile::tempdir().unwrap();
    let tls = server.tls_endpoint(home.path());
    for (path, endpoint) in [("spliced", server.endpoint()), ("copying", tls)] {
        let mut conn = Connection::connect(&endpoint).await.unwrap();
        let ran = run(&mut conn, ExecRequest::shell(line.clone()), None).await;
        assert_exited(ran.status(), 0);
        assert!(ran.stdout == stdout, "{path} path: stdout differs");
        assert!(ran.stderr == stderr, "{path} path: stderr differs");
        // Nothing at all, and one byte, on the same connection.
        let ran = run(&mut conn, ExecRequest::shell("true"), None).await;
        assert_eq!((&ran.stdout[..], &ran.stderr[..]), (&b""[..], &b""[..]));
        let ran = run(&mut conn, ExecRequest::shell("printf 1"), None).await;
        assert_eq!(ran.stdout, b"1", "{path} path");
    }
}
