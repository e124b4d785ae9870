//! Every wait of a transfer has a deadline: over a network that stops
//! moving without closing (a [`Proxy`] that stalls), `put` and `get` give
//! up after the client's `--transfer-timeout` (here 1 s, by the flag and by
//! `WIRESH_TRANSFER_TIMEOUT`) with a message that says so; and a client that
//! asks for a download and never reads it is dropped by the server after
//! its `--send-timeout`, freeing its connection slot.

mod common;

use std::time::{Duration, Instant};

use common::disk::*;
use common::file_requests::{assert_usable, raw_get_start};
use common::files::*;
use common::proxy::*;
use common::*;

/// Far more than the sockets and queues between the two ends can hold, so
/// that a stall stops the sender.
const BIG: usize = 32 * MIB;

/// How long a test's 1 s deadline may take to be noticed and acted on
/// (it turns a hang into a failure, with room for a loaded machine).
const GIVES_UP_WITHIN: Duration = Duration::from_secs(10);

/// Runs `cmd` (through `proxy`, which stalls) to its end: the client must
/// give up within [`GIVES_UP_WITHIN`], exit 255, and say that the server
/// `did` nothing for the 1 s it was given.
async fn assert_gives_up(cmd: tokio::process::Command, proxy: &Proxy, did: &str, what: &str) {
    let began = Instant::now();
    let out = cli_output(cmd, None).await;
    let took = began.elapsed();
    let err = out.stderr_str();
    eprintln!("{what}: gave up after {took:?}: {}", err.trim());
    assert!(proxy.seen().stalled, "{what}: the proxy never stalled");
    assert_eq!(out.code, Some(255), "{what}: a dead connection: {err}");
    assert!(
        err.contains(&format!("{did} nothing for 1s")),
        "{what}: {err}"
    );
    assert!(took < GIVES_UP_WITHIN, "{what}: waited {took:?}");
}

#[tokio::test]
async fn a_put_over_a_stalled_network_gives_up() {
    let fx = Files::start();
    let src = fx.local.join("big.bin");
    write_big(&src, BIG);
    let stall = Tamper::StallAfter(MIB as u64);
    let proxy = Proxy::start(fx.server.addr, stall, Tamper::Pass).await;
    let mut cmd = fx.cmd("put", Some(&proxy), &args![&src, "big.bin"]);
    cmd.env("WIRESH_TRANSFER_TIMEOUT", "1s");
    assert_gives_up(cmd, &proxy, "took", "put over a stalled network").await;
}

#[tokio::test]
async fn a_get_over_a_stalled_network_gives_up() {
    let fx = Files::start();
    write_big(&fx.root.join("big.bin"), BIG);
    let stall = Tamper::StallAfter(MIB as u64);
    let proxy = Proxy::start(fx.server.addr, Tamper::Pass, stall).await;
    let dest = fx.local.join("big.bin");
    let args = args!["--transfer-timeout", "1s", "big.bin", &dest];
    let cmd = fx.cmd("get", Some(&proxy), &args);
    assert_gives_up(cmd, &proxy, "sent", "get over a stalled network").await;
    assert!(!dest.exists(), "a file appeared under the real name");
    assert!(
        part_of(&dest).exists(),
        "the partial is gone: nothing to resume"
    );
}

/// The attack of issue 9: clients that ask for a download and never read
/// it filled `--max-connections` for as long as they liked.
#[tokio::test]
async fn clients_that_never_read_a_download_are_dropped() {
    let fx = Files::start_with(&["--send-timeout", "1s", "--max-connections", "2"]);
    write_big(&fx.root.join("big.bin"), BIG);
    let began = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = fx.server.raw().await;
        raw_get_start(&mut c, "big.bin").await.unwrap();
        // ... and never reads again.
        idle.push(c);
    }
    for c in &idle {
        let peer = c.framed.get_ref().local_addr().unwrap();
        wait_connection_end(&fx.server, peer).await;
    }
    let took = began.elapsed();
    eprintln!("two clients that read nothing were dropped after {took:?}");
    assert!(
        took < GIVES_UP_WITHIN,
        "they held their connections {took:?}"
    );
    fx.server
        .wait_for_log("the client took nothing for 1s (--send-timeout); dropped")
        .await;
    // Their slots are free again.
    assert_usable(&mut fx.server.raw().await).await;
    drop(idle);
}
