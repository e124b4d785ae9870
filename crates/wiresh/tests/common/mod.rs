//! Shared harness for the integration tests of the modern server and client.
//!
//! The tests are filed by subject, one file per behaviour area (`exec.rs`,
//! `stdin.rs`, `wire.rs`, `transfer_resume.rs`, ...), each saying what it
//! covers in its `//!` doc. Each test starts what it talks to (mostly its
//! own `wiresh serve`) and talks to it over real loopback TCP.
//!
//! This file:
//!
//! - [`Server`] starts the real `wiresh serve` binary on `127.0.0.1:0` with a
//!   fresh `WIRESH_HOME`, waits for its `listening on ADDR` line (no sleeps),
//!   reads the token it created, collects its log (and wakes whoever waits
//!   for a line of it), and kills and reaps it on drop.
//! - [`RawConn`] speaks the protocol frame by frame with `wiresh_proto`'s
//!   codec, for tests about the wire itself: [`RawConn::start`],
//!   [`RawConn::expect_started`], [`RawConn::expect_pong`],
//!   [`RawConn::expect_error`], [`RawConn::finish`] and friends; [`exec`]
//!   and [`exec_with_stdin`] build the `exec` frames, [`assert_exited`] and
//!   [`assert_killed`] check how a command ended.
//! - [`run`] drives the library client ([`wiresh::client::Connection`]).
//! - [`Server::cli`] and [`cli_output`] run the `wiresh` client binary.
//! - `/proc` helpers: whether a pid is gone ([`assert_gone`]), a process
//!   group's members, RSS, whether a producer is blocked on a full pipe.
//!
//! Its modules, for the file-transfer tests:
//!
//! - [`files`]: [`files::Files`], a server with a files root and a local
//!   scratch directory, the `args!` macro, and checks on a transfer's exit;
//! - [`disk`]: test data, BLAKE3s, part-file names (and whether a
//!   transfer holds one), what a directory holds;
//! - [`file_requests`]: `put`, `get`, `stat` and refusals frame by frame;
//! - [`proxy`]: [`proxy::Proxy`], a frame-aware relay that records, cuts or
//!   corrupts a transfer;
//! - [`fake_server`]: [`fake_server::FakeServer`], a malicious server that
//!   lies to the client;
//! - [`keys`]: [`keys::KeyClient`], a client home with a key from the real
//!   `wiresh keygen`, and authorized_clients files.
//!
//! And for the terminal tests: [`tmux`], a real terminal (a tmux server of
//! its own per test) to type into and read the screen of.
//!
//! A test that needs what a machine may lack (tmux, root, a mount) skips
//! itself with a line on the terminal saying why: [`skip`].
//!
//! For the fan-out tests, [`fleet`]: [`fleet::Fleet`], many servers started
//! at once that share one token, and a client home that holds it.
//!
//! Every wait is bounded by [`BOUND`] (or a deadline the issue states), so a
//! bug fails a test instead of hanging it. Each test binary uses a subset of
//! all this, hence `allow(dead_code)`.

#![allow(dead_code)]

pub mod disk;
pub mod fake_server;
pub mod file_requests;
pub mod files;
pub mod fleet;
pub mod keys;
pub mod proxy;
pub mod skip;
pub mod tmux;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_util::codec::Framed;
use wiresh::client::{ClientError, Connection, Endpoint, Output, Pinning, Security, Target};
use wiresh::tcp_table::{self, TcpSocket};
use wiresh_proto::{
    DecodeError, ErrorCode, ExecRequest, ExitStatus, Frame, FrameCodec, Hello, Message, Preamble,
    Secret, PROTOCOL_VERSION,
};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;
pub const GIB: usize = 1024 * MIB;

/// Generous bound on anything a test waits for. It only turns a hang into a
/// failure; nothing relies on it passing.
pub const BOUND: Duration = Duration::from_secs(30);

/// The deadline for a command to be gone once its client has
/// disconnected (or it was cancelled, or the server was told to stop).
pub const GONE_WITHIN: Duration = Duration::from_secs(2);

/// Path of the `wiresh` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wiresh");

