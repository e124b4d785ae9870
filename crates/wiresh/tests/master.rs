//! Connection masters (`wiresh master`, `--persist`; issue 23): over a
//! real server, exec, shell, put and get run through a master exactly as
//! they run directly (output, exit statuses, stdin windows, Ctrl-C, a
//! terminal, transfers); a master serves its own user only; a crashed
//! master's socket is cleaned up; a changed pin or a revoked key stops a
//! master from being used; a hundred clients at once share its bounded
//! pool; fan-out uses the masters that exist; a master exits when idle,
//! and can be listed and stopped.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use common::files::{args, Files};
use common::fleet::Fleet;
use common::keys::{authorized_clients, write_clients, KeyClient};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use wiresh::client::{Connection, Endpoint, Output};
use wiresh::master::{self, Attempt};
use wiresh_proto::{ExecRequest, PtyRequest, Secret};

/// A master run in the foreground (`wiresh master --foreground`) for the
/// client home `home`; killed and reaped on drop.
struct MasterProc {
    child: Child,
    name: String,
    home: PathBuf,
    log: Arc<Mutex<Vec<u8>>>,
    /// The local address of its first connection to the server.
    first_from: String,
}

impl MasterProc {
    /// Starts `wiresh master --foreground -H host ARGS...` and waits for
    /// its readiness line and the log line of its first connection.
    fn start(home: &Path, host: &str, args: &[&str]) -> MasterProc {
        let mut child = std::process::Command::new(BIN)
            .args(["master", "--foreground", "-H", host])
            .args(args)
            .env("WIRESH_HOME", home)
            .env_remove("WIRESH_TOKEN")
            .env_remove("WIRESH_PERSIST")
            .env_remove("WIRESH_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start wiresh master");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let (sink, (line_tx, lines)) = (log.clone(), std_mpsc::channel());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.extend_from_slice(line.as_bytes());
                log.push(b'\n');
                let _ = line_tx.send(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(BOUND).unwrap_or_default();
        let failed = |child: &mut Child, what: String| -> ! {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}; log:\n{}",
                String::from_utf8_lossy(&log.lock().unwrap())
            );
        };
        let Some(name) = line.trim_end().strip_prefix("ready ") else {
            failed(
                &mut child,
                format!("the master did not get ready: {line:?}"),
            );
        };
        // Written before the readiness line, on the other pipe.
        let first_from = loop {
            match lines.recv_timeout(BOUND) {
                Ok(line) => match first_connection(&line) {
                    Some(from) => break from,
                    None => continue,
                },
                Err(_) => failed(&mut child, "no first connection logged".into()),
            }
        };
        MasterProc {
            name: name.to_string(),
            child,
            home: home.to_path_buf(),
            log,
            first_from,
        }
    }

    /// Waits until `server` has logged the master's first connection, so
    /// that counting the server's logins after it counts only newer ones.
    async fn known_to(&self, server: &Server) {
        login_logged(server, &self.first_from).await;
    }

    fn socket(&self) -> PathBuf {
        self.home
            .join("masters")
            .join(format!("{}.sock", self.name))
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the master's log holds `needle`: the log is
    /// copied from its stderr by a thread of its own, so a line can come
    /// after what the master did next (closing a socket) is seen.
    async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the master never logged {needle:?}; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) for the master to exit on its own.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the master did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MasterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local address of a master's first connection, from its log line.
fn first_connection(line: &str) -> Option<String> {
    let (_, from) = line.split_once("connection 1 opened from ")?;
    Some(from.trim().to_string())
}

/// Waits until `server` has logged the login of the connection from
/// `peer`.
async fn login_logged(server: &Server, peer: &str) {
    let needle = format!(" authenticated peer={peer} ");
    server
        .wait_for_log_line("the master's login", |l| l.contains(&needle))
        .await;
}

/// How many connections the server has authenticated so far.
fn authenticated(server: &Server) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains(" authenticated peer="))
        .count()
}

