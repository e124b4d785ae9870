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

/// `--run-as USER`: a server started as root runs commands as USER, with
/// USER's login environment and home directory (`/` when it has none, as
/// `nobody`'s usually is missing); one not started as root refuses the flag.
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
    let ran = sh(&mut conn, "id -u; echo $HOME $USER $LOGNAME; pwd -P").await;
    assert_exited(ran.status(), 0);
    let nobody = wiresh::privilege::Account::lookup("nobody").expect("a nobody user");
    let text = ran.stdout_str();
    let mut lines = text.lines();
    let uid: u32 = lines.next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "commands still run as root");
    assert_eq!(uid, nobody.uid(), "{text}");
    let user = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        lines.next(),
        Some(format!("{} nobody nobody", user.dir.display()).as_str()),
        "{text}"
    );
    let start = user.dir.canonicalize().unwrap_or_else(|_| "/".into());
    assert_eq!(lines.next(), start.to_str(), "{text}");
}

/// Whether a command was refused by the policy (`forbidden`).
fn forbidden(ran: &Ran) -> bool {
    matches!(
        ran.result,
        Err(ClientError::Remote {
            code: ErrorCode::Forbidden,
            ..
        })
    )
}

/// The escapes an attack run found under a policy with an allow-list and
/// the shell off: each must now be refused, and nothing of the client's
/// must run.
#[tokio::test]
async fn a_restricting_policy_cannot_be_escaped_through_env_path_or_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let allowed_dir = dir.path().join("reports");
    std::fs::create_dir(&allowed_dir).unwrap();
    // A directory of the client's own programs: a `date` that leaves a mark.
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    let mark = dir.path().join("escaped");
    let fake = evil.join("date");
    std::fs::write(&fake, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = dir.path().join("report.sh");
    std::fs::write(&script, "#!/bin/bash\necho report\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "allow_shell": false,
            "allowed_programs": ["date", script.to_str().unwrap()],
            "allowed_env": ["LANG", "LD_PRELOAD"],
            "allowed_cwd": [allowed_dir.to_str().unwrap()],
        })
        .to_string(),
    )
    .unwrap();
    let server = Server::start_with(&["--policy", policy.to_str().unwrap()]);
    let mut conn = server.connect().await;
    let with_env = |argv: &[&str], env: &[(&str, String)]| {
        let mut req = ExecRequest::argv(argv.iter().map(|a| a.to_string()).collect());
        req.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        req
    };

    // LD_PRELOAD into an allowed program: refused even though listed.
    let preload = with_env(
        &["date"],
        &[("LD_PRELOAD", evil.join("x.so").display().to_string())],
    );
    assert!(forbidden(&run(&mut conn, preload, None).await));
    // BASH_ENV into an allowed bash script.
    let bash_env = with_env(
        &[script.to_str().unwrap()],
        &[("BASH_ENV", fake.display().to_string())],
    );
    assert!(forbidden(&run(&mut conn, bash_env, None).await));
    // PATH pointing at the client's programs, so that `date` means theirs.
    let path = with_env(&["date"], &[("PATH", evil.display().to_string())]);
    assert!(forbidden(&run(&mut conn, path, None).await));
    // The client's `date` named by its path is not the allowed `date`.
    let by_path = with_env(&[fake.to_str().unwrap()], &[]);
    assert!(forbidden(&run(&mut conn, by_path, None).await));
    // A working directory outside the allowed one.
    let mut outside = with_env(&[script.to_str().unwrap()], &[]);
    outside.cwd = Some(dir.path().display().to_string());
    assert!(forbidden(&run(&mut conn, outside, None).await));
    assert!(!mark.exists(), "the client's program ran");

    // What the policy allows still runs: the server's `date`, a listed
    // variable, the allowed directory.
    let date = run(
        &mut conn,
        with_env(&["date"], &[("LANG", "C".into())]),
        None,
    )
    .await;
    assert_exited(date.status(), 0);
    let mut report = with_env(&[script.to_str().unwrap()], &[]);
    report.cwd = Some(allowed_dir.display().to_string());
    let report = run(&mut conn, report, None).await;
    assert_exited(report.status(), 0);
    assert_eq!(report.stdout, b"report\n");
    assert!(!mark.exists(), "the client's program ran");
}
