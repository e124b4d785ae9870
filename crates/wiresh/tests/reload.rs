//! Reload on SIGHUP: running commands and a 1 GiB transfer go on through
//! it; a client removed from authorized_clients is refused after it, and
//! its open connections are closed (a running command first gets the
//! shutdown grace), as are those of a token that was replaced, while other
//! clients' connections go on; a broken config file or clients file is
//! rejected and the old settings stay; systemd hears READY, RELOADING and
//! STOPPING. Every wait is on the server's own log line or notification,
//! never a sleep.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use common::files::{args, assert_ok, Files};
use common::keys::{authorized_clients, write_clients, KeyClient};
use common::*;
use wiresh::client::{Connection, Endpoint, Output, Pinning, Security};
use wiresh::keys::ClientKey;
use wiresh_proto::{ExecRequest, Message, Secret};

const RELOADED: &str = "configuration reloaded";

async fn reload(server: &Server) {
    server.signal(libc::SIGHUP);
    server.wait_for_log(RELOADED).await;
}

#[tokio::test]
async fn a_running_command_and_a_1_gib_upload_survive_a_reload() {
    let fx = Files::start();
    let src = fx.local.join("big.bin");
    let want = disk::write_big(&src, GIB);
    // A command waiting for input, started before the reload.
    let mut raw = fx.server.raw().await;
    raw.start(exec_with_stdin("read line; echo got:$line"))
        .await;
    // An upload under way.
    let mut put = fx
        .cmd("put", None, &args!["-q", &src, "big.bin"])
        .spawn()
        .unwrap();
    let part = disk::part_of(&fx.root.join("big.bin"));
    bounded("the upload to be under way", async {
        while std::fs::metadata(&part).map_or(0, |m| m.len()) < 64 * MIB as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    reload(&fx.server).await;
    assert!(
        put.try_wait().unwrap().is_none(),
        "the upload ended before the reload was done: the test proves nothing"
    );

    raw.send_frame(wiresh_proto::Frame::with_body(Message::Stdin, &b"x\n"[..]))
        .await;
    raw.send(Message::StdinEnd).await;
    let run = raw.finish_started(0).await;
    assert_exited(&run.status, 0);
    assert_eq!(run.stdout, b"got:x\n");

    let status = bounded("the upload", put.wait()).await.unwrap();
    assert!(status.success(), "the upload failed across the reload");
    let remote = fx.root.join("big.bin");
    assert_eq!(disk::file_blake3(&remote), want, "BLAKE3 on the server");
    // And the server still takes new work after it.
    let out = fx
        .run("get", &args!["big.bin", fx.local.join("back.bin")])
        .await;
    assert_ok(&out, "get after the reload");
}

/// The library client presenting a key, over TLS.
fn key_endpoint(server: &Server, client: &KeyClient) -> Endpoint {
    let home = client.home.path();
    Endpoint {
        target: server.target(),
        token: Secret::default(),
        security: Security::Tls(Pinning {
            known_hosts: home.join("known_hosts"),
            fingerprint: None,
            client_key: Some(Arc::new(ClientKey::load(&home.join("client.key")).unwrap())),
        }),
        connect_timeout: wiresh::client::CONNECT_TIMEOUT,
        persist: None,
    }
}

/// A server that takes keys only, from an `authorized_clients` file that
/// lists alice and bob.
struct KeyServer {
    alice: KeyClient,
    bob: KeyClient,
    clients: std::path::PathBuf,
    server: Server,
    /// Holds the file; removed with it.
    dir: tempfile::TempDir,
}

impl KeyServer {
    async fn start() -> KeyServer {
        let alice = KeyClient::new("alice").await;
        let bob = KeyClient::new("bob").await;
        let dir = tempfile::tempdir().unwrap();
        let clients = authorized_clients(dir.path(), &[&alice.line, &bob.line]);
        let server = Server::start_exactly(&[
            "--auth",
            "key",
            "--authorized-clients",
            clients.to_str().unwrap(),
        ]);
        KeyServer {
            alice,
            bob,
            clients,
            server,
            dir,
        }
    }
}

#[tokio::test]
async fn a_removed_client_is_refused_after_a_reload() {
    let KeyServer {
        alice,
        bob,
        clients,
        server,
        dir: _dir,
    } = KeyServer::start().await;
    let mut open = bounded(
        "bob connects",
        Connection::connect(&key_endpoint(&server, &bob)),
    )
    .await
    .unwrap();
    assert_eq!(alice.run(&server, "true").await.code, Some(0));

    write_clients(&clients, &[&bob.line]);
    reload(&server).await;

    let out = alice.run(&server, "echo must not run").await;
    assert_eq!(out.code, Some(255));
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_str().contains(&alice.fingerprint)
            && out.stderr_str().contains("not authorized"),
        "{}",
        out.stderr_str()
    );
    let out = bob.run(&server, "echo bob").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    // A connection opened before the reload, by a client still listed,
    // keeps going.
    assert_exited(sh(&mut open, "true").await.status(), 0);
}

/// A key removed from authorized_clients takes its open connections with
/// it at the reload: an idle one is closed at once; one running a command
/// lets the command finish within the shutdown grace (here it reads a line
/// sent after the reload), then is closed. Other clients' connections go
/// on, and the log names the revoked client.
#[tokio::test]
async fn a_revoked_keys_open_connections_are_closed_at_the_reload() {
    let KeyServer {
        alice,
        bob,
        clients,
        server,
        dir: _dir,
    } = KeyServer::start().await;
    let server = &server;
    let connect = |client| async move { Connection::connect(&key_endpoint(server, client)).await };
    let mut idle = bounded("alice connects", connect(&alice)).await.unwrap();
    let mut busy = bounded("alice connects", connect(&alice)).await.unwrap();
    let mut other = bounded("bob connects", connect(&bob)).await.unwrap();
    // A command under way on one of alice's connections, waiting for input.
    let (stdin, input) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let (tx, mut output) = tokio::sync::mpsc::channel(16);
    let line = "echo ready; read line; echo got:$line";
    let running = tokio::spawn(async move {
        let ran = busy
            .run(
                ExecRequest {
                    stdin: true,
                    ..ExecRequest::shell(line)
                },
                Some(input),
                &tx,
                never,
            )
            .await;
        (busy, ran)
    });
    let ready = bounded("the command to start", output.recv()).await;
    assert!(matches!(ready, Some(Output::Stdout(b)) if b.starts_with(b"ready")));

    write_clients(&clients, &[&bob.line]);
    reload(server).await;
    let revoked = format!(
        "the client key {} is no longer authorized",
        alice.fingerprint
    );
    // Both of alice's connections.
    server.wait_for_log_count(&revoked, 2).await;

    // The command was not cut short: it takes the line sent now.
    stdin.send(bytes::Bytes::from_static(b"x\n")).await.unwrap();
    drop(stdin);
    let (mut busy, ran) = bounded("the command to end", running).await.unwrap();
    assert_exited(&ran.expect("the command ran to its end"), 0);
    let mut seen = Vec::new();
    while let Ok(Output::Stdout(b)) = output.try_recv() {
        seen.extend_from_slice(&b);
    }
    assert_eq!(seen, b"got:x\n");
    // Then neither of alice's connections runs anything more.
    for conn in [&mut idle, &mut busy] {
        let ran = sh(conn, "echo must not run").await;
        assert!(
            ran.result.is_err() && ran.stdout.is_empty(),
            "{:?}",
            ran.result
        );
    }
    assert_exited(sh(&mut other, "true").await.status(), 0);
}

/// A token replaced in its file takes the connections that logged in with
/// it at the reload: the client gets `auth_failed` saying so, after its
/// running command's `exit` (the command had the shutdown grace).
#[tokio::test]
async fn a_replaced_tokens_connections_are_closed_at_the_reload() {
    let server = Server::start();
    let mut raw = server.raw().await;
    let pid = raw
        .start(exec_with_stdin("read line; echo got:$line"))
        .await;
    let token_file = server.home().join("token");
    let new_token = "f".repeat(64);
    std::fs::write(&token_file, &new_token).unwrap();
    reload(&server).await;
    server
        .wait_for_log(
            "closing the connection: the token this connection logged in with was replaced",
        )
        .await;
    raw.send_frame(wiresh_proto::Frame::with_body(Message::Stdin, &b"x\n"[..]))
        .await;
    raw.send(Message::StdinEnd).await;
    let run = raw.finish_started(pid).await;
    assert_exited(&run.status, 0);
    assert_eq!(run.stdout, b"got:x\n");
    let message = raw.expect_error(wiresh_proto::ErrorCode::AuthFailed).await;
    assert!(message.contains("replaced at a reload"), "{message}");
    raw.expect_closed().await;
    // The new token logs in.
    let mut fresh = RawConn::authenticated(server.addr, &Secret(new_token)).await;
    assert_exited(&fresh.exec(ExecRequest::shell("true")).await.status, 0);
}

#[tokio::test]
async fn a_broken_config_is_rejected_and_the_old_one_kept() {
    let alice = KeyClient::new("alice").await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("server.toml");
    std::fs::write(&config, "auth = \"either\"\nallow-plaintext = true\n").unwrap();
    let server = Server::start_in(home, &[], &[]);
    assert_exited(sh(&mut server.connect().await, "true").await.status(), 0);

    // A config file with a mistake: refused, said why, nothing changes.
    std::fs::write(
        &config,
        "auth = \"key\"\nallow-plaintext = true\nbogus-key = 1\n",
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    server
        .wait_for_log_line("the reload refused for bogus-key", |l| {
            l.contains("reload failed") && l.contains("line 3") && l.contains("bogus-key")
        })
        .await;
    assert_exited(sh(&mut server.connect().await, "true").await.status(), 0);

    // A valid config file but a broken clients file: refused as a whole.
    std::fs::write(&config, "auth = \"key\"\nallow-plaintext = true\n").unwrap();
    let clients = server.home().join("authorized_clients");
    write_clients(&clients, &[&alice.line, "sha256:00 broken"]);
    server.signal(libc::SIGHUP);
    server
        .wait_for_log_line("the reload refused for the clients file", |l| {
            l.contains("reload failed")
                && l.contains("authorized clients file")
                && l.contains("line 2")
        })
        .await;
    // Still `either`: the token still works, so nothing of it was applied.
    assert_exited(sh(&mut server.connect().await, "true").await.status(), 0);
    assert!(!server.log().contains(RELOADED));

    // Fixed: now it applies, and the token alone no longer does.
    write_clients(&clients, &[&alice.line]);
    reload(&server).await;
    let err = server.try_connect().await.unwrap_err().to_string();
    assert!(err.contains("needs a client key"), "{err}");
    assert_eq!(alice.run(&server, "true").await.code, Some(0));
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(BOUND)).unwrap();
    let mut server = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[],
        &[("NOTIFY_SOCKET", path.as_os_str())],
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let until = |want: &str| -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let msg = next();
            let done = msg.starts_with(want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    };
    let seen = until("READY=1");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("READY=1\nSTATUS=listening on 127.0.0.1:"),
        "{seen:?}"
    );
    server.signal(libc::SIGHUP);
    let seen = until("READY=1");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{seen:?}"
    );
    assert_eq!(seen[1], "READY=1\nSTATUS=configuration reloaded");
    server.signal(libc::SIGTERM);
    until("STOPPING=1");
    assert!(server.wait_exit().await.success());
}