/// A client command compared: subcommand, arguments, stdin.
type Scenario = (&'static str, Vec<String>, Option<Vec<u8>>);

/// The client commands compared.
fn scenarios() -> Vec<Scenario> {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let input = binary_pattern(3 * MIB);
    vec![
        (
            "exec",
            words(&["-n", "--", "echo out; echo err >&2; exit 3"]),
            None,
        ),
        ("exec", words(&["-n", "--", "kill -TERM $$"]), None),
        (
            "exec",
            words(&["-n", "--argv", "--", "printf", "<%s>", "a b", "c"]),
            None,
        ),
        ("exec", words(&["-n", "--", "no-such-program-here"]), None),
        // More than the stdin window, echoed back: credits and acks.
        ("exec", words(&["--", "cat"]), Some(input)),
        // Large output: spliced by a plaintext master.
        ("exec", words(&["-n", "--", "seq 1 2500000"]), None),
        // The line shell: one command per line, each over the connection.
        (
            "shell",
            words(&[]),
            Some(b"echo one\nfalse\necho two >&2\nexit 4\n".to_vec()),
        ),
        // A command that reads only the start of a large stdin.
        (
            "exec",
            words(&["--", "head -c 10; echo; exit 5"]),
            Some(binary_pattern(3 * MIB)),
        ),
    ]
}

/// Runs every scenario through the client (with `extra` flags) and
/// returns what each produced.
async fn run_scenarios(server: &Server, extra: &[&str]) -> Vec<CliOutput> {
    let mut outs = Vec::new();
    for (sub, words, stdin) in scenarios() {
        let mut cmd = server.cli(sub);
        cmd.args(extra).args(&words);
        outs.push(cli_output(cmd, stdin).await);
    }
    outs
}

/// The same commands give the same output, stderr and exit status through
/// a master as directly, and through the master the server authenticates
/// nothing more.
async fn exec_both_ways(extra: &[&str]) {
    let server = Server::start();
    let direct = run_scenarios(&server, extra).await;
    assert_eq!(direct[0].code, Some(3));
    let mut master_args = vec!["--persist", "5m"];
    master_args.extend_from_slice(extra);
    let master = MasterProc::start(server.home(), &server.addr.to_string(), &master_args);
    master.known_to(&server).await;
    let before = authenticated(&server);
    let through = run_scenarios(&server, extra).await;
    assert_eq!(
        authenticated(&server),
        before,
        "a command connected directly"
    );
    for (i, (d, m)) in direct.iter().zip(&through).enumerate() {
        assert_eq!(d.code, m.code, "scenario {i}: {}", m.stderr_str());
        assert_eq!(d.stderr_str(), m.stderr_str(), "scenario {i}");
        assert!(d.stdout == m.stdout, "scenario {i}: stdout differs");
    }
    assert_eq!(through[4].stdout, binary_pattern(3 * MIB));
    assert!(
        through[5].stdout.len() > 18 * MIB,
        "{}",
        through[5].stdout.len()
    );
    assert_eq!(through[6].stdout_str(), "one\n");
    assert_eq!(through[6].code, Some(4));
    assert_eq!(through[7].stdout.len(), 11);
    assert_eq!(through[7].code, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_through_a_tls_master_is_exec_directly() {
    exec_both_ways(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_through_a_plaintext_master_is_exec_directly() {
    exec_both_ways(&["--plaintext"]).await;
}

/// Ctrl-C (SIGINT to the client) cancels the remote command the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_through_a_master_is_ctrl_c_directly() {
    let server = Server::start();
    let interrupted = |how: &'static str| {
        let server = &server;
        async move {
            let mut cmd = server.cli("exec");
            cmd.args(["-n", "--", "echo started; sleep 60"]);
            let mut child = cmd.spawn().unwrap();
            let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            bounded("the command's first line", stdout.read_line(&mut line))
                .await
                .unwrap();
            assert_eq!(line, "started\n");
            let pid = child.id().unwrap();
            sleeping_under(server).await;
            catching_sigint(pid).await;
            interrupt(pid);
            let exited = format!("the client ({how}) to exit");
            let status = bounded(&exited, child.wait()).await.unwrap();
            status.code()
        }
    };
    let direct = interrupted("direct").await;
    let master = MasterProc::start(server.home(), &server.addr.to_string(), &[]);
    master.known_to(&server).await;
    let before = authenticated(&server);
    let through = interrupted("through the master").await;
    assert_eq!(authenticated(&server), before);
    assert_eq!(direct, through);
    assert!(direct.is_some_and(|c| c != 0), "{direct:?}");
}

/// Gives a command that waits for a line of input its `input`, closes its
/// stdin, and reads the rest of its output (`what` names the wait).
async fn answer(
    child: &mut tokio::process::Child,
    stdout: &mut tokio::io::BufReader<tokio::process::ChildStdout>,
    input: &[u8],
    what: &str,
) -> String {
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, input)
        .await
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    bounded(what, stdout.read_to_string(&mut rest))
        .await
        .unwrap();
    rest
}

/// Waits until the command's shell runs its `sleep`: a Ctrl-C between
/// its `echo` and its fork meets dash where it takes SIGINT without dying
/// (a local terminal's Ctrl-C does too: `sh -c 'echo started; sleep 60'`
/// survived 87 of 300 SIGINTs sent as `started` was read), and the
/// command would run on. So does one between the fork and the child's
/// exec (the child still has dash's handler, takes it, then runs `sleep`
/// 60 s: 1 of 40 runs under load), so the child must be `sleep` already.
async fn sleeping_under(server: &Server) {
    let is_sleep = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    };
    bounded("the remote sleep to start", async {
        while !commands_of(server.pid())
            .into_iter()
            .any(|shell| children_of(shell).into_iter().any(is_sleep))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Waits until process `pid` takes SIGINT itself: the threaded client
/// catches it (a handler) as it starts following the command, the
/// one-shot fast path through a master blocks it and reads it from a
/// signalfd; either may be just after the command's first output is
/// printed.
async fn catching_sigint(pid: u32) {
    let taken = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let has_sigint = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
        };
        has_sigint("SigCgt:") || has_sigint("SigBlk:")
    };
    bounded("the client to take SIGINT", async {
        while !taken() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Sends SIGINT to process `pid` (our own child).
fn interrupt(pid: u32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
}

/// Waits until a thread of process `pid` waits to write to a full pipe
/// (its stdout, which nobody reads).
async fn waiting_on_a_pipe(pid: u32) {
    let waiting = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|task| {
            std::fs::read_to_string(task.path().join("wchan"))
                .is_ok_and(|wchan| wchan.contains("pipe_write"))
        })
    };
    bounded("the client to wait on its stdout", async {
        while !waiting() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A second Ctrl-C gives up on a command that survives the first (it
/// traps INT): through a master as directly, with the same status and
/// the same words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_gives_up_through_a_master_as_directly() {
    let server = Server::start();
    let twice = || async {
        let mut cmd = server.cli("exec");
        cmd.args([
            "-n",
            "--",
            "trap 'echo INT' INT; echo started; while :; do sleep 0.1; done",
        ]);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        bounded("the command's first line", stdout.read_line(&mut line))
            .await
            .unwrap();
        assert_eq!(line, "started\n");
        catching_sigint(pid).await;
        interrupt(pid);
        line.clear();
        bounded("the trap's line", stdout.read_line(&mut line))
            .await
            .unwrap();
        assert_eq!(line, "INT\n", "the first Ctrl-C reached the command");
        interrupt(pid);
        let out = bounded("the client to exit", child.wait_with_output())
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let direct = twice().await;
    let master = MasterProc::start(server.home(), &server.addr.to_string(), &[]);
    master.known_to(&server).await;
    let before = authenticated(&server);
    let through = twice().await;
    assert_eq!(authenticated(&server), before);
    assert_eq!(direct, through);
    assert_eq!(direct.0, Some(130));
    assert!(direct.1.contains("interrupted twice"), "{}", direct.1);
}

/// Through a master a one-shot `exec` runs on one thread (no runtime, no
/// printer or stdin thread), where directly it has several; same output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_through_a_master_runs_on_one_thread() {
    let server = Server::start();
    let threads_while_running = || async {
        let mut cmd = server.cli("exec");
        cmd.args(["--", "echo started; read line; echo \"got $line\""]);
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        bounded("the command's first line", stdout.read_line(&mut line))
            .await
            .unwrap();
        let running = threads(pid);
        let rest = answer(&mut child, &mut stdout, b"hello\n", "the rest").await;
        let status = bounded("the client to exit", child.wait()).await.unwrap();
        (running, line + &rest, status.code())
    };
    let (direct_threads, direct_out, direct_code) = threads_while_running().await;
    let master = MasterProc::start(server.home(), &server.addr.to_string(), &[]);
    master.known_to(&server).await;
    let before = authenticated(&server);
    let (threads, out, code) = threads_while_running().await;
    assert_eq!(authenticated(&server), before);
    assert_eq!((out.as_str(), code), ("started\ngot hello\n", Some(0)));
    assert_eq!((direct_out.as_str(), direct_code), (out.as_str(), code));
    assert_eq!(threads, 1, "through the master");
    assert!(direct_threads > 1, "directly: {direct_threads}");
}

/// While local stdout does not take output (a paused pager), the fast
/// path's watching thread still carries Ctrl-C to the command: here the
/// command's trap leaves a mark before anything of its output is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_reaches_the_command_while_stdout_is_full() {
    let server = Server::start();
    let marks = tempfile::tempdir().unwrap();
    let held = |mark: PathBuf| {
        let server = &server;
        async move {
            let mut cmd = server.cli("exec");
            let script = format!(
                "trap 'touch {}; exit 7' INT; \
                 while :; do echo 0123456789abcdef0123456789abcdef; done",
                mark.display()
            );
            cmd.args(["-n", "--", &script]);
            let mut child = cmd.spawn().unwrap();
            let pid = child.id().unwrap();
            // Output fills the pipe nobody reads, so the client waits on it.
            waiting_on_a_pipe(pid).await;
            catching_sigint(pid).await;
            interrupt(pid);
            bounded("the command's trap to run", async {
                while !mark.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            let mut stdout = child.stdout.take().unwrap();
            let mut sink = Vec::new();
            bounded("the output", stdout.read_to_end(&mut sink))
                .await
                .unwrap();
            let status = bounded("the client to exit", child.wait()).await.unwrap();
            status.code()
        }
    };
    let direct = held(marks.path().join("direct")).await;
    let master = MasterProc::start(server.home(), &server.addr.to_string(), &[]);
    master.known_to(&server).await;
    let through = held(marks.path().join("through")).await;
    assert_eq!(direct, Some(7));
    assert_eq!(through, Some(7));
}

/// `put` and `get` through a master copy the same bytes as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_through_a_master() {
    let files = Files::start();
    let data = binary_pattern(5 * MIB + 17);
    let src = files.local.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let copy = |sub: &'static str, a: [std::ffi::OsString; 3]| {
        let files = &files;
        async move { files.run(sub, &a).await }
    };
    let out = copy("put", args!["-q", &src, "direct.bin"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let master = MasterProc::start(files.server.home(), &files.server.addr.to_string(), &[]);
    master.known_to(&files.server).await;
    let before = authenticated(&files.server);
    let out = copy("put", args!["-q", &src, "through.bin"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let back = files.local.join("back.bin");
    let out = copy("get", args!["-q", "through.bin", &back]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(
        authenticated(&files.server),
        before,
        "a copy connected directly"
    );
    assert!(std::fs::read(files.root.join("direct.bin")).unwrap() == data);
    assert!(std::fs::read(files.root.join("through.bin")).unwrap() == data);
    assert!(std::fs::read(&back).unwrap() == data);
    // A refusal is the server's, through the master too.
    let out = copy("get", args!["-q", "missing.bin", files.local.join("m")]).await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr_str().contains("not_found"),
        "{}",
        out.stderr_str()
    );
}

/// The library's connection through a master: several commands in turn,
/// a terminal with its resize, and the hello the server gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_through_a_master_runs_commands_and_terminals() {
    let server = Server::start();
    let endpoint = server.endpoint();
    let _master = MasterProc::start(server.home(), &server.addr.to_string(), &["--plaintext"]);
    let mut conn = through(&server, &endpoint).await;
    let direct = server.connect().await;
    assert_eq!(conn.hello(), direct.hello(), "the server's own hello");
    for i in 0..3 {
        let ran = sh(&mut conn, &format!("echo {i}")).await;
        assert_eq!(ran.stdout, format!("{i}\n").as_bytes());
    }
    let req = ExecRequest {
        pty: Some(PtyRequest {
            term: "xterm".into(),
            cols: 100,
            rows: 30,
        }),
        ..ExecRequest::shell("stty size; tty")
    };
    let ran = run(&mut conn, req, None).await;
    let text = String::from_utf8_lossy(&ran.stdout).into_owned();
    assert!(text.starts_with("30 100"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert_exited(ran.result.as_ref().unwrap(), 0);
}

/// Connects through the master of `endpoint` in the server's home.
async fn through(server: &Server, endpoint: &Endpoint) -> Connection {
    match master::connect_in(server.home(), endpoint, None).await {
        Attempt::Connected(conn) => *conn,
        other => panic!("not through the master: {other:?}"),
    }
}

/// A client that leaves while its command runs ends the command, as a
/// direct disconnect does; the master goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_mid_command_ends_it_as_directly() {
    let server = Server::start();
    let endpoint = server.endpoint();
    let _master = MasterProc::start(server.home(), &server.addr.to_string(), &["--plaintext"]);
    let mut conn = through(&server, &endpoint).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Output>(16);
    let req = ExecRequest::shell("echo $$; exec sleep 60");
    let running = tokio::spawn(async move {
        let _ = conn.run(req, None, &tx, never).await;
    });
    let pid = match bounded("the pid", rx.recv()).await {
        Some(Output::Stdout(b)) => String::from_utf8_lossy(&b).trim().parse::<u32>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(alive(pid));
    running.abort();
    let _ = running.await;
    assert_gone(
        &[pid],
        None,
        GONE_WITHIN,
        "the command of a client that left",
    )
    .await;
    let mut next = through(&server, &endpoint).await;
    assert_eq!(sh(&mut next, "echo again").await.stdout, b"again\n");
}

/// A hundred clients at once through one master with a pool of 4: all
/// run, and the server never sees more than the pool's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_share_a_bounded_pool() {
    let server = Server::start();
    let endpoint = Arc::new(server.endpoint());
    let mut master = MasterProc::start(
        server.home(),
        &server.addr.to_string(),
        &["--plaintext", "--pool", "4"],
    );
    master.known_to(&server).await;
    let home = server.home().to_path_buf();
    let before = authenticated(&server);
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let (home, endpoint) = (home.clone(), endpoint.clone());
            tokio::spawn(async move {
                let mut conn = match master::connect_in(&home, &endpoint, None).await {
                    Attempt::Connected(conn) => *conn,
                    other => panic!("client {i}: {other:?}"),
                };
                let ran = sh(&mut conn, &format!("echo {i}")).await;
                assert_eq!(ran.stdout, format!("{i}\n").as_bytes(), "client {i}");
                conn.close().await;
            })
        })
        .collect();
    for client in clients {
        bounded("a client", client).await.unwrap();
    }
    let opened = authenticated(&server) - before;
    assert!(
        opened <= 3,
        "{opened} connections beyond the first 1 of a pool of 4"
    );
    let listed = master::list(&home).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].connections <= 4, "{listed:?}");
    assert_eq!(listed[0].sessions, 100);
    assert!(master.child.try_wait().unwrap().is_none());
}

/// A master killed with SIGKILL leaves its socket; the next client
/// connects directly and removes it, and a new master can start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_masters_socket_is_cleaned_up() {
    let server = Server::start();
    let host = server.addr.to_string();
    let mut master = MasterProc::start(server.home(), &host, &[]);
    master.known_to(&server).await;
    let socket = master.socket();
    master.child.kill().unwrap();
    master.child.wait().unwrap();
    assert!(socket.exists(), "SIGKILL leaves the socket behind");
    let before = authenticated(&server);
    let mut cmd = server.cli("exec");
    cmd.args(["-n", "--", "echo direct"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout_str(), "direct\n", "{}", out.stderr_str());
    assert_eq!(out.stderr_str(), "", "a dead master is no news");
    assert_eq!(authenticated(&server), before + 1);
    assert!(!socket.exists(), "the stale socket was not removed");
    assert!(master::list(server.home()).await.unwrap().is_empty());
    let again = MasterProc::start(server.home(), &host, &[]);
    assert_eq!(again.socket(), socket);
}

/// When the fingerprint pinned for the server changes, clients no longer
/// use the master (they have another identity: the direct connection
/// then says why it fails), and the master exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_pin_stops_the_master() {
    let server = Server::start();
    let host = server.addr.to_string();
    let mut cmd = server.cli("exec");
    cmd.args(["-n", "--", "true"]);
    assert_eq!(cli_output(cmd, None).await.code, Some(0));
    let mut master = MasterProc::start(server.home(), &host, &[]);
    master.known_to(&server).await;
    let known_hosts = server.home().join("known_hosts");
    let other = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(&known_hosts, format!("{host} {other}\n")).unwrap();
    let before = authenticated(&server);
    let mut cmd = server.cli("exec");
    cmd.args(["-n", "--", "echo never"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(255));
    assert!(out.stderr_str().contains("WARNING"), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "");
    assert_eq!(
        authenticated(&server),
        before,
        "nothing ran, through the master or not"
    );
    master.wait_exit().await;
    master.wait_for_log("changed").await;
    assert!(!master.socket().exists());
}

/// Another user on the machine is never served by a master, even when
/// the master's socket is made reachable to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_use_the_master() {
    if !wiresh::privilege::is_root() {
        common::skip::skipped("creating a second account needs root");
        return;
    }
    if !common::skip::needs_program("useradd", "passwd") {
        return;
    }
    let user = format!("wmaster{}", std::process::id());
    let made = std::process::Command::new("useradd")
        .args(["--no-create-home", "--shell", "/usr/sbin/nologin", &user])
        .status()
        .unwrap();
    assert!(made.success(), "useradd {user}");
    let _account = Account(user.clone());
    let other = wiresh::privilege::Account::lookup(&user).unwrap();

    let server = Server::start();
    let master = MasterProc::start(server.home(), &server.addr.to_string(), &["--plaintext"]);
    // Open the way to the socket, as a careless chmod would.
    use std::os::unix::fs::PermissionsExt;
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    open(server.home(), 0o711).unwrap();
    open(&server.home().join("masters"), 0o711).unwrap();
    open(&master.socket(), 0o777).unwrap();
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  try:\n\
                  \x20   s.sendall(b'WIRESH-MASTER 1 status\\n')\n\
                  \x20   data = s.recv(4096)\n\
                  except (ConnectionResetError, BrokenPipeError):\n\
                  \x20   data = b''\n\
                  sys.stdout.write(repr(data))\n";
    let out = bounded(
        "the other user's peer",
        tokio::process::Command::new("python3")
            .args(["-c", script, master.socket().to_str().unwrap()])
            .uid(other.uid())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said, "b''", "another user got an answer");
    master
        .wait_for_log(&format!("refused a client of uid {}", other.uid()))
        .await;
    // This user's clients do not use a masters directory others may
    // enter, until it is private again.
    let err = master::list(server.home()).await.unwrap_err();
    assert!(
        err.contains("not a directory of this user's alone"),
        "{err}"
    );
    open(&server.home().join("masters"), 0o700).unwrap();
    assert_eq!(master::list(server.home()).await.unwrap().len(), 1);
}

/// Removes a test account when dropped.
struct Account(String);

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).status();
    }
}

/// `wiresh exec -n [EXTRA] -- LINE` against `server`, run to its end.
async fn exec_line(server: &Server, extra: &[&str], line: &str) -> CliOutput {
    let mut cmd = server.cli("exec");
    cmd.args(extra).args(["-n", "--", line]);
    cli_output(cmd, None).await
}

/// The one master `server`'s home lists was started for it, and the next
/// command, `second` (`echo second`), runs through it: no login of its
/// own at the server. What the home lists.
async fn serves_the_next_command(
    server: &Server,
    second: impl std::future::Future<Output = CliOutput>,
) -> Vec<master::Status> {
    let home = server.home();
    let listed = master::list(home).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].target, server.addr.to_string());
    let log_file = home.join("masters").join(format!("{}.log", listed[0].name));
    let log = std::fs::read_to_string(&log_file).unwrap();
    let from = log.lines().find_map(first_connection).expect(&log);
    login_logged(server, &from).await;
    let before = authenticated(server);
    assert_eq!(second.await.stdout_str(), "second\n");
    assert_eq!(
        authenticated(server),
        before,
        "the second command connected directly"
    );
    listed
}

