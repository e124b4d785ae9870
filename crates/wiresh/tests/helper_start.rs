//! What the spawn helper starts, starts as the server would itself: as the
//! `--run-as` account (the helper runs as it too), on a pty leading its
//! session, in a cgroup of its own; `--no-spawn-helper` starts commands
//! from the server again, and `serve --check` shows the setting. (Every
//! other test of commands runs them through the helper: it is on by
//! default.)

mod common;

use common::*;
use wiresh_proto::{ExecRequest, Message, PtyRequest};

/// The real uid in `/proc/PID/status`.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a Uid line")
}

#[tokio::test]
async fn the_helper_runs_as_the_run_as_account_and_so_do_its_commands() {
    if !wiresh::privilege::is_root() {
        return skip::skipped("--run-as needs root");
    }
    let server = Server::start_with(&["--run-as", "nobody"]);
    server.wait_for_log("spawn helper started (pid ").await;
    let helper = spawn_helper_of(server.pid()).expect("a spawn helper");
    let nobody = wiresh::privilege::Account::lookup("nobody").unwrap();
    assert_eq!(uid_of(helper), nobody.uid());
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "id -u; echo $PPID; cat /proc/self/cgroup").await;
    assert_exited(ran.status(), 0);
    let text = ran.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], nobody.uid().to_string(), "{text}");
    assert_eq!(lines[1], helper.to_string(), "{text}");
    if server
        .log()
        .contains("each command runs in a cgroup of its own")
    {
        // Its own, not the helper's (which is the server's).
        let v2 = lines.iter().find(|l| l.starts_with("0::"));
        let v2 = v2.unwrap_or_else(|| panic!("no cgroup v2 line: {text}"));
        let own = format!("/wiresh-{}/", server.pid());
        assert!(v2.contains(&own) && !v2.ends_with("/server"), "{text}");
    }
}

#[tokio::test]
async fn a_pty_command_from_the_helper_leads_a_session_on_its_terminal() {
    let server = Server::start();
    server.wait_for_log("spawn helper started (pid ").await;
    let helper = spawn_helper_of(server.pid()).expect("a spawn helper");
    let mut raw = server.raw().await;
    raw.send(Message::Exec(ExecRequest {
        pty: Some(PtyRequest {
            term: "xterm".into(),
            cols: 90,
            rows: 20,
        }),
        ..ExecRequest::shell("tty; stty size; echo $PPID; ps -o sid= -p $$; exit 2")
    }))
    .await;
    let run = raw.finish().await;
    assert_exited(&run.status, 2);
    let out = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = out.split("\r\n").map(str::trim).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines[1], "20 90", "{out:?}");
    assert_eq!(lines[2], helper.to_string(), "{out:?}");
    assert_eq!(lines[3], run.pid.to_string(), "{out:?}");
}

#[tokio::test]
async fn no_spawn_helper_starts_commands_from_the_server() {
    let server = Server::start_with(&["--no-spawn-helper"]);
    assert_eq!(spawn_helper_of(server.pid()), None);
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "echo $PPID").await;
    assert_eq!(ran.stdout_str().trim(), server.pid().to_string());
    assert!(!server.log().contains("spawn helper"), "{}", server.log());

    let home = tempfile::tempdir().unwrap();
    let check = std::process::Command::new(BIN)
        .args(["serve", "--check", "--no-spawn-helper"])
        .env("WIRESH_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("no-spawn-helper = true  # flag"),
        "{stdout}"
    );
}
