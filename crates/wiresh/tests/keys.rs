//! Client keys (`wiresh keygen`, `authorized_clients`, `--auth`): a key
//! logs in over real TLS and is named in the logs and the audit log; an
//! unknown key is refused with what to do; the modes `either`, `token`,
//! `key` and `both` accept exactly what they say.

mod common;

use common::keys::{authorized_clients, KeyClient};
use common::*;

/// A server with `--auth MODE` and the given clients authorized (and
/// plaintext from loopback, for the library client with the token).
fn server(mode: &str, dir: &std::path::Path, lines: &[&str], extra: &[&str]) -> Server {
    let clients = authorized_clients(dir, lines);
    Server::start_with(
        &[
            &[
                "--auth",
                mode,
                "--authorized-clients",
                clients.to_str().unwrap(),
            ],
            extra,
        ]
        .concat(),
    )
}

#[tokio::test]
async fn a_key_logs_in_and_is_named_in_the_audit_log_and_the_command_line() {
    let alice = KeyClient::new("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = server(
        "key",
        dir.path(),
        &["# the team", &alice.line],
        &["--audit-log", audit.to_str().unwrap()],
    );
    let out = alice.run(&server, "echo by key").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"by key\n");
    assert!(
        !alice.home.path().join("token").exists(),
        "the client has no token"
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["identity"], "alice", "{text}");
    assert_eq!(line["target"], "echo by key");
    server
        .wait_for_log_line("the command line naming alice", |l| {
            l.contains("command finished") && l.contains("client=alice")
        })
        .await;
    assert!(
        server.log().contains(&alice.fingerprint),
        "the login names the key"
    );
}

#[tokio::test]
async fn an_unknown_key_is_refused_with_its_fingerprint_and_what_to_do() {
    let alice = KeyClient::new("alice").await;
    let mallory = KeyClient::new("mallory").await;
    let dir = tempfile::tempdir().unwrap();
    let server = server("either", dir.path(), &[&alice.line], &[]);
    let marker = dir.path().join("ran");
    let out = mallory
        .run(&server, &format!("touch {}", marker.display()))
        .await;
    assert_eq!(out.code, Some(255));
    let err = out.stderr_str();
    assert!(err.contains("auth_failed"), "{err}");
    assert!(err.contains(&mallory.fingerprint), "{err}");
    assert!(err.contains("authorized_clients"), "{err}");
    assert!(!marker.exists(), "an unknown key ran a command");
    // The authorized key still works on the same server.
    let out = alice.run(&server, "true").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
}

#[tokio::test]
async fn key_only_mode_refuses_the_token() {
    let alice = KeyClient::new("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let server = server("key", dir.path(), &[&alice.line], &[]);
    // A client with the right token and no key.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = client_command("exec", &server.addr.to_string(), home.path());
    cmd.env("WIRESH_TOKEN", server.token.expose())
        .args(["--", "echo must not run"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(255));
    assert!(out.stdout.is_empty());
    let err = out.stderr_str();
    assert!(
        err.contains("needs a client key") && err.contains("wiresh keygen"),
        "{err}"
    );
    // And the library client with the token, over plaintext loopback.
    let err = server.try_connect().await.unwrap_err().to_string();
    assert!(err.contains("needs a client key"), "{err}");
}

#[tokio::test]
async fn token_only_mode_ignores_keys() {
    let alice = KeyClient::new("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = server(
        "token",
        dir.path(),
        &[&alice.line],
        &["--audit-log", audit.to_str().unwrap()],
    );
    let out = alice.run(&server, "echo no").await;
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr_str().contains("no token was sent"),
        "{}",
        out.stderr_str()
    );
    // The same client with the token too is let in by the token.
    let out = cli_output(
        {
            let mut cmd = alice.exec(&server, "echo yes");
            cmd.env("WIRESH_TOKEN", server.token.expose());
            cmd
        },
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.contains("\"identity\":\"token:"), "{text}");
}

#[tokio::test]
async fn both_mode_needs_the_key_and_the_token() {
    let alice = KeyClient::new("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let server = server("both", dir.path(), &[&alice.line], &[]);
    let out = alice.run(&server, "echo key only").await;
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr_str().contains("token as well"),
        "{}",
        out.stderr_str()
    );
    let err = server.try_connect().await.unwrap_err().to_string();
    assert!(err.contains("both a client key and the token"), "{err}");
    let mut cmd = alice.exec(&server, "echo both");
    cmd.env("WIRESH_TOKEN", server.token.expose());
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"both\n");
}

