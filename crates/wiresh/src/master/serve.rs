//! The master process: its lock and socket, the clients it accepts (this
//! user's only), the sessions it relays, and when it stops (idle, asked
//! to, refused by its server, its server's pin changed).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::time::{self, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wiresh_proto::{ErrorCode, Secret};

use super::handshake::{self, Request};
use super::identity::{masters_dir, Identity, Places};
use super::pool::{OpenError, Opener, Pool, Shortage};
use super::relay::{relay, Ending};
use super::{DEFAULT_RECHECK, PIN_CHECK_EVERY, POOL_WAIT};
use crate::addr::Target;
use crate::auth::token_matches;
use crate::client::{Endpoint, Pinning, Security, CONNECT_TIMEOUT};
use crate::keys::ClientKey;

/// Everything a master needs, as `wiresh master` hands it to the process
/// that runs in the background (on a pipe: it holds the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The server's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The token (empty when a key alone logs in).
    pub token: Secret,
    /// No TLS.
    pub plaintext: bool,
    /// The pinned fingerprint the master connects with (TLS).
    pub pin: Option<String>,
    /// Where pins are kept, and the fingerprint the user gave, if any:
    /// what the pin is looked up from, to see it change.
    pub known_hosts: Option<PathBuf>,
    /// The fingerprint given in advance (`--fingerprint`, client.toml).
    pub given_fingerprint: Option<String>,
    /// The client key file, if one is presented.
    pub key: Option<PathBuf>,
    /// The wiresh home (the masters directory is in it).
    pub home: PathBuf,
    /// How long to stay without clients.
    pub idle: Duration,
    /// The most connections to hold.
    pub pool: usize,
    /// How often to authenticate anew, to learn that the key or token
    /// was revoked ([`DEFAULT_RECHECK`]).
    pub recheck: Duration,
}

impl Spec {
    /// The spec of a master for `endpoint`, pinned to what it pins now;
    /// an error over TLS before any pin.
    pub fn new(
        endpoint: &Endpoint,
        home: &Path,
        idle: Duration,
        pool: usize,
    ) -> Result<Spec, String> {
        let mut spec = Spec {
            host: endpoint.target.host.clone(),
            port: endpoint.target.port,
            token: endpoint.token.clone(),
            plaintext: true,
            pin: None,
            known_hosts: None,
            given_fingerprint: None,
            key: None,
            home: home.to_path_buf(),
            idle,
            pool,
            recheck: DEFAULT_RECHECK,
        };
        if let Security::Tls(pinning) = &endpoint.security {
            let target = endpoint.target.to_string();
            let pin = pinning.pin_for(&target).map_err(|e| e.to_string())?;
            let Some(pin) = pin else {
                return Err(format!(
                    "no fingerprint is pinned for {target} yet: connect to it once directly \
                     (it is pinned on first use), or give it with --fingerprint"
                ));
            };
            spec.plaintext = false;
            spec.pin = Some(pin);
            spec.known_hosts = Some(pinning.known_hosts.clone());
            spec.given_fingerprint = pinning.fingerprint.clone();
            spec.key = pinning.client_key.as_ref().map(|k| k.path.clone());
        }
        Ok(spec)
    }

