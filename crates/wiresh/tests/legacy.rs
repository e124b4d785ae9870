//! The legacy protocol, both ways, over real loopback TCP: the original
//! `client.py` against wiresh's legacy server, and wiresh's legacy client
//! against the original `server.py` (both run unmodified by python3 from
//! `shared/legacy`, a sibling of the repository root).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use wiresh::legacy::{server, LegacyClient, LegacyServerConfig};

mod common;

/// Generous bound on anything a test waits for, so a bug fails the test
/// instead of hanging CI. Never used to let something happen.
const BOUND: Duration = Duration::from_secs(120);

/// 10 MiB of known text.
const BIG: &str = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 10485760";

/// The small cases of the issue, run one after another on one connection.
const CASES: &[&str] = &[
    "echo hello",
    "true",                                                    // empty output: total_size 0
    "echo oops >&2",                                           // stderr only
    "echo out; echo err >&2; printf 'tail'",                   // both: stdout first, then stderr
    "echo 'héllo wörld ✓ 日本語 🦀'; printf 'ünïcödé\\n' >&2", // non-ASCII UTF-8
    "printf 'no trailing newline'",
    "seq 1 20000",
];

/// Where `client.py` and `server.py` are: `shared/legacy` next to the
/// repository root, or under `$WIRESH_SHARED_DIR`. Missing scripts fail the
/// test: the interoperability they prove is the point.
fn legacy_dir() -> PathBuf {
    let sibling = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/legacy");
    if sibling.join("client.py").is_file() {
        return sibling;
    }
    match std::env::var_os("WIRESH_SHARED_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            for candidate in [dir.join("legacy"), dir.clone()] {
                if candidate.join("client.py").is_file() {
                    return candidate;
                }
            }
            panic!(
                "WIRESH_SHARED_DIR={} holds no legacy/client.py; point it at the shared/ directory",
                dir.display()
            );
        }
        None => panic!(
            "cannot find the legacy scripts: {} does not exist (shared/ must be a sibling of the \
             repository root) and WIRESH_SHARED_DIR is not set; set it to the shared/ directory",
            sibling.display()
        ),
    }
}

fn python3() -> Command {
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONIOENCODING", "utf-8").kill_on_drop(true);
    cmd
}

/// What `command` prints when run locally: stdout, then stderr, as the
/// legacy protocol joins them.
async fn local(command: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("sh runs");
    [out.stdout, out.stderr].concat()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// wiresh's legacy server, in this process, on an ephemeral loopback port.
struct WireshServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl WireshServer {
    async fn start(config: LegacyServerConfig) -> WireshServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run(listener, config, stop.clone()));
        WireshServer { addr, stop, task }
    }

    /// Shuts the server down and checks that it returns.
    async fn stop(self) {
        self.stop.cancel();
        timeout(BOUND, self.task)
            .await
            .expect("legacy server did not stop after shutdown")
            .expect("legacy server task failed");
    }
}