/// Sends `count` wrong tokens to `addr` at once, each on a connection of
/// its own, and waits for every answer (each comes after the server's
/// delay): enough of them lock the address out.
pub async fn wrong_tokens(addr: SocketAddr, count: usize) {
    let guesses: Vec<_> = (0..count)
        .map(|_| {
            tokio::spawn(async move {
                let (mut c, _) = RawConn::greeted(addr).await;
                c.send(Message::Auth {
                    token: Secret("wrong".into()),
                })
                .await;
                c.recv().await
            })
        })
        .collect();
    for guess in guesses {
        bounded("a wrong guess", guess).await.unwrap();
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than [`BOUND`].
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {BOUND:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `wiresh serve`, killed and reaped on drop.
pub struct Server {
    /// The lines the server printed on stdout up to its readiness line.
    pub banner: Vec<String>,
    child: Child,
    /// The address it listens on (from its readiness line).
    pub addr: SocketAddr,
    /// The token it created in its home directory.
    pub token: Secret,
    home: TempDir,
    log: Arc<Mutex<Vec<u8>>>,
    log_grew: watch::Receiver<usize>,
    exited: bool,
}

impl Server {
    /// Starts a server with default options.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts `wiresh serve --listen 127.0.0.1:0 ARGS...` with a fresh
    /// `WIRESH_HOME` and waits until it says it is listening.
    pub fn start_with(args: &[&str]) -> Server {
        // TLS for the client binary (its default); plaintext, allowed on
        // loopback, for raw-frame and library tests.
        Server::start_exactly(&[&["--allow-plaintext"], args].concat())
    }

    /// Starts `wiresh serve --listen 127.0.0.1:0 ARGS...` with nothing added.
    pub fn start_exactly(args: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), args, &[])
    }

    /// Starts a server (plaintext allowed, as [`Server::start_with`]) whose
    /// open-file limit, soft and hard, is `files`.
    pub fn start_with_open_files(files: u64, args: &[&str]) -> Server {
        let mut sh = std::process::Command::new("sh");
        sh.args([
            "-c",
            &format!("ulimit -n {files} && exec \"$0\" \"$@\""),
            BIN,
        ]);
        let args = [&["--allow-plaintext"], args].concat();
        Server::start_program(sh, tempfile::tempdir().unwrap(), &args, &[])
    }

    /// Starts a server (plaintext allowed, as [`Server::start_with`]) that
    /// inherits descriptor 7, open on `/etc/hostname` and not
    /// close-on-exec, as a shell's `7</etc/hostname` leaves it.
    pub fn start_with_an_inherited_descriptor(args: &[&str]) -> Server {
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", "exec 7</etc/hostname && exec \"$0\" \"$@\"", BIN]);
        let args = [&["--allow-plaintext"], args].concat();
        Server::start_program(sh, tempfile::tempdir().unwrap(), &args, &[])
    }

    /// Like [`Server::start_exactly`], in the given `WIRESH_HOME` (which
    /// may hold config files already) and with `env` added to its
    /// environment.
    pub fn start_in(home: TempDir, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        Server::start_program(std::process::Command::new(BIN), home, args, env)
    }

    /// Starts `program serve --listen 127.0.0.1:0 ARGS...`, where `program`
    /// runs the binary under test.
    fn start_program(
        mut program: std::process::Command,
        home: TempDir,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        let mut child = program
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("WIRESH_HOME", home.path())
            .env_remove("WIRESH_TOKEN")
            .env_remove("WIRESH_LOG")
            .env_remove("WIRESH_CONFIG")
            .env_remove("WIRESH_LISTEN")
            .env_remove("WIRESH_LOG_FORMAT")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the wiresh binary");

        // The log (stderr) is drained all the time, so the server never
        // blocks on a full pipe, and kept for tests that look at it.
        let log = Arc::new(Mutex::new(Vec::new()));
        let (grew_tx, log_grew) = watch::channel(0usize);
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let len = {
                            let mut log = sink.lock().unwrap();
                            log.extend_from_slice(&buf[..n]);
                            log.len()
                        };
                        let _ = grew_tx.send(len);
                    }
                }
            }
        });

        // stdout: the banner up to the readiness line, then drained to its end.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = std_mpsc::channel::<Vec<String>>();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            let mut banner = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if ready_tx.is_some() {
                    banner.push(line.clone());
                }
                if line.contains("listening on ") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(std::mem::take(&mut banner));
                    }
                }
            }
        });

        let (line, banner) = match ready_rx.recv_timeout(BOUND) {
            Ok(banner) => (banner.last().cloned().unwrap_or_default(), banner),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
                panic!(
                    "server did not report `listening on` ({e:?}); exit {status:?}; log:\n{log}"
                );
            }
        };
        let addr: SocketAddr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in the readiness line {line:?}"));
        assert!(
            addr.ip().is_loopback(),
            "tests must use loopback, got {addr}"
        );
        // The token file the server read: `--token-file`, else the one it
        // created in its home. The token is its text, trimmed.
        let token_file = args
            .windows(2)
            .find(|w| w[0] == "--token-file")
            .map_or_else(|| home.path().join("token"), |w| w[1].into());
        let token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("cannot read the token file {token_file:?}: {e}"));
        let token = Secret(token.trim().to_string());
        assert!(token.expose().len() >= 32, "token shorter than 128 bits");
        Server {
            child,
            addr,
            banner,
            token,
            home,
            log,
            log_grew,
            exited: false,
        }
    }

    /// The TLS fingerprint the server printed when it started.
    pub fn fingerprint(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.split("TLS fingerprint ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no fingerprint in the banner {:?}", self.banner))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `WIRESH_HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Where the library client should connect.
    /// The server as the library client reaches it: plaintext on loopback.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            target: self.target(),
            token: self.token.clone(),
            security: Security::Plaintext,
            connect_timeout: wiresh::client::CONNECT_TIMEOUT,
            persist: None,
        }
    }

    /// The server over TLS, its printed fingerprint pinned, with the
    /// client's `known_hosts` in `home`.
    pub fn tls_endpoint(&self, home: &Path) -> Endpoint {
        Endpoint {
            security: Security::Tls(Pinning {
                known_hosts: home.join("known_hosts"),
                fingerprint: Some(self.fingerprint()),
                client_key: None,
            }),
            ..self.endpoint()
        }
    }

    pub fn target(&self) -> Target {
        Target {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        self.wait_for_log_where(&format!("{needle:?}"), |log| log.contains(needle))
            .await
    }

    /// Waits until the log holds `needle` at least `count` times.
    pub async fn wait_for_log_count(&self, needle: &str, count: usize) {
        let what = format!("{needle:?} {count} times");
        self.wait_for_log_where(&what, |log| log.matches(needle).count() >= count)
            .await
    }

    /// Waits until a line of the log satisfies `pred`; `what` names it in
    /// the failure message.
    pub async fn wait_for_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        self.wait_for_log_where(what, |log| log.lines().any(&pred))
            .await
    }

    /// Waits, woken by every write to the log, until `pred` holds for it.
    async fn wait_for_log_where(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let mut grew = self.log_grew.clone();
        let found = timeout(BOUND, async {
            loop {
                if pred(&self.log()) {
                    return;
                }
                if grew.changed().await.is_err() {
                    // The server closed stderr: one last look.
                    assert!(pred(&self.log()), "server exited first");
                    return;
                }
            }
        })
        .await;
        if found.is_err() {
            panic!(
                "server never logged {what} within {BOUND:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "cannot signal the server");
    }

    /// Waits (bounded) for the server process to exit and reaps it.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
                self.exited = true;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {BOUND:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A library client connection, authenticated.
    pub async fn connect(&self) -> Connection {
        bounded("Connection::connect", self.try_connect())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the server: {e}"))
    }

    /// A library client connection attempt.
    pub async fn try_connect(&self) -> Result<Connection, ClientError> {
        Connection::connect(&self.endpoint()).await
    }

    /// A raw protocol connection that has been greeted and authenticated.
    pub async fn raw(&self) -> RawConn {
        RawConn::authenticated(self.addr, &self.token).await
    }

    /// Like [`Server::raw`], with the `hello` the server greeted it with.
    pub async fn raw_with_hello(&self) -> (RawConn, Hello) {
        RawConn::authenticated_with_hello(self.addr, &self.token).await
    }

    /// The client binary, ready to run `wiresh SUBCOMMAND -H ADDR ...` against
    /// this server with its `WIRESH_HOME`; stdin is empty unless the test
    /// changes it, stdout and stderr are captured.
    pub fn cli(&self, subcommand: &str) -> tokio::process::Command {
        client_command(subcommand, &self.addr.to_string(), self.home())
    }
}

/// `wiresh SUBCOMMAND -H HOST` with `WIRESH_HOME=home`, empty stdin and
/// captured stdout and stderr.
pub fn client_command(subcommand: &str, host: &str, home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg(subcommand).arg("-H").arg(host);
    isolated(&mut cmd, home);
    cmd
}

/// Runs `cmd` as a user of `home` would: `WIRESH_HOME=home`, no token or
/// host from the test's own environment, empty stdin, captured output, and
/// killed if the test gives up on it.
pub fn isolated<'a>(
    cmd: &'a mut tokio::process::Command,
    home: &Path,
) -> &'a mut tokio::process::Command {
    cmd.env("WIRESH_HOME", home)
        .env_remove("WIRESH_TOKEN")
        .env_remove("WIRESH_HOST")
        // Masters (`--persist`) only where a test starts them.
        .env_remove("WIRESH_PERSIST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
}

/// `bash -c script` as a user of `home` would run it (see [`isolated`]):
/// for a client command line inside a pipeline.
pub fn bash_script(script: &str, home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("bash");
    isolated(cmd.args(["-c", script]), home);
    cmd
}

/// A byte pattern that uses every byte value and does not repeat with any
/// short period, so a dropped, duplicated or reordered chunk shows.
pub fn binary_pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) ^ (i as u8)
        })
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited {
            // Commands still running (a test failed half-way) lead their own
            // process groups and would outlive a killed server: end them first.
            for pid in commands_of(self.pid()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished client process produced.
#[derive(Debug)]
pub struct CliOutput {
    /// Its exit code (`None` if a signal killed it).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CliOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs a client command to its end (bounded), feeding it `stdin` if given.
pub async fn cli_output(mut cmd: tokio::process::Command, stdin: Option<Vec<u8>>) -> CliOutput {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("cannot start the wiresh client");
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        tokio::spawn(async move {
            // The command may stop reading early; that is not our failure.
            let _ = pipe.write_all(&data).await;
            let _ = pipe.shutdown().await;
        })
    });
    let out = bounded("the wiresh client to exit", child.wait_with_output())
        .await
        .expect("waiting for the wiresh client");
    if let Some(f) = feeder {
        let _ = f.await;
    }
    CliOutput {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

// ---------------------------------------------------------------------------
// The library client
// ---------------------------------------------------------------------------

/// What one command run through the library client produced.
#[derive(Debug)]
pub struct Ran {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Every chunk in arrival order.
    pub chunks: Vec<Output>,
    pub result: Result<ExitStatus, ClientError>,
}

impl Ran {
    /// The exit status, failing the test on a client error.
    pub fn status(&self) -> &ExitStatus {
        match &self.result {
            Ok(s) => s,
            Err(e) => panic!("command failed on the client side: {e}"),
        }
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A cancel function for [`Connection::run`] that never cancels.
pub fn never() -> std::future::Pending<()> {
    std::future::pending()
}

/// Turns bytes into a stdin channel for [`Connection::run`], in chunks of
/// `chunk` bytes; the channel ends (stdin_end) after the last one.
pub fn stdin_from(data: Vec<u8>, chunk: usize) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let data = Bytes::from(data);
        let mut at = 0;
        while at < data.len() {
            let end = (at + chunk).min(data.len());
            if tx.send(data.slice(at..end)).await.is_err() {
                return;
            }
            at = end;
        }
    });
    rx
}

/// Runs `req` on `conn` with the library client, collecting its output.
pub async fn run(conn: &mut Connection, req: ExecRequest, stdin: Option<Vec<u8>>) -> Ran {
    let stdin = stdin.map(|d| stdin_from(d, 64 * 1024));
    let (tx, mut rx) = mpsc::channel::<Output>(16);
    let running = async move {
        let res = conn.run(req, stdin, &tx, never).await;
        drop(tx);
        res
    };
    let collect = async {
        let mut chunks = Vec::new();
        while let Some(c) = rx.recv().await {
            chunks.push(c);
        }
        chunks
    };
    let (result, chunks) = bounded("a library-client command", async {
        tokio::join!(running, collect)
    })
    .await;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for c in &chunks {
        match c {
            Output::Stdout(b) => stdout.extend_from_slice(b),
            Output::Stderr(b) => stderr.extend_from_slice(b),
        }
    }
    Ran {
        stdout,
        stderr,
        chunks,
        result,
    }
}

/// Shorthand: runs a shell command line on `conn`.
pub async fn sh(conn: &mut Connection, line: &str) -> Ran {
    run(conn, ExecRequest::shell(line), None).await
}

// ---------------------------------------------------------------------------
// The raw protocol client
// ---------------------------------------------------------------------------

/// A TCP connection speaking frames through `wiresh_proto`'s codec.
pub struct RawConn {
    pub framed: Framed<TcpStream, FrameCodec>,
}

/// What one command run over a [`RawConn`] produced.
#[derive(Debug)]
pub struct RawRun {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
    /// Bodies of `pong` frames that arrived while the command ran.
    pub pongs: Vec<Bytes>,
    /// Stdin bytes the server acknowledged (`stdin_ack`).
    pub acked: u64,
}

/// Opens a plain TCP connection (bounded).
pub async fn tcp(addr: SocketAddr) -> TcpStream {
    let s = bounded("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_nodelay(true).unwrap();
    s
}

impl RawConn {
    /// Wraps a TCP stream that is positioned at a frame boundary.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            framed: Framed::new(stream, FrameCodec::default()),
        }
    }

    /// Connects and sends the preamble (nothing read yet).
    pub async fn preambled(addr: SocketAddr) -> RawConn {
        let mut s = tcp(addr).await;
        s.write_all(&Preamble::new(PROTOCOL_VERSION).encode())
            .await
            .unwrap();
        RawConn::from_stream(s)
    }

    /// Connects, sends the preamble and reads `hello`.
    pub async fn greeted(addr: SocketAddr) -> (RawConn, Hello) {
        let mut c = RawConn::preambled(addr).await;
        match c.recv().await.message {
            Message::Hello(h) => (c, h),
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Connects, is greeted and authenticates with `token`.
    pub async fn authenticated(addr: SocketAddr, token: &Secret) -> RawConn {
        RawConn::authenticated_with_hello(addr, token).await.0
    }

    /// Like [`RawConn::authenticated`], keeping the server's `hello`.
    pub async fn authenticated_with_hello(addr: SocketAddr, token: &Secret) -> (RawConn, Hello) {
        let (mut c, hello) = RawConn::greeted(addr).await;
        assert_eq!(hello.version, PROTOCOL_VERSION);
        c.send(Message::Auth {
            token: token.clone(),
        })
        .await;
        match c.recv().await.message {
            Message::AuthOk => (c, hello),
            other => panic!("expected auth_ok, got {other:?}"),
        }
    }

    /// Sends one frame (bounded). Returns false if the connection broke.
    pub async fn try_send_frame(&mut self, frame: Frame) -> bool {
        bounded("sending a frame", self.framed.send(frame))
            .await
            .is_ok()
    }

    /// Sends one frame, failing the test if the connection broke.
    pub async fn send_frame(&mut self, frame: Frame) {
        bounded("sending a frame", self.framed.send(frame))
            .await
            .expect("sending a frame");
    }

    /// Sends a frame without a body.
    pub async fn send(&mut self, message: Message) {
        self.send_frame(Frame::new(message)).await
    }

    /// Writes raw bytes (not necessarily a frame).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let s = self.framed.get_mut();
        bounded("writing raw bytes", s.write_all(bytes))
            .await
            .expect("writing raw bytes");
    }

    /// The next frame, `None` at end of stream, or the decode error.
    pub async fn next(&mut self) -> Option<Result<Frame, DecodeError>> {
        bounded("the next frame from the server", self.framed.next()).await
    }

    /// The next frame; the connection must not end or break first.
    pub async fn recv(&mut self) -> Frame {
        match self.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => panic!("cannot decode the server's frame: {e}"),
            None => panic!("the server closed the connection"),
        }
    }

    /// The next frame must be an `error` with `code`; returns its message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv().await.message {
            Message::Error { code: got, message } => {
                assert_eq!(got, code, "wrong error code; message: {message}");
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Sends `exec` (see [`exec`] and [`exec_with_stdin`]) and reads its
    /// `started`; returns the command's pid.
    pub async fn start(&mut self, exec: Message) -> u32 {
        self.send(exec).await;
        self.expect_started().await
    }

    /// The next frame must be `started` (the `exec` has been sent); returns
    /// the command's pid.
    pub async fn expect_started(&mut self) -> u32 {
        match self.recv().await.message {
            Message::Started { pid } => pid,
            other => panic!("expected started, got {other:?}"),
        }
    }

    /// The next frame must be a `pong`; returns its body.
    pub async fn expect_pong(&mut self) -> Bytes {
        let f = self.recv().await;
        match f.message {
            Message::Pong => f.body,
            other => panic!("expected pong, got {other:?}"),
        }
    }

    /// Reads a running command's `stdout` frames (skipping `stderr`) until
    /// `lines` complete lines have arrived, and returns them.
    pub async fn read_lines(&mut self, lines: usize) -> Vec<String> {
        let mut text = Vec::new();
        while text.iter().filter(|&&b| b == b'\n').count() < lines {
            let f = self.recv().await;
            match f.message {
                Message::Stdout => text.extend_from_slice(&f.body),
                Message::Stderr => {}
                other => panic!("expected output, got {other:?}"),
            }
        }
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The server must close the connection (end of stream, or a reset)
    /// without sending another frame.
    pub async fn expect_closed(&mut self) {
        match self.next().await {
            None => {}
            Some(Err(DecodeError::Io(_))) => {} // reset: closed too
            Some(Err(e)) => panic!("expected the connection to close, got a decode error: {e}"),
            Some(Ok(f)) => panic!("expected the connection to close, got {f:?}"),
        }
    }

    /// Every frame until the server closes the connection.
    pub async fn read_until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Some(Ok(f)) => frames.push(f),
                None | Some(Err(DecodeError::Io(_))) => return frames,
                Some(Err(e)) => panic!("cannot decode the server's frame: {e}; after {frames:?}"),
            }
        }
    }

    /// Reads a command's frames up to and including `exit` (the `exec` has
    /// been sent already).
    pub async fn finish(&mut self) -> RawRun {
        let pid = self.expect_started().await;
        self.finish_started(pid).await
    }

    /// Like [`RawConn::finish`] after `started` has been read.
    pub async fn finish_started(&mut self, pid: u32) -> RawRun {
        let (mut stdout, mut stderr, mut pongs) = (Vec::new(), Vec::new(), Vec::new());
        let mut acked = 0;
        loop {
            let f = self.recv().await;
            match f.message {
                Message::StdinAck { bytes } => acked += bytes,
                Message::Stdout => stdout.extend_from_slice(&f.body),
                Message::Stderr => stderr.extend_from_slice(&f.body),
                Message::Pong => pongs.push(f.body),
                Message::Exit(status) => {
                    return RawRun {
                        pid,
                        stdout,
                        stderr,
                        status,
                        pongs,
                        acked,
                    }
                }
                other => panic!("unexpected frame while a command runs: {other:?}"),
            }
        }
    }

    /// Sends `exec` for `req` and reads the command to its end.
    pub async fn exec(&mut self, req: ExecRequest) -> RawRun {
        self.send(Message::Exec(req)).await;
        self.finish().await
    }
}

/// An `exec` of a shell command line, without stdin.
pub fn exec(line: &str) -> Message {
    Message::Exec(ExecRequest::shell(line))
}

/// An `exec` of a shell command line whose stdin the client will send.
pub fn exec_with_stdin(line: &str) -> Message {
    Message::Exec(ExecRequest {
        stdin: true,
        ..ExecRequest::shell(line)
    })
}

/// The command exited by itself with `code`.
#[track_caller]
pub fn assert_exited(status: &ExitStatus, code: i32) {
    assert_eq!(status.code, Some(code), "{status:?}");
    assert_eq!(status.signal, None, "{status:?}");
    assert!(!status.timed_out, "{status:?}");
}

/// The command was killed by `signal`, which a shell reports as 128+signal.
#[track_caller]
pub fn assert_killed(status: &ExitStatus, signal: i32) {
    assert_eq!(status.code, None, "{status:?}");
    assert_eq!(status.signal, Some(signal), "{status:?}");
    assert_eq!(status.shell_code(), 128 + signal);
}

/// The bytes of one encoded frame.
pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
    wiresh_proto::codec::encode_frame(frame)
        .expect("encoding a frame")
        .to_vec()
}

/// A frame with an arbitrary (possibly invalid) header text.
pub fn raw_frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(body);
    v
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// Fields of `/proc/PID/stat` after the command name: (state, ppid, pgrp).
pub fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// Live processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(
            |&pid| matches!(proc_stat(pid), Some((s, _, g)) if g == pgid && s != 'Z' && s != 'X'),
        )
        .collect()
}

/// Live children of `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(
            |&pid| matches!(proc_stat(pid), Some((s, p, _)) if p == ppid && s != 'Z' && s != 'X'),
        )
        .collect()
}

