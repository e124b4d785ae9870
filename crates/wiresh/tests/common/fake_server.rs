//! [`FakeServer`]: a malicious wiresh server built on `wiresh_proto`, for
//! tests of what the client accepts. It answers `stat`, `list`, `mkdir` and
//! `get` from a [`FakeScript`]: names that escape the client's target
//! directory, or a size that the data it sends does not match. It answers
//! every `exec` with [`FAKE_OUTPUT`] and exit code 0, framed by pongs that
//! answer nothing, one before `started` and one after `exit`, as a real
//! server's pongs may fall (protocol 7.6).
//!
//! [`Hostile`] makes it worse: a name of its choosing in its `hello`, an
//! `error` frame of its choosing for every request, or a reset in the
//! middle of an upload.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use wiresh::client::{Endpoint, Security, Target};
use wiresh_proto::{
    ErrorCode, ExitStatus, FileEntry, FileKind, Frame, FrameCodec, Hello, Message, Secret,
    TransferReady, PREAMBLE_LEN, PROTOCOL_VERSION,
};

use super::disk::hex_blake3;
use super::{client_command, KIB, MIB};

/// What every `exec` prints on stdout.
pub const FAKE_OUTPUT: &[u8] = b"fake output\n";
/// The token the fake server accepts (any token does).
const FAKE_TOKEN: &str = "fake-token-0123456789abcdef0123456789abcdef";

/// What the fake server answers.
pub struct FakeScript {
    /// Paths `stat` calls directories.
    pub dirs: Vec<String>,
    /// The entries every `list` answers with.
    pub listing: Vec<FileEntry>,
    /// The content served for a path.
    pub content: fn(&str) -> Vec<u8>,
    /// The size announced in `stat` and `transfer_ready`, if it is to lie.
    pub announced_size: Option<u64>,
}

/// How the fake server misbehaves beyond its [`FakeScript`].
#[derive(Clone, Debug, Default)]
pub struct Hostile {
    /// Its name in `hello` (`fake/0.0.0` otherwise).
    pub name: Option<String>,
    /// Answers every request after `auth` (`exec`, `stat`, `list`,
    /// `mkdir`, `put`, `get`) with this `error` frame.
    pub refusal: Option<(ErrorCode, String)>,
    /// On `put`: offers a fresh upload, takes the go-ahead and the first
    /// `file_data`, then resets the connection, as a server killed in the
    /// middle of an upload does (its kernel answers with a reset).
    pub reset_during_put: bool,
}

/// A wiresh server that lies, with a `WIRESH_HOME` holding a token for it.
pub struct FakeServer {
    pub addr: SocketAddr,
    home: TempDir,
    /// Every frame header the clients sent after `auth`.
    requests: Arc<Mutex<Vec<Message>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeServer {
    pub async fn start(script: FakeScript) -> FakeServer {
        FakeServer::start_hostile(script, Hostile::default()).await
    }

    /// A fake server that also misbehaves as `hostile` says.
    pub async fn start_hostile(script: FakeScript, hostile: Hostile) -> FakeServer {
        let home = tempfile::tempdir().unwrap();
        let token = home.path().join("token");
        std::fs::write(&token, format!("{FAKE_TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let script = Arc::new((script, hostile));
        let accept = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            sessions.spawn(fake_session(stream, script.clone(), log.clone()));
                        }
                        Err(_) => return,
                    },
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
        });
        FakeServer {
            addr,
            home,
            requests,
            accept,
        }
    }

    pub fn cmd(&self, sub: &str, args: &[OsString]) -> tokio::process::Command {
        let mut cmd = client_command(sub, &self.addr.to_string(), self.home.path());
        // The fake server speaks the protocol in clear.
        cmd.arg("--plaintext");
        cmd.args(args);
        cmd
    }

    /// Where the library client reaches it (plaintext, its token).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            target: Target {
                host: self.addr.ip().to_string(),
                port: self.addr.port(),
            },
            token: Secret(FAKE_TOKEN.into()),
            security: Security::Plaintext,
            connect_timeout: wiresh::client::CONNECT_TIMEOUT,
            persist: None,
        }
    }

    /// The client home holding the token it accepts.
    pub fn home(&self) -> &std::path::Path {
        self.home.path()
    }

    pub fn requests(&self) -> Vec<Message> {
        self.requests.lock().unwrap().clone()
    }
}

