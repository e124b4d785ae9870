//! What starting and awaiting `sh -c true` costs in this process, by the
//! ways a server can do it, against the blocking `status()` that
//! `examples/latency` compares wiresh with. It puts a floor under the
//! live-connection latency: a server on an async runtime pays at least the
//! difference between "awaited" and "blocking", and one that keeps stdout
//! and stderr apart and kills by process group, as wiresh does for a
//! command without input, the last figure. Used by `bench/compare.sh`.
//!
//! Usage: spawn_floor [COUNT]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// The median of `count` timed runs of `run`, in milliseconds.
async fn median_ms<F, Fut>(count: usize, mut run: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut times: Vec<Duration> = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        run().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[count / 2].as_secs_f64() * 1e3)
}

fn sh_true() -> Command {
    let mut sh = Command::new("/bin/sh");
    sh.args(["-c", "true"]);
    sh
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    // On a worker thread, as the server's commands are: `main` itself runs
    // outside the workers, and every wake-up would cross threads.
    tokio::spawn(measure(count)).await?
}

async fn measure(count: usize) -> anyhow::Result<()> {
    let blocking = median_ms(count, || async {
        anyhow::ensure!(sh_true().status()?.success());
        Ok(())
    })
    .await?;
    let on_blocking_thread = median_ms(count, || async {
        let status = tokio::task::spawn_blocking(|| sh_true().status()).await??;
        anyhow::ensure!(status.success());
        Ok(())
    })
    .await?;
    let awaited = median_ms(count, || async {
        let status = tokio::process::Command::from(sh_true()).status().await?;
        anyhow::ensure!(status.success());
        Ok(())
    })
    .await?;
    let as_wiresh_does = median_ms(count, || async {
        let mut child = tokio::process::Command::from(sh_true())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let mut out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (status, read_out, read_err) = tokio::join!(
            child.wait(),
            out.read_to_end(&mut o),
            err.read_to_end(&mut e)
        );
        read_out?;
        read_err?;
        anyhow::ensure!(status?.success());
        Ok(())
    })
    .await?;
    println!(
        "spawn floor (sh -c true), median of {count}: blocking status() {blocking:.3} ms; \
         on a blocking thread {on_blocking_thread:.3} ms; awaited (tokio) {awaited:.3} ms; \
         awaited with stdout and stderr piped, in a process group {as_wiresh_does:.3} ms, ratio {:.2}x",
        as_wiresh_does / blocking
    );
    Ok(())
}
