//! The command line read as ssh, scp, pdsh and clush users read it
//! (issue 20), through the real binary against real servers on loopback:
//! strict options (a mistake runs nothing anywhere: the audit log says
//! so), `exec HOST COMMAND`, `exec -p PORT HOST`, `exec -- COMMAND` on the
//! default host, scp's `HOST:PATH` with `-P`, the default host replaced by
//! `-g`, `--connect-timeout` for one host, the settings file's key-only
//! host alone and in a fan-out, the old files read with a warning,
//! `known-hosts`, and rsync and git driving plain `wiresh exec`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fleet::{on_host, Fleet};
use common::keys::{authorized_clients, KeyClient};
use common::*;
use wiresh::exit::{CLIENT_FAILURE, USAGE};

/// `wiresh ARGS...` as a user of `home` whose default host is `default`
/// (`$WIRESH_HOST`), if any.
fn wiresh(home: &Path, default: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args);
    isolated(&mut cmd, home);
    if let Some(host) = default {
        cmd.env("WIRESH_HOST", host);
    }
    cmd
}

/// Runs [`wiresh`] and waits for it (bounded).
async fn run(home: &Path, default: Option<&str>, args: &[&str]) -> CliOutput {
    bounded(
        &format!("wiresh {}", args.join(" ")),
        cli_output(wiresh(home, default, args), None),
    )
    .await
}

