//! Accepting connections, for both listeners (the wiresh protocol and the
//! legacy one): a connection limit, one task per connection with panics
//! contained, and a graceful stop.
//!
//! After mini-redis: a [`Semaphore`] bounds the connections; a broadcast
//! tells every connection to wind down; each connection task holds a clone
//! of an mpsc sender, so the channel closing means all of them have ended.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::time;
use tracing::{error, info, warn};

use crate::shutdown::Shutdown;

/// Serves `listener` until `shutdown` completes, then stops accepting and
/// returns once every connection has ended.
///
/// Each accepted socket goes to `serve` in a task of its own, with a
/// [`Shutdown`] to watch; a socket over `max_connections` goes to `refuse`
/// instead, which tells the peer why (if its protocol can).
pub(crate) async fn serve_connections<S, SF, R, RF>(
    listener: TcpListener,
    name: &'static str,
    max_connections: usize,
    shutdown: impl Future,
    serve: S,
    refuse: R,
) where
    S: Fn(TcpStream, SocketAddr, Shutdown) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream, SocketAddr) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(max_connections));
    let accept = async {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(pair) => {
                    backoff = Duration::from_millis(10);
                    pair
                }
                Err(e) => {
                    // EMFILE and friends are transient: back off rather than
                    // spin or die, as the open connections are still served.
                    warn!("{name}: accept failed: {e}; retrying in {backoff:?}");
                    time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                warn!(%peer, "{name}: refusing connection: {max_connections} connections already open");
                tokio::spawn(refuse(socket, peer));
                continue;
            };
            let connection = tokio::spawn(serve(
                socket,
                peer,
                Shutdown::new(notify_shutdown.subscribe()),
            ));
            let done = shutdown_complete_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    if e.is_panic() {
                        error!(%peer, "{name}: connection handler panicked; connection closed, server unaffected");
                    }
                }
                drop(permit);
                drop(done);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        _ = shutdown => info!("{name}: shutting down: no new connections"),
    }
    drop(listener);
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    let _ = shutdown_complete_rx.recv().await;
    info!("{name}: stopped");
}
