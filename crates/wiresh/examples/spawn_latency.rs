//! Spawn latency against running commands: one `true` (argv) at a time on
//! a live connection while N `sleep`s (argv) run on other connections of
//! the same server, for each N asked for; then, if asked, M concurrent
//! `sleep 1` (argv) all sent at once, timed from the first exec to the
//! last exit. Each running command holds the server's descriptors (its
//! connection, pipes, a pidfd), which a start copies unless it is made
//! from a small table (`exec::launcher`); `--idle N` holds N idle
//! connections open throughout, which grow the server's memory, whose
//! page tables a start by `fork` copies. Used by `bench/spawn.sh` and
//! `bench/compare.sh`.
//!
//! Usage: spawn_latency HOST:PORT SERVER_PID [--running 0,1,10,100,500,1000]
//! [--samples 300] [--sleeps M] [--idle N] [--plaintext]
//! (token from the usual places; TLS pinned as in `latency`, unless
//! --plaintext). The server needs limits that let this many in:
//! `--max-connections`, `--max-commands`, `--max-startups`,
//! `--max-startups-per-address`. A level is measured once the server (or
//! its spawn helper) has that many children (read from /proc), not after
//! a pause.

mod common;
#[path = "common/connections.rs"]
mod connections;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wiresh::client::{Connection, Endpoint, Output, Target};
use wiresh_proto::ExecRequest;

use connections::open;

/// How long a level may take to have all its commands running.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// What to measure, from the command line.
struct Plan {
    target: Target,
    server: u32,
    running: Vec<usize>,
    samples: usize,
    sleeps: usize,
    idle: usize,
    plaintext: bool,
}

fn plan() -> anyhow::Result<Plan> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut plan = Plan {
        target: Target::parse("127.0.0.1:7878", 7878).map_err(anyhow::Error::msg)?,
        server: 0,
        running: vec![0, 1, 10, 100, 500, 1000],
        samples: 300,
        sleeps: 0,
        idle: 0,
        plaintext: false,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--running" => {
                plan.running = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--samples" => plan.samples = value()?.parse()?,
            "--sleeps" => plan.sleeps = value()?.parse()?,
            "--idle" => plan.idle = value()?.parse()?,
            "--plaintext" => plan.plaintext = true,
            _ => positional.push(arg),
        }
    }
    let [target, server] = positional.as_slice() else {
        bail!("usage: spawn_latency HOST:PORT SERVER_PID [--running N,...] [--samples K] [--sleeps M] [--idle N] [--plaintext]");
    };
    plan.target = Target::parse(target, 7878).map_err(anyhow::Error::msg)?;
    plan.server = server.parse()?;
    ensure!(plan.samples > 0, "--samples must be at least 1");
    plan.running.sort_unstable();
    Ok(plan)
}

/// The commands the server runs now: its children, and its spawn
/// helper's in its place (`exec::helper`: the commands' parent where the
/// server has one).
fn children(pid: u32) -> usize {
    child_pids(pid)
        .into_iter()
        .map(|child| match is_spawn_helper(child) {
            true => child_pids(child).len(),
            false => 1,
        })
        .sum()
}

