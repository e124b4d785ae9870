//! Nothing a killed command starts outlives it: processes that hop from
//! process group to process group every 20 ms, and children that leave
//! with `setsid`, die with their cancelled command, in its cgroup (where
//! the server can make one: as root on cgroup v2, skipped otherwise) or,
//! with `--no-cgroup`, in its session (hoppers only: `setsid` leaves a
//! session by design); the zombies they leave are reaped by the server, a
//! child subreaper; limits that need cgroups stop a server that cannot
//! have them. A command that ends by itself takes its session with it and
//! lets a daemon (its own session) live on, as over ssh.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::skip::{needs_program, skipped};
use common::*;
use tokio::io::AsyncReadExt;
use wiresh_proto::{ExecRequest, Message};

/// A process that forks every 20 ms, its parent exiting and the child
/// moving to a process group of its own: it never stays where it was. It
/// holds the FIFO `$FIFO` open for writing from start to end, writes `h`
/// there once, then `.` at each hop.
const HOPPER: &str = "
import os, time
out = os.open(os.environ['FIFO'], os.O_WRONLY)
os.write(out, b'h')
while True:
    if os.fork():
        os._exit(0)
    os.setpgid(0, 0)
    os.write(out, b'.')
    time.sleep(0.02)
";

/// A process that leaves for a session of its own, and stays; it holds
/// `$FIFO` open too, and writes `s` once it has left.
const LEAVER: &str = "
import os, time
out = os.open(os.environ['FIFO'], os.O_WRONLY)
os.setsid()
os.write(out, b's')
time.sleep(1000)
";

/// A tag no other process on the machine has, for this test's processes.
fn tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("wiresh-test-{what}-{}-{nanos}", std::process::id())
}

/// Live processes whose command line holds `tag`, with their process group.
fn tagged(tag: &str) -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(tag))
        })
        .filter_map(|pid| match proc_stat(pid)? {
            (state, _, group) if state != 'Z' && state != 'X' => Some((pid, group)),
            _ => None,
        })
        .collect()
}

/// Zombie children of `parent`.
fn zombies_of(parent: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some(('Z', ppid, _)) if ppid == parent))
        .count()
}

const NO_CGROUPS: &str = "the server can make no cgroup here (it needs cgroup v2 and root, or a \
                          delegated cgroup); run the tests as root on a cgroup v2 system";