#[tokio::test]
async fn either_mode_takes_a_key_or_the_token() {
    let alice = KeyClient::new("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let server = server("either", dir.path(), &[&alice.line], &[]);
    assert_eq!(alice.run(&server, "true").await.code, Some(0));
    let mut conn = server.connect().await; // the token, plaintext
    assert_exited(sh(&mut conn, "true").await.status(), 0);
}

/// A client's own policy narrows the server's for that client only.
#[tokio::test]
async fn a_client_line_can_carry_a_policy() {
    let alice = KeyClient::new("alice").await;
    let bot = KeyClient::new("bot").await;
    let dir = tempfile::tempdir().unwrap();
    let bot_line = format!("{} {{\"allow_shell\": false}}", bot.line);
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"allow_pty": false}"#).unwrap();
    let server = server(
        "key",
        dir.path(),
        &[&alice.line, &bot_line],
        &["--policy", policy.to_str().unwrap()],
    );
    let out = bot.run(&server, "echo shell").await;
    assert_ne!(out.code, Some(0));
    let err = out.stderr_str();
    assert!(err.contains("forbidden"), "{err}");
    // The refusal is the bot's own line's, and says so (issue 19, 9).
    assert!(
        err.contains("this client key's line in the server's authorized_clients")
            && !err.contains("the server's policy"),
        "{err}"
    );
    let out = alice.run(&server, "echo shell").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    // A refusal of the server's own policy still names it.
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["exec", "-t", "-H", &server.addr.to_string(), "--", "true"]);
    isolated(&mut cmd, bot.home.path());
    let out = cli_output(cmd, Some(Vec::new())).await;
    let err = out.stderr_str();
    assert!(
        err.contains("terminals (pty) are disabled by the server's policy"),
        "{err}"
    );
}

/// A key is named `account@host` after the user database's account, as
/// ssh-keygen does, even with `$USER` unset (cron, a unit) or wrong.
#[tokio::test]
async fn keygen_names_the_key_after_the_account_not_user() {
    let account = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("this test's account");
    for user in [None, Some("someone-else")] {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("keygen");
        isolated(&mut cmd, home.path());
        match user {
            None => cmd.env_remove("USER"),
            Some(user) => cmd.env("USER", user),
        };
        let out = cli_output(cmd, None).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr_str());
        let line = out.stdout_str();
        let name = line
            .split_whitespace()
            .nth(1)
            .expect("a name after the fingerprint");
        assert!(
            name.starts_with(&format!("{}@", account.name)),
            "{line:?} with USER={user:?}"
        );
    }
}

#[tokio::test]
async fn keygen_never_overwrites_and_keys_must_be_private() {
    let alice = KeyClient::new("alice").await;
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("keygen");
    isolated(&mut cmd, alice.home.path());
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr_str().contains(&alice.fingerprint),
        "{}",
        out.stderr_str()
    );
    use std::os::unix::fs::PermissionsExt;
    let key = alice.home.path().join("client.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = server("key", dir.path(), &[&alice.line], &[]);
    let out = alice.run(&server, "true").await;
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr_str().contains("chmod 600"),
        "{}",
        out.stderr_str()
    );
}

/// A flood of wrong tokens locks its address out, even for the right
/// token; a client whose authorized key proves who it is still gets in
/// from that address (issue 9: keep the penalty, spare the key).
#[tokio::test]
async fn a_key_gets_in_while_wrong_tokens_lock_its_address_out() {
    let alice = KeyClient::new("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let server = server("either", dir.path(), &[&alice.line], &[]);
    wrong_tokens(server.addr, 6).await;
    let (mut c, _) = RawConn::greeted(server.addr).await;
    c.send(wiresh_proto::Message::Auth {
        token: server.token.clone(),
    })
    .await;
    c.expect_error(wiresh_proto::ErrorCode::RateLimited).await;

    let out = alice.run(&server, "echo still in").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"still in\n");
}
