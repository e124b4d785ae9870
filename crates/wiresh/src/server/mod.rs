//! `wiresh serve`: accepts connections and runs commands for authenticated
//! clients.
//!
//! Structure (after mini-redis): [`run`] hands the listener to the shared
//! accept loop (`crate::listener`: connection limit, graceful stop); each
//! connection is its own task in [`handler`], so a fault or a panic in one
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
//!   guessing tokens is slowed down;
//! - [`clients`]: the authorized client keys and the authentication mode.

pub mod audit;
pub mod clients;
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
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wiresh_proto::{ErrorCode, Frame, Message};

pub use config::{defaults, ServerConfig};

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
/// running command or transfer was started under. The connection limit and
/// the command limit are those of the first settings.
pub async fn run_reloadable(
    listener: TcpListener,
    settings: watch::Receiver<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) {
    let first = settings.borrow().clone();
    let shared = Arc::new(session::Shared::new(&first));
    let max = first.max_connections;
    // Telling refused peers why costs a little (a TLS handshake); a flood
    // of them gets at most this many answers at once, the rest are closed.
    let refusals = Arc::new(Semaphore::new(64));
    info!(
        "running commands get {:?} to finish on shutdown",
        first.shutdown_grace
    );
    let current = settings.clone();
    crate::listener::serve_connections(
        listener,
        "server",
        max,
        shutdown,
        move |socket, peer, shutdown| {
            let _ = socket.set_nodelay(true);
            let config = current.borrow().clone();
            handler::serve(socket, peer, config, shared.clone(), shutdown)
        },
        move |socket, _| {
            let tls = settings.borrow().tls.clone();
            refuse(socket, max, refusals.clone(), tls)
        },
    )
    .await
}

/// Tells a peer over the connection limit why it is turned away.
///
/// The error frame goes inside TLS when the peer opens with a TLS
/// handshake, so a TLS client can read it.
async fn refuse(
    socket: TcpStream,
    max: usize,
    refusals: Arc<Semaphore>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let Ok(_slot) = refusals.try_acquire() else {
        return; // flooded: just close
    };
    let frame = Frame::new(Message::error(
        ErrorCode::TooManyConnections,
        format!("server is at its limit of {max} connections; try again later"),
    ));
    let bytes = match wiresh_proto::codec::encode_frame(&frame) {
        Ok(b) => b,
        Err(_) => return,
    };
    let answer = async {
        // A TLS client speaks first at once; a silent peer gets the frame
        // in the clear, as before any preamble.
        let mut first = [0u8; 1];
        let peeked = time::timeout(Duration::from_millis(250), socket.peek(&mut first)).await;
        let is_tls = matches!(peeked, Ok(Ok(1)) if first[0] == 0x16);
        match tls {
            Some(config) if is_tls => {
                let mut stream = tokio_rustls::TlsAcceptor::from(config)
                    .accept(socket)
                    .await?;
                stream.write_all(&bytes).await?;
                stream.shutdown().await
            }
            _ => {
                let mut socket = socket;
                socket.write_all(&bytes).await
            }
        }
    };
    let _ = time::timeout(Duration::from_secs(2), answer).await;
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
