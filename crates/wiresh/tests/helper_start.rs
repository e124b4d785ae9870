//! What the spawn helper starts, starts as the server would itself: as the
//! `--run-as` account (the helper runs as it too), on a pty leading its
//! session, in a cgroup of its own (created there, where the kernel can);
//! `--no-spawn-helper` starts commands from the server again, and `serve
//! --check` shows the setting; what the helper starts (it does so without
//! `fork`) begins exactly as what the server starts itself (the standard
//! library's spawn). (Every other test of commands runs them through the
//! helper: it is on by default.)

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

/// Whether this kernel can create a process in a cgroup (`clone3` with
/// `CLONE_INTO_CGROUP`: Linux 5.7, x86_64 for the helper) and no seccomp
/// filter (a container's) may refuse it.
fn clone_into_cgroup_expected() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let version = (
        numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0),
        numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0),
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let filtered = status
        .lines()
        .any(|l| l.starts_with("Seccomp:") && !l.ends_with('0'));
    cfg!(target_arch = "x86_64") && version >= (5u32, 7u32) && !filtered
}

#[tokio::test]
async fn commands_from_the_helper_are_created_in_their_cgroups_where_the_kernel_can() {
    let server = Server::start();
    server.wait_for_log("spawn helper started (pid ").await;
    if !server
        .log()
        .contains("each command runs in a cgroup of its own")
    {
        return skip::skipped("no cgroups for commands here (root and cgroup v2 needed)");
    }
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "cat /proc/self/cgroup").await;
    assert_exited(ran.status(), 0);
    let own = format!("/wiresh-{}/", server.pid());
    assert!(ran.stdout_str().contains(&own), "{}", ran.stdout_str());
    // The helper says so on its first start where it must move commands
    // instead (what a broken `clone3` would silently fall back to).
    let moved = server.log().contains("creates no process in a cgroup");
    assert_eq!(
        moved,
        !clone_into_cgroup_expected(),
        "Linux {} ({}): {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::env::consts::ARCH,
        server.log()
    );
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

/// What each probe of [`a_command_from_the_helper_starts_as_the_server_would_start_it`]
/// gave on `server`: its output, or its error.
async fn probes(server: &Server, script: &std::path::Path) -> Vec<String> {
    let argv = |words: &[&str]| ExecRequest::argv(words.iter().map(|w| w.to_string()).collect());
    let mut env = ExecRequest {
        cwd: Some("/tmp".into()),
        ..argv(&["env"])
    };
    env.env
        .insert("WIRESH_PROBE".into(), "set by the request".into());
    let requests = [
        // Nothing blocked, nothing ignored that the server ignores (the
        // standard library ignores SIGPIPE in every Rust program).
        argv(&["grep", "-E", "^Sig(Blk|Ign|Cgt)", "/proc/self/status"]),
        env,
        ExecRequest {
            cwd: Some("/usr".into()),
            ..argv(&["pwd"])
        },
        // A file without a `#!` line runs under /bin/sh, as execvp runs it.
        argv(&[script.to_str().unwrap(), "a", "b c"]),
        argv(&["/nonexistent/program"]),
        argv(&["/etc/passwd"]),
        argv(&["echo", "a\0b"]),
        // Nothing open but the three streams (and `ls`'s own directory):
        // not what the server inherited (its descriptor 7).
        argv(&["ls", "/proc/self/fd"]),
    ];
    let mut conn = server.connect().await;
    let mut outputs = Vec::new();
    for request in requests {
        let ran = run(&mut conn, request, None).await;
        outputs.push(match &ran.result {
            // The server's own home differs between the two servers.
            Ok(status) => format!(
                "code {:?} signal {:?}\n{}",
                status.code,
                status.signal,
                ran.stdout_str()
                    .lines()
                    .filter(|l| !l.starts_with("WIRESH_HOME="))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(e) => e.to_string(),
        });
        if ran.result.is_err() {
            conn = server.connect().await;
        }
    }
    outputs
}

#[tokio::test]
async fn a_command_from_the_helper_starts_as_the_server_would_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("no-shebang");
    std::fs::write(&script, "echo \"ran as $0 with [$1] and [$2]\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let with_helper = Server::start_with_an_inherited_descriptor(&[]);
    with_helper.wait_for_log("spawn helper started (pid ").await;
    let helper = probes(&with_helper, &script).await;
    let without = Server::start_with_an_inherited_descriptor(&["--no-spawn-helper"]);
    let server = probes(&without, &script).await;
    assert_eq!(helper, server);
    // And right, not only alike.
    let signals: Vec<&str> = helper[0].lines().skip(1).collect();
    assert_eq!(signals[0], "SigBlk:\t0000000000000000", "{signals:?}");
    let ignored = u64::from_str_radix(signals[1].trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ignored & (1 << (13 - 1)), 0, "SIGPIPE ignored: {signals:?}");
    assert!(
        helper[1].contains("\nWIRESH_PROBE=set by the request"),
        "{}",
        helper[1]
    );
    assert!(helper[1].contains("\nPATH="), "{}", helper[1]);
    assert!(helper[2].ends_with("\n/usr"), "{}", helper[2]);
    let ran = format!("ran as {} with [a] and [b c]", script.display());
    assert!(helper[3].ends_with(&ran), "{}", helper[3]);
    assert!(
        helper[4].contains("No such file or directory"),
        "{}",
        helper[4]
    );
    assert!(helper[5].contains("Permission denied"), "{}", helper[5]);
    assert!(helper[6].contains("nul byte"), "{}", helper[6]);
    let fds: Vec<&str> = helper[7].lines().skip(1).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{}", helper[7]);
}
