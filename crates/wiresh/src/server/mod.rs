//! `wiresh serve`: accepts connections and runs commands for authenticated
//! clients.
//!
//! Structure (after mini-redis): [`run`] hands the listener to the shared
//! accept loop (`crate::listener`: connection limit, graceful stop); each
//! connection is its own task running a `session`, so a fault or a panic in
//! one connection never reaches another or the accept loop.

pub mod audit;
mod command;
mod files;
pub mod policy;
mod session;
mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time;
use tracing::info;
use wiresh_proto::{ErrorCode, Frame, Limits, Message, Secret};

/// Everything a server needs to know, fixed at start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The token clients must present.
    pub token: Secret,
    /// Frame size limits.
    pub limits: Limits,
    /// Most connections served at once; more are refused with an error.
    pub max_connections: usize,
    /// Most commands running at once over all connections; more are
    /// refused with `busy`.
    pub max_commands: usize,
    /// Time a client has to send the preamble and authenticate.
    pub handshake_timeout: Duration,
    /// An idle connection (no command running) is closed after this long.
    pub idle_timeout: Duration,
    /// A frame whose first byte has arrived must be complete this soon
    /// (against slow-drip peers).
    pub frame_timeout: Duration,
    /// While a command runs, the client must send a frame at least this often.
    pub keepalive: Duration,
    /// Most stdin bytes a client may have in flight (`hello.stdin_window`).
    pub stdin_window: usize,
    /// Upper bound on every command's run time (a request may ask for less).
    pub command_timeout: Option<Duration>,
    /// On shutdown, how long running commands may go on before being killed.
    pub shutdown_grace: Duration,
    /// Time between SIGTERM and SIGKILL when a command's group is killed.
    pub kill_grace: Duration,
    /// Canonical directory that file transfers are confined to; `None`
    /// turns file transfer off.
    pub files_root: Option<std::path::PathBuf>,
    /// The server's TLS identity. `None` serves plaintext only (for
    /// embedding and tests); the `wiresh serve` binary always sets it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With TLS on: also accept plaintext connections from loopback peers.
    pub allow_plaintext: bool,
    /// What may run (`--policy`).
    pub policy: policy::Policy,
    /// Where every command and transfer is recorded (`--audit-log`).
    pub audit: Option<Arc<audit::AuditLog>>,
}

impl ServerConfig {
    /// Defaults suited to an interactive server, with the given token.
    pub fn new(token: Secret) -> Self {
        ServerConfig {
            token,
            limits: Limits::default(),
            max_connections: 256,
            max_commands: 512,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15 * 60),
            frame_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(20),
            stdin_window: 1024 * 1024,
            command_timeout: None,
            shutdown_grace: Duration::from_secs(10),
            kill_grace: crate::process::DEFAULT_KILL_GRACE,
            files_root: None,
            tls: None,
            allow_plaintext: false,
            policy: policy::Policy::default(),
            audit: None,
        }
    }
}

/// Serves connections from `listener` until `shutdown` completes, then stops
/// accepting, lets running commands finish for the grace period, and returns
/// once every connection has ended.
pub async fn run(listener: TcpListener, config: ServerConfig, shutdown: impl Future) {
    let state = Arc::new(State {
        throttle: throttle::AuthThrottle::default(),
        commands: Arc::new(tokio::sync::Semaphore::new(config.max_commands)),
    });
    let config = Arc::new(config);
    let max = config.max_connections;
    let tls = config.tls.clone();
    // Telling refused peers why costs a little (a TLS handshake); a flood
    // of them gets at most this many answers at once, the rest are closed.
    let refusals = Arc::new(tokio::sync::Semaphore::new(64));
    info!(
        "running commands get {:?} to finish on shutdown",
        config.shutdown_grace
    );
    crate::listener::serve_connections(
        listener,
        "server",
        max,
        shutdown,
        move |socket, peer, shutdown| {
            let _ = socket.set_nodelay(true);
            session::serve(socket, peer, config.clone(), state.clone(), shutdown)
        },
        move |socket, _| refuse(socket, max, refusals.clone(), tls.clone()),
    )
    .await
}

/// What all connections share while the server runs.
#[derive(Debug)]
struct State {
    /// Recent authentication failures per address.
    throttle: throttle::AuthThrottle,
    /// Slots for running commands (`max_commands`).
    commands: Arc<tokio::sync::Semaphore>,
}

/// Tells a peer over the connection limit why it is turned away.
///
/// The error frame goes inside TLS when the peer opens with a TLS
/// handshake, so a TLS client can read it.
async fn refuse(
    socket: TcpStream,
    max: usize,
    refusals: Arc<tokio::sync::Semaphore>,
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
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process uses that port: pick another with --listen, or port 0 for any free one"
            }
            std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}