/// The processes a server runs commands as: its children, and its spawn
/// helper's in its place (the commands' parent where there is one).
pub fn commands_of(server: u32) -> Vec<u32> {
    children_of(server)
        .into_iter()
        .flat_map(|pid| match is_spawn_helper(pid) {
            true => children_of(pid),
            false => vec![pid],
        })
        .collect()
}

/// The server's spawn helper, if it has one now.
pub fn spawn_helper_of(server: u32) -> Option<u32> {
    children_of(server)
        .into_iter()
        .find(|&pid| is_spawn_helper(pid))
}

/// Whether `pid` is a spawn helper (`wiresh spawn-helper` in ps).
fn is_spawn_helper(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"wiresh\0spawn-helper\0")
}

fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Polls until none of `pids` is alive and no process is left in group
/// `pgid`, or `deadline` passes; returns what is still alive then.
pub async fn wait_gone(pids: &[u32], pgid: Option<u32>, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let mut left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if let Some(g) = pgid {
            for p in group_members(g) {
                if !left.contains(&p) {
                    left.push(p);
                }
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pid a remote shell wrote to `file` (`echo $$ > file`); fails the
/// test, with the client's `stderr`, when there is none.
pub fn pid_from_file(file: &Path, stderr: &str) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}; stderr: {stderr}", file.display()))
}

/// Waits (up to `within`) until none of `pids` is alive and group `pgid` is
/// empty, then fails the test with `what` if anything is left, after killing
/// it so it does not outlive the test.
pub async fn assert_gone(pids: &[u32], pgid: Option<u32>, within: Duration, what: &str) {
    let left = wait_gone(pids, pgid, within).await;
    kill_all(&left);
    assert!(
        left.is_empty(),
        "{what}: {left:?} still alive after waiting {within:?}"
    );
}

/// Polls the producer's written-byte count until it stops growing: the
/// producer is blocked on a full pipe. `None` if the producer finished.
pub async fn wait_until_stalled(pid: u32) -> Option<u64> {
    let deadline = Instant::now() + BOUND;
    let mut last = written_bytes(pid)?;
    let mut unchanged = 0;
    while unchanged < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if !alive(pid) {
            return None;
        }
        let now = written_bytes(pid)?;
        if now == last {
            unchanged += 1;
        } else {
            unchanged = 0;
            last = now;
        }
        assert!(
            Instant::now() < deadline,
            "the producer kept writing for {BOUND:?} while the client read nothing ({last} bytes)"
        );
    }
    Some(last)
}

