//! Running a command: its output on stdout and stderr, kept apart; exit
//! codes and signals; argv without a shell, its program found in the
//! server's own `PATH`; env and cwd; and requests the server refuses (a
//! program that cannot start, a malformed `exec`) while the connection stays
//! usable; an `exec` sent with the handshake.

mod common;

use common::*;
use wiresh::client::{ClientError, Connection, Endpoint, Output};
use wiresh_proto::{ErrorCode, ExecRequest, Message};

#[tokio::test]
async fn exec_echo_library_and_raw() {
    let server = Server::start();
    let mut conn = server.connect().await;
    assert_eq!(conn.hello().version, 1);
    assert_eq!(conn.hello().max_body, 1024 * 1024);
    assert_eq!(conn.hello().max_header, 64 * 1024);

    let ran = sh(&mut conn, "echo hello world").await;
    assert_eq!(ran.stdout, b"hello world\n");
    assert_eq!(ran.stderr, b"");
    assert_exited(ran.status(), 0);

    let mut raw = server.raw().await;
    let run = raw.exec(ExecRequest::shell("echo hi")).await;
    assert!(run.pid > 1, "started pid {}", run.pid);
    assert_eq!(run.stdout, b"hi\n");
    assert_exited(&run.status, 0);
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let ran = sh(
        &mut conn,
        r"printf 'out1\n'; printf 'err1\n' >&2; printf 'out2\n'; printf '\000\377err2\n' >&2",
    )
    .await;
    assert_exited(ran.status(), 0);
    assert_eq!(ran.stdout, b"out1\nout2\n");
    assert_eq!(ran.stderr, b"err1\n\x00\xfferr2\n");
    // No chunk mixes the streams: every stdout chunk holds only "out" text.
    for c in &ran.chunks {
        match c {
            Output::Stdout(b) => assert!(!b.windows(3).any(|w| w == b"err"), "{c:?}"),
            Output::Stderr(b) => assert!(!b.windows(3).any(|w| w == b"out"), "{c:?}"),
        }
    }
}

#[tokio::test]
async fn exit_codes_signals_and_argv() {
    let server = Server::start();
    let mut conn = server.connect().await;

    assert_exited(sh(&mut conn, "exit 3").await.status(), 3);
    assert_exited(sh(&mut conn, "false").await.status(), 1);
    assert_killed(sh(&mut conn, "kill -9 $$").await.status(), 9);
    assert_killed(sh(&mut conn, "kill -TERM $$").await.status(), 15);

    // argv: no shell, so spaces, quotes and `$` stay inside their argument.
    let args = ["printf", "%s|", "a b", "c'd \"e\"", "$HOME", "*", ""];
    let ran = run(
        &mut conn,
        ExecRequest::argv(args.iter().map(|s| s.to_string()).collect()),
        None,
    )
    .await;
    assert_exited(ran.status(), 0);
    assert_eq!(ran.stdout_str(), "a b|c'd \"e\"|$HOME|*||");

    // The same words through the shell are split and expanded.
    let ran = sh(&mut conn, "printf '%s|' a   b").await;
    assert_eq!(ran.stdout_str(), "a|b|");
}

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let mut conn = server.connect().await;
    let req = ExecRequest {
        env: [("WIRESH_TEST_VAR".to_string(), "x y'z".to_string())].into(),
        cwd: Some(dir.to_str().unwrap().to_string()),
        ..ExecRequest::shell(r#"printf '%s|%s' "$WIRESH_TEST_VAR" "$(pwd -P)""#)
    };
    let ran = run(&mut conn, req, None).await;
    assert_exited(ran.status(), 0);
    assert_eq!(ran.stdout_str(), format!("x y'z|{}", dir.display()));
}