/// The children of `pid`: each thread's, as a child belongs to the thread
/// that started it.
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` is a spawn helper (`wiresh spawn-helper` in ps).
fn is_spawn_helper(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"wiresh\0spawn-helper\0")
}

/// The server's resident memory in MiB: a start by `fork` (every start
/// with a `pre_exec` hook, as wiresh's) copies the page tables behind it.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// The server's open descriptors.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Waits until the server has `want` children (`at_most`: no more than).
async fn settle(pid: u32, want: usize, at_most: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let now = children(pid);
        if (at_most && now <= want) || (!at_most && now >= want) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the server has {now} children, not {want}, after {SETTLE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn argv(words: &[&str]) -> ExecRequest {
    ExecRequest::argv(words.iter().map(|w| w.to_string()).collect())
}

/// Median and 90th percentile of `count` runs of `true` on `conn`, in ms.
async fn probe(
    conn: &mut Connection,
    count: usize,
    tx: &mpsc::Sender<Output>,
) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let status = conn
            .run(argv(&["true"]), None, tx, std::future::pending::<()>)
            .await?;
        times.push(t.elapsed());
        ensure!(status.code == Some(0), "remote `true` failed: {status:?}");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok((ms(times[count / 2]), ms(times[count * 9 / 10])))
}

/// The table: for each level, start `sleep`s up to it, then probe.
async fn table(plan: &Plan, endpoint: &Endpoint, tx: &mpsc::Sender<Output>) -> anyhow::Result<()> {
    let how = if plan.plaintext { "plaintext" } else { "TLS" };
    let mut probe_conn = Connection::connect(endpoint).await?;
    let mut sleepers: Vec<JoinHandle<()>> = Vec::new();
    // What the server already runs (or has not reaped yet) is not ours.
    let before = children(plan.server);
    let mut none_ms = None;
    println!(
        "spawn latency ({how}): one `true` (argv) on a live connection while N `sleep` (argv) run, median (p90) of {}",
        plan.samples
    );
    println!("running  server fds  server RSS MiB  median ms  p90 ms  ratio to the fewest");
    for &level in &plan.running {
        let more = level.saturating_sub(sleepers.len());
        for conn in open(endpoint, more).await? {
            sleepers.push(tokio::spawn(async move {
                let mut conn = conn;
                // A queue of its own: a run holds a place in its queue while
                // it waits for a frame, so a shared one would make the
                // probe wait for a sleeper's ping to free one. `sleep`
                // writes nothing, so nothing needs to drain it.
                let (tx, _rx) = mpsc::channel::<Output>(1);
                let _ = conn
                    .run(
                        argv(&["sleep", "3600"]),
                        None,
                        &tx,
                        std::future::pending::<()>,
                    )
                    .await;
            }));
        }
        settle(plan.server, before + level, false).await?;
        let (median, p90) = probe(&mut probe_conn, plan.samples, tx).await?;
        let first = *none_ms.get_or_insert(median);
        println!(
            "{level:>7}  {:>10}  {:>14}  {median:>9.3}  {p90:>6.3}  {:.2}x",
            open_files(plan.server),
            rss_mib(plan.server),
            median / first
        );
    }
    // Dropped connections: the server kills their commands.
    sleepers.iter().for_each(JoinHandle::abort);
    join_all(sleepers).await;
    probe_conn.close().await;
    settle(plan.server, before, true).await
}

/// `count` concurrent `sleep 1` (argv), each on its own connection.
async fn sleeps(count: usize, endpoint: &Endpoint, how: &str) -> anyhow::Result<()> {
    let mut conns = open(endpoint, count).await?;
    let started = Instant::now();
    let results = join_all(conns.iter_mut().map(|conn| {
        // A queue each, as in `table`.
        let (tx, rx) = mpsc::channel::<Output>(1);
        async move {
            let _open = rx;
            conn.run(argv(&["sleep", "1"]), None, &tx, std::future::pending::<()>)
                .await
        }
    }))
    .await;
    let wall = started.elapsed();
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if s.code == Some(0)))
        .count();
    ensure!(
        ok == count,
        "only {ok} of {count} `sleep 1` succeeded: {:?}",
        results.iter().find(|r| r.is_err())
    );
    println!(
        "spawn latency ({how}): {count} concurrent `sleep 1` (argv) all done in {:.3} s",
        wall.as_secs_f64()
    );
    join_all(conns.into_iter().map(Connection::close)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = plan()?;
    // Every connection is a file here too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let endpoint = common::endpoint(plan.target.clone(), plan.plaintext)?;
    let (tx, mut rx) = mpsc::channel::<Output>(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let idle = open(&endpoint, plan.idle).await?;
    if plan.idle > 0 {
        println!(
            "spawn latency: {} idle connections held (server RSS {} MiB)",
            plan.idle,
            rss_mib(plan.server)
        );
    }
    if !plan.running.is_empty() {
        table(&plan, &endpoint, &tx).await?;
    }
    join_all(idle.into_iter().map(Connection::close)).await;
    if plan.sleeps > 0 {
        let how = if plan.plaintext { "plaintext" } else { "TLS" };
        sleeps(plan.sleeps, &endpoint, how).await?;
    }
    Ok(())
}