/// `--persist` starts a master on demand; the next command uses it;
/// `--list` shows it, `--stop` stops it; and a master exits when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_starts_a_master_that_lists_stops_and_idles_out() {
    let server = Server::start();
    let home = server.home().to_path_buf();
    assert_eq!(
        exec_line(&server, &[], "true").await.code,
        Some(0),
        "pins the server"
    );
    let out = exec_line(&server, &["--persist", "1m"], "echo first").await;
    assert_eq!(out.stdout_str(), "first\n", "{}", out.stderr_str());
    let listed = serves_the_next_command(&server, exec_line(&server, &[], "echo second")).await;

    let mut stop = server.cli("master");
    stop.arg("--stop");
    let out = cli_output(stop, None).await;
    assert!(
        out.stdout_str().contains("is stopping"),
        "{}",
        out.stderr_str()
    );
    let pid = listed[0].pid;
    assert_gone(&[pid], None, BOUND, "the stopped master").await;
    assert!(master::list(&home).await.unwrap().is_empty());

    let mut idle = MasterProc::start(&home, &server.addr.to_string(), &["--persist", "1s"]);
    idle.wait_exit().await;
    assert!(idle.log().contains("no client for 1s"), "{}", idle.log());
    assert!(!idle.socket().exists());
}

/// A host's `persist` setting (client.toml, ssh's ControlPersist in its
/// config) starts a master on demand as `--persist` does, and the next
/// command goes through it; `--persist 0` starts none, whatever it says;
/// `wiresh master` for the host keeps it as its idle time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_persist_setting_starts_a_master() {
    let server = Server::start();
    let home = server.home().to_path_buf();
    assert_eq!(
        exec_line(&server, &[], "true").await.code,
        Some(0),
        "pins the server"
    );
    std::fs::write(
        home.join("client.toml"),
        "[hosts.\"127.0.0.1\"]\npersist = \"1m\"\n",
    )
    .unwrap();
    let mut settings = server.cli("exec");
    settings.arg("-G");
    let shown = cli_output(settings, None).await;
    assert!(
        shown.stdout_str().contains("\npersist 1m\n"),
        "{}",
        shown.stdout_str()
    );
    let out = exec_line(&server, &["--persist", "0"], "echo none").await;
    assert_eq!(out.stdout_str(), "none\n", "{}", out.stderr_str());
    assert!(master::list(&home).await.unwrap().is_empty());

    let out = exec_line(&server, &[], "echo first").await;
    assert_eq!(out.stdout_str(), "first\n", "{}", out.stderr_str());
    serves_the_next_command(&server, exec_line(&server, &[], "echo second")).await;
    stop_all(&home).await;

    // `wiresh master` for the host keeps the setting's idle time too.
    let out = cli_output(server.cli("master"), None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert!(
        out.stdout_str().contains("stays 1m"),
        "{}",
        out.stdout_str()
    );
    let listed = master::list(&home).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].idle_secs, 60, "{listed:?}");
    stop_all(&home).await;
}

