//! The `wiresh` client binary end to end: `wiresh exec` and `wiresh shell`
//! against a real `wiresh serve` on loopback, with the token found through
//! `WIRESH_HOME` as a user would have it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Instant;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};

/// Reads the child's stdout until it has printed `expected` (and checks it
/// printed nothing else).
async fn expect_stdout(out: &mut BufReader<ChildStdout>, expected: &str) {
    let mut got = String::new();
    while got.len() < expected.len() {
        let n = bounded("client output", out.read_line(&mut got))
            .await
            .unwrap();
        assert!(n > 0, "client stdout ended after {got:?}");
    }
    assert_eq!(got, expected);
}

/// Waits for an interactive-style client to end and collects the rest.
async fn finish(mut child: Child, mut out: BufReader<ChildStdout>) -> CliOutput {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut err_pipe = child.stderr.take().unwrap();
    let (a, b, status) = bounded("the client to finish", async {
        tokio::join!(
            out.read_to_end(&mut stdout),
            err_pipe.read_to_end(&mut stderr),
            child.wait()
        )
    })
    .await;
    a.unwrap();
    b.unwrap();
    CliOutput {
        code: status.unwrap().code(),
        stdout,
        stderr,
    }
}

// 1, 2. echo; stdout and stderr apart --------------------------------------------

#[tokio::test]
async fn exec_echo() {
    let server = Server::start();
    let mut cmd = server.cli("exec");
    cmd.args(["--", "echo", "hello", "world"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout, b"hello world\n");
    assert_eq!(out.stderr, b"");
}

#[tokio::test]
async fn exec_keeps_stdout_and_stderr_apart() {
    let server = Server::start();
    let mut cmd = server.cli("exec");
    cmd.args(["--", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout, b"out1\nout2\n");
    assert_eq!(out.stderr, b"err1\nerr2\n");
}

/// A stderr that another program made non-blocking (rsync shares its
/// descriptors so) is waited on when full, as stdout is, never given up
/// on: every byte of a large stderr arrives.
#[tokio::test]
async fn exec_waits_on_a_full_non_blocking_stderr() {
    const LEN: usize = 4 * MIB;
    let server = Server::start();
    let (read, write) = rustix::pipe::pipe().unwrap();
    rustix::io::ioctl_fionbio(&write, true).unwrap();
    let capacity = rustix::pipe::fcntl_getpipe_size(&read).unwrap();
    let mut cmd = server.cli("exec");
    cmd.args(["--", &format!("head -c {LEN} /dev/zero >&2")])
        .stderr(Stdio::from(write));
    let mut child = cmd.spawn().unwrap();
    // `cmd` keeps a copy of the pipe's write end: without it, the reader
    // below sees the end once the client has exited.
    drop(cmd);
    // Nothing is read until the pipe is full: the client finds it so.
    bounded("stderr's pipe to fill", async {
        // No readiness signal says "full": look every few milliseconds.
        while rustix::io::ioctl_fionread(&read).unwrap() < capacity as u64 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let reading = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read), &mut all).unwrap();
        all
    });
    let status = bounded("the client", child.wait()).await.unwrap();
    let got = bounded("stderr", reading).await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        got.len() == LEN && got.iter().all(|&b| b == 0),
        "{} bytes of {LEN}",
        got.len()
    );
}

// 3. exit codes, signals, --argv ----------------------------------------------------

#[tokio::test]
async fn exec_exit_codes_and_signals() {
    let server = Server::start();
    for (words, code) in [
        (&["exit", "3"][..], 3),
        (&["false"][..], 1),
        (&["true"][..], 0),
        (&["kill -9 $$"][..], 137),
        (&["kill -TERM $$"][..], 143),
    ] {
        let mut cmd = server.cli("exec");
        cmd.arg("--").args(words);
        let out = cli_output(cmd, None).await;
        assert_eq!(
            out.code,
            Some(code),
            "{words:?}; stderr: {}",
            out.stderr_str()
        );
    }
}

