//! The server's config file (`--config`, `$WIRESH_HOME/server.toml`):
//! precedence (flag over environment over file over default), every kind of
//! mistake reported with its line and what to do, and `serve --check`
//! (effective settings with their sources, secrets masked, nothing created,
//! nothing listening).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `wiresh serve ARGS` with `WIRESH_HOME=home` and `env`, to its end.
fn serve(home: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .env("WIRESH_HOME", home)
        .env("NO_COLOR", "1");
    for var in [
        "WIRESH_CONFIG",
        "WIRESH_LISTEN",
        "WIRESH_LOG_FORMAT",
        "WIRESH_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    // --check never listens, so it ends by itself; a bounded wait all the same.
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(BOUND)
        .expect("wiresh serve did not end")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
}

/// `wiresh serve ARGS` must fail (exit 1, before listening) with every one
/// of `needles` in its message; returns the message.
fn fails(home: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = serve(home, args, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!text(&out.stdout).contains("listening on"), "{args:?}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    err
}

/// The `--check` line for one setting.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join("server.toml"),
        "# the operator's settings\n\
         listen = \"127.0.0.1:7001\"\n\
         max-connections = 10\n\
         idle-timeout = \"5m\"\n\
         log-format = \"json\"\n",
    );
    let out = serve(
        home.path(),
        &["--check", "--max-connections", "20"],
        &[("WIRESH_LISTEN", "127.0.0.1:7002")],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(&format!(
        "# config file: {}",
        home.path().join("server.toml").display()
    )));
    for (key, want) in [
        ("listen", "listen = \"127.0.0.1:7002\"  # environment"),
        ("max-connections", "max-connections = 20  # flag"),
        (
            "idle-timeout",
            "idle-timeout = \"5m\"  # config file line 4",
        ),
        ("max-commands", "max-commands = 512  # default"),
    ] {
        assert_eq!(line(&stdout, key), want);
    }
    // A flag beats the environment too.
    let out = serve(
        home.path(),
        &["--check", "--listen", "127.0.0.1:7003"],
        &[("WIRESH_LISTEN", "127.0.0.1:7002")],
    );
    assert_eq!(
        line(&text(&out.stdout), "listen"),
        "listen = \"127.0.0.1:7003\"  # flag"
    );
    // --config (or WIRESH_CONFIG) names another file.
    let other = home.path().join("other.toml");
    write(&other, "max-commands = 7\n");
    let out = serve(
        home.path(),
        &["--check"],
        &[("WIRESH_CONFIG", other.to_str().unwrap())],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        line(&stdout, "max-commands"),
        "max-commands = 7  # config file line 1"
    );
    assert_eq!(
        line(&stdout, "max-connections"),
        "max-connections = 256  # default"
    );
}

/// The file really configures the running server: a command timeout from
/// it kills a command, and a boolean flag from it is on.
#[tokio::test]
async fn the_running_server_follows_the_file() {
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join("server.toml"),
        "command-timeout = \"1s\"\nallow-plaintext = true\nlisten = \"127.0.0.1:1\"\n",
    );
    // --listen on the command line (the harness's 127.0.0.1:0) beats the file.
    let server = Server::start_in(home, &[], &[]);
    let mut conn = server.connect().await; // plaintext: allowed by the file
    let ran = sh(&mut conn, "sleep 30").await;
    assert!(ran.status().timed_out, "{:?}", ran.status());
}

#[test]
fn every_mistake_names_the_file_the_line_and_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("server.toml");
    let cases: [(&str, &[&str]); 7] = [
        (
            "listen = \"127.0.0.1:1\"\nmax_connections = 3\n",
            &[
                "line 2",
                "unknown key `max_connections`",
                "did you mean `max-connections`?",
            ],
        ),
        (
            "colour = \"blue\"\n",
            &["line 1", "unknown key `colour`", "wiresh serve --help"],
        ),
        (
            "\n\nmax-connections = \"many\"\n",
            &["line 3", "`max-connections`", "invalid value 'many'"],
        ),
        (
            "allow-plaintext = \"yes\"\n",
            &["line 1", "`allow-plaintext` is true or false, not a string"],
        ),
        (
            "listen = [\"a\", \"b\"]\n",
            &["line 1", "`listen` takes a string or a number, not a list"],
        ),
        ("listen = \n", &["line 1"]),
        ("check = true\n", &["line 1", "unknown key `check`"]),
    ];
    for (body, expected) in cases {
        write(&file, body);
        let err = fails(home.path(), &["--check"], expected);
        assert!(err.contains(&file.display().to_string()), "{body:?}: {err}");
    }
    // The same mistakes stop a real start before it listens.
    write(&file, "max_connections = 3\n");
    fails(
        home.path(),
        &["--listen", "127.0.0.1:0"],
        &["max_connections"],
    );
    // An explicit --config must exist.
    let missing = "/nonexistent/wiresh.toml";
    fails(home.path(), &["--check", "--config", missing], &[missing]);
}