/// As `ssh host command`: with no directory asked for, a command starts in
/// the account's home directory, with a login's environment (the account's
/// `HOME`, `USER`, `LOGNAME`, `SHELL`, `PATH`; `TERM` on a pty), the host's
/// locale, and what the client sets; nothing else of the server's own
/// environment (its `WIRESH_HOME`, a variable of its unit or shell).
#[tokio::test]
async fn commands_run_in_the_accounts_home_with_a_login_environment() {
    let server = Server::start_in(
        tempfile::tempdir().unwrap(),
        &["--allow-plaintext"],
        &[
            ("WIRESH_TEST_SERVER_ONLY", "leaked".as_ref()),
            ("LANG", "C.UTF-8".as_ref()),
        ],
    );
    let uid = nix::unistd::geteuid();
    let account = nix::unistd::User::from_uid(uid)
        .unwrap()
        .expect("this test's account");
    let mut raw = server.raw().await;
    let req = ExecRequest {
        env: [("WIRESH_FROM_CLIENT".to_string(), "x".to_string())].into(),
        ..ExecRequest::shell("pwd -P; env")
    };
    let run = raw.exec(req).await;
    assert_exited(&run.status, 0);
    let out = String::from_utf8(run.stdout).unwrap();
    let mut lines = out.lines();
    let home = account.dir.canonicalize().unwrap();
    assert_eq!(lines.next(), Some(home.to_str().unwrap()), "{out}");
    let env: std::collections::BTreeMap<&str, &str> =
        lines.filter_map(|l| l.split_once('=')).collect();
    let path = if uid.is_root() {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    };
    let shell = account.shell.to_str().unwrap();
    let dir = account.dir.to_str().unwrap();
    for (name, value) in [
        ("HOME", dir),
        ("USER", account.name.as_str()),
        ("LOGNAME", account.name.as_str()),
        ("SHELL", shell),
        ("PATH", path),
        ("LANG", "C.UTF-8"),
        ("WIRESH_FROM_CLIENT", "x"),
    ] {
        assert_eq!(env.get(name), Some(&value), "{name} in\n{out}");
    }
    for leaked in [
        "WIRESH_HOME",
        "WIRESH_TEST_SERVER_ONLY",
        "CARGO_MANIFEST_DIR",
    ] {
        assert!(!env.contains_key(leaked), "{leaked} leaked:\n{out}");
    }
    assert!(!env.contains_key("TERM"), "TERM without a terminal:\n{out}");

    // A relative directory is taken from the home directory, as `cd` there.
    let run = raw
        .exec(ExecRequest {
            cwd: Some(".".into()),
            ..ExecRequest::shell("pwd -P")
        })
        .await;
    assert_eq!(run.stdout, format!("{}\n", home.display()).as_bytes());

    // On a pty, the terminal's type too.
    let run = raw
        .exec(ExecRequest {
            pty: Some(wiresh_proto::PtyRequest {
                term: "xterm-256color".into(),
                cols: 80,
                rows: 24,
            }),
            ..ExecRequest::shell("echo \"term=$TERM home=$(pwd -P)\"")
        })
        .await;
    assert_exited(&run.status, 0);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        out.contains(&format!("term=xterm-256color home={}", home.display())),
        "{out:?}"
    );
}

