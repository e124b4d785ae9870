//! `wiresh serve`: accepts connections and runs commands for authenticated
//! clients.
//!
//! Structure (after mini-redis): [`run`] hands the listener to the shared
//! accept loop (`crate::listener`: connection limit, graceful stop); each
//! connection is its own task in `handler`, so a fault or a panic in one
//! connection never reaches another or the accept loop.
//!
//! - [`config`]: the settings and the one home of their defaults;
//! - `handler`: one connection from its first byte (TLS, preamble, hello,
//!   auth) to its log line, dispatching each request;
//! - `session`: what a request handler holds: the connection, the peer,
//!   the settings, the shared state;
//! - `command` and `files`: the two kinds of request;
//! - `refusal`: requests turned down, mapped to their wire codes;
//! - [`policy`], [`audit`], `throttle`: what may run, what is recorded, how
//!   guessing tokens is slowed down.

pub mod admission;
pub mod audit;
mod command;
pub mod config;
mod files;
mod handler;
pub mod policy;
mod refusal;
mod session;
mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{defaults, ServerConfig};

use crate::error::SetupError;

/// Serves connections from `listener` until `shutdown` is cancelled, then
/// stops accepting, lets running commands finish for the grace period, and
/// returns once every connection has ended.
pub async fn run(listener: TcpListener, config: ServerConfig, shutdown: CancellationToken) {
    let shared = Arc::new(session::Shared::new(&config));
    let config = Arc::new(config);
    info!(
        "running commands get {:?} to finish on shutdown",
        config.shutdown_grace
    );
    let max = config.max_connections;
    let (admitting, serving, refusing) = (shared.clone(), shared.clone(), shared);
    crate::listener::serve_connections(
        listener,
        "server",
        shutdown,
        // When every authenticated place is taken, a newcomer would only be
        // refused after its handshake: tell it at once.
        move |_| match admitting.connections_full() {
            true => Err(format!(
                "server is at its limit of {max} connections; try again later"
            )),
            false => Ok(()),
        },
        move |socket, peer, (), shutdown| {
            let _ = socket.set_nodelay(true);
            handler::serve(socket, peer, config.clone(), serving.clone(), shutdown)
        },
        move |socket, _, why| handler::refuse(socket, why, refusing.clone()),
    )
    .await
}

/// Binds a listener, explaining the usual failures.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, SetupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SetupError::Bind {
            addr,
            hint: match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another process uses that port: pick another with --listen, or port 0 for any free one"
                }
                std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
                _ => "",
            },
            source,
        })
}
