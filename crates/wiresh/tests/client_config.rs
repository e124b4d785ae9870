//! The client's per-host defaults, `$WIRESH_HOME/client.toml`: port,
//! fingerprint and key for a host named by `-H`, flags winning over them,
//! and mistakes reported with their line.

mod common;

use common::keys::authorized_clients;
use common::*;

/// `wiresh exec -H HOST -- COMMAND` from `home`, with no token.
async fn exec(home: &std::path::Path, host: &str, command: &str) -> CliOutput {
    let mut cmd = client_command("exec", host, home);
    cmd.args(["--", command]);
    cli_output(cmd, None).await
}

#[tokio::test]
async fn port_fingerprint_and_key_come_from_client_toml() {
    let home = tempfile::tempdir().unwrap();
    // A key kept under another name than the default.
    let mut keygen = tokio::process::Command::new(BIN);
    keygen
        .args(["keygen", "--name", "ci", "--key"])
        .arg(home.path().join("ci.key"));
    isolated(&mut keygen, home.path());
    let out = cli_output(keygen, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let line = out.stdout_str();
    let dir = tempfile::tempdir().unwrap();
    let clients = authorized_clients(dir.path(), &[line.trim()]);
    let server = Server::start_exactly(&[
        "--auth",
        "key",
        "--authorized-clients",
        clients.to_str().unwrap(),
    ]);
    let config = home.path().join("client.toml");
    let write = |port: u16, fingerprint: &str| {
        std::fs::write(
            &config,
            format!(
                "# how to reach the test server\n[hosts.\"127.0.0.1\"]\nport = {port}\n\
                 fingerprint = \"{fingerprint}\"\nkey = \"ci.key\"\n"
            ),
        )
        .unwrap()
    };
    write(server.addr.port(), &server.fingerprint());
    // -H without a port: the file's port, key and fingerprint.
    let out = exec(home.path(), "127.0.0.1", "echo configured").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"configured\n");
    assert!(
        !home.path().join("known_hosts").exists(),
        "a fingerprint from the file is pinned in advance, not learned"
    );
    // A port on -H beats the file's.
    write(1, &server.fingerprint());
    let out = exec(home.path(), &server.addr.to_string(), "true").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    // A wrong fingerprint in the file is refused like a changed one.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    write(server.addr.port(), &wrong);
    let out = exec(home.path(), "127.0.0.1", "echo must not run").await;
    assert_eq!(out.code, Some(255));
    assert!(out.stdout.is_empty());
    assert!(out.stderr_str().contains("WARNING") && out.stderr_str().contains(&wrong));
}

#[tokio::test]
async fn a_mistake_in_client_toml_names_its_line() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("client.toml"),
        "[hosts.\"127.0.0.1\"]\nport = 7878\nfingerprnt = \"sha256:00\"\n",
    )
    .unwrap();
    let out = exec(home.path(), "127.0.0.1", "true").await;
    assert_eq!(out.code, Some(255));
    let err = out.stderr_str();
    assert!(
        err.contains("client.toml") && err.contains("line 3"),
        "{err}"
    );
    assert!(err.contains("did you mean `fingerprint`?"), "{err}");
}