/// The commands an audit log recorded as started.
fn audited(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|l| l["event"] == "start")
        .map(|l| l["target"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_mistake_on_the_command_line_runs_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
    let addr = server.addr.to_string();
    let default = Some(addr.as_str());
    let home = server.home();
    let bad_pin = "sha256:not-hex";
    let mistakes: [&[&str]; 16] = [
        &["exec", "--timout", "5s", "--", "uptime"],
        &["exec", "-v", "--", "uptime"],
        &["exec", "-f", "2", "-g", "web", "--", "true"],
        &["exec", "--bogus", &addr, "true"],
        &["exec", "-l", "root", &addr, "true"],
        &["exec", &format!("root@{addr}"), "true"],
        &["exec", "-o", "ProxyCommand=nc %h %p", &addr, "true"],
        &["exec", "--fingerprint", bad_pin, &addr, "true"],
        &["exec", "-g", "nosuch", "--", "true"],
        &["exec", "-H", "web[01-", "--", "true"],
        &["exec", &addr],
        &["shell", "--bogus", &addr],
        &["put", "--bogus", "a", "b"],
        &["get", "-Q", "a", "b"],
        &["known-hosts", "--bogus"],
        &["keygen", "--bogus"],
    ];
    for args in mistakes {
        let out = run(home, default, args).await;
        let stderr = out.stderr_str();
        assert_eq!(out.code, Some(USAGE), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!stderr.contains("WARNING"), "{args:?}: {stderr}");
    }
    // Say why, where ssh users would expect otherwise.
    let out = run(home, default, &["exec", "-l", "root", &addr, "true"]).await;
    assert!(
        out.stderr_str()
            .contains("commands run as the account the server runs as"),
        "{}",
        out.stderr_str()
    );
    let out = run(
        home,
        default,
        &["exec", "--fingerprint", bad_pin, &addr, "true"],
    )
    .await;
    assert!(
        out.stderr_str().contains("--fingerprint"),
        "{}",
        out.stderr_str()
    );
    assert!(
        !home.join("known_hosts").exists(),
        "nothing connected, so nothing was pinned"
    );
    assert_eq!(audited(&log), Vec::<String>::new());

    // The audit log does record what runs: the one good command.
    let out = run(home, default, &["exec", "--", "echo", "ran"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(audited(&log), ["echo ran"]);
}

#[tokio::test]
async fn exec_takes_the_host_first_as_ssh_does() {
    let server = Server::start();
    let home = server.home();
    let addr = server.addr.to_string();
    let port = server.addr.port().to_string();

    // HOST:PORT COMMAND...: the words after the host are the command,
    // options included.
    let out = run(home, None, &["exec", &addr, "echo", "-H", "x"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "-H x\n");
    // -p PORT HOST, as ssh; a `--` after the host is dropped as ssh drops it.
    let out = run(
        home,
        None,
        &["exec", "-p", &port, "127.0.0.1", "--", "exit 3"],
    )
    .await;
    assert_eq!(out.code, Some(3), "{}", out.stderr_str());
    // `--` first: the default host, every word the command.
    let out = run(home, Some(&addr), &["exec", "--", "echo", "default"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "default\n");
    // The host as an operand beats $WIRESH_HOST (here, nothing listens).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = dead.local_addr().unwrap().to_string();
    let out = run(home, Some(&dead), &["exec", &addr, "echo", "named"]).await;
    assert_eq!(out.stdout_str(), "named\n", "{}", out.stderr_str());
    // With -H there is no host operand: every word is the command.
    let out = run(home, None, &["exec", "-H", &addr, "echo", "-p", "1"]).await;
    assert_eq!(out.stdout_str(), "-p 1\n", "{}", out.stderr_str());
    // `shell HOST`, piped.
    let cmd = wiresh(home, None, &["shell", &addr]);
    let out = bounded("shell", cli_output(cmd, Some(b"echo in-shell\n".to_vec()))).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "in-shell\n");
}

#[tokio::test]
async fn put_and_get_take_host_path_as_scp_does() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_with(&["--files-root", root.path().to_str().unwrap()]);
    let home = server.home();
    let port = server.addr.port().to_string();
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("a.txt");
    std::fs::write(&file, "scp-like\n").unwrap();
    std::fs::create_dir(root.path().join("docs")).unwrap();

    let out = run(
        home,
        None,
        &[
            "put",
            "-P",
            &port,
            file.to_str().unwrap(),
            "127.0.0.1:docs/",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(
        std::fs::read_to_string(root.path().join("docs/a.txt")).unwrap(),
        "scp-like\n"
    );
    assert!(!root.path().join("127.0.0.1:docs").exists());

    let back = local.path().join("back.txt");
    let out = run(
        home,
        None,
        &[
            "get",
            "-P",
            &port,
            "127.0.0.1:docs/a.txt",
            back.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "scp-like\n");

    // A local name with a colon is written ./name:x, as with scp.
    let colon = local.path().join("name:x");
    std::fs::write(&colon, "colon\n").unwrap();
    let mut put = wiresh(
        home,
        None,
        &["put", "-P", &port, "./name:x", "127.0.0.1:docs/"],
    );
    put.current_dir(local.path());
    let out = bounded("put ./name:x", cli_output(put, None)).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(
        std::fs::read_to_string(root.path().join("docs/name:x")).unwrap(),
        "colon\n"
    );
    // One remote side per command.
    let out = run(home, None, &["put", "127.0.0.1:a", "127.0.0.1:docs/"]).await;
    assert_eq!(out.code, Some(USAGE), "{}", out.stderr_str());
}

#[tokio::test]
async fn a_group_replaces_the_default_host() {
    let fleet = Fleet::start(2, &[]);
    fleet.write_inventory("");
    // The default host listens, but never answers: were it added, the
    // fan-out would report it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let mut cmd = fleet.cli_bare("exec");
    cmd.env("WIRESH_HOST", &silent).args([
        "--connect-timeout",
        "2s",
        "-g",
        "all",
        "--",
        "echo",
        "ok",
    ]);
    let out = bounded("exec -g all", cli_output(cmd, None)).await;
    let stdout = out.stdout_str();
    assert_eq!(out.code, Some(0), "{stdout}{}", out.stderr_str());
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("node01: ok") && stdout.contains("node02: ok"));
    assert!(!out.stderr_str().contains(&silent), "{}", out.stderr_str());
}

#[tokio::test]
async fn connect_timeout_applies_to_one_host() {
    // Accepted by the kernel, never answered: the TLS handshake waits.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("token"), "x".repeat(64)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        home.path().join("token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let started = Instant::now();
    let out = run(
        home.path(),
        None,
        &["exec", "--connect-timeout", "1s", &addr, "true"],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(out.code, Some(CLIENT_FAILURE), "{}", out.stderr_str());
    assert!(out.stderr_str().contains("1s"), "{}", out.stderr_str());
    // The default is 10 s; 1 s was asked.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    drop(listener);
}

/// A server that admits only the key of `client`.
fn key_only_server(client: &KeyClient, dir: &Path) -> Server {
    let clients = authorized_clients(dir, &[client.line.as_str()]);
    Server::start_exactly(&[
        "--auth",
        "key",
        "--authorized-clients",
        clients.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn a_key_only_host_connects_alone_and_in_a_fanout() {
    let client = KeyClient::new("ops").await;
    let home = client.home.path();
    // The key under another name than the default one, which the file names.
    std::fs::rename(home.join("client.key"), home.join("ops.key")).unwrap();
    std::fs::rename(home.join("client.crt"), home.join("ops.crt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        key_only_server(&client, dir.path()),
        key_only_server(&client, dir.path()),
    ];
    let mut settings = String::from("[groups]\nboxes = \"box[1-2]\"\n");
    for (i, s) in servers.iter().enumerate() {
        settings.push_str(&format!(
            "[hosts.box{}]\naddress = \"127.0.0.1\"\nport = {}\nfingerprint = \"{}\"\nkey = \"ops.key\"\n",
            i + 1,
            s.addr.port(),
            s.fingerprint()
        ));
    }
    std::fs::write(home.join("client.toml"), settings).unwrap();
    assert!(!home.join("token").exists(), "key only");

    let by_host = on_host("echo $WIRESH_HOME");
    let out = run(home, None, &["exec", "box1", &by_host]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str().trim(), servers[0].home().to_str().unwrap());

    let out = run(home, None, &["exec", "-g", "boxes", "--", &by_host]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let stdout = out.stdout_str();
    for (i, s) in servers.iter().enumerate() {
        let line = format!("box{}: {}", i + 1, s.home().display());
        assert!(stdout.lines().any(|l| l == line), "{line} in {stdout}");
    }
    // The same through a host list of one: the fan-out path, forced by
    // --json, reaches it the same way.
    let out = run(home, None, &["exec", "--json", "box2", "true"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert!(
        !home.join("known_hosts").exists(),
        "the file's fingerprints are pinned in advance, never learned"
    );
}

#[tokio::test]
async fn the_old_files_are_read_with_a_warning_that_says_how_to_move() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("tokens");
    std::fs::create_dir(&token).unwrap();
    std::fs::copy(server.home().join("token"), token.join("box")).unwrap();
    std::fs::write(
        home.path().join("hosts.toml"),
        format!(
            "[groups]\nall = [\"box\"]\n[hosts.box]\naddress = \"127.0.0.1\"\nport = {}\n\
             token_file = \"tokens/box\"\n",
            server.addr.port()
        ),
    )
    .unwrap();
    let out = run(home.path(), None, &["exec", "box", "echo", "old"]).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(0), "{stderr}");
    assert_eq!(out.stdout_str(), "old\n");
    assert!(
        stderr.contains("hosts.toml is read for this release only")
            && stderr.contains("client.toml")
            && stderr.contains("token-file"),
        "{stderr}"
    );

    // Moved as the warning says: the same host, no warning.
    let moved = std::fs::read_to_string(home.path().join("hosts.toml"))
        .unwrap()
        .replace("token_file", "token-file");
    std::fs::write(home.path().join("client.toml"), moved).unwrap();
    std::fs::remove_file(home.path().join("hosts.toml")).unwrap();
    let out = run(
        home.path(),
        None,
        &["exec", "-g", "all", "--", "echo", "new"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert!(
        !out.stderr_str().contains("warning"),
        "{}",
        out.stderr_str()
    );
}

#[tokio::test]
async fn known_hosts_lists_pins_and_forgets_one() {
    let server = Server::start();
    let home = server.home();
    let addr = server.addr.to_string();
    let out = run(home, None, &["exec", &addr, "true"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());

    let out = run(home, None, &["known-hosts"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(
        out.stdout_str(),
        format!("{addr} {}\n", server.fingerprint())
    );
    let out = run(home, None, &["known-hosts", "--remove", &addr]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert!(out.stderr_str().contains("forgot"), "{}", out.stderr_str());
    let out = run(home, None, &["known-hosts"]).await;
    assert_eq!(out.stdout_str(), "");
    // Nothing left to forget: an error that says where it looked.
    let out = run(home, None, &["known-hosts", "--remove", &addr]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr_str().contains("no fingerprint is pinned"),
        "{}",
        out.stderr_str()
    );
}

#[tokio::test]
async fn a_key_of_none_presents_no_key() {
    let server = Server::start();
    let home = server.home();
    let addr = server.addr.to_string();
    for none in ["/dev/null", "none"] {
        let out = run(home, None, &["exec", "-i", none, &addr, "echo", "tokened"]).await;
        assert_eq!(out.code, Some(0), "-i {none}: {}", out.stderr_str());
        assert_eq!(out.stdout_str(), "tokened\n");
    }
    // A device or a directory given as the key is refused for what it
    // is, never with chmod advice.
    for wrong in ["/dev/zero", "/"] {
        let out = run(home, None, &["exec", "-i", wrong, &addr, "true"]).await;
        let stderr = out.stderr_str();
        assert_ne!(out.code, Some(0), "{stderr}");
        assert!(
            stderr.contains("not a file") && !stderr.contains("chmod"),
            "{stderr}"
        );
    }
}

/// Whether `program` can be run here; CI installs it (.ci/run).
fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn rsync_drives_plain_wiresh_exec() {
    assert!(have("rsync"), "rsync is needed (apt-get install rsync)");
    let server = Server::start();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/b"), binary_pattern(300_000)).unwrap();
    std::fs::write(src.path().join("a"), "first\n").unwrap();
    let remote = format!("127.0.0.1:{}/", dst.path().display());
    let rsh = format!("{BIN} exec -p {}", server.addr.port());
    let script = format!(
        "rsync -a -e '{rsh}' '{}/' '{remote}' && rsync -a -e '{rsh}' '{remote}' '{}/'",
        src.path().display(),
        back.path().display()
    );
    let out = bounded(
        "rsync",
        cli_output(bash_script(&script, server.home()), None),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    for copy in [dst.path(), back.path()] {
        assert_eq!(std::fs::read(copy.join("a")).unwrap(), b"first\n");
        assert_eq!(
            std::fs::read(copy.join("sub/b")).unwrap(),
            binary_pattern(300_000)
        );
    }
}

#[tokio::test]
async fn git_clones_through_plain_wiresh_exec() {
    assert!(have("git"), "git is needed (apt-get install git)");
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // git passes `-p PORT` for ssh://host:port/ URLs once `-G` shows it
    // speaks ssh's options, and `-o SendEnv=GIT_PROTOCOL`.
    let script = format!(
        "set -e; export GIT_CONFIG_NOSYSTEM=1 HOME={d} GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t \
         GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
         git init -q {d}/origin && echo cloned > {d}/origin/f && git -C {d}/origin add f
         git -C {d}/origin commit -qm one
         GIT_SSH_COMMAND='{BIN} exec' git clone -q ssh://127.0.0.1:{}{d}/origin {d}/copy",
        server.addr.port()
    );
    let out = bounded(
        "git clone",
        cli_output(bash_script(&script, server.home()), None),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("copy/f")).unwrap(),
        "cloned\n"
    );
}
