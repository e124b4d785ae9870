//! A silent flood against one server, and real clients trying to get in
//! through it: how many of them are admitted. Used by `bench/flood.sh`.
//!
//! Usage: flood HOST:PORT SOCKETS SOURCES [CLIENTS] [PER_NETWORK] [AT_ONCE] [--plaintext]
//!
//! SOCKETS connections (2,000, say) are opened from SOURCES loopback
//! addresses in 127.1.0.0 and up, PER_NETWORK addresses to a /24 (250 by
//! default: 2,000 addresses fill 8 /24s; 1 puts each in a /24 of its own,
//! as a botnet's would be). Each says nothing, and is opened again as soon
//! as the server closes it (refused, dropped, or timed out). Once the flood
//! has run for a second, CLIENTS real clients (40 by default) connect from
//! 127.0.0.1, AT_ONCE at a time (8 by default; with SOCKETS 0 and AT_ONCE
//! 1000, a burst of a thousand clients from one host), each with 10 s to
//! connect, authenticate and run `true`. Prints one line: how many were admitted, and what the flood
//! did. Everything ends within a minute. The token and the TLS pin come
//! from the usual places (see `latency`); needs an open-file limit above
//! SOCKETS.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use wiresh::client::{Connection, Endpoint, Target};
use wiresh_proto::ExecRequest;

/// Longest the whole run may take.
const BOUND: Duration = Duration::from_secs(60);
/// What one real client has to get in and run `true`.
const CLIENT_WITHIN: Duration = Duration::from_secs(10);

/// What the flood did.
#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    failed: AtomicUsize,
}

/// The `n`th flooding address: `per_network` to a /24, from 127.1.0.1.
fn source(n: usize, per_network: usize) -> IpAddr {
    let (network, host) = (1 + n / per_network, 1 + n % per_network);
    IpAddr::V4(Ipv4Addr::new(
        127,
        (network / 256) as u8 + 1,
        (network % 256) as u8,
        host as u8,
    ))
}

/// One flooding socket: connects from `from`, says nothing, and connects
/// again whenever the server closes it, until `stop`.
async fn flood_one(server: SocketAddr, from: IpAddr, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let mut sink = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let connected = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            socket.connect(server).await
        };
        match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(mut stream)) => {
                counts.opened.fetch_add(1, Ordering::Relaxed);
                // Held until the server closes it (what it says is dropped).
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut sink))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) | Err(_) => {}
                    }
                }
            }
            _ => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One real client: connect, authenticate, run `true`.
async fn real_client(endpoint: Endpoint) -> anyhow::Result<()> {
    let mut conn = Connection::connect(&endpoint).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<wiresh::client::Output>(4);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let status = conn
        .run(ExecRequest::shell("true"), None, &tx, std::future::pending)
        .await?;
    drop(tx);
    let _ = drain.await;
    anyhow::ensure!(status.code == Some(0), "`true` ended with {status:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plaintext = args.iter().any(|a| a == "--plaintext");
    let words: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let number = |i: usize, default: usize| -> anyhow::Result<usize> {
        words
            .get(i)
            .map_or(Ok(default), |w| w.parse().context("a number"))
    };
    let addr = words
        .first()
        .context("usage: flood HOST:PORT SOCKETS SOURCES [CLIENTS] [PER_NETWORK]")?;
    let server: SocketAddr = addr.parse().context("HOST:PORT as an address")?;
    let (sockets, sources, clients) = (number(1, 2000)?, number(2, 8)?, number(3, 40)?);
    let per_network = number(4, 250)?.clamp(1, 250);
    let at_once = number(5, 8)?.max(1);
    let target = Target::parse(addr, 7878)?;
    let endpoint = common::endpoint(target, plaintext)?;
    // Pin the server (and check the token) before the flood starts.
    real_client(endpoint.clone())
        .await
        .context("a first client, before the flood")?;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..sockets)
        .map(|n| {
            let from = source(n % sources, per_network);
            tokio::spawn(flood_one(server, from, counts.clone(), stop.clone()))
        })
        .collect();
    if sockets > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let started = Instant::now();
    let admitted = AtomicUsize::new(0);
    let mut failures = Vec::new();
    for batch in (0..clients).collect::<Vec<_>>().chunks(at_once) {
        let tries = batch.iter().map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(CLIENT_WITHIN, real_client(endpoint)).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("not in within {CLIENT_WITHIN:?}")),
                }
            })
        });
        for result in futures_util::future::join_all(tries).await {
            match result? {
                Ok(()) => {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if started.elapsed() > BOUND {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.abort();
    }
    let admitted = admitted.into_inner();
    println!(
        "admitted {admitted}/{clients} real clients in {:.1} s under {sockets} silent sockets from \
         {sources} addresses ({} connections opened, {} attempts failed)",
        started.elapsed().as_secs_f64(),
        counts.opened.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    failures.sort();
    failures.dedup();
    for failure in failures.iter().take(5) {
        println!("  a client failed: {failure}");
    }
    Ok(())
}
