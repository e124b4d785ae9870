//! What an authenticated client may run, and as whom: `--policy` (shell
//! mode off, an allow-list of programs) and `--run-as USER`.

mod common;

use common::*;
use wiresh::client::ClientError;
use wiresh_proto::{ErrorCode, ExecRequest};

/// `--policy`: shell mode off and an allow-list of programs.
#[tokio::test]
async fn policy_denies_forbidden_commands() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"allow_shell": false, "allowed_programs": ["echo"], "allow_files": false}"#,
    )
    .unwrap();
    let server = Server::start_with(&["--policy", policy.to_str().unwrap()]);
    let mut conn = server.connect().await;
    let forbidden = |ran: &Ran| {
        matches!(
            ran.result,
            Err(ClientError::Remote {
                code: ErrorCode::Forbidden,
                ..
            })
        )
    };
    assert!(forbidden(&sh(&mut conn, "echo via shell").await));
    let id = run(&mut conn, ExecRequest::argv(vec!["id".into()]), None).await;
    assert!(forbidden(&id));
    let echo = run(
        &mut conn,
        ExecRequest::argv(vec!["echo".into(), "allowed".into()]),
        None,
    )
    .await;
    assert_exited(echo.status(), 0);
    assert_eq!(echo.stdout, b"allowed\n");
    // A policy file with a typo is refused at start, not silently ignored.
    std::fs::write(&policy, r#"{"allow_shel": false}"#).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .env("WIRESH_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy"));
}

/// `--run-as USER`: a server started as root runs commands as USER; one not
/// started as root refuses the flag.
#[tokio::test]
async fn run_as_drops_root_for_every_command() {
    if !wiresh::privilege::is_root() {
        let out = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--run-as", "nobody"])
            .env("WIRESH_HOME", tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
        return;
    }
    let server = Server::start_with(&["--run-as", "nobody"]);
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "id -u; echo $HOME").await;
    assert_exited(ran.status(), 0);
    let nobody = wiresh::privilege::Account::lookup("nobody").expect("a nobody user");
    let text = ran.stdout_str();
    let uid: u32 = text.lines().next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "commands still run as root");
    assert_eq!(uid, nobody.uid(), "{text}");
}