    /// The endpoint the master connects to, pinned to [`Spec::pin`].
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let security = match self.plaintext {
            true => Security::Plaintext,
            false => Security::Tls(Pinning {
                known_hosts: self.known_hosts.clone().unwrap_or_default(),
                fingerprint: self.pin.clone(),
                client_key: match &self.key {
                    Some(path) => Some(Arc::new(ClientKey::load(path).map_err(|e| e.to_string())?)),
                    None => None,
                },
            }),
        };
        Ok(Endpoint {
            target: self.target(),
            token: self.token.clone(),
            security,
            connect_timeout: CONNECT_TIMEOUT,
            persist: None,
        })
    }

    /// The server.
    pub fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// The pin as the user's settings say it now.
    fn pin_now(&self, endpoint: &Endpoint) -> Result<Option<String>, String> {
        let Security::Tls(pinning) = &endpoint.security else {
            return Ok(None);
        };
        let current = Pinning {
            fingerprint: self.given_fingerprint.clone(),
            ..pinning.clone()
        };
        current
            .pin_for(&self.target().to_string())
            .map_err(|e| e.to_string())
    }

    /// The identity the master serves and where its files are.
    pub fn places(&self) -> Result<(Identity, Places), String> {
        let endpoint = self.endpoint()?;
        let identity = Identity::of(&endpoint)
            .map_err(|e| e.to_string())?
            .ok_or("no fingerprint pinned")?;
        let places = identity.places(&self.home);
        Ok((identity, places))
    }
}

/// What a master says about itself (`wiresh master --list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Its name (its files' names).
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// The server it holds connections to.
    pub target: String,
    /// How long it stays without clients, in seconds.
    pub idle_secs: u64,
    /// Connections it holds now, and the most it may.
    pub connections: usize,
    /// The bound of its pool.
    pub pool: usize,
    /// Clients it relays for now (each has a connection).
    pub clients: usize,
    /// Sessions relayed since it started.
    pub sessions: usize,
    /// When it started, Unix seconds.
    pub started: u64,
}

/// Why a master did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another master of the same identity runs already.
    #[error("a master for {0} is running already")]
    Running(String),
    /// Anything else, said in full.
    #[error("{0}")]
    Failed(String),
}

/// A running master, as its sessions see it.
struct Master {
    spec: Spec,
    identity: Identity,
    places: Places,
    endpoint: Endpoint,
    pool: Pool,
    /// Cancelled when it stops taking clients.
    stopping: CancellationToken,
    /// Why it stopped, once it did.
    stop_reason: Mutex<Option<String>>,
    /// Clients being served.
    clients: AtomicUsize,
    /// Sessions relayed so far.
    sessions: AtomicUsize,
    /// When the last client left (or the master started).
    last_left: Mutex<Instant>,
    /// Woken when a client leaves.
    left: Notify,
    started: u64,
}

impl Master {
    fn stop(&self, why: String) {
        let mut reason = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            info!("stopping: {why}");
            *reason = Some(why);
        }
        self.stopping.cancel();
    }

    fn status(&self) -> Status {
        let (connections, lent) = self.pool.usage();
        Status {
            name: self.places.name.clone(),
            pid: std::process::id(),
            target: self.spec.target().to_string(),
            idle_secs: self.spec.idle.as_secs(),
            connections,
            pool: self.pool.bound(),
            clients: lent,
            sessions: self.sessions.load(Ordering::Acquire),
            started: self.started,
        }
    }
}

/// Runs a master for `spec` until it stops. `ready` is told once clients
/// can connect (with its files), or why it could not start.
pub async fn run(
    spec: Spec,
    ready: impl FnOnce(Result<&Places, &StartError>),
) -> Result<(), StartError> {
    let started = match prepare(spec).await {
        Ok(started) => started,
        Err(e) => {
            ready(Err(&e));
            return Err(e);
        }
    };
    let (master, listener, _lock) = started;
    ready(Ok(&master.places));
    info!(
        "master {} for {} serving at {} (pool of {}, idle time {:?})",
        master.places.name,
        master.spec.target(),
        master.places.socket.display(),
        master.pool.bound(),
        master.spec.idle
    );
    tokio::spawn(recheck_loop(master.clone()));
    accept_loop(&master, &listener).await;
    // New clients connect directly from now on.
    let _ = std::fs::remove_file(&master.places.socket);
    drop(listener);
    while master.clients.load(Ordering::Acquire) > 0 {
        master.left.notified().await;
    }
    let why = master
        .stop_reason
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    info!("exited: {}", why.unwrap_or_default());
    Ok(())
}