/// A master for other settings (another token) is never used: the client
/// connects directly with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_serves_only_its_own_settings() {
    let server = Server::start();
    let _master = MasterProc::start(server.home(), &server.addr.to_string(), &["--plaintext"]);
    let mut other = server.endpoint();
    other.token = Secret("another token".into());
    match master::connect_in(server.home(), &other, None).await {
        Attempt::Absent => {}
        other => panic!("another token found a master: {other:?}"),
    }
    match master::connect_in(server.home(), &server.endpoint(), None).await {
        Attempt::Connected(_) => {}
        other => panic!("{other:?}"),
    }
}

/// A revoked key stops the masters that use it. A client that needs a
/// new connection from the master is told that the server refused the
/// master, connects directly and hears the server's own refusal; a
/// master with nothing to open learns of it by authenticating anew
/// (`--recheck`) and exits. A command that ran before goes on, as over a
/// direct connection opened before the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_the_master() {
    let alice = KeyClient::new("alice").await;
    let bob = KeyClient::new("bob").await;
    let carol = KeyClient::new("carol").await;
    let dir = tempfile::tempdir().unwrap();
    let clients = authorized_clients(dir.path(), &[&alice.line, &bob.line, &carol.line]);
    let server = Server::start_exactly(&[
        "--auth",
        "key",
        "--authorized-clients",
        clients.to_str().unwrap(),
    ]);
    let host = server.addr.to_string();
    for client in [&alice, &bob] {
        let out = client.run(&server, "true").await;
        assert_eq!(out.code, Some(0), "pins the server: {}", out.stderr_str());
    }
    let mut alice_master = MasterProc::start(alice.home.path(), &host, &["--pool", "2"]);
    let mut bob_master = MasterProc::start(bob.home.path(), &host, &["--recheck", "200ms"]);

    // Alice's one connection is lent to a command that waits for input.
    let mut held = alice.exec(&server, "echo held; read line; echo \"got $line\"");
    held.stdin(Stdio::piped());
    let mut held = held.spawn().unwrap();
    let mut held_out = tokio::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    bounded("the held command", held_out.read_line(&mut line))
        .await
        .unwrap();
    assert_eq!(line, "held\n");
    assert_eq!(
        master::list(alice.home.path()).await.unwrap()[0].clients,
        1,
        "the held command runs through the master"
    );

    write_clients(&clients, &[&carol.line]);
    server.signal(libc::SIGHUP);
    server.wait_for_log("configuration reloaded").await;

    let out = alice.run(&server, "echo must not run").await;
    let err = out.stderr_str();
    assert_eq!(out.code, Some(255), "{err}");
    assert_eq!(out.stdout_str(), "");
    assert!(err.contains("the server refused the master"), "{err}");
    assert!(err.contains("connecting directly"), "{err}");
    assert!(
        err.contains("not authorized"),
        "the server's own refusal: {err}"
    );

    let rest = answer(
        &mut held,
        &mut held_out,
        b"more\n",
        "the held command's end",
    )
    .await;
    assert_eq!(rest, "got more\n");
    assert!(bounded("the held client", held.wait())
        .await
        .unwrap()
        .success());
    alice_master.wait_exit().await;
    alice_master
        .wait_for_log("the server refused the master")
        .await;

    bob_master.wait_exit().await;
    let log = bob_master
        .wait_for_log("the server refused the master")
        .await;
    assert!(log.contains("not authorized"), "{log}");
    assert!(!bob_master.socket().exists());
    let out = bob.run(&server, "echo must not run").await;
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr_str().contains("not authorized"),
        "{}",
        out.stderr_str()
    );
}

