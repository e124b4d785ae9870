//! Fan-out: one command on many real servers (`wiresh exec -H many`,
//! `-g`, `--gather`, `--diff`, `--json`, `--outdir`, `-S`, `--fail-fast`,
//! Ctrl-C), `wiresh shell` and `put`/`get` on many hosts, over loopback
//! TCP with TLS, each server on its own port.
//!
//! Commands tell the hosts apart by `$WIRESH_HOME`, which every server has
//! its own of and which a command reads from its server's environment
//! ([`on_host`]); the tests give a host its part by writing a `role` file
//! there.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::fleet::{on_host, Fleet};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use wiresh::exit::USAGE;
use wiresh::hostlist::expand;

/// A command that acts on the host's `role` file: `WORDS EXIT [warn] [slow]`.
const BY_ROLE: &str = r#"set -- $(cat "$WIRESH_HOME/role"); echo "$1"; case "$*" in *warn*) echo "warning: $1" >&2;; esac; case "$*" in *slow*) sleep 30;; esac; exit "$2""#;

fn give_role(server: &Server, role: &str) {
    std::fs::write(server.home().join("role"), role).unwrap();
}

/// An address nothing listens on: a port that was just bound, then freed.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// Splits `host: rest` lines by host, checking every line has a known host.
fn by_host(text: &str, hosts: &[String]) -> HashMap<String, Vec<String>> {
    let mut lines: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let (host, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("a line without a host prefix: {line:?}"));
        assert!(
            hosts.iter().any(|h| h == host),
            "unknown host prefix in {line:?}"
        );
        lines
            .entry(host.to_string())
            .or_default()
            .push(rest.to_string());
    }
    lines
}

/// The summary's lines (after the output on stderr).
fn summary(stderr: &str) -> &str {
    let at = stderr
        .match_indices("wiresh: ")
        .map(|(at, _)| at)
        .find(|&at| at == 0 || stderr.as_bytes()[at - 1] == b'\n')
        .unwrap_or_else(|| panic!("no summary in {stderr:?}"));
    &stderr[at..]
}

/// The hosts of the summary line labelled `label`, expanded.
fn summary_hosts(stderr: &str, label: &str) -> BTreeSet<String> {
    let prefix = format!("  {label} (");
    summary(stderr)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split_once("): "))
        .map(|(_, list)| expand(list).unwrap().into_iter().collect())
        .unwrap_or_default()
}

/// The next `host: rest` line of a running client's stdout.
async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> (String, String) {
    let line = bounded("a line from the hosts", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    let (host, rest) = line.split_once(": ").expect("a host prefix");
    (host.to_string(), rest.to_string())
}

#[tokio::test]
async fn fifty_hosts_every_line_once_whole_and_prefixed() {
    let fleet = Fleet::start(50, &[]);
    let names = fleet.names();
    // Long lines, written by sed in blocks that end mid-line.
    let pad = "x".repeat(60);
    let line = format!(
        "seq 1 3000 | sed \"s|^|$WIRESH_HOME {pad} |\"; seq 1 500 | sed \"s|^|$WIRESH_HOME err |\" >&2; printf 'no newline'"
    );
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args(["--", &on_host(&line)]);
    let out = cli_output(cmd, None).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(0), "stderr: {stderr}");

    let stdout = by_host(&out.stdout_str(), &names);
    assert_eq!(stdout.len(), 50, "every host's output is there");
    for (i, server) in fleet.servers.iter().enumerate() {
        let home = server.home().display().to_string();
        let mut want: Vec<String> = (1..=3000).map(|n| format!("{home} {pad} {n}")).collect();
        want.push("no newline".into()); // flushed with its prefix at the end
        assert!(
            stdout[&names[i]] == want,
            "host {} printed something else",
            names[i]
        );
    }

    // Every line of stderr is a host's: a run that went well everywhere
    // has no summary.
    let stderr_lines = by_host(&stderr, &names);
    for (i, server) in fleet.servers.iter().enumerate() {
        let home = server.home().display().to_string();
        let want: Vec<String> = (1..=500).map(|n| format!("{home} err {n}")).collect();
        assert!(stderr_lines[&names[i]] == want, "stderr of {}", names[i]);
    }
}

