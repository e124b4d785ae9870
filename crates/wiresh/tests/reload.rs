//! Reload on SIGHUP: running commands and a 1 GiB transfer go on through
//! it; a client removed from authorized_clients is refused after it (while
//! its open connection keeps its settings); a broken config file or
//! clients file is rejected and the old settings stay; systemd hears
//! READY, RELOADING and STOPPING. Every wait is on the server's own log
//! line or notification, never a sleep.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use common::files::{args, assert_ok, Files};
use common::keys::{authorized_clients, write_clients, KeyClient};
use common::*;
use wiresh::client::{Connection, Endpoint, Pinning, Security};
use wiresh::keys::ClientKey;
use wiresh_proto::{Message, Secret};

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
    }
}

#[tokio::test]
async fn a_removed_client_is_refused_after_a_reload() {
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
    let mut open = bounded(
        "alice connects",
        Connection::connect(&key_endpoint(&server, &alice)),
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
    // A connection opened before the reload keeps the settings it began with.
    assert_exited(sh(&mut open, "true").await.status(), 0);
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
