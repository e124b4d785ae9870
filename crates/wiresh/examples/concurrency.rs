//! Many at once against one server: N concurrent `sleep 1` commands (each
//! on its own connection, all started together), then M idle authenticated
//! connections held open, with the server's memory (its RSS, read from
//! /proc) while they are held and after they have closed. Used by
//! `bench/compare.sh`.
//!
//! Usage: concurrency HOST:PORT SERVER_PID [COMMANDS] [IDLE] [--plaintext]
//! (token from the usual places; TLS pinned as in `latency`, unless
//! --plaintext). The server needs limits that let this many in:
//! `--max-connections`, `--max-commands`, `--max-startups`,
//! `--max-startups-per-address`.

mod common;
#[path = "common/connections.rs"]
mod connections;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures_util::future::join_all;
use tokio::sync::mpsc;
use wiresh::client::{Connection, Output, Target};
use wiresh_proto::ExecRequest;

use connections::open;

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}

/// Open files of the server, which fall back once connections close.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plaintext = args.iter().any(|a| a == "--plaintext");
    let mut args = args.iter().filter(|a| *a != "--plaintext");
    let target =
        Target::parse(args.next().context("HOST:PORT")?, 7878).map_err(anyhow::Error::msg)?;
    let pid: u32 = args.next().context("SERVER_PID")?.parse()?;
    let commands: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let idle: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    // Every connection is a file here too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let endpoint = common::endpoint(target, plaintext)?;
    let how = if plaintext { "plaintext" } else { "TLS" };

    // 1. Concurrent commands: every connection open first, then every
    // `sleep 1` sent at once; the clock runs from the first exec to the
    // last exit. As a shell line (`sh -c 'sleep 1'`, a shell and a sleep
    // per command) and as an argv (the sleep alone).
    let opening = Instant::now();
    let mut conns = open(&endpoint, commands).await?;
    let opened_in = opening.elapsed();
    let (tx, mut rx) = mpsc::channel::<Output>(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    for (what, req) in [
        ("shell", ExecRequest::shell("sleep 1")),
        ("argv", ExecRequest::argv(vec!["sleep".into(), "1".into()])),
    ] {
        let started = Instant::now();
        let results = join_all(conns.iter_mut().map(|conn| {
            let (tx, req) = (tx.clone(), req.clone());
            async move { conn.run(req, None, &tx, std::future::pending::<()>).await }
        }))
        .await;
        let wall = started.elapsed();
        let ok = results
            .iter()
            .filter(|r| matches!(r, Ok(s) if s.code == Some(0)))
            .count();
        ensure!(
            ok == commands,
            "only {ok} of {commands} `sleep 1` succeeded: {:?}",
            results.iter().find(|r| r.is_err())
        );
        println!(
            "concurrency ({how}): {commands} concurrent `sleep 1` ({what}) all done in {:.3} s (their connections opened in {:.3} s)",
            wall.as_secs_f64(),
            opened_in.as_secs_f64()
        );
    }
    join_all(conns.into_iter().map(Connection::close)).await;

    // 2. Idle connections: the server's memory per connection held, and
    // what it keeps once they are gone.
    let files_before = open_files(pid);
    let before = rss_kib(pid)?;
    let opening = Instant::now();
    let conns = open(&endpoint, idle).await?;
    let opened_in = opening.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rss_kib(pid)?;
    join_all(conns.into_iter().map(Connection::close)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_files(pid) > files_before + 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    println!(
        "idle connections ({how}): {idle} opened in {:.1} s; server RSS {} MiB before, {} MiB with them held ({:.1} KiB per connection), {} MiB after they closed",
        opened_in.as_secs_f64(),
        before / 1024,
        held / 1024,
        (held.saturating_sub(before)) as f64 / idle as f64,
        after / 1024
    );
    Ok(())
}