/// Fan-out runs over the masters that exist and connects directly to the
/// other hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_uses_the_masters_that_exist() {
    let fleet = Fleet::start(3, &[]);
    let names = fleet.names();
    let fan_out = || {
        let mut cmd = fleet.cli("exec", &fleet.host_list());
        cmd.args(["--", "echo hi"]);
        cli_output(cmd, None)
    };
    let out = fan_out().await;
    assert_eq!(
        out.code,
        Some(0),
        "first contact pins: {}",
        out.stderr_str()
    );
    let masters: Vec<_> = names[..2]
        .iter()
        .map(|host| MasterProc::start(fleet.home(), host, &[]))
        .collect();
    for (master, server) in masters.iter().zip(&fleet.servers) {
        master.known_to(server).await;
    }
    let before: Vec<usize> = fleet.servers.iter().map(authenticated).collect();
    let out = fan_out().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(
        out.stdout_str().matches("hi").count(),
        3,
        "{}",
        out.stdout_str()
    );
    let after: Vec<usize> = fleet.servers.iter().map(authenticated).collect();
    assert_eq!(after[0], before[0], "host 1 has a master");
    assert_eq!(after[1], before[1], "host 2 has a master");
    assert_eq!(after[2], before[2] + 1, "host 3 has none");
}