/// The directory above the commands' cgroups, as the server's log names
/// it; `None` when the server makes none here.
fn cgroup_tree(server: &Server) -> Option<PathBuf> {
    let in_cgroups = "each command runs in a cgroup of its own under";
    server
        .log()
        .lines()
        .find_map(|l| l.split(in_cgroups).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
}

/// The name in `tree` of the cgroup a process named as its own (its
/// `0::/…/wiresh-PID/N` line of `/proc/PID/cgroup`); fails unless it is
/// one of `tree`'s.
fn own_cgroup_in(tree: &Path, line: &str) -> String {
    let (parent, name) = line.trim().rsplit_once('/').unwrap_or_default();
    assert!(
        line.starts_with("0::/") && Path::new(parent).file_name() == tree.file_name(),
        "the command ran in {line:?}, not in {}",
        tree.display()
    );
    name.to_string()
}

/// Waits until the cgroups `names` of `tree` are removed.
async fn assert_removed(tree: &Path, names: &[String]) {
    bounded("the commands' cgroups to be removed", async {
        while names.iter().any(|name| tree.join(name).exists()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// What [`run_and_cancel`] saw.
struct Cancelled {
    /// Every process the command started ended.
    ended: bool,
    /// The command's cgroup v2 as its main process named it while it ran
    /// (its line of `/proc/PID/cgroup`: `0::/path`).
    cgroup: String,
}

/// Starts `hoppers` hoppers and `leavers` setsid children, all tagged
/// `tag`, in one command on `server`; waits until each has started (and
/// the hoppers have hopped three times each, the leavers left); cancels
/// the command; and says whether all of them ended: every one holds a
/// FIFO the test reads open, so its end of file is the proof that none is
/// left (a process that changes its pid every 20 ms slips through looks
/// at `/proc`).
async fn run_and_cancel(server: &Server, tag: &str, hoppers: usize, leavers: usize) -> Cancelled {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut heard = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&fifo)
        .unwrap();
    let line = format!(
        "for i in $(seq {hoppers}); do python3 -c \"$HOPPER\" {tag} & done; \
         for i in $(seq {leavers}); do python3 -c \"$LEAVER\" {tag} & done; \
         exec sleep 1000"
    );
    let mut c = server.raw().await;
    let env = [
        ("HOPPER", HOPPER),
        ("LEAVER", LEAVER),
        ("FIFO", fifo.to_str().unwrap()),
    ];
    let pid = c
        .start(Message::Exec(ExecRequest {
            env: env
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ExecRequest::shell(line)
        }))
        .await;
    let mut said = Vec::new();
    bounded("the hoppers to hop and the leavers to leave", async {
        let count = |said: &[u8], c: u8| said.iter().filter(|&&b| b == c).count();
        while count(&said, b'h') < hoppers
            || count(&said, b's') < leavers
            || count(&said, b'.') < hoppers * 3
        {
            let mut buf = [0u8; 256];
            let n = heard.read(&mut buf).await.unwrap();
            assert!(n > 0, "the FIFO closed before all started: {said:?}");
            said.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    // The cgroup v2 line (a hybrid host lists v1 hierarchies too).
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_default()
        .to_string();
    c.send(Message::Cancel).await;
    let run = c.finish_started(pid).await;
    assert!(run.status.signal.is_some(), "{:?}", run.status);
    // The kill grace is 500 ms; the sweep goes on until nothing is left.
    let mut sink = [0u8; 4096];
    let ended = tokio::time::timeout(GONE_WITHIN * 3, async {
        while heard.read(&mut sink).await.unwrap_or(0) > 0 {}
    })
    .await
    .is_ok();
    let left: Vec<u32> = tagged(tag).iter().map(|(p, _)| *p).collect();
    kill_all(&left);
    Cancelled { ended, cgroup }
}

/// Waits until the server has no zombie children left.
async fn assert_no_zombies(server: &Server) {
    bounded("the server to reap what the command left", async {
        while zombies_of(server.pid()) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn hoppers_and_setsid_children_die_with_the_commands_cgroup() {
    if !needs_program("python3", "python3") {
        return;
    }
    let server = Server::start_with(&["--kill-grace", "500ms"]);
    let Some(tree) = cgroup_tree(&server) else {
        return skipped(NO_CGROUPS);
    };
    let tag = tag("cgroup");
    let run = run_and_cancel(&server, &tag, 10, 10).await;
    assert!(
        run.ended,
        "hoppers or setsid children survived their command"
    );
    assert_no_zombies(&server).await;
    // The command's cgroup went with it; what else is in the tree (the
    // server's own, the one made ahead for the next command) holds nothing
    // of the command's.
    let name = own_cgroup_in(&tree, &run.cgroup);
    assert_removed(&tree, &[name]).await;
    for entry in std::fs::read_dir(&tree).unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.file_name() != "server" {
            // One removed meanwhile held nothing either.
            let procs =
                std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
            assert_eq!(procs, "", "{:?} holds processes", entry.path());
        }
    }
}

/// Commands one after another on a connection each run in a cgroup of
/// their own (one made ahead for the next, never one shared), and each is
/// removed once its command has ended.
#[tokio::test]
async fn commands_in_a_row_each_get_a_cgroup_of_their_own() {
    let server = Server::start();
    let Some(tree) = cgroup_tree(&server) else {
        return skipped(NO_CGROUPS);
    };
    let mut conn = server.connect().await;
    let mut names = Vec::new();
    for _ in 0..5 {
        let ran = sh(&mut conn, "cat /proc/self/cgroup").await;
        assert_exited(ran.status(), 0);
        let text = ran.stdout_str();
        let line = text
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_default();
        names.push(own_cgroup_in(&tree, line));
    }
    let distinct: HashSet<_> = names.iter().collect();
    assert_eq!(
        distinct.len(),
        names.len(),
        "a cgroup was shared: {names:?}"
    );
    assert_removed(&tree, &names).await;
}

#[tokio::test]
async fn hoppers_die_with_the_commands_session_without_cgroups() {
    if !needs_program("python3", "python3") {
        return;
    }
    let server = Server::start_with(&["--kill-grace", "500ms", "--no-cgroup"]);
    server
        .wait_for_log("commands run in sessions of their own (--no-cgroup)")
        .await;
    let tag = tag("session");
    let run = run_and_cancel(&server, &tag, 10, 0).await;
    assert!(run.ended, "hoppers survived their command");
    assert_no_zombies(&server).await;
}

/// A fork bomb stays inside its command: with `--max-pids 32`, its cgroup
/// never holds more than 32 processes, and the server and other commands
/// go on. Skipped where the pids controller cannot be had (the server then
/// refuses to start, which `limits_without_cgroups_stop_the_server` checks).
#[tokio::test]
async fn a_fork_bomb_stays_inside_its_command() {
    let home = tempfile::tempdir().unwrap();
    let out = serve_to_its_end(home.path(), &["--check", "--max-pids", "32"]);
    if !out.status.success() {
        return skipped(&format!(
            "no cgroup with the pids controller for the server here ({}); run the tests as \
             root on a system whose cgroup v2 has the pids controller",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let server = Server::start_with(&["--max-pids", "32", "--kill-grace", "500ms"]);
    let mut c = server.raw().await;
    // 200 sleepers, as many as its cgroup lets it start.
    let line = "for i in $(seq 200); do sleep 30 & done 2>/dev/null; echo spawned; wait";
    let pid = c.start(exec(line)).await;
    assert_eq!(c.read_lines(1).await, ["spawned"]);
    let in_session = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| session_of(p) == Some(pid))
        .count();
    assert!(in_session <= 32, "the command had {in_session} processes");
    c.send(Message::Cancel).await;
    c.finish_started(pid).await;
    // The server still runs commands.
    let after = c.exec(ExecRequest::shell("echo alive")).await;
    assert_eq!(after.stdout, b"alive\n");
}

/// The session of live process `pid`.
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let session = fields.nth(2)?.parse().ok()?;
    (state != "Z" && state != "X").then_some(session)
}

/// `wiresh serve ARGS` with `WIRESH_HOME=home`, to its end (bounded).
fn serve_to_its_end(home: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("WIRESH_HOME", home)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(BOUND)
        .expect("wiresh serve did not end")
        .unwrap()
}

/// Limits that need cgroups stop a server that will not have them, with
/// why; it never starts and claims to hold them.
#[test]
fn limits_without_cgroups_stop_the_server() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--no-cgroup", "--max-pids", "10"][..],
        &["--check", "--no-cgroup", "--max-memory", "64M"][..],
    ] {
        let out = serve_to_its_end(home.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        assert!(
            stderr.contains("--max-pids and --max-memory need each command in a cgroup")
                && stderr.contains("--no-cgroup"),
            "{args:?}: {stderr}"
        );
    }
}

/// Starts a command that leaves a daemon (its own session, as `setsid`
/// makes one) and a plain background job (still in the command's
/// session), and ends by itself: the job dies with the command, the
/// daemon lives on, as over ssh (Ansible's `async` relies on it); returns
/// the daemon's pid, for the caller to look at and stop. The command ends
/// once the daemon leads its own session (field 6 of its `stat`): before
/// that it is still one of the command's, and ends with it.
async fn daemon_outlives_a_normal_end(server: &Server) -> u32 {
    let mut c = server.raw().await;
    let run = c
        .exec(ExecRequest::shell(
            "setsid sleep 1000 </dev/null >/dev/null 2>&1 & d=$!; echo $d; \
             until [ \"$(cut -d' ' -f6 /proc/$d/stat)\" = $d ]; do sleep 0.01; done; \
             sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
        ))
        .await;
    assert_eq!(run.status.code, Some(0), "{:?}", run.status);
    let pids: Vec<u32> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let (daemon, job) = (pids[0], pids[1]);
    assert_gone(&[job], None, GONE_WITHIN * 3, "the background job").await;
    // The job is gone, so the command's end has been dealt with.
    assert!(alive(daemon), "the daemon died with the command");
    daemon
}

#[tokio::test]
async fn a_daemon_outlives_its_commands_normal_end_in_a_cgroup() {
    let server = Server::start_with(&["--kill-grace", "500ms"]);
    if !server
        .log()
        .contains("each command runs in a cgroup of its own under")
    {
        return skipped("the server can make no cgroup here (see above)");
    }
    let daemon = daemon_outlives_a_normal_end(&server).await;
    let cgroup = std::fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap_or_default();
    kill_all(&[daemon]);
    assert!(
        cgroup.trim_end().ends_with("/detached"),
        "the daemon left its command's cgroup for the detached one: {cgroup}"
    );
}

#[tokio::test]
async fn a_daemon_outlives_its_commands_normal_end_without_cgroups() {
    let server = Server::start_with(&["--kill-grace", "500ms", "--no-cgroup"]);
    let daemon = daemon_outlives_a_normal_end(&server).await;
    kill_all(&[daemon]);
}