async fn fake_session(
    mut stream: TcpStream,
    script: Arc<(FakeScript, Hostile)>,
    log: Arc<Mutex<Vec<Message>>>,
) {
    let (script, hostile) = (&script.0, &script.1);
    let _ = stream.set_nodelay(true);
    let mut preamble = [0u8; PREAMBLE_LEN];
    if stream.read_exact(&mut preamble).await.is_err() {
        return;
    }
    let mut conn = Framed::new(stream, FrameCodec::default());
    let hello = Hello {
        version: PROTOCOL_VERSION,
        server: hostile.name.clone().unwrap_or_else(|| "fake/0.0.0".into()),
        features: vec![],
        keepalive_secs: 0,
        max_body: MIB as u32,
        max_header: 64 * 1024,
        stdin_window: MIB as u32,
    };
    if conn.send(Frame::new(Message::Hello(hello))).await.is_err() {
        return;
    }
    match conn.next().await {
        Some(Ok(Frame {
            message: Message::Auth { .. },
            ..
        })) => {}
        _ => return,
    }
    if conn.send(Frame::new(Message::AuthOk)).await.is_err() {
        return;
    }
    let size_of = |path: &str| {
        script
            .announced_size
            .unwrap_or((script.content)(path).len() as u64)
    };
    while let Some(Ok(frame)) = conn.next().await {
        log.lock().unwrap().push(frame.message.clone());
        let answers: Vec<Frame> = match frame.message {
            Message::Ping => vec![Frame::with_body(Message::Pong, frame.body)],
            Message::Pong => vec![],
            _ if hostile.refusal.is_some() => {
                let (code, message) = hostile.refusal.clone().unwrap();
                vec![Frame::new(Message::error(code, message))]
            }
            Message::Put(_) if hostile.reset_during_put => {
                reset_after_first_data(conn, &log).await;
                return;
            }
            Message::Stat { path } => {
                let is_dir = script.dirs.iter().any(|d| d == path.trim_end_matches('/'));
                let entry = if is_dir {
                    fentry(&path, FileKind::Dir, 0)
                } else {
                    fentry(&path, FileKind::File, size_of(&path))
                };
                vec![Frame::new(Message::Entry(entry))]
            }
            Message::List { .. } => {
                let mut v: Vec<Frame> = script
                    .listing
                    .iter()
                    .map(|e| Frame::new(Message::Entry(e.clone())))
                    .collect();
                v.push(Frame::new(Message::ListEnd {
                    count: script.listing.len() as u64,
                }));
                v
            }
            Message::Mkdir { .. } => vec![Frame::new(Message::TransferOk { bytes: 0 })],
            Message::Exec(_) => vec![
                Frame::with_body(Message::Pong, &b"before started"[..]),
                Frame::new(Message::Started { pid: 4242 }),
                Frame::with_body(Message::Stdout, FAKE_OUTPUT),
                Frame::new(Message::Exit(ExitStatus {
                    code: Some(0),
                    signal: None,
                    duration_ms: 1,
                    timed_out: false,
                    shutdown: false,
                })),
                Frame::with_body(Message::Pong, &b"after exit"[..]),
            ],
            Message::Get { path, .. } => {
                let data = (script.content)(&path);
                let ready = TransferReady {
                    offset: 0,
                    prefix_blake3: None,
                    size: Some(size_of(&path)),
                    mode: Some(0o644),
                    mtime: Some(1_600_000_000),
                };
                if conn
                    .send(Frame::new(Message::TransferReady(ready)))
                    .await
                    .is_err()
                {
                    return;
                }
                // Wait for the go-ahead (answering pings on the way).
                loop {
                    match conn.next().await {
                        Some(Ok(f)) => {
                            log.lock().unwrap().push(f.message.clone());
                            match f.message {
                                Message::TransferStart { .. } => break,
                                Message::Ping => {
                                    let _ =
                                        conn.send(Frame::with_body(Message::Pong, f.body)).await;
                                }
                                _ => return,
                            }
                        }
                        _ => return,
                    }
                }
                let mut v: Vec<Frame> = data
                    .chunks(64 * KIB)
                    .map(|c| Frame::with_body(Message::FileData, Bytes::copy_from_slice(c)))
                    .collect();
                v.push(Frame::new(Message::FileEnd {
                    blake3: hex_blake3(&data),
                }));
                v
            }
            _ => vec![Frame::new(Message::error(
                ErrorCode::BadRequest,
                "the fake server does not do that",
            ))],
        };
        for f in answers {
            if conn.send(f).await.is_err() {
                return;
            }
        }
    }
}

/// Offers a fresh upload, waits for its go-ahead and first data, then
/// resets the connection.
async fn reset_after_first_data(
    mut conn: Framed<TcpStream, FrameCodec>,
    log: &Mutex<Vec<Message>>,
) {
    let ready = TransferReady {
        offset: 0,
        prefix_blake3: None,
        size: None,
        mode: None,
        mtime: None,
    };
    if conn
        .send(Frame::new(Message::TransferReady(ready)))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(frame)) = conn.next().await {
        log.lock().unwrap().push(frame.message.clone());
        if frame.message == Message::FileData {
            break;
        }
    }
    // Closing with data unread, and no lingering: the kernel sends a reset.
    let stream = conn.into_inner();
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

pub fn fentry(path: &str, kind: FileKind, size: u64) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind,
        size,
        mode: if kind == FileKind::Dir { 0o755 } else { 0o644 },
        mtime: 1_600_000_000,
    }
}