/// Fifty hosts in four groups of output and status, one of them slow, and
/// a dead address: the roles each host plays, by inventory name.
struct Mix {
    fleet: Fleet,
    dead: String,
    expected: BTreeMap<String, (&'static str, Option<i32>, &'static str)>,
}

fn mix() -> Mix {
    let fleet = Fleet::start(50, &[]);
    let dead = dead_address();
    let mut expected = BTreeMap::new();
    for (i, server) in fleet.servers.iter().enumerate() {
        let (role, words, code, stderr) = match i % 5 {
            _ if i == 49 => ("alpha 0 slow", "alpha\n", None, ""),
            0 | 1 => ("alpha 0", "alpha\n", Some(0), ""),
            2 => ("alpha 3", "alpha\n", Some(3), ""),
            3 => ("beta 0", "beta\n", Some(0), ""),
            _ => ("beta 0 warn", "beta\n", Some(0), "warning: beta\n"),
        };
        give_role(server, role);
        expected.insert(Fleet::node(i), (words, code, stderr));
    }
    let (ip, port) = dead.rsplit_once(':').unwrap();
    fleet.write_inventory(&format!(
        "[hosts.dead]\naddress = \"{ip}\"\nport = {port}\n"
    ));
    Mix {
        fleet,
        dead,
        expected,
    }
}

impl Mix {
    fn exec(&self, flags: &[&str]) -> tokio::process::Command {
        let mut cmd = self.fleet.cli_bare("exec");
        cmd.args(["-g", "all", "-H", "dead", "--timeout", "3s"]);
        cmd.args(flags);
        cmd.args(["--", &on_host(BY_ROLE)]);
        cmd
    }
}

#[tokio::test]
async fn fifty_hosts_gathered_as_json_and_in_files() {
    let mix = mix();

    // --gather: identical output and status under one header, largest first.
    let out = cli_output(mix.exec(&["--gather"]), None).await;
    let (stdout, stderr) = (out.stdout_str(), out.stderr_str());
    assert_eq!(
        out.code,
        Some(255),
        "a host was unreachable; stderr: {stderr}"
    );
    let mut groups: Vec<(BTreeSet<String>, String, String)> = Vec::new();
    let mut lines = stdout.lines().peekable();
    while let Some(rule) = lines.next() {
        assert_eq!(rule, "---------------", "{stdout}");
        let header = lines.next().unwrap();
        assert_eq!(lines.next(), Some("---------------"));
        let (range, rest) = header.split_once(" (").unwrap();
        let hosts: BTreeSet<String> = expand(range).unwrap().into_iter().collect();
        assert!(
            rest.starts_with(&format!("{} host", hosts.len())),
            "{header}"
        );
        let status = rest
            .split(", ")
            .nth(1)
            .unwrap()
            .trim_end_matches(')')
            .to_string();
        let mut body = String::new();
        while let Some(l) = lines.next_if(|l| *l != "---------------") {
            body.push_str(l);
            body.push('\n');
        }
        groups.push((hosts, status, body));
    }
    let sizes: Vec<usize> = groups.iter().map(|g| g.0.len()).collect();
    assert_eq!(
        sizes,
        [20, 10, 10, 9, 1],
        "largest group first: {stdout}\n{stderr}"
    );
    for (hosts, status, body) in &groups {
        for host in hosts {
            let (words, code, _) = mix.expected[host];
            assert_eq!(body, words, "{host}");
            let want = code.map_or("timed out".to_string(), |c| format!("exit {c}"));
            assert_eq!(*status, want, "{host}");
        }
    }
    // The two "beta, exit 0" groups differ by their stderr only.
    assert!(stderr.contains("warning: beta"), "{stderr}");
    assert_eq!(
        summary_hosts(&stderr, "timed out"),
        BTreeSet::from(["node50".to_string()])
    );
    assert_eq!(
        summary_hosts(&stderr, "unreachable (connection refused)"),
        BTreeSet::from(["dead".to_string()])
    );
    assert_eq!(summary_hosts(&stderr, "exit 3").len(), 10);
    assert!(
        summary(&stderr)
            .starts_with("wiresh: 51 hosts: 39 ok, 10 failed, 1 timed out, 1 unreachable\n"),
        "{stderr}"
    );

    // --json: one object per host, parsed back.
    let out = cli_output(mix.exec(&["--json", "-S"]), None).await;
    let mut largest = 0;
    let mut seen = BTreeSet::new();
    for line in out.stdout_str().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let host = v["host"].as_str().unwrap().to_string();
        assert!(seen.insert(host.clone()), "{host} reported twice");
        if host == "dead" {
            assert_eq!(v["status"], "unreachable");
            assert_eq!(v["target"], mix.dead);
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot connect"));
            largest = largest.max(255);
            continue;
        }
        let (words, code, stderr) = mix.expected[&host];
        assert_eq!(v["stdout"], words, "{host}");
        assert_eq!(v["stderr"], stderr, "{host}");
        assert_eq!(v["stdout_bytes"], words.len(), "{host}");
        match code {
            Some(code) => {
                assert_eq!(v["exit_code"], code, "{host}");
                assert_eq!(v["status"], if code == 0 { "ok" } else { "failed" });
                largest = largest.max(code);
            }
            None => {
                assert_eq!(v["status"], "timed_out", "{host}");
                assert_eq!(v["timed_out"], true);
                let signal = v["signal"].as_i64().expect("killed by a signal") as i32;
                largest = largest.max(128 + signal);
            }
        }
        assert!(v["duration_ms"].as_u64().is_some());
    }
    assert_eq!(seen.len(), 51);
    assert_eq!(out.code, Some(largest), "-S: the largest status");

    // --outdir: DIR/HOST.out and DIR/HOST.err, the summary alone on the terminal.
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    let out = cli_output(mix.exec(&["--outdir", outdir.to_str().unwrap()]), None).await;
    assert_eq!(out.stdout_str(), "", "nothing on the terminal's stdout");
    assert!(summary(&out.stderr_str()).starts_with("wiresh: 51 hosts"));
    for (host, (words, code, stderr)) in &mix.expected {
        let read =
            |ext: &str| std::fs::read_to_string(outdir.join(format!("{host}.{ext}"))).unwrap();
        assert_eq!(read("out"), *words, "{host}");
        if code.is_some() {
            assert_eq!(read("err"), *stderr, "{host}");
        }
    }
    assert!(
        !outdir.join("dead.out").exists(),
        "an unreachable host gets no files"
    );
}

