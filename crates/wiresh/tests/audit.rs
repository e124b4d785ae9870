//! `--audit-log`: one JSON line for every command, including one cut off
//! by a disconnect, with who ran what and how it ended, and never the token.

mod common;

use common::*;

/// `--audit-log`: one JSON line per command, with who ran what and how it
/// ended, the token never in it; a command cut off by a disconnect too.
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
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["action"], "exec");
    assert_eq!(lines[0]["target"], "echo audited");
    assert_eq!(lines[0]["code"], 0);
    assert_eq!(lines[0]["bytes_out"], 8);
    assert_eq!(lines[1]["code"], 3);
    assert_eq!(lines[2]["target"], "sleep 1000");
    assert_eq!(lines[2]["outcome"], "aborted");
    for line in &lines {
        assert!(line["identity"].as_str().unwrap().starts_with("token:"));
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