/// `wiresh reload` with `WIRESH_HOME=home` and `args`: its status and stderr.
async fn wiresh_reload(home: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("reload").args(args);
    isolated(&mut cmd, home);
    let out = cli_output(cmd, None).await;
    (out.code, out.stderr_str())
}

/// `wiresh reload` signals the server whose id is in the pid file
/// (`$WIRESH_HOME/server.pid`, or `--pid-file`), and no other process: a
/// file left naming another program is refused with nothing signalled
/// (SIGHUP would have ended this test's own process, named there). A
/// server that stops takes its pid file with it.
#[tokio::test]
async fn wiresh_reload_signals_the_server_of_its_pid_file_and_nothing_else() {
    let mut server = Server::start();
    let pid_file = server.home().join("server.pid");
    let held = std::fs::read_to_string(&pid_file).expect("the server keeps a pid file");
    assert_eq!(held.trim(), server.pid().to_string());
    let (code, stderr) = wiresh_reload(server.home(), &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", server.pid())),
        "{stderr}"
    );
    server.wait_for_log(RELOADED).await;

    let elsewhere = tempfile::tempdir().unwrap();
    let custom = elsewhere.path().join("wiresh.pid");
    let other = Server::start_with(&["--pid-file", custom.to_str().unwrap()]);
    let (code, stderr) =
        wiresh_reload(server.home(), &["--pid-file", custom.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{stderr}");
    other.wait_for_log(RELOADED).await;
    assert!(!other.home().join("server.pid").exists());

    let stale = tempfile::tempdir().unwrap();
    std::fs::write(
        stale.path().join("server.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let (code, stderr) = wiresh_reload(stale.path(), &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a running `wiresh serve`"), "{stderr}");
    let (code, stderr) = wiresh_reload(tempfile::tempdir().unwrap().path(), &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is `wiresh serve` running"), "{stderr}");

    server.signal(libc::SIGTERM);
    server.wait_exit().await;
    assert!(!pid_file.exists(), "the pid file outlived its server");
}

/// A script that reads the first line of `wiresh serve` and closes its
/// end (`wiresh serve | head -1`) must not take the server down: the
/// lines on stdout are a courtesy, the server is what matters.
#[test]
fn a_server_whose_stdout_is_closed_starts_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(BOUND)).unwrap();
    let mut server = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("WIRESH_HOME", dir.path().join("home"))
        .env("NOTIFY_SOCKET", &path)
        .env_remove("WIRESH_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the server writes a byte.
    drop(server.stdout.take());
    let mut buf = [0u8; 512];
    let ready = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let running = server.try_wait().unwrap().is_none();
    let _ = server.kill();
    let out = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let ready = ready.unwrap_or_else(|e| panic!("no readiness ({e}); its log:\n{log}"));
    assert!(
        ready.starts_with("READY=1\nSTATUS=listening on 127.0.0.1:"),
        "{ready:?}"
    );
    assert!(running, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
