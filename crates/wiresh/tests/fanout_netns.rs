//! Fan-out to hosts that really are different addresses: each server in a
//! network namespace of its own, the client in another, all joined by a
//! bridge that only the client's namespace holds. Nothing here has a route
//! out of these namespaces, so no packet can leave them.
//!
//! Needs root and `ip netns` (iproute2); where namespaces cannot be made,
//! the test says so on stderr and passes without running. The namespaces
//! (and with them every interface) are removed at the end, even when the
//! test fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};

use common::*;

/// The addresses the servers get (RFC 2544's benchmarking range, used here
/// only inside the namespaces).
const SUBNET: &str = "198.18.0";
const SERVERS: usize = 3;

/// Namespaces and servers, removed and killed on drop.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    servers: Vec<Child>,
}

impl Lab {
    fn client_ns(&self) -> String {
        format!("{}c", self.prefix)
    }

    /// Runs `ip ARGS`, failing the test (and so cleaning up) on error.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn add_namespace(&mut self, name: String) {
        self.ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        self.ip(&["-n", &name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Whether this machine lets the test make namespaces; why not, if not.
fn namespaces_unavailable(probe: &str) -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    match Command::new("ip").args(["netns", "add", probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", probe]).status();
            None
        }
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Some(format!("cannot run `ip`: {e}")),
    }
}

#[tokio::test]
async fn hosts_in_their_own_network_namespaces() {
    let prefix = format!("wfo{}", std::process::id());
    if let Some(why) = namespaces_unavailable(&format!("{prefix}probe")) {
        common::skip::skipped(&format!(
            "network namespaces cannot be made here ({why}); run as root with iproute2"
        ));
        return;
    }
    let mut lab = Lab {
        prefix: prefix.clone(),
        namespaces: Vec::new(),
        servers: Vec::new(),
    };
    let client_ns = lab.client_ns();
    lab.add_namespace(client_ns.clone());
    lab.ip(&["-n", &client_ns, "link", "add", "br0", "type", "bridge"]);
    lab.ip(&[
        "-n",
        &client_ns,
        "addr",
        "add",
        &format!("{SUBNET}.1/24"),
        "dev",
        "br0",
    ]);
    lab.ip(&["-n", &client_ns, "link", "set", "br0", "up"]);
    for i in 0..SERVERS {
        let ns = format!("{prefix}s{i}");
        lab.add_namespace(ns.clone());
        // One end on the client's bridge, the other in the server's namespace.
        let (near, far) = (format!("vc{i}"), format!("vs{i}"));
        lab.ip(&[
            "-n", &client_ns, "link", "add", &near, "type", "veth", "peer", "name", &far, "netns",
            &ns,
        ]);
        lab.ip(&[
            "-n", &client_ns, "link", "set", &near, "master", "br0", "up",
        ]);
        lab.ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{SUBNET}.{}/24", 11 + i),
            "dev",
            &far,
        ]);
        lab.ip(&["-n", &ns, "link", "set", &far, "up"]);
    }

    let client_home = tempfile::tempdir().unwrap();
    let token_file = client_home.path().join("token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_file)
        .unwrap();
    writeln!(f, "{}", "7e".repeat(32)).unwrap();
    let server_homes: Vec<tempfile::TempDir> =
        (0..SERVERS).map(|_| tempfile::tempdir().unwrap()).collect();
    // Start every server, then wait for each one's readiness line.
    let mut ready = Vec::new();
    for (i, home) in server_homes.iter().enumerate() {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &format!("{prefix}s{i}"), BIN, "serve"])
            .args(["--listen", &format!("{SUBNET}.{}:7878", 11 + i)])
            .arg("--token-file")
            .arg(&token_file)
            .env("WIRESH_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a server in its namespace");
        let stdout = child.stdout.take().unwrap();
        lab.servers.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line.contains("listening on ") {
                    let _ = tx.send(line);
                    break;
                }
            }
            for _ in lines {} // drain to the end
        });
        ready.push(rx);
    }
    for (i, rx) in ready.iter().enumerate() {
        let line = rx
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("server {i} never listened"));
        assert!(
            line.contains(&format!("{SUBNET}.{}:7878", 11 + i)),
            "{line}"
        );
    }

    // The client, in its own namespace, reaches each host at its address.
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &client_ns, BIN, "exec", "--json"])
        .args(["-H", &format!("{SUBNET}.[11-{}]", 10 + SERVERS)])
        .args([
            "--",
            &common::fleet::on_host(
                "ip -o -4 addr show scope global | awk '{print $4}'; echo \"$WIRESH_HOME\"",
            ),
        ]);
    isolated(&mut cmd, client_home.path());
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr_str());
    let mut seen = 0;
    for line in out.stdout_str().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let host = v["host"].as_str().unwrap();
        let i: usize = host.rsplit('.').next().unwrap().parse::<usize>().unwrap() - 11;
        // The command saw its own host's address and no other.
        let want = format!("{host}/24\n{}\n", server_homes[i].path().display());
        assert_eq!(v["stdout"], want, "{host}");
        assert_eq!(v["status"], "ok");
        seen += 1;
    }
    assert_eq!(seen, SERVERS);
    let pins = std::fs::read_to_string(client_home.path().join("known_hosts")).unwrap();
    assert_eq!(pins.lines().count(), SERVERS, "one pin per host: {pins}");
}
