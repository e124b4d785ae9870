//! Opening many connections at once, for the examples that hold many
//! (included by `#[path]`, so that the others do not carry it unused).

use anyhow::Context;
use futures_util::future::join_all;
use tokio::sync::Semaphore;
use wiresh::client::{Connection, Endpoint};

/// Connections opened at once while setting up (the rest wait their turn).
const OPENING_AT_ONCE: usize = 128;

/// Opens `n` authenticated connections, `OPENING_AT_ONCE` at a time.
pub async fn open(endpoint: &Endpoint, n: usize) -> anyhow::Result<Vec<Connection>> {
    let gate = Semaphore::new(OPENING_AT_ONCE);
    let opened = join_all((0..n).map(|_| async {
        let _turn = gate.acquire().await.expect("never closed");
        Connection::connect(endpoint).await
    }))
    .await;
    opened
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("opening a connection")
}