/// Takes the lock, opens the first connection, binds the socket.
async fn prepare(spec: Spec) -> Result<(Arc<Master>, UnixListener, OwnedFd), StartError> {
    let failed = StartError::Failed;
    let endpoint = spec.endpoint().map_err(failed)?;
    let (identity, places) = spec.places().map_err(failed)?;
    places.check_socket_path().map_err(failed)?;
    masters_dir(&spec.home, true).map_err(failed)?;
    let lock = take_lock(&places.lock)
        .map_err(|e| failed(format!("cannot lock {}: {e}", places.lock.display())))?
        .ok_or_else(|| StartError::Running(spec.target().to_string()))?;
    let pool = Pool::new(
        Opener {
            endpoint: endpoint.clone(),
        },
        spec.pool,
    );
    let first = pool.open_first().await.map_err(|e| failed(e.to_string()))?;
    info!("connection {} opened from {}", first.serial, first.local());
    pool.give_back(first, false);
    // The lock is ours: a socket there is a dead master's.
    let _ = std::fs::remove_file(&places.socket);
    let listener = UnixListener::bind(&places.socket)
        .map_err(|e| failed(format!("cannot listen on {}: {e}", places.socket.display())))?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let master = Arc::new(Master {
        spec,
        identity,
        places,
        endpoint,
        pool,
        stopping: CancellationToken::new(),
        stop_reason: Mutex::new(None),
        clients: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
        last_left: Mutex::new(Instant::now()),
        left: Notify::new(),
        started,
    });
    Ok((master, listener, lock))
}

/// The lock file, locked; `None` when another process holds it.
pub(super) fn take_lock(path: &Path) -> std::io::Result<Option<OwnedFd>> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Accepts clients until the master stops: asked to, idle for its time,
/// refused by the server, or its server's pin changed.
async fn accept_loop(master: &Arc<Master>, listener: &UnixListener) {
    let idle = master.spec.idle;
    let mut pin_check = time::interval_at(Instant::now() + PIN_CHECK_EVERY, PIN_CHECK_EVERY);
    loop {
        let busy = master.clients.load(Ordering::Acquire) > 0;
        let idle_until = *master.last_left.lock().unwrap_or_else(|e| e.into_inner()) + idle;
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    master.clients.fetch_add(1, Ordering::AcqRel);
                    let master = master.clone();
                    tokio::spawn(async move {
                        serve_client(stream, &master).await;
                        *master.last_left.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                        master.clients.fetch_sub(1, Ordering::AcqRel);
                        master.left.notify_one();
                    });
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = master.left.notified() => {}
            () = time::sleep_until(idle_until), if !busy => {
                master.stop(format!("no client for {idle:?}"));
            }
            _ = pin_check.tick() => check_pin(master),
            () = master.stopping.cancelled() => return,
        }
    }
}

/// Authenticates anew every [`Spec::recheck`] while the master runs: the
/// connections it holds were let in once and stay in, so this is how a
/// master learns that the server has revoked its key or token (reloaded
/// without it): it then stops, and its clients connect directly and hear
/// the server's refusal themselves.
async fn recheck_loop(master: Arc<Master>) {
    loop {
        tokio::select! {
            () = time::sleep(master.spec.recheck) => {}
            () = master.stopping.cancelled() => return,
        }
        match master.pool.recheck().await {
            Ok(()) => {}
            Err(OpenError::Refused(why)) => {
                return master.stop(format!("the server refused the master: {why}"));
            }
            Err(OpenError::Failed(why)) => warn!("cannot authenticate anew: {why}"),
        }
    }
}

/// Stops the master when the pin its server is known by has changed.
fn check_pin(master: &Master) {
    match master.spec.pin_now(&master.endpoint) {
        Ok(now) if now == master.spec.pin => {}
        Ok(now) => master.stop(format!(
            "the fingerprint pinned for {} changed (from {} to {}); clients with the new pin do \
             not use this master",
            master.spec.target(),
            master.spec.pin.as_deref().unwrap_or("none"),
            now.as_deref().unwrap_or("none")
        )),
        Err(e) => warn!("cannot check the pinned fingerprint: {e}"),
    }
}