/// Kills whatever is left (cleanup after a failed assertion).
pub fn kill_all(pids: &[u32]) {
    for &p in pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// A `/proc/PID/status` field in KiB, e.g. `VmRSS` or `VmHWM`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Bytes a process has written so far (`wchar` of `/proc/PID/io`).
pub fn written_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the peer of `stream` has read every byte sent on it: this
/// end's send queue and the peer's receive queue are both empty. The
/// signal that a server has taken in what a test sent while the test
/// itself reads nothing.
pub async fn wait_until_peer_read_all(stream: &TcpStream) {
    let (here, there) = (
        stream.local_addr().expect("a local address"),
        stream.peer_addr().expect("a peer address"),
    );
    let queue = |own, remote, of: fn(&TcpSocket) -> u64| {
        tcp_table::sockets()
            .find(|s| s.connects(own, remote))
            .map(|s| of(&s))
    };
    let deadline = Instant::now() + BOUND;
    loop {
        let sent = queue(here, there, |s| s.send_queue);
        let unread = queue(there, here, |s| s.receive_queue);
        if sent == Some(0) && unread == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the peer left bytes unread for {BOUND:?} (send queue {sent:?}, its receive queue {unread:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Samples a process's VmRSS on a thread of its own and keeps the peak.
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kib.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS") {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssSampler {
            peak_kib,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest VmRSS seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