/// Stops the masters of `home` (by pid) and waits until they are gone.
async fn stop_all(home: &Path) {
    let pids: Vec<u32> = master::list(home)
        .await
        .unwrap()
        .iter()
        .map(|m| m.pid)
        .collect();
    for pid in &pids {
        // SAFETY: kill(2) on a master this test started (through the client).
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
    }
    assert_gone(&pids, None, BOUND, "the masters").await;
}

/// A fan-out with `--persist` starts at most `MAX_STARTS` masters, says
/// so once, and runs the other hosts directly; all hosts run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_with_persist_starts_a_bounded_number_of_masters() {
    let hosts = master::MAX_STARTS + 2;
    let fleet = Fleet::start(hosts, &[]);
    let fan_out = |extra: &'static [&'static str]| {
        let mut cmd = fleet.cli("exec", &fleet.host_list());
        cmd.args(extra).args(["--", "echo hi"]);
        cli_output(cmd, None)
    };
    let out = fan_out(&[]).await;
    assert_eq!(
        out.code,
        Some(0),
        "first contact pins: {}",
        out.stderr_str()
    );
    let out = fan_out(&["--persist", "1m"]).await;
    let masters = master::list(fleet.home()).await.unwrap();
    stop_all(fleet.home()).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str().matches("hi").count(), hosts);
    assert_eq!(masters.len(), master::MAX_STARTS, "{masters:?}");
    let said = format!("{} masters started by this command", master::MAX_STARTS);
    assert_eq!(
        out.stderr_str().matches(&said).count(),
        1,
        "{}",
        out.stderr_str()
    );
}

/// A master started on demand keeps nothing of the client's but what it
/// was given: a script whose `$(...)` pipe the client holds on another
/// descriptor too (here 7, as `2>&1` or a `9>lock` would) goes on when
/// the client ends, not when the master idles out a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_keeps_none_of_the_clients_descriptors() {
    let server = Server::start();
    assert_eq!(
        exec_line(&server, &[], "true").await.code,
        Some(0),
        "pins the server"
    );
    let addr = server.addr.to_string();
    let mut sh = tokio::process::Command::new("sh");
    // Descriptor 7 is the pipe the test reads; the client's stdout is not.
    let client = "exec \"$0\" \"$@\" 7>&1 >/dev/null";
    sh.args(["-c", client, BIN, "exec", "-H", &addr, "--persist", "1m"])
        .args(["-n", "--", "true"]);
    isolated(&mut sh, server.home());
    let out = bounded("the end of the client's pipe", sh.output()).await;
    assert!(out.unwrap().status.success());
    // A master was started, and runs on.
    let listed = master::list(server.home()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}
