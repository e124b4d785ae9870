//! Per-command latency on a live connection, against spawning the same
//! command locally. Used by `bench/compare.sh`.
//!
//! Usage: latency HOST:PORT [COUNT] [--plaintext]   (token from the usual
//! places; TLS with the fingerprint pinned in $WIRESH_HOME/known_hosts,
//! unless --plaintext)

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wiresh::client::{Connection, Output, Target};
use wiresh_proto::ExecRequest;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = Target::parse(
        &args.next().unwrap_or_else(|| "127.0.0.1:7878".into()),
        7878,
    )
    .map_err(anyhow::Error::msg)?;
    let count: usize = args
        .next()
        .filter(|a| a != "--plaintext")
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    let plaintext = std::env::args().any(|a| a == "--plaintext");
    let endpoint = common::endpoint(target, plaintext)?;
    let mut conn = Connection::connect(&endpoint).await?;
    let (tx, mut rx) = mpsc::channel::<Output>(16);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    // Remote and local in turn: on a shared machine the load changes
    // within a run, and both sides should see the same.
    let (mut remote, mut local) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let t = Instant::now();
        let st = conn
            .run(
                ExecRequest::shell("true"),
                None,
                &tx,
                std::future::pending::<()>,
            )
            .await?;
        remote.push(t.elapsed());
        anyhow::ensure!(st.code == Some(0), "remote `true` failed: {st:?}");
        let t = Instant::now();
        let st = Command::new("/bin/sh").args(["-c", "true"]).status()?;
        local.push(t.elapsed());
        anyhow::ensure!(st.success(), "local `sh -c true` failed");
    }
    // The floor a command's round trip stands on: a ping's, on the same
    // connection (what is left is the server's work and the spawn).
    let mut pings = Vec::with_capacity(count);
    for _ in 0..count {
        pings.push(conn.ping().await?);
    }
    let (r, l, p) = (median(remote), median(local), median(pings));
    println!(
        "per-command latency ({}), median of {count}: wiresh (live connection) {:.3} ms, local sh -c true {:.3} ms, ratio {:.2}x; a ping's round trip {:.3} ms",
        if plaintext { "plaintext" } else { "TLS" },
        r.as_secs_f64() * 1e3,
        l.as_secs_f64() * 1e3,
        r.as_secs_f64() / l.as_secs_f64(),
        p.as_secs_f64() * 1e3,
    );
    Ok(())
}