/// Runs the original `client.py` against `addr`, feeding it `commands`
/// one a line, and returns what it printed.
async fn client_py(addr: SocketAddr, commands: &[&str]) -> Vec<u8> {
    let script = legacy_dir().join("client.py");
    let mut child = python3()
        .arg(&script)
        .args([
            "--host",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let mut input = commands.join("\n");
    input.push('\n');
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin); // end of input ends the session
    let out = timeout(BOUND, child.wait_with_output())
        .await
        .expect("client.py did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "client.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One answer as `client.py` printed it.
#[derive(Debug)]
struct Printed {
    total_size: u64,
    md5: String,
    filename: String,
    payload: Vec<u8>,
}

/// Splits `client.py`'s output into `n` answers: each is the header dict it
/// prints (`{'total_size': N, ...}` and a newline), then the N bytes of
/// output (valid UTF-8 in these tests, so printed unchanged).
fn parse_client_py(mut out: &[u8], n: usize) -> Vec<Printed> {
    let field = |dict: &str, key: &str| -> String {
        let start = dict
            .find(&format!("'{key}': "))
            .unwrap_or_else(|| panic!("no {key} in {dict}"))
            + key.len()
            + 4;
        let rest = &dict[start..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim_matches('\'').to_string()
    };
    let mut answers = Vec::new();
    for i in 0..n {
        assert!(
            out.starts_with(b"{'total_size': "),
            "answer {i}: expected a header dict, got {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
        let end = out
            .windows(2)
            .position(|w| w == b"}\n")
            .expect("end of the dict");
        let dict = std::str::from_utf8(&out[..=end]).unwrap().to_string();
        out = &out[end + 2..];
        let total_size: u64 = field(&dict, "total_size").parse().unwrap();
        let len = usize::try_from(total_size).unwrap();
        assert!(
            out.len() >= len,
            "answer {i}: {dict} but only {} bytes follow",
            out.len()
        );
        answers.push(Printed {
            total_size,
            md5: field(&dict, "md5"),
            filename: field(&dict, "filename"),
            payload: out[..len].to_vec(),
        });
        out = &out[len..];
    }
    assert!(
        out.is_empty(),
        "unexpected trailing output: {:?}",
        String::from_utf8_lossy(out)
    );
    answers
}

/// Checks `client.py`'s answers against what the commands print locally,
/// and the md5 wiresh put in each header against the real one.
async fn check_client_py_answers(commands: &[&str], printed: &[u8]) {
    let answers = parse_client_py(printed, commands.len());
    for (command, answer) in commands.iter().zip(answers) {
        let expected = local(command).await;
        assert_eq!(
            answer.payload,
            expected,
            "`{command}`: client.py printed {} bytes, the command prints {} locally",
            answer.payload.len(),
            expected.len()
        );
        assert_eq!(answer.total_size, expected.len() as u64, "`{command}`");
        assert_eq!(
            answer.md5,
            md5_hex(&expected),
            "`{command}`: md5 in the header"
        );
        assert_eq!(answer.filename, "-", "`{command}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_py_runs_several_commands_on_one_connection() {
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let printed = client_py(server.addr, CASES).await;
    check_client_py_answers(CASES, &printed).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_py_receives_10_mib_spooled_to_disk() {
    // 10 MiB is past the default 8 MiB threshold: the server spools it.
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let commands = [BIG, "echo after the big one"];
    let printed = client_py(server.addr, &commands).await;
    check_client_py_answers(&commands, &printed).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_client_py_sessions_are_served_at_the_same_time() {
    // Each command can only finish while the other one runs: A's write to
    // fifo `a` blocks until B opens it, and B's write to `b` until A reads.
    // Served one connection at a time (as server.py does), neither would
    // finish; `timeout` turns that into a failure instead of a hang.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for fifo in [&a, &b] {
        let status = std::process::Command::new("mkfifo")
            .arg(fifo)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo {}", fifo.display());
    }
    let cmd_a = format!(
        "timeout 60 sh -c 'echo from-a > {}; cat {}'",
        a.display(),
        b.display()
    );
    let cmd_b = format!(
        "timeout 60 sh -c 'cat {}; echo from-b > {}'",
        a.display(),
        b.display()
    );
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let (cmds_a, cmds_b) = ([cmd_a.as_str()], [cmd_b.as_str()]);
    let (out_a, out_b) = tokio::join!(
        client_py(server.addr, &cmds_a),
        client_py(server.addr, &cmds_b)
    );
    let (out_a, out_b) = (parse_client_py(&out_a, 1), parse_client_py(&out_b, 1));
    let explain = "the two sessions were not served concurrently";
    assert_eq!(out_a[0].payload, b"from-b\n", "{explain}");
    assert_eq!(out_b[0].payload, b"from-a\n", "{explain}");
    server.stop().await;
}

/// The original server, run by python3 on an ephemeral port.
struct PyServer {
    addr: SocketAddr,
    _child: Child, // killed on drop
}

impl PyServer {
    async fn start() -> PyServer {
        let script = legacy_dir().join("server.py");
        let mut child = python3()
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
        // server.py prints "listening PORT" once it listens.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = timeout(BOUND, lines.next_line())
            .await
            .expect("server.py did not start")
            .unwrap()
            .expect("server.py exited before listening");
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from server.py: {line:?}"));
        PyServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }
}

/// Runs each command through `client` and checks the output against a
/// local run; returns each reply's `md5_verified`.
async fn run_cases(client: &mut LegacyClient, commands: &[&str]) -> Vec<Option<bool>> {
    let mut verified = Vec::new();
    for command in commands {
        let mut out = Vec::new();
        let reply = timeout(BOUND, client.run(command, &mut out))
            .await
            .expect("no answer")
            .unwrap_or_else(|e| panic!("`{command}`: {e:#}"));
        let expected = local(command).await;
        assert!(
            out == expected,
            "`{command}`: received {} bytes, the command prints {} locally",
            out.len(),
            expected.len()
        );
        assert_eq!(reply.total_size, expected.len() as u64, "`{command}`");
        assert_eq!(reply.md5_actual, md5_hex(&expected), "`{command}`");
        verified.push(reply.md5_verified);
    }
    verified
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_client_against_server_py() {
    let server = PyServer::start().await;
    let mut client = LegacyClient::connect(&server.addr.to_string(), BOUND)
        .await
        .unwrap();
    let commands: Vec<&str> = CASES
        .iter()
        .copied()
        .chain([BIG, "echo still usable"])
        .collect();
    let verified = run_cases(&mut client, &commands).await;
    // server.py sends the placeholder "xxxxxxxxxxxxxxxxxxx": nothing to verify.
    assert!(verified.iter().all(Option::is_none), "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_client_against_wiresh_verifies_md5_of_spooled_output() {
    // A tiny spool threshold sends both streams to disk, interleaved.
    let config = LegacyServerConfig {
        spool_threshold: 1000,
        ..Default::default()
    };
    let server = WireshServer::start(config).await;
    let mut client = LegacyClient::connect(&server.addr.to_string(), BOUND)
        .await
        .unwrap();
    let interleaved = "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let big_stderr = "head -c 300000 /dev/zero | tr '\\0' e >&2; echo done";
    let commands: Vec<&str> = CASES
        .iter()
        .copied()
        .chain([interleaved, big_stderr, BIG])
        .collect();
    let verified = run_cases(&mut client, &commands).await;
    assert!(verified.iter().all(|v| *v == Some(true)), "{verified:?}");
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_header_is_byte_for_byte_the_legacy_format_with_a_real_md5() {
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(b"printf abc").await.unwrap();
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).await.unwrap();
    let len = i32::from_ne_bytes(len);
    let expected =
        r#"{"total_size": 3, "md5": "900150983cd24fb0d6963f7d28e17f72", "filename": "-"}"#;
    assert_eq!(len as usize, expected.len());
    let mut rest = vec![0u8; expected.len() + 3];
    socket.read_exact(&mut rest).await.unwrap();
    assert_eq!(String::from_utf8(rest).unwrap(), format!("{expected}abc"));
    drop(socket);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_gets_an_explanation_as_output() {
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let mut client = LegacyClient::connect(&server.addr.to_string(), BOUND)
        .await
        .unwrap();
    // A NUL byte cannot be passed to exec(2).
    let mut out = Vec::new();
    let reply = client.run("echo a\0b", &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("wiresh: cannot run the command: "), "{out}");
    assert_eq!(reply.md5_verified, Some(true));
    // The connection goes on.
    let mut out = Vec::new();
    client.run("echo next", &mut out).await.unwrap();
    assert_eq!(out, b"next\n");
    drop(client);
    server.stop().await;
}

/// Waits until process `pid` has exited, by poll(2) on its pidfd: told by
/// the kernel, no polling loop.
async fn wait_exited(pid: i32) {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ESRCH),
            "pidfd_open({pid}): {err}"
        );
        return; // already gone
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let exited = tokio::task::spawn_blocking(move || {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, BOUND.as_millis() as libc::c_int) };
        n == 1
    })
    .await
    .unwrap();
    assert!(
        exited,
        "process {pid} still runs: its process group was not killed"
    );
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Starts, through `socket`, a command whose background `sleep` (a
/// grandchild of the server, in the command's process group) reports its
/// pid through a fifo; returns that pid once it runs.
async fn start_sleeper(socket: &mut TcpStream, dir: &Path) -> i32 {
    let fifo = dir.join("pid");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let command = format!("sleep 1000 & echo $! > {}; wait", fifo.display());
    socket.write_all(command.as_bytes()).await.unwrap();
    let pid = timeout(BOUND, tokio::fs::read_to_string(&fifo))
        .await
        .expect("the command never reported its pid")
        .unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    assert!(alive(pid));
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_command_kills_the_process_group() {
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let pid = start_sleeper(&mut socket, dir.path()).await;
    drop(socket);
    wait_exited(pid).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_kills_the_group_and_says_so() {
    let config = LegacyServerConfig {
        command_timeout: Some(Duration::from_secs(2)),
        kill_grace: Duration::from_millis(200),
        ..Default::default()
    };
    let server = WireshServer::start(config).await;
    let mut client = LegacyClient::connect(&server.addr.to_string(), BOUND)
        .await
        .unwrap();
    // The background sleep is a grandchild, in the command's process group.
    let mut out = Vec::new();
    let reply = timeout(BOUND, client.run("sleep 1000 & echo $!; wait", &mut out))
        .await
        .expect("the timeout did not end the command")
        .unwrap();
    // The answer still comes, with a note at the end of the stderr part.
    let out = String::from_utf8(out).unwrap();
    let (pid, note) = out.split_once('\n').unwrap();
    assert_eq!(
        note,
        "wiresh: command timed out after 2s; the command's process group was killed\n"
    );
    assert_eq!(reply.md5_verified, Some(true));
    wait_exited(pid.parse().unwrap()).await;
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed() {
    let config = LegacyServerConfig {
        max_connections: 1,
        ..Default::default()
    };
    let server = WireshServer::start(config).await;
    let target = server.addr.to_string();
    // Connected first, so accepted first: it holds the only slot.
    let mut first = LegacyClient::connect(&target, BOUND).await.unwrap();
    let mut second = LegacyClient::connect(&target, BOUND).await.unwrap();
    let err = second
        .run("echo hi", &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    // Closed unanswered; if the command reached the socket before the close,
    // the kernel reports the close as a reset instead.
    assert!(
        err.contains("closed the connection without answering")
            || err.contains("reset")
            || err.contains("Broken pipe")
            || err.contains("lost while the command ran"),
        "{err}"
    );
    let mut out = Vec::new();
    first.run("echo ok", &mut out).await.unwrap();
    assert_eq!(out, b"ok\n");
    drop(first);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections() {
    let server = WireshServer::start(LegacyServerConfig::default()).await;
    let mut client = LegacyClient::connect(&server.addr.to_string(), BOUND)
        .await
        .unwrap();
    client.run("echo before", &mut Vec::new()).await.unwrap();
    // Returns only once the idle connection is closed.
    server.stop().await;
    let err = client.run("echo after", &mut Vec::new()).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("closed the connection") || err.contains("lost"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_an_empty_command_and_reports_a_truncated_answer() {
    // A fake server that promises 100 bytes and sends 10.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut cmd = [0u8; 100];
        let _ = socket.read(&mut cmd).await.unwrap();
        let header = br#"{"total_size": 100, "md5": "xxxxxxxxxxxxxxxxxxx", "filename": "xxxxx", "xxxxx": "123123"}"#;
        let mut reply = (header.len() as i32).to_ne_bytes().to_vec();
        reply.extend_from_slice(header);
        reply.extend_from_slice(b"0123456789");
        socket.write_all(&reply).await.unwrap();
    });
    let mut client = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    let err = client
        .run("", &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty command"), "{err}");
    let mut out = Vec::new();
    let err = client
        .run("anything", &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("after 10 of 100 bytes"), "{err}");
    assert_eq!(out, b"0123456789", "what arrived is still passed on");
    let err = client.run("again", &mut out).await.unwrap_err().to_string();
    assert!(err.contains("reconnect"), "{err}");
    fake.await.unwrap();
}

// ---- The `wiresh` binary's legacy flags, end to end ----

/// Runs `wiresh serve --listen 127.0.0.1:0 ARGS...`, which must refuse to
/// start; returns what it said.
async fn serve_refuses(home: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = timeout(
        BOUND,
        Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("WIRESH_HOME", home)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("wiresh serve did not exit")
    .unwrap();
    assert!(!out.status.success(), "wiresh serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `wiresh serve --legacy-listen` with its legacy address from the banner.
fn start_binary_with_legacy() -> (common::Server, SocketAddr) {
    start_binary_with_legacy_and(&[])
}

/// `wiresh serve --legacy-listen` with more flags, and its legacy address.
fn start_binary_with_legacy_and(args: &[&str]) -> (common::Server, SocketAddr) {
    let all = [&["--legacy-listen", "127.0.0.1:0"], args].concat();
    let server = common::Server::start_with(&all);
    let addr = server
        .banner
        .iter()
        .find_map(|line| line.split("legacy protocol (no authentication) on ").nth(1))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no legacy address in the banner {:?}", server.banner));
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_py_against_wiresh_serve_legacy_listen() {
    let (server, legacy_addr) = start_binary_with_legacy();
    let commands = [
        "echo hello",
        "true",
        "echo oops >&2",
        "printf 'ünïcödé ✓\\n'",
    ];
    let printed = client_py(legacy_addr, &commands).await;
    check_client_py_answers(&commands, &printed).await;
    // The modern listener serves at the same time.
    let mut conn = server.connect().await;
    let ran = common::sh(&mut conn, "echo modern").await;
    assert_eq!(ran.stdout_str(), "modern\n");
}

/// The legacy listener's log line has typed values as the modern one's:
/// the command as a string (not Rust's quoted debug form), and no
/// `ended_early` when the command did not end early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_log_lines_have_no_rust_debug_spellings() {
    let (server, addr) = start_binary_with_legacy_and(&["--log-format", "json"]);
    let mut client = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    let mut out = Vec::new();
    client.run("echo 'hi there'", &mut out).await.unwrap();
    server.wait_for_log("legacy command finished").await;
    let finished = server
        .log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "legacy command finished")
        .unwrap();
    assert_eq!(finished["command"], "echo 'hi there'", "{finished}");
    assert!(finished.get("ended_early").is_none(), "{finished}");
    assert_eq!(finished["spooled"], false, "{finished}");

    let (server, addr) = start_binary_with_legacy();
    let mut client = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    client.run("true", &mut out).await.unwrap();
    server.wait_for_log("legacy command finished").await;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("legacy command finished"))
        .unwrap();
    assert!(line.contains("command=\"true\""), "{line}");
    assert!(!line.contains("ended_early"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_listen_refuses_a_non_loopback_address() {
    let home = tempfile::tempdir().unwrap();
    let stderr = serve_refuses(
        home.path(),
        &["--legacy-listen".as_ref(), "0.0.0.0:0".as_ref()],
    )
    .await;
    assert!(
        stderr.contains("no authentication") && stderr.contains("--legacy-allow-insecure-remote"),
        "{stderr}"
    );
}

/// Runs `wiresh ARGS...` with `stdin`, under the test bound.
async fn wiresh_cli(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::BIN)
        .args(args)
        .env("WIRESH_HOME", home.path())
        .env_remove("WIRESH_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    timeout(BOUND, child.wait_with_output())
        .await
        .expect("wiresh did not finish")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_shell_legacy_against_server_py() {
    let server = PyServer::start().await;
    let host = server.addr.to_string();
    let command = "echo out; echo err >&2; echo 'héllo ✓'";
    let out = wiresh_cli(&["exec", "--legacy", "-H", &host, "--", command], b"").await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, local(command).await);
    // ssh's form: the host first, `-p` its port.
    let port = server.addr.port().to_string();
    let out = wiresh_cli(
        &["exec", "--legacy", "-p", &port, "127.0.0.1", "echo", "hi"],
        b"",
    )
    .await;
    assert_eq!(
        out.stdout,
        b"hi\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let script = b"echo one\n\nprintf two\nexit\necho never\n";
    let out = wiresh_cli(&["shell", "--legacy", "-H", &host], script).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_legacy_exits_255_when_the_answer_is_broken() {
    // Nothing listens on a port we bound and closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let out = wiresh_cli(&["exec", "--legacy", "-H", &host, "--", "true"], b"").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// `exec --legacy` pointed at a wiresh server (the TLS listener) says
/// what it reached and what to do, not that a header length is too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_legacy_at_a_wiresh_server_says_drop_legacy() {
    let server = common::Server::start();
    let host = server.addr.to_string();
    // (The test server allows plaintext from loopback, so it reads a
    // preamble; `true` is a legacy request of four bytes, fewer than a
    // preamble's eight, and is answered at its first byte, not after the
    // handshake deadline.)
    for command in ["uname -a", "true"] {
        let out = wiresh_cli(&["exec", "--legacy", "-H", &host, "--", command], b"").await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{command}: {stderr}");
        assert!(
            stderr.contains("that is a wiresh server (TLS), not a legacy one; drop --legacy"),
            "{command}: {stderr}"
        );
    }
}

// ---- The legacy listener follows the server's rules ----

/// `--max-commands` counts the legacy listener's commands with the wiresh
/// listener's: over the limit, a legacy command is not run and its answer
/// says why; a wiresh command meanwhile gets `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_commands_share_the_servers_command_limit() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mark = dir.path().join("second-ran");
    let (server, addr) = start_binary_with_legacy_and(&["--max-commands", "1"]);
    // The first command holds the only slot until the test writes the fifo.
    let mut first = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    let blocking = format!("read line < {}; echo \"first $line\"", fifo.display());
    let first_run = tokio::spawn(async move {
        let mut out = Vec::new();
        first.run(&blocking, &mut out).await.map(|_| out)
    });
    // Once the command reads the fifo, it is running: open it for writing.
    let writer = tokio::task::spawn_blocking({
        let fifo = fifo.clone();
        move || std::fs::OpenOptions::new().write(true).open(fifo).unwrap()
    });
    let mut writer = timeout(BOUND, writer).await.unwrap().unwrap();

    let mut second = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    let mut out = Vec::new();
    second
        .run(&format!("touch {}", mark.display()), &mut out)
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.contains("limit of 1 commands"), "{answer}");
    assert!(!mark.exists(), "a command over the limit ran");
    let mut conn = server.connect().await;
    let busy = common::sh(&mut conn, "true").await;
    assert!(
        matches!(
            busy.result,
            Err(wiresh::client::ClientError::Remote {
                code: wiresh_proto::ErrorCode::Busy,
                ..
            })
        ),
        "{:?}",
        busy.result
    );

    use std::io::Write;
    writeln!(writer, "done").unwrap();
    drop(writer);
    let out = timeout(BOUND, first_run).await.unwrap().unwrap().unwrap();
    assert_eq!(out, b"first done\n");
}

/// The legacy protocol runs every command with a shell: a server whose
/// policy restricts programs refuses to serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_listen_refuses_a_policy_that_restricts_programs() {
    let home = tempfile::tempdir().unwrap();
    let policy = home.path().join("policy.json");
    std::fs::write(&policy, r#"{"allow_shell": false}"#).unwrap();
    let stderr = serve_refuses(
        home.path(),
        &[
            "--legacy-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--policy".as_ref(),
            policy.as_os_str(),
        ],
    )
    .await;
    assert!(
        stderr.contains("--legacy-listen") && stderr.contains("policy"),
        "{stderr}"
    );
}

/// Every legacy command is in the audit log, with the peer and the local
/// user that owns the peer's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_commands_are_audited_with_the_local_user() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let (_server, addr) = start_binary_with_legacy_and(&["--audit-log", log.to_str().unwrap()]);
    let mut client = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    let mut out = Vec::new();
    client.run("exit 4", &mut out).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["event"], "start");
    assert_eq!(lines[1]["event"], "end");
    assert_eq!(lines[1]["target"], "exit 4");
    assert_eq!(lines[1]["code"], 4);
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(lines[1]["identity"], format!("legacy:uid={uid}"));
    assert!(lines[1]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
}

/// A legacy client that goes away mid-command takes its command with it,
/// and the audit log ends the command's record as `aborted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_command_cut_off_by_a_disconnect_is_audited_as_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let (server, addr) = start_binary_with_legacy_and(&["--audit-log", log.to_str().unwrap()]);
    let mut peer = TcpStream::connect(addr).await.unwrap();
    peer.write_all(b"sleep 1000").await.unwrap();
    // Connected until the command is on record (the listener tells a
    // peer's user by its open socket), then gone.
    let lines = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    timeout(BOUND, async {
        while lines().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no start line");
    drop(peer);
    server
        .wait_for_log(
            "client disconnected during `sleep 1000`; the command and its processes were killed",
        )
        .await;
    let lines = lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["event"], "start");
    assert_eq!(lines[1]["event"], "end");
    assert_eq!(lines[1]["id"], lines[0]["id"]);
    assert_eq!(lines[1]["target"], "sleep 1000");
    assert_eq!(lines[1]["outcome"], "aborted");
}

/// What a peer running as user `nobody` gets from the legacy listener:
/// the answer to `echo hi`, or nothing if it is turned away.
async fn answer_as_nobody(addr: SocketAddr) -> Vec<u8> {
    let nobody = wiresh::privilege::Account::lookup("nobody").expect("a nobody user");
    let script = "import socket, sys\n\
                  s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
                  s.sendall(b'echo hi')\n\
                  data = b''\n\
                  while True:\n\
                  \x20   chunk = s.recv(4096)\n\
                  \x20   if not chunk: break\n\
                  \x20   data += chunk\n\
                  \x20   if data.endswith(b'hi\\n'): break\n\
                  sys.stdout.buffer.write(data)\n";
    let out = timeout(
        BOUND,
        python3()
            .args([
                "-c",
                script,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .uid(nobody.uid())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the peer did not finish")
    .unwrap();
    out.stdout
}

/// By default only the user commands run as may use the legacy listener;
/// `--legacy-any-user` lets every local user in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_listener_admits_only_its_own_user_by_default() {
    if !wiresh::privilege::is_root() {
        common::skip::skipped("running a peer as another user needs root");
        return;
    }
    let (server, addr) = start_binary_with_legacy_and(&[]);
    let answer = answer_as_nobody(addr).await;
    assert!(answer.is_empty(), "another user got an answer: {answer:?}");
    server.wait_for_log("not to uid").await;
    // The server's own user still gets in.
    let mut client = LegacyClient::connect(&addr.to_string(), BOUND)
        .await
        .unwrap();
    let mut out = Vec::new();
    client.run("echo mine", &mut out).await.unwrap();
    assert_eq!(out, b"mine\n");

    let (_open, addr) = start_binary_with_legacy_and(&["--legacy-any-user"]);
    let answer = answer_as_nobody(addr).await;
    assert!(answer.ends_with(b"hi\n"), "{answer:?}");
}
