//! `--audit-log`: a `start` line before every command and transfer runs
//! and an `end` line when it ends (one line for a refused one), with who
//! ran what and how it ended, never the token; lines whole or not at all;
//! activity refused once the log cannot be written (a full disk, the file
//! removed), and the command whose start could not be recorded never runs.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wiresh::client::ClientError;
use wiresh_proto::ErrorCode;

/// Every line of an audit log, parsed (each must be JSON).
fn audit_lines(log: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// `--audit-log`: a start and an end line per command, with who ran what
/// and how it ended, the token never in it; a command cut off by a
/// disconnect too.
#[tokio::test]
async fn audit_log_records_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "echo audited").await.status(), 0);
    assert_exited(sh(&mut conn, "exit 3").await.status(), 3);
    let mut raw = server.raw().await;
    raw.start(exec("sleep 1000")).await;
    drop(raw);
    server.wait_for_log("client disconnected").await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(server.token.expose()),
        "the token leaked into the audit log"
    );
    let lines = audit_lines(&log);
    let ends: Vec<_> = lines.iter().filter(|l| l["event"] == "end").collect();
    assert_eq!(ends.len(), 3, "{text}");
    assert_eq!(ends[0]["action"], "exec");
    assert_eq!(ends[0]["target"], "echo audited");
    assert_eq!(ends[0]["code"], 0);
    assert_eq!(ends[0]["bytes_out"], 8);
    assert_eq!(ends[1]["code"], 3);
    assert_eq!(ends[2]["target"], "sleep 1000");
    assert_eq!(ends[2]["outcome"], "aborted");
    // Each end follows its own start.
    for end in &ends {
        let start = lines
            .iter()
            .position(|l| l["event"] == "start" && l["id"] == end["id"])
            .unwrap_or_else(|| panic!("no start line for {end}"));
        let end_at = lines.iter().position(|l| l == *end).unwrap();
        assert!(start < end_at, "{text}");
        assert_eq!(lines[start]["target"], end["target"]);
    }
    for line in &lines {
        assert!(line["identity"].as_str().unwrap().starts_with("token:"));
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn refused_internal(ran: &Ran) -> bool {
    matches!(
        ran.result,
        Err(ClientError::Remote {
            code: ErrorCode::Internal,
            ..
        })
    )
}

/// A deleted audit log is noticed: nothing runs any more.
#[tokio::test]
async fn a_removed_audit_log_stops_all_activity() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "true").await.status(), 0);
    std::fs::remove_file(&log).unwrap();
    let mark = dir.path().join("ran");
    let ran = sh(&mut conn, &format!("touch {}", mark.display())).await;
    assert!(refused_internal(&ran), "{:?}", ran.result);
    assert!(!mark.exists(), "a command ran without an audit line");
    server.wait_for_log("was removed or replaced").await;
}

/// A small filesystem, mounted for one test and unmounted after; `None`
/// where this machine does not let the test mount one.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Fills what space is left with a file.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// On a full disk the command whose start line cannot be written does not
/// run, no torn line is left, and after a restart the log goes on with
/// whole lines.
#[tokio::test]
async fn a_full_disk_refuses_commands_without_tearing_lines() {
    let Some(disk) = SmallDisk::mount("64k") else {
        skip::skipped("this machine does not let the test mount a small tmpfs (it needs root)");
        return;
    };
    let log = disk.path().join("audit.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("ran");
    {
        let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
        let mut conn = server.connect().await;
        assert_exited(sh(&mut conn, "true").await.status(), 0);
        disk.fill();
        // A long command line, so its start line cannot fit in what is left.
        let long = format!("touch {} # {}", mark.display(), "x".repeat(8000));
        let ran = sh(&mut conn, &long).await;
        assert!(refused_internal(&ran), "{:?}", ran.result);
        assert!(!mark.exists(), "the command ran without its start line");
        let text = std::fs::read(&log).unwrap();
        assert!(text.ends_with(b"\n"), "a torn line was left");
        assert_eq!(audit_lines(&log).len(), 2, "start and end of `true`");
    }
    // Space again, and a restart: the log goes on.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "true").await.status(), 0);
    assert_eq!(audit_lines(&log).len(), 4);
}

/// A torn last line (from a crash) is cut off when the server starts, so
/// the next record is not glued onto it.
#[tokio::test]
async fn a_torn_last_line_is_repaired_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::write(
        &log,
        "{\"event\":\"end\",\"id\":1}\n{\"event\":\"start\",\"bytes_out\":",
    )
    .unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
    server.wait_for_log("torn last line").await;
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "true").await.status(), 0);
    let lines = audit_lines(&log);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1]["target"], "true");
}