#[test]
fn check_masks_secrets_creates_nothing_and_checks_every_file() {
    let home = tempfile::tempdir().unwrap();
    // Nothing exists yet: valid, and nothing is created.
    let out = serve(home.path(), &["--check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("the token file"), "{stdout}");
    assert!(stdout.contains("# authorized clients: none\n"), "{stdout}");
    assert!(
        !home.path().join("token").exists(),
        "--check created the token"
    );
    assert!(
        !home.path().join("server.key").exists(),
        "--check created a key"
    );

    // With a token, a TLS identity and clients, as a started server has them.
    let server = Server::start_in(home, &[], &[]);
    let fingerprint = server.fingerprint();
    let clients = server.home().join("authorized_clients");
    write(
        &clients,
        &format!(
            "sha256:{} alice\nsha256:{} bob\n",
            "a".repeat(64),
            "b".repeat(64)
        ),
    );
    let out = serve(server.home(), &["--check"], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !stdout.contains(server.token.expose()),
        "the token is shown"
    );
    assert!(
        stdout.contains("# token: <masked, 64 characters> (token:"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("# TLS fingerprint: {fingerprint}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("# authorized clients: 2 (alice, bob)"),
        "{stdout}"
    );
    assert!(!text(&out.stderr).contains(server.token.expose()));
    // Files left unset are shown at the default paths the server reads,
    // as the TOML line that would name them.
    let quoted = |path: &Path| format!("{:?}", path.display().to_string());
    assert_eq!(
        line(&stdout, "authorized-clients"),
        format!("authorized-clients = {}  # default", quoted(&clients))
    );
    assert_eq!(
        line(&stdout, "token-file"),
        format!(
            "token-file = {}  # default",
            quoted(&server.home().join("token"))
        )
    );
    assert!(
        !stdout.contains("authorized-clients is not set"),
        "{stdout}"
    );
    // The policy in force, as the JSON its file would hold: no Rust spelling.
    let policy_file = server.home().join("policy.json");
    write(
        &policy_file,
        r#"{"allow_shell": false, "allowed_programs": ["/bin/true"]}"#,
    );
    let out = serve(
        server.home(),
        &["--check", "--policy", policy_file.to_str().unwrap()],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let policy = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# policy in force, as its JSON file would say: "))
        .unwrap_or_else(|| panic!("no policy line in {stdout}"));
    let policy: serde_json::Value = serde_json::from_str(policy).unwrap();
    assert_eq!(policy["allow_shell"], false, "{policy}");
    assert_eq!(policy["allowed_programs"][0], "/bin/true", "{policy}");
    assert!(!stdout.contains("Policy {"), "{stdout}");

    // A token file others can read fails the check, with the fix.
    use std::os::unix::fs::PermissionsExt;
    let token = server.home().join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    fails(server.home(), &["--check"], &["chmod 600"]);
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    // So does a bad authorized_clients line, and a missing files root.
    write(&clients, "sha256:12 alice\n");
    fails(
        server.home(),
        &["--check"],
        &["authorized clients file", "line 1"],
    );
    std::fs::remove_file(&clients).unwrap();
    let root = "/nonexistent/share";
    fails(server.home(), &["--check", "--files-root", root], &[root]);
}

/// Text logs going to a file or a pipe (journald, `2> server.log`) are
/// plain text: colour codes are for terminals only.
#[tokio::test]
async fn text_logs_off_a_terminal_have_no_colour_codes() {
    let server = Server::start();
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "echo hi").await.status(), 0);
    server.wait_for_log("command finished").await;
    let log = server.log();
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(log.lines().any(|l| l.contains(" INFO ")), "{log}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = Server::start_with(&["--log-format", "json"]);
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "echo hi").await.status(), 0);
    server.wait_for_log("command finished").await;
    let log = server.log();
    for l in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let finished = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "command finished")
        .unwrap();
    assert_eq!(finished["command"], "echo hi");
    assert!(finished["client"].as_str().unwrap().starts_with("token:"));
    // Typed values, not Rust's `Some(0)` and `None` as strings.
    assert_eq!(finished["code"], 0, "{finished}");
    assert!(finished["signal"].is_null(), "{finished}");
    assert_killed(sh(&mut conn, "kill -9 $$").await.status(), 9);
    server
        .wait_for_log_line("a second command finished", |l| {
            l.contains("command finished") && l.contains("kill -9")
        })
        .await;
    let killed = server
        .log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "command finished" && v["command"] == "kill -9 $$")
        .unwrap();
    assert_eq!(killed["signal"], 9, "{killed}");
    assert!(killed["code"].is_null(), "{killed}");
}

/// A start logs nothing at INFO that every start would repeat (whether
/// the kernel could take TLS over, the shutdown grace): they are there at
/// debug level for whoever asks.
#[tokio::test]
async fn a_plain_start_logs_no_routine_lines_at_info() {
    let quiet = Server::start();
    let mut conn = quiet.connect().await;
    assert_exited(sh(&mut conn, "true").await.status(), 0);
    quiet.wait_for_log("command finished").await;
    let log = quiet.log();
    for routine in ["kernel TLS", "to finish on shutdown"] {
        assert!(!log.contains(routine), "{routine:?} at INFO:\n{log}");
    }
    let verbose = Server::start_in(
        tempfile::tempdir().unwrap(),
        &["--allow-plaintext"],
        &[("WIRESH_LOG", "debug".as_ref())],
    );
    verbose.wait_for_log("kernel TLS").await;
    verbose.wait_for_log("to finish on shutdown").await;
}

/// Text logs name values as a person reads them: `code=0`, and nothing
/// for what a command does not have (no `Some(0)`, no `None`).
#[tokio::test]
async fn text_logs_have_no_rust_debug_spellings() {
    let server = Server::start();
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "echo hi").await.status(), 0);
    server.wait_for_log("command finished").await;
    let log = server.log();
    let finished = log
        .lines()
        .find(|l| l.contains("command finished"))
        .unwrap();
    assert!(finished.contains(" code=0 "), "{finished}");
    for debug in ["Some(", "None", "signal="] {
        assert!(!finished.contains(debug), "{debug} in {finished}");
    }
}