/// A bare program name in `argv` is looked up in the server's own `PATH`,
/// never in a `PATH` the request sets in `env`: that `PATH` reaches the
/// program, but does not choose it. A name only the request's `PATH` knows
/// is `spawn_failed`.
#[tokio::test]
async fn argv_programs_are_found_in_the_servers_path_not_the_requests() {
    let server = Server::start();
    let evil = tempfile::tempdir().unwrap();
    let evil_dir = evil.path().canonicalize().unwrap();
    for name in ["true", "printenv", "wiresh-only-in-the-request"] {
        let fake = evil_dir.join(name);
        std::fs::write(&fake, "#!/bin/sh\necho hijacked\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let with_path = |argv: &[&str]| ExecRequest {
        env: [("PATH".to_string(), evil_dir.display().to_string())].into(),
        ..ExecRequest::argv(argv.iter().map(|a| a.to_string()).collect())
    };
    let mut raw = server.raw().await;

    let run = raw.exec(with_path(&["true"])).await;
    assert_exited(&run.status, 0);
    assert_eq!(run.stdout, b"", "the request's PATH chose the program");

    let run = raw.exec(with_path(&["printenv", "PATH"])).await;
    assert_exited(&run.status, 0);
    assert_eq!(run.stdout, format!("{}\n", evil_dir.display()).as_bytes());

    raw.send(Message::Exec(with_path(&["wiresh-only-in-the-request"])))
        .await;
    let message = raw.expect_error(ErrorCode::SpawnFailed).await;
    assert!(message.contains("server's PATH"), "{message}");

    // A name with a slash is used as given: here, the request's own file,
    // and a relative one is taken from the command's working directory.
    let fake = evil_dir.join("true");
    let run = raw.exec(with_path(&[fake.to_str().unwrap()])).await;
    assert_eq!(run.stdout, b"hijacked\n");
    let run = raw
        .exec(ExecRequest {
            cwd: Some(evil_dir.display().to_string()),
            ..ExecRequest::argv(vec!["./true".into()])
        })
        .await;
    assert_eq!(run.stdout, b"hijacked\n");
}

#[tokio::test]
async fn refused_requests_keep_the_connection() {
    let server = Server::start();
    let mut conn = server.connect().await;

    let ran = run(
        &mut conn,
        ExecRequest::argv(vec!["/nonexistent/wiresh-test-program".into()]),
        None,
    )
    .await;
    match &ran.result {
        Err(e @ ClientError::Remote { code, .. }) => {
            assert_eq!(*code, ErrorCode::SpawnFailed, "{e}");
            assert!(e.connection_usable());
        }
        other => panic!("expected spawn_failed, got {other:?}"),
    }
    let bad_cwd = ExecRequest {
        cwd: Some("/nonexistent/wiresh-test-dir".into()),
        ..ExecRequest::shell("true")
    };
    assert!(matches!(
        run(&mut conn, bad_cwd, None).await.result,
        Err(ClientError::Remote {
            code: ErrorCode::SpawnFailed,
            ..
        })
    ));
    assert_eq!(sh(&mut conn, "echo still").await.stdout, b"still\n");

    // bad_request, on the raw protocol: neither command nor argv, an empty
    // argv, and both.
    let mut raw = server.raw().await;
    let both = ExecRequest {
        command: Some("true".into()),
        argv: Some(vec!["true".into()]),
        ..Default::default()
    };
    for req in [ExecRequest::default(), ExecRequest::argv(vec![]), both] {
        raw.send(Message::Exec(req)).await;
        raw.expect_error(ErrorCode::BadRequest).await;
    }
    let run = raw.exec(ExecRequest::shell("echo ok")).await;
    assert_eq!(run.stdout, b"ok\n");
}

/// A one-shot client sends its `exec` with the handshake (PROTOCOL.md
/// 7.2): the command runs as usual, with input; a refusal still leaves the
/// connection usable; another request than the one sent is refused by the
/// client; and with a wrong token nothing sent ahead runs.
#[tokio::test]
async fn an_exec_sent_with_the_handshake() {
    let server = Server::start();
    let endpoint = server.endpoint();

    let mut req = ExecRequest::shell("cat; echo done >&2");
    req.stdin = true;
    let mut conn = Connection::connect_running(&endpoint, &req).await.unwrap();
    let ran = run(&mut conn, req, Some(b"typed\n".to_vec())).await;
    assert_exited(ran.status(), 0);
    assert_eq!(
        (&ran.stdout[..], &ran.stderr[..]),
        (&b"typed\n"[..], &b"done\n"[..])
    );
    assert_eq!(sh(&mut conn, "echo next").await.stdout, b"next\n");

    let missing = ExecRequest::argv(vec!["/nonexistent/wiresh-test-program".into()]);
    let mut conn = Connection::connect_running(&endpoint, &missing)
        .await
        .unwrap();
    let ran = run(&mut conn, missing, None).await;
    assert!(matches!(
        ran.result,
        Err(ClientError::Remote {
            code: ErrorCode::SpawnFailed,
            started: false,
            ..
        })
    ));
    assert_eq!(sh(&mut conn, "echo still").await.stdout, b"still\n");

    let mut conn = Connection::connect_running(&endpoint, &ExecRequest::shell("true"))
        .await
        .unwrap();
    let other = run(&mut conn, ExecRequest::shell("false"), None).await;
    assert!(
        matches!(other.result, Err(ClientError::Protocol(_))),
        "{:?}",
        other.result
    );

    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("ran");
    let wrong = Endpoint {
        token: wiresh_proto::Secret("wrong-token".to_string()),
        ..endpoint
    };
    let touch = ExecRequest::shell(format!("touch '{}'", witness.display()));
    match Connection::connect_running(&wrong, &touch).await {
        Err(ClientError::Remote {
            code: ErrorCode::AuthFailed,
            started: false,
            ..
        }) => {}
        other => panic!("expected auth_failed, got {other:?}"),
    }
    server.wait_for_log("authentication failed").await;
    assert!(
        !witness.exists(),
        "a command sent ahead ran without authentication"
    );
}
