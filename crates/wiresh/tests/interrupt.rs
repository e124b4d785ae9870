//! Ctrl-C while `wiresh exec` runs a command without a terminal, as ssh
//! users know it from `ssh -t`: the first Ctrl-C sends the remote command
//! SIGINT (its traps run; it ends as it chooses, and wiresh exits with its
//! status, 130 when it died of the signal); the second gives up on it:
//! the command is cancelled, the connection closed, and wiresh exits 130.
//! Through the client's own SIGINT (as a terminal sends it to its
//! foreground group) and through a real terminal (tmux). Many hosts:
//! `fanout.rs`.

mod common;

use std::process::Stdio;

use common::tmux::{recording, Recorded, Tmux};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// `wiresh exec -n -- LINE` on `server`, its stdout read line by line.
fn exec(server: &Server, line: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut cmd = server.cli("exec");
    cmd.args(["-n", "--", line]).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("the client starts");
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdout)
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    bounded("a line from the client", lines.next_line())
        .await
        .unwrap()
        .expect("the client printed a line")
}

/// Ctrl-C, as the terminal sends it: SIGINT to the client.
fn ctrl_c(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
}

/// The rest of the client's stdout and stderr, and its exit code.
async fn finish(mut child: Child, mut stdout: Lines<BufReader<ChildStdout>>) -> CliOutput {
    let mut rest = Vec::new();
    while let Some(line) = bounded("the client's output", stdout.next_line())
        .await
        .unwrap()
    {
        rest.extend_from_slice(line.as_bytes());
        rest.push(b'\n');
    }
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .await
        .unwrap();
    let status = bounded("the client to exit", child.wait()).await.unwrap();
    CliOutput {
        code: status.code(),
        stdout: rest,
        stderr,
    }
}

#[tokio::test]
async fn ctrl_c_runs_the_remote_trap_and_wiresh_exits_with_the_commands_status() {
    let server = Server::start();
    let (child, mut stdout) = exec(
        &server,
        "trap 'echo trapped; exit 3' INT; sleep 30 >/dev/null 2>&1 & echo ready; wait",
    );
    assert_eq!(next_line(&mut stdout).await, "ready");
    ctrl_c(&child);
    let out = finish(child, stdout).await;
    assert_eq!(out.stdout_str(), "trapped\n", "{}", out.stderr_str());
    assert_eq!(out.code, Some(3), "the remote status: {}", out.stderr_str());
    assert_eq!(out.stderr_str(), "", "nothing said when the command ended");
}

#[tokio::test]
async fn ctrl_c_on_a_command_that_dies_of_it_exits_130() {
    let server = Server::start();
    let (child, mut stdout) = exec(&server, "echo ready; exec sleep 30");
    assert_eq!(next_line(&mut stdout).await, "ready");
    ctrl_c(&child);
    let out = finish(child, stdout).await;
    assert_eq!(out.code, Some(130), "128+SIGINT: {}", out.stderr_str());
}

#[tokio::test]
async fn a_second_ctrl_c_gives_up_disconnects_and_nothing_is_left_running() {
    let server = Server::start();
    // The command takes the first Ctrl-C and goes on regardless.
    let (child, mut stdout) = exec(
        &server,
        "trap 'echo trapped' INT; echo $$; while :; do sleep 0.1; done",
    );
    let pid: u32 = next_line(&mut stdout).await.parse().unwrap();
    ctrl_c(&child);
    assert_eq!(next_line(&mut stdout).await, "trapped");
    assert!(alive(pid), "the command handled the SIGINT and runs on");
    ctrl_c(&child);
    let out = finish(child, stdout).await;
    assert_eq!(out.code, Some(130), "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("interrupted twice"),
        "{}",
        out.stderr_str()
    );
    assert_gone(
        &[pid],
        Some(pid),
        GONE_WITHIN,
        "the command after the second Ctrl-C",
    )
    .await;
}

/// The same from a real terminal: Ctrl-C typed while `wiresh exec` runs
/// reaches the remote command's trap, and wiresh exits with its status.
#[tokio::test]
async fn ctrl_c_typed_in_a_terminal_reaches_the_remote_trap() {
    let server = Server::start();
    let Some(tmux) = Tmux::new() else {
        return;
    };
    let client = format!(
        "env -u WIRESH_TOKEN -u WIRESH_HOST WIRESH_HOME='{home}' '{BIN}' exec -H {addr} -- \
         \"trap 'echo TRAPPED; exit 3' INT; sleep 30 >/dev/null 2>&1 & echo READY; wait\"",
        home = server.home().display(),
        addr = server.addr
    );
    tmux.start(&recording(tmux.dir(), &client), 80, 24);
    tmux.wait_for_line("READY").await;
    tmux.press(&["C-c"]);
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 3, "status {}: {screen}", rec.status);
    // The terminal echoes the key as `^C`, before what the trap says.
    assert!(
        screen
            .lines()
            .any(|l| l.trim().trim_start_matches("^C") == "TRAPPED"),
        "{screen}"
    );
    assert_eq!(rec.stty_before, rec.stty_after, "terminal changed");
}
