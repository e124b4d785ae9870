//! The spawn helper dies (SIGKILL) while commands it started run: they go
//! on, and finish with their own output and exit statuses (the server, a
//! child subreaper, adopts them); the server says the helper is gone,
//! starts a new one and says so, and new commands start from it.

mod common;

use common::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wiresh::client::{ClientError, Output};
use wiresh_proto::{ExecRequest, ExitStatus};

/// A command running on a connection of its own, its output arriving.
struct Running {
    output: mpsc::Receiver<Output>,
    result: JoinHandle<Result<ExitStatus, ClientError>>,
    stdout: String,
}

impl Running {
    async fn start(server: &Server, line: String) -> Running {
        let mut conn = server.connect().await;
        let (tx, output) = mpsc::channel(16);
        let result = tokio::spawn(async move {
            let req = ExecRequest::shell(line);
            let result = conn.run(req, None, &tx, never).await;
            conn.close().await;
            result
        });
        Running {
            output,
            result,
            stdout: String::new(),
        }
    }

    /// Reads its stdout until it holds `needle`.
    async fn wait_for(&mut self, needle: &str) {
        while !self.stdout.contains(needle) {
            match bounded(needle, self.output.recv()).await {
                Some(Output::Stdout(b)) => self.stdout.push_str(&String::from_utf8_lossy(&b)),
                Some(Output::Stderr(b)) => panic!("stderr: {}", String::from_utf8_lossy(&b)),
                None => panic!("the output ended before {needle:?}: {:?}", self.stdout),
            }
        }
    }

    /// Its whole stdout and exit status.
    async fn finish(mut self) -> (String, ExitStatus) {
        while let Some(out) = bounded("the output's end", self.output.recv()).await {
            if let Output::Stdout(b) = out {
                self.stdout.push_str(&String::from_utf8_lossy(&b));
            }
        }
        let status = bounded("the exit status", self.result).await.unwrap();
        (self.stdout, status.expect("the command's exit status"))
    }
}

/// The pid in the last log line that holds `prefix` followed by `(pid N)`.
fn logged_pid(log: &str, prefix: &str) -> u32 {
    let line = log
        .lines()
        .rfind(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in the log:\n{log}"));
    line.split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// A command that says it runs, waits for a line on `fifo`, and ends
/// with `end` after printing what it got and its parent's pid then.
fn waiting(fifo: &std::path::Path, end: &str) -> String {
    format!(
        "echo ready; read line < {}; echo \"got $line parent $(cut -d' ' -f4 /proc/$$/stat)\"; {end}",
        fifo.display()
    )
}

/// Writes `line` to `fifo`, which the command opens to read.
async fn release(fifo: &std::path::Path, line: &str) {
    let fifo = fifo.to_path_buf();
    let line = format!("{line}\n");
    bounded("a fifo opened", async move {
        tokio::task::spawn_blocking(move || std::fs::write(fifo, line))
            .await
            .unwrap()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn commands_outlive_a_killed_helper_and_new_ones_start_from_its_successor() {
    let server = Server::start();
    server.wait_for_log("spawn helper started (pid ").await;
    let helper = logged_pid(&server.log(), "spawn helper started");
    assert_eq!(spawn_helper_of(server.pid()), Some(helper));
    let dir = tempfile::tempdir().unwrap();
    let ends = ["exit 3", "exit 5", "kill -TERM $$", "exit 0"];
    let mut commands = Vec::new();
    for (i, end) in ends.iter().enumerate() {
        let fifo = dir.path().join(format!("fifo{i}"));
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let mut running = Running::start(&server, waiting(&fifo, end)).await;
        running.wait_for("ready\n").await;
        commands.push((fifo, running));
    }
    // They are the helper's children.
    let children = children_of(helper);
    assert_eq!(children.len(), ends.len(), "{children:?}");

    // SAFETY: kill(2) on the helper, a process this test found.
    assert_eq!(
        unsafe { libc::kill(helper as libc::pid_t, libc::SIGKILL) },
        0
    );
    server.wait_for_log("the spawn helper (pid ").await;
    // Half end before a new helper is there, half after.
    let (before, after) = commands.split_at_mut(2);
    let mut ended = Vec::new();
    for (i, (fifo, _)) in before.iter().enumerate() {
        release(fifo, &format!("line{i}")).await;
    }
    server.wait_for_log("spawn helper restarted (pid ").await;
    let successor = logged_pid(&server.log(), "spawn helper restarted");
    assert_ne!(successor, helper);
    for (i, (fifo, _)) in after.iter().enumerate() {
        release(fifo, &format!("line{}", i + 2)).await;
    }
    for (_, running) in commands {
        ended.push(running.finish().await);
    }
    let server_pid = server.pid();
    for (i, (stdout, status)) in ended.iter().enumerate() {
        // Adopted by the server when the helper died.
        assert_eq!(
            stdout,
            &format!("ready\ngot line{i} parent {server_pid}\n"),
            "command {i}"
        );
        match i {
            0 => assert_exited(status, 3),
            1 => assert_exited(status, 5),
            2 => assert_killed(status, 15),
            _ => assert_exited(status, 0),
        }
    }

    // New commands start from the new helper, and work as before.
    assert_eq!(spawn_helper_of(server.pid()), Some(successor));
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "echo parent $PPID; echo oops >&2; exit 4").await;
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        format!("parent {successor}\n")
    );
    assert_eq!(ran.stderr, b"oops\n");
    assert_exited(ran.status(), 4);
    // Nothing was left a zombie of the server.
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}