#[tokio::test]
async fn stdin_reaches_every_host_even_beyond_the_fanout() {
    let fleet = Fleet::start(50, &[]);
    let data = binary_pattern(3 * MIB);
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    let want = format!("{} {}", data.len(), wiresh::home::hex(digest.as_ref()));
    // Each host prints the size and SHA-256 of its stdin.
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args(["--fanout", "8", "-b", "--", "f=$(mktemp); cat > \"$f\"; echo \"$(wc -c < \"$f\") $(sha256sum < \"$f\" | cut -d' ' -f1)\"; rm \"$f\""]);
    let out = cli_output(cmd, Some(data)).await;
    let stdout = out.stdout_str();
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    let header = stdout.lines().nth(1).unwrap();
    assert!(
        header.ends_with("(50 hosts, exit 0)"),
        "one group of all hosts: {stdout}"
    );
    assert_eq!(stdout.lines().nth(3), Some(want.as_str()), "{stdout}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
}

#[tokio::test]
async fn exit_status_sums_up_the_hosts() {
    let fleet = Fleet::start(4, &[]);
    let hosts = fleet.host_list();
    let run = |command: &str, extra: &[&str]| {
        let mut cmd = fleet.cli("exec", &hosts);
        cmd.args(extra).args(["--", &on_host(command)]);
        cli_output(cmd, None)
    };
    assert_eq!(run("true", &[]).await.code, Some(0));
    let failing = "exit $(cat $WIRESH_HOME/role 2>/dev/null || echo 0)";
    give_role(&fleet.servers[1], "5");
    give_role(&fleet.servers[2], "2");
    assert_eq!(
        run(failing, &[]).await.code,
        Some(wiresh::exit::SOME_FAILED)
    );
    assert_eq!(run(failing, &["-S"]).await.code, Some(5), "-S: the largest");
    let with_dead = format!("{hosts},{}", dead_address());
    let mut cmd = fleet.cli("exec", &with_dead);
    cmd.args(["--", "true"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(
        out.code,
        Some(255),
        "an unreachable host: {}",
        out.stderr_str()
    );
    assert!(
        out.stderr_str().contains(": wiresh: cannot connect to"),
        "{}",
        out.stderr_str()
    );
}

#[tokio::test]
async fn diff_shows_each_group_against_the_largest() {
    let fleet = Fleet::start(5, &[]);
    for (i, server) in fleet.servers.iter().enumerate() {
        let text = if i == 4 {
            "one\ntwo changed\nthree\n"
        } else {
            "one\ntwo\nthree\n"
        };
        std::fs::write(server.home().join("text"), text).unwrap();
    }
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args(["--diff", "--", &on_host("cat $WIRESH_HOME/text")]);
    let out = cli_output(cmd, None).await;
    let stdout = out.stdout_str();
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let odd = &fleet.names()[4];
    assert!(
        stdout.contains("(4 hosts, exit 0)\n---------------\none\ntwo\nthree\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("+++ {odd} (1 host, exit 0)")),
        "{stdout}"
    );
    assert!(stdout.contains("-two\n+two changed\n"), "{stdout}");
}

#[tokio::test]
async fn fail_fast_launches_no_more_hosts() {
    let fleet = Fleet::start(6, &[]);
    give_role(&fleet.servers[0], "1");
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args([
        "--fanout",
        "1",
        "--fail-fast",
        "--",
        &on_host("exit $(cat $WIRESH_HOME/role 2>/dev/null || echo 0)"),
    ]);
    let out = cli_output(cmd, None).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(wiresh::exit::SOME_FAILED), "{stderr}");
    assert_eq!(summary_hosts(&stderr, "exit 1").len(), 1, "{stderr}");
    assert_eq!(summary_hosts(&stderr, "not run").len(), 5, "{stderr}");
}

/// Ctrl-C interrupts the command on every host (SIGINT): one that dies of
/// it ends the run with 130.
#[tokio::test]
async fn ctrl_c_interrupts_the_command_on_every_host() {
    let fleet = Fleet::start(5, &[]);
    let names = fleet.names();
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args(["--", "echo $$; exec sleep 30"]);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    while pids.len() < names.len() {
        pids.push(next_line(&mut stdout).await.1.parse::<u32>().unwrap());
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGINT) };
    let status = bounded("the client to exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(130), "128+SIGINT after Ctrl-C");
    assert_gone(&pids, None, GONE_WITHIN, "commands after Ctrl-C").await;
}

#[tokio::test]
async fn a_second_ctrl_c_disconnects_from_every_host() {
    let fleet = Fleet::start(4, &[]);
    let names = fleet.names();
    // Each command says when it is interrupted, and goes on regardless.
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args([
        "--",
        "trap 'echo interrupted' INT; echo $$; while :; do sleep 0.1; done",
    ]);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    while pids.len() < names.len() {
        pids.push(next_line(&mut stdout).await.1.parse::<u32>().unwrap());
    }
    let interrupt = || {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGINT) };
    };
    interrupt();
    let mut interrupted = BTreeSet::new();
    while interrupted.len() < names.len() {
        let (host, line) = next_line(&mut stdout).await;
        assert_eq!(line, "interrupted");
        interrupted.insert(host);
    }
    assert!(
        pids.iter().all(|&p| alive(p)),
        "the commands handle the SIGINT and go on"
    );
    interrupt();
    let status = bounded("the client to give up", child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
    // Disconnected, each server kills its command (SIGKILL after the grace).
    let within = std::time::Duration::from_secs(10);
    assert_gone(&pids, None, within, "commands after the client left").await;
}

/// When every command handles the Ctrl-C and ends well, so does the run:
/// its status is the hosts' (0), not 130.
#[tokio::test]
async fn commands_that_handle_ctrl_c_and_end_well_end_the_run_well() {
    let fleet = Fleet::start(3, &[]);
    let names = fleet.names();
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args([
        "--",
        "trap 'echo done; exit 0' INT; sleep 30 >/dev/null 2>&1 & echo ready; wait",
    ]);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in &names {
        assert_eq!(next_line(&mut stdout).await.1, "ready");
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGINT) };
    let mut done = BTreeSet::new();
    while done.len() < names.len() {
        let (host, line) = next_line(&mut stdout).await;
        assert_eq!(line, "done");
        done.insert(host);
    }
    let status = bounded("the client to exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn closing_stdout_stops_every_host() {
    // `wiresh exec -H many -- yes | head -2`, with more hosts than --fanout.
    let fleet = Fleet::start(4, &[]);
    let mut cmd = fleet.cli("exec", &fleet.host_list());
    cmd.args(["--fanout", "2", "--", "yes"]);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (_, line) = next_line(&mut stdout).await;
    assert_eq!(line, "y");
    drop(stdout);
    let status = bounded("the client to stop", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(141), "128+SIGPIPE, as a local pipeline");
}

#[tokio::test]
async fn put_sends_to_every_host_and_get_files_them_by_host() {
    let roots: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let fleet = Fleet::start_each(4, |i| {
        vec!["--files-root".into(), roots[i].path().display().to_string()]
    });
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("payload.bin");
    let data = binary_pattern(300 * KIB);
    std::fs::write(&file, &data).unwrap();
    let mut cmd = fleet.cli("put", &fleet.host_list());
    cmd.args([file.to_str().unwrap(), "incoming/"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    for root in &roots {
        assert_eq!(
            std::fs::read(root.path().join("incoming/payload.bin")).unwrap(),
            data
        );
    }
    for (i, root) in roots.iter().enumerate() {
        std::fs::write(root.path().join("incoming/own.txt"), format!("host {i}\n")).unwrap();
    }
    let dest = local.path().join("collected");
    let mut cmd = fleet.cli("get", &fleet.host_list());
    cmd.args(["incoming/own.txt", dest.to_str().unwrap()]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    for (i, name) in fleet.names().iter().enumerate() {
        let got = std::fs::read_to_string(dest.join(name).join("own.txt")).unwrap();
        assert_eq!(got, format!("host {i}\n"), "DEST/HOST/own.txt for {name}");
    }
    // A missing file on one host fails that host only.
    std::fs::remove_file(roots[2].path().join("incoming/own.txt")).unwrap();
    let mut cmd = fleet.cli("get", &fleet.host_list());
    cmd.args(["incoming/own.txt", dest.to_str().unwrap()]);
    let out = cli_output(cmd, None).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(1), "{stderr}");
    assert_eq!(
        summary_hosts(&stderr, "refused (not_found)"),
        BTreeSet::from([fleet.names()[2].clone()])
    );
}

#[tokio::test]
async fn shell_runs_each_line_on_every_host_gathered() {
    let fleet = Fleet::start(6, &[]);
    give_role(&fleet.servers[5], "odd");
    let cmd = fleet.cli("shell", &fleet.host_list());
    let script = format!(
        "echo hello\n{}\nexit\n",
        on_host("cat $WIRESH_HOME/role 2>/dev/null || echo even")
    );
    let out = cli_output(cmd, Some(script.into())).await;
    let stdout = out.stdout_str();
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert!(
        stdout.contains("(6 hosts, exit 0)\n---------------\nhello\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(5 hosts, exit 0)\n---------------\neven\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{} (1 host, exit 0)\n---------------\nodd\n",
            fleet.names()[5]
        )),
        "{stdout}"
    );
}

#[tokio::test]
async fn one_host_is_exactly_the_single_host_exec() {
    let fleet = Fleet::start(1, &[]);
    let mut cmd = fleet.cli("exec", &fleet.names()[0]);
    cmd.args(["--", "echo out; echo err >&2; exit 7"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(7));
    assert_eq!(out.stdout_str(), "out\n", "no prefix");
    assert_eq!(out.stderr_str(), "err\n", "no summary");
}

#[tokio::test]
async fn bad_selections_say_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("exec").args(args).args(["--", "true"]);
        isolated(&mut cmd, home.path());
        cli_output(cmd, None)
    };
    std::fs::write(home.path().join("token"), "x".repeat(64)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        home.path().join("token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // Usage errors, one status for all of them (as clap's).
    let out = run(&["-H", "web[3-1]"]).await;
    assert_eq!(out.code, Some(USAGE));
    assert!(
        out.stderr_str()
            .contains("the end of a range is before its start"),
        "{}",
        out.stderr_str()
    );
    let out = run(&["-g", "web"]).await;
    assert_eq!(out.code, Some(USAGE));
    assert!(
        out.stderr_str().contains("there are no client settings"),
        "{}",
        out.stderr_str()
    );
    let out = run(&[
        "-H",
        "a,b",
        "--fingerprint",
        &format!("sha256:{}", "0".repeat(64)),
    ])
    .await;
    assert_eq!(out.code, Some(USAGE));
    assert!(
        out.stderr_str().contains("pins one server"),
        "{}",
        out.stderr_str()
    );
    let out = run(&["-H", "a", "-x", "a"]).await;
    assert_eq!(out.code, Some(USAGE));
    assert!(
        out.stderr_str().contains("excludes every host"),
        "{}",
        out.stderr_str()
    );
    let out = run(&["-H", "a,b", "--fanout", "0"]).await;
    assert_eq!(out.code, Some(2), "clap refuses it");
}

#[tokio::test]
async fn inventory_hosts_with_their_own_tokens_and_fingerprints() {
    // Servers started the ordinary way, each with its own token.
    let servers: Vec<Server> = (0..3).map(|_| Server::start()).collect();
    let client = tempfile::tempdir().unwrap();
    let fingerprint = |s: &Server| {
        s.banner[0]
            .split("fingerprint ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let mut inventory = String::from("[groups]\ntrio = \"box[1-3]\"\n");
    for (i, s) in servers.iter().enumerate() {
        // The third host's pin is wrong: it must be refused.
        let pin = if i == 2 {
            format!("sha256:{}", "ab".repeat(32))
        } else {
            fingerprint(s)
        };
        inventory.push_str(&format!(
            "[hosts.box{}]\naddress = \"127.0.0.1\"\nport = {}\ntoken_file = \"{}\"\nfingerprint = \"{pin}\"\n",
            i + 1,
            s.addr.port(),
            s.home().join("token").display()
        ));
    }
    let path = client.path().join("inv.toml");
    std::fs::write(&path, inventory).unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args([
        "exec",
        "--inventory",
        path.to_str().unwrap(),
        "-g",
        "trio",
        "--",
        &on_host("echo $WIRESH_HOME"),
    ]);
    isolated(&mut cmd, client.path());
    let out = cli_output(cmd, None).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(255), "{stderr}");
    let lines = by_host(&out.stdout_str(), &["box1".into(), "box2".into()]);
    assert_eq!(lines["box1"], [servers[0].home().display().to_string()]);
    assert_eq!(lines["box2"], [servers[1].home().display().to_string()]);
    assert_eq!(
        summary_hosts(&stderr, "unreachable (fingerprint changed)"),
        BTreeSet::from(["box3".to_string()])
    );
    assert!(stderr.contains("box3: wiresh: WARNING"), "{stderr}");
    assert!(
        !client.path().join("known_hosts").exists(),
        "pinned fingerprints are not written"
    );
}

/// `--json`'s `error.kind` is one of a small fixed set, naming the cause
/// (a name that does not resolve, a port nobody listens on, a server that
/// never answers, a wrong token, a wrong pin), with a message beside it;
/// a host that ran has no error, whatever its status.
#[tokio::test]
async fn json_error_kinds_name_the_cause() {
    let fleet = Fleet::start(2, &[]);
    let stranger = Server::start(); // a token of its own
                                    // Accepts (the kernel's backlog) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = dead_address();
    let (dead_ip, dead_port) = dead.rsplit_once(':').unwrap();
    let host = |name: &str, address: &str, port: &str, more: &str| {
        format!("[hosts.{name}]\naddress = \"{address}\"\nport = {port}\n{more}")
    };
    let badpin = format!("fingerprint = \"sha256:{}\"\n", "ab".repeat(32));
    let extra = [
        host("nosuch", "nosuch.invalid", "7878", ""),
        host("dead", dead_ip, dead_port, ""),
        host(
            "silent",
            "127.0.0.1",
            &silent.local_addr().unwrap().port().to_string(),
            "",
        ),
        host(
            "stranger",
            "127.0.0.1",
            &stranger.addr.port().to_string(),
            "",
        ),
        host(
            "badpin",
            "127.0.0.1",
            &fleet.servers[1].addr.port().to_string(),
            &badpin,
        ),
    ]
    .concat();
    fleet.write_inventory(&extra);
    let mut cmd = fleet.cli_bare("exec");
    cmd.args(["-H", "node01,nosuch,dead,silent,stranger,badpin"])
        .args(["--json", "--connect-timeout", "2s", "--", "exit 4"]);
    let out = cli_output(cmd, None).await;
    let mut kinds = BTreeMap::new();
    for line in out.stdout_str().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let host = v["host"].as_str().unwrap().to_string();
        if host == "node01" {
            assert_eq!(v["status"], "failed", "{line}");
            assert_eq!(v["exit_code"], 4, "{line}");
            assert!(v["error"].is_null(), "a command that ran: {line}");
            continue;
        }
        assert!(
            !v["error"]["message"].as_str().unwrap().is_empty(),
            "{line}"
        );
        kinds.insert(host, v["error"]["kind"].as_str().unwrap().to_string());
    }
    let want: BTreeMap<String, String> = [
        ("nosuch", "unknown_host"),
        ("dead", "refused"),
        ("silent", "timeout"),
        ("stranger", "auth_failed"),
        ("badpin", "pinning"),
    ]
    .into_iter()
    .map(|(h, k)| (h.to_string(), k.to_string()))
    .collect();
    assert_eq!(kinds, want, "stderr: {}", out.stderr_str());
    assert!(
        out.stderr_str().contains("unreachable (unknown host)"),
        "the summary says it too: {}",
        out.stderr_str()
    );
}

/// `wiresh shell` on many hosts, one of them down: the first line finds it
/// down, says so once with how to retry, and the next lines leave it out:
/// not connected to again, not reported again, no summary for them.
#[tokio::test]
async fn shell_marks_a_host_down_once_and_leaves_it_out() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let fleet = Fleet::start(2, &[]);
    // Takes each connection and hangs up at once, counting them.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap().to_string();
    let tries = Arc::new(AtomicUsize::new(0));
    let counted = tries.clone();
    std::thread::spawn(move || {
        for conn in down.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let hosts = format!("{},{down_addr}", fleet.host_list());
    let cmd = fleet.cli("shell", &hosts);
    let out = cli_output(cmd, Some(b"echo one\necho two\necho three\n".to_vec())).await;
    let (stdout, stderr) = (out.stdout_str(), out.stderr_str());
    for word in ["one", "two", "three"] {
        assert!(
            stdout.contains(&format!("(2 hosts, exit 0)\n---------------\n{word}\n")),
            "{stdout}"
        );
    }
    assert_eq!(stderr.matches("marked down").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "marked down, left out of the next lines: {down_addr}; start `wiresh shell` again to retry it"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("wiresh: 3 hosts").count(),
        1,
        "one summary: {stderr}"
    );
    assert_eq!(
        tries.load(Ordering::SeqCst),
        1,
        "connected to once: {stderr}"
    );
    assert_eq!(out.code, Some(0), "the last line's status: {stderr}");
}

/// The summary comes when something did not succeed, and then only; `-q`
/// leaves it out even then (the exit status and each host's own error
/// still say it). The same for copies.
#[tokio::test]
async fn a_summary_only_when_something_failed_and_none_with_q() {
    let roots: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let fleet = Fleet::start_each(2, |i| {
        vec!["--files-root".into(), roots[i].path().display().to_string()]
    });
    let names = fleet.names();
    let run = |flags: &[&str], line: &str| {
        let mut cmd = fleet.cli("exec", &fleet.host_list());
        cmd.args(flags).args(["--", line]);
        cli_output(cmd, None)
    };
    let out = run(&[], "echo fine").await;
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stderr_str(), "", "all well goes without saying");
    let out = run(&["-b"], "echo fine").await;
    assert_eq!(out.stderr_str(), "", "gathered too");

    let fail_one = on_host(&format!(
        "[ \"$WIRESH_HOME\" = '{}' ] && exit 3; true",
        fleet.servers[1].home().display()
    ));
    let out = run(&[], &fail_one).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(
        summary_hosts(&out.stderr_str(), "exit 3"),
        BTreeSet::from([names[1].clone()]),
        "{}",
        out.stderr_str()
    );
    let out = run(&["-q"], &fail_one).await;
    assert_eq!(out.code, Some(1), "the status still says it");
    assert_eq!(out.stderr_str(), "", "-q: no summary");

    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    std::fs::write(&file, "x").unwrap();
    let mut cmd = fleet.cli("put", &fleet.host_list());
    cmd.args([file.to_str().unwrap(), "f.txt"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stderr_str(), "", "copies that went well");
}