/// Serves one client: its credentials checked, then its request.
async fn serve_client(mut stream: UnixStream, master: &Master) {
    let me = rustix::process::geteuid();
    match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(peer) if peer.uid == me => {}
        Ok(peer) => {
            warn!(
                "refused a client of uid {} (pid {}): a master serves its own user only",
                peer.uid.as_raw(),
                peer.pid.as_raw_nonzero()
            );
            return;
        }
        Err(e) => {
            warn!("refused a client whose credentials cannot be read: {e}");
            return;
        }
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let (request, buf) = match handshake::read_request(&mut stream, deadline).await {
        Ok(read) => read,
        Err(why) => return info!("a client went away: {why}"),
    };
    match request {
        Request::Status => {
            let mut line = serde_json::to_vec(&master.status()).unwrap_or_default();
            line.push(b'\n');
            let _ = stream.write_all(&line).await;
        }
        Request::Stop => {
            master.stop("asked to stop".into());
            let _ = stream.write_all(b"stopping\n").await;
        }
        Request::Session(id) => session(stream, buf, &id, master, deadline).await,
    }
}

/// Relays one client's session over a connection of the pool.
async fn session(
    mut stream: UnixStream,
    mut buf: bytes::BytesMut,
    id: &str,
    master: &Master,
    deadline: Instant,
) {
    let token = match handshake::read_opening(&mut stream, &mut buf, deadline).await {
        Ok(token) => token,
        Err(why) => return info!("a client went away: {why}"),
    };
    let refuse = |code, why: &str| handshake::refusal(code, why);
    let refusal = if id != master.identity.hex() || !token_matches(&master.endpoint.token, &token) {
        Some(refuse(
            ErrorCode::AuthFailed,
            "this master serves other settings (server, credentials or pinned fingerprint)",
        ))
    } else if master.stopping.is_cancelled() {
        Some(refuse(ErrorCode::ShuttingDown, "the master is stopping"))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        let _ = stream.write_all(&refusal).await;
        return;
    }
    let mut up = match master.pool.take(Instant::now() + POOL_WAIT).await {
        Ok(up) => up,
        Err(shortage) => return turn_away(stream, shortage, master).await,
    };
    let mut answer = up.hello.clone();
    answer.extend_from_slice(&handshake::auth_ok());
    let n = master.sessions.fetch_add(1, Ordering::AcqRel) + 1;
    match relay(&mut stream, &buf, &answer, &mut up).await {
        Ending::Idle => master.pool.give_back(up, true),
        Ending::Busy => {
            info!(
                "session {n}: the client left while a request ran; connection {} closed",
                up.serial
            );
            master.pool.discard(up);
        }
        Ending::Gone(why) => {
            info!("session {n}: {why}; connection {} closed", up.serial);
            master.pool.discard(up);
        }
    }
}

/// Tells a client that no connection can be had, and why; a refusal by
/// the server stops the master.
async fn turn_away(mut stream: UnixStream, shortage: Shortage, master: &Master) {
    let (code, why) = match shortage {
        Shortage::Busy => {
            let bound = master.pool.bound();
            info!("a client waited {POOL_WAIT:?} for one of the {bound} connections; turned away");
            (
                ErrorCode::TooManyConnections,
                format!("all {bound} connections of the master are in use"),
            )
        }
        Shortage::Open(OpenError::Refused(why)) => {
            let why = format!("the server refused the master: {why}");
            master.stop(why.clone());
            (ErrorCode::AuthFailed, why)
        }
        Shortage::Open(OpenError::Failed(why)) => (
            ErrorCode::Internal,
            format!("the master cannot connect: {why}"),
        ),
    };
    let _ = stream.write_all(&handshake::refusal(code, &why)).await;
}