/// A working directory that is not there is named as the cause, not taken
/// for a missing program.
#[tokio::test]
async fn exec_in_a_missing_directory_says_so() {
    let server = Server::start();
    let mut cmd = server.cli("exec");
    cmd.args(["-C", "/nonexistent", "--", "pwd"]);
    let out = cli_output(cmd, None).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(127), "{stderr}");
    assert!(
        stderr.contains("working directory /nonexistent does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot start"), "{stderr}");
}

#[tokio::test]
async fn exec_argv_runs_without_a_shell() {
    let server = Server::start();
    let mut cmd = server.cli("exec");
    cmd.args([
        "--argv",
        "--",
        "printf",
        "%s|",
        "a   b",
        "c'd \"e\"",
        "$HOME",
        ";",
    ]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout_str(), "a   b|c'd \"e\"|$HOME|;|");

    // Without --argv the words are joined and the remote shell splits them.
    let mut cmd = server.cli("exec");
    cmd.args(["--", "echo", "a   b"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout_str(), "a b\n");
}

// 4. stdin ---------------------------------------------------------------------------

#[tokio::test]
async fn exec_forwards_stdin() {
    let server = Server::start();
    let input: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|i| (i % 251) as u8)
        .collect();

    let mut cmd = server.cli("exec");
    cmd.args(["--", "wc", "-c"]);
    let out = cli_output(cmd, Some(input.clone())).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout_str().trim(), input.len().to_string());

    // Binary input comes back through `cat` byte for byte.
    let mut cmd = server.cli("exec");
    cmd.args(["--", "cat"]);
    let out = cli_output(cmd, Some(input.clone())).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "cat output differs from its input");

    // -n: the command reads an empty input even when stdin has data.
    let mut cmd = server.cli("exec");
    cmd.args(["-n", "--", "wc", "-c"]);
    let out = cli_output(cmd, Some(b"ignored".to_vec())).await;
    assert_eq!(out.stdout_str().trim(), "0");
}

// 8. timeout -------------------------------------------------------------------------

#[tokio::test]
async fn exec_timeout_exits_143() {
    let server = Server::start();
    let begun = Instant::now();
    let mut cmd = server.cli("exec");
    cmd.args(["--timeout", "1s", "--", "sleep", "30"]);
    let out = cli_output(cmd, None).await;
    eprintln!("`exec --timeout 1s -- sleep 30` took {:?}", begun.elapsed());
    assert_eq!(out.code, Some(143), "stderr: {}", out.stderr_str());
    assert!(
        out.stderr_str().contains("timed out"),
        "{}",
        out.stderr_str()
    );
}

