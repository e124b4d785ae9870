//! `wiresh serve`: accepts connections and runs commands for authenticated
//! clients.
//!
//! Structure (after mini-redis): [`run`] hands the listener to the shared
//! accept loop (`crate::listener`: connection limit, graceful stop); each
//! connection is its own task in `handler`, so a fault or a panic in one
//! connection never reaches another or the accept loop.
//!
//! - [`config`]: the settings (their defaults are in [`crate::defaults`]);
//! - [`admission`]: the budget of connections still authenticating, apart
//!   from the authenticated ones, shared fairly between source networks
//!   and capped per address; `penalties`: addresses whose connections let
//!   the handshake deadline pass, refused for a growing time;
//! - `connections`: the places of authenticated connections, and memory
//!   given back when a burst of them has left;
//! - `handler`: one connection from its first byte (TLS, preamble, hello,
//!   auth) to its log line, dispatching each request;
//! - `session`: what a request handler holds: the connection, the peer,
//!   the settings, the shared state;
//! - `command` and `files`: the two kinds of request; `buffers`: the
//!   reused buffers of a command's output;
//! - `refusal`: requests turned down, mapped to their wire codes;
//! - [`policy`], `throttle`: what may run, how guessing tokens is slowed
//!   down (what is recorded is [`crate::audit`]'s);
//! - [`clients`]: the authorized client keys and the authentication mode;
//!   `logins`: who is logged in with what, so that a reload that takes
//!   credentials back closes the connections that rest on them.

pub mod admission;
mod buffers;
pub mod clients;
mod command;
pub mod config;
mod connections;
mod files;
mod handler;
mod logins;
mod penalties;
pub mod policy;
mod refusal;
mod session;
mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The defaults, under the name the `serve` flags know them by.
pub use crate::defaults;
pub use config::ServerConfig;

use crate::error::SetupError;

/// Serves connections from `listener` until `shutdown` is cancelled, then
/// stops accepting, lets running commands finish for the grace period, and
/// returns once every connection has ended.
pub async fn run(listener: TcpListener, config: ServerConfig, shutdown: CancellationToken) {
    let (_keep, settings) = watch::channel(Arc::new(config));
    run_reloadable(listener, settings, shutdown).await
}

/// Like [`run`], with settings that may be replaced while it runs (a
/// reload): each connection takes the settings of the moment it is
/// accepted and keeps them to its end, so a reload never changes what a
/// running command or transfer was started under. The limits on
/// connections and commands are those of the first settings.
pub async fn run_reloadable(
    listener: TcpListener,
    settings: watch::Receiver<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) {
    let first = settings.borrow().clone();
    let shared = Arc::new(session::Shared::new(settings.clone()));
    // After each reload, the connections whose logins it takes back end.
    let _revoking = crate::task::AbortOnDrop(tokio::spawn(revoke_at_reloads(
        settings.clone(),
        shared.logins.clone(),
    )));
    debug!(
        "running commands get {:?} to finish on shutdown",
        first.shutdown_grace
    );
    let max = first.max_connections;
    let (admitting, serving, refusing) = (shared.clone(), shared.clone(), shared);
    let current = settings.clone();
    crate::listener::serve_connections(
        listener,
        "server",
        shutdown,
        move |peer, socket: &tokio::net::TcpStream| {
            // When every authenticated place is taken, a newcomer would only
            // be refused after its handshake: tell it at once.
            if admitting.connections_full() {
                return Err(format!(
                    "server is at its limit of {max} connections; try again later"
                ));
            }
            admitting
                .startups
                .enter(peer.ip(), admission::Arrival::on(socket))
                .map_err(|dropped| dropped.to_string())
        },
        move |socket, peer, entry, shutdown| {
            let _ = socket.set_nodelay(true);
            let config = current.borrow().clone();
            handler::serve(socket, peer, entry, config, serving.clone(), shutdown)
        },
        move |socket, _, why| {
            let tls = settings.borrow().tls.clone();
            handler::refuse(socket, why, refusing.clone(), tls)
        },
    )
    .await
}

/// After each new snapshot of the settings (a reload), closes the
/// connections whose logins it no longer accepts (see `logins`).
async fn revoke_at_reloads(
    mut settings: watch::Receiver<Arc<ServerConfig>>,
    logins: Arc<logins::Logins>,
) {
    settings.borrow_and_update();
    while settings.changed().await.is_ok() {
        settings.borrow_and_update();
        let revoked = logins.revoke_unaccepted();
        if revoked > 0 {
            warn!("reload: {revoked} connections whose credentials are no longer accepted are closing");
        }
    }
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