/// `-t` asks for a remote terminal, like `ssh -t` (it was the timeout):
/// even with piped stdin, the command's stdio is a pty, stderr merged into
/// stdout, and the input is typed into it, ending with end of file.
#[tokio::test]
async fn exec_t_runs_the_command_on_a_terminal() {
    let server = Server::start();
    let mut cmd = server.cli("exec");
    cmd.env("TERM", "vt100")
        .args(["-t", "--", "tty; echo \"$TERM\"; echo to-stderr >&2; wc -l"]);
    let out = cli_output(cmd, Some(b"one\ntwo\n".to_vec())).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(out.stderr, b"", "a terminal has no separate stderr");
    let text = out.stdout_str();
    let lines: Vec<&str> = text.split("\r\n").collect();
    // The input is echoed by the terminal whenever it arrives.
    assert!(lines.iter().any(|l| l.starts_with("/dev/pts/")), "{text:?}");
    assert!(lines.contains(&"vt100"), "{text:?}");
    assert!(lines.contains(&"to-stderr"), "{text:?}");
    assert!(text.ends_with("2\r\n"), "{text:?}");

    // -T: no terminal, as before.
    let mut cmd = server.cli("exec");
    cmd.args(["-T", "--", "tty"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout_str(), "not a tty\n");
}

// 10. client errors --------------------------------------------------------------------

#[tokio::test]
async fn exec_with_wrong_token_exits_255() {
    let server = Server::start();
    let mut cmd = server.cli("exec");
    cmd.env("WIRESH_TOKEN", "wrong-token-0123456789")
        .args(["--", "echo", "no"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(255));
    assert_eq!(out.stdout, b"");
    let err = out.stderr_str();
    assert!(err.contains("token"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line message expected: {err}");
}

#[tokio::test]
async fn exec_finds_the_token_by_every_route() {
    let server = Server::start();

    // WIRESH_TOKEN with an empty WIRESH_HOME.
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = server.cli("exec");
    cmd.env("WIRESH_HOME", empty.path())
        .env("WIRESH_TOKEN", server.token.expose())
        .args(["--", "echo", "env"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout, b"env\n", "stderr: {}", out.stderr_str());

    // --token-file.
    let file = empty.path().join("copied-token");
    std::fs::write(&file, format!("{}\n", server.token.expose())).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = server.cli("exec");
    cmd.env("WIRESH_HOME", empty.path())
        .arg("--token-file")
        .arg(&file)
        .args(["--", "echo", "file"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout, b"file\n", "stderr: {}", out.stderr_str());

    // No token anywhere: a message that says what to do.
    let mut cmd = server.cli("exec");
    cmd.env("WIRESH_HOME", empty.path()).args(["--", "true"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(255));
    assert!(out.stderr_str().contains("token"), "{}", out.stderr_str());
}

#[tokio::test]
async fn exec_connection_refused_exits_255() {
    let server = Server::start();
    // A port nobody listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let mut cmd = client_command("exec", &addr.to_string(), server.home());
    cmd.args(["--", "true"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(255));
    let err = out.stderr_str();
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

// 13. shell -----------------------------------------------------------------------------

/// With piped stdin, `wiresh shell` runs the remote login shell on the
/// script, like `ssh host < script`: one command, state that persists, the
/// shell's own exit status.
#[tokio::test]
async fn shell_runs_a_piped_script_in_one_remote_shell() {
    let server = Server::start();
    let cmd = server.cli("shell");
    let out = cli_output(cmd, Some(b"echo a\nfalse\necho b\n".to_vec())).await;
    let err = out.stderr_str();
    assert_eq!(out.stdout_str(), "a\nb\n", "stderr: {err}");
    assert!(!err.contains(">>:"), "prompt printed: {err}");
    assert_eq!(out.code, Some(0), "last command succeeded: {err}");
    // The whole script was one command.
    server.wait_for_log("commands=1").await;

    // `cd` and variables persist from line to line.
    let cmd = server.cli("shell");
    let out = cli_output(cmd, Some(b"cd /usr\nx=5\npwd\necho \"x=$x\"\n".to_vec())).await;
    assert_eq!(
        out.stdout_str(),
        "/usr\nx=5\n",
        "stderr: {}",
        out.stderr_str()
    );

    let cmd = server.cli("shell");
    let out = cli_output(cmd, Some(b"echo a\n\nfalse\n".to_vec())).await;
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr_str());

    let cmd = server.cli("shell");
    let out = cli_output(cmd, Some(b"kill -9 $$\n".to_vec())).await;
    assert_eq!(out.code, Some(137));

    // `exit` ends the script early.
    let cmd = server.cli("shell");
    let out = cli_output(cmd, Some(b"echo one\nexit\necho two\n".to_vec())).await;
    assert_eq!(out.stdout_str(), "one\n");
    assert_eq!(out.code, Some(0));
}

/// `--each-line`: each line is a command of its own, with its status
/// reported, on one connection.
#[tokio::test]
async fn shell_each_line_runs_piped_lines() {
    let server = Server::start();
    let mut cmd = server.cli("shell");
    cmd.arg("--each-line");
    let out = cli_output(cmd, Some(b"echo a\nfalse\necho b\n".to_vec())).await;
    let err = out.stderr_str();
    assert_eq!(out.stdout_str(), "a\nb\n", "stderr: {err}");
    assert!(
        err.contains("[exit 1]"),
        "status of `false` not reported: {err}"
    );
    assert!(
        !err.contains(">>:"),
        "prompt printed when not a terminal: {err}"
    );
    assert_eq!(out.code, Some(0), "last command succeeded: {err}");
    // All three lines ran on one connection.
    server.wait_for_log("commands=3").await;

    let mut cmd = server.cli("shell");
    cmd.arg("--each-line");
    let out = cli_output(cmd, Some(b"echo a\n\nfalse\n".to_vec())).await;
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr_str());

    let mut cmd = server.cli("shell");
    cmd.arg("--each-line");
    let out = cli_output(cmd, Some(b"kill -9 $$\n".to_vec())).await;
    assert_eq!(out.code, Some(137));
    assert!(
        out.stderr_str().contains("signal 9"),
        "{}",
        out.stderr_str()
    );

    // `cd` does not carry over: each line is its own shell.
    let mut cmd = server.cli("shell");
    cmd.arg("--each-line");
    let out = cli_output(cmd, Some(b"cd /\npwd\n".to_vec())).await;
    assert_ne!(out.stdout_str(), "/\n", "stderr: {}", out.stderr_str());

    // `exit` ends the script early.
    let mut cmd = server.cli("shell");
    cmd.arg("--each-line");
    let out = cli_output(cmd, Some(b"echo one\nexit\necho two\n".to_vec())).await;
    assert_eq!(out.stdout_str(), "one\n");
    assert_eq!(out.code, Some(0));
}

#[tokio::test]
async fn shell_reconnects_after_the_server_closed_an_idle_connection() {
    let server = Server::start_with(&["--idle-timeout", "300ms"]);
    let mut cmd = server.cli("shell");
    cmd.arg("--each-line").stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"echo a\n").await.unwrap();
    expect_stdout(&mut out, "a\n").await;
    // The server gives up on the idle connection...
    server.wait_for_log("idle for").await;
    // ...and the next line still runs, on a new one.
    stdin.write_all(b"echo b\n").await.unwrap();
    drop(stdin);
    let rest = finish(child, out).await;
    assert_eq!(rest.stdout_str(), "b\n", "stderr: {}", rest.stderr_str());
    assert_eq!(rest.code, Some(0), "stderr: {}", rest.stderr_str());
}

// 14. graceful shutdown, seen from `wiresh exec` ------------------------------------------

#[tokio::test]
async fn exec_survives_a_graceful_server_shutdown() {
    let mut server = Server::start_with(&["--shutdown-grace", "60s"]);
    let mut cmd = server.cli("exec");
    cmd.stdin(Stdio::piped())
        .args(["--", "echo started; read x; echo \"done $x\""]);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    expect_stdout(&mut out, "started\n").await;

    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down").await;
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);

    let rest = finish(child, out).await;
    assert_eq!(
        rest.stdout_str(),
        "done go\n",
        "stderr: {}",
        rest.stderr_str()
    );
    assert_eq!(
        rest.code,
        Some(0),
        "the command exited 0 but the client reported: {}",
        rest.stderr_str()
    );
    assert_eq!(server.wait_exit().await.code(), Some(0));
}

// Review fix: a closed local stdout ends the remote command ------------------

/// `wiresh exec -- yes | head -1` ends like the local pipeline would: the
/// client exits 141 (128+SIGPIPE) and the remote `yes` is killed, instead
/// of the client draining an endless stream forever.
#[tokio::test]
async fn closed_stdout_cancels_the_remote_command() {
    let server = Server::start();
    let script = format!(
        "'{bin}' exec -n -H {addr} -- 'echo $$ > {pidfile}; exec yes' | head -1; echo \"rc=${{PIPESTATUS[0]}}\"",
        bin = BIN,
        addr = server.addr,
        pidfile = server.home().join("yes.pid").display()
    );
    let out = cli_output(bash_script(&script, server.home()), None).await;
    assert_eq!(
        out.stdout_str(),
        "y\nrc=141\n",
        "stderr: {}",
        out.stderr_str()
    );
    // `yes` printed, so the shell had written its pid (which `yes` took over).
    let pid = pid_from_file(&server.home().join("yes.pid"), &out.stderr_str());
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "remote `yes`").await;
}
