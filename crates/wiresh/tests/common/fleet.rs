//! Many servers for the fan-out tests: started at once (each waited for by
//! its own readiness line), all with one token, and a client home that
//! holds that token, so the client binary reaches every one of them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{client_command, isolated, Server, BIN};

/// Servers on distinct loopback ports sharing one token.
pub struct Fleet {
    pub servers: Vec<Server>,
    /// The client's `WIRESH_HOME`: the token, the pins, the inventory.
    client_home: TempDir,
}

impl Fleet {
    /// Starts `n` servers with `args` (plus the shared `--token-file`)
    /// concurrently and waits until each says it is listening.
    pub fn start(n: usize, args: &[&str]) -> Fleet {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Fleet::start_each(n, |_| args.clone())
    }

    /// Like [`Fleet::start`], server `i` with `args(i)`.
    pub fn start_each(n: usize, args: impl Fn(usize) -> Vec<String> + Sync) -> Fleet {
        let client_home = tempfile::tempdir().expect("a client home");
        let token_file = client_home.path().join("token");
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).expect("randomness");
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)
            .expect("writing the shared token");
        writeln!(file, "{token}").unwrap();
        let token_arg = token_file.to_str().expect("a UTF-8 temp path");
        let servers = std::thread::scope(|scope| {
            let starting: Vec<_> = (0..n)
                .map(|i| {
                    let own = args(i);
                    scope.spawn(move || {
                        let mut all = vec!["--token-file", token_arg];
                        all.extend(own.iter().map(String::as_str));
                        Server::start_with(&all)
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|s| s.join().expect("a server failed to start"))
                .collect()
        });
        Fleet {
            servers,
            client_home,
        }
    }

    /// The client's `WIRESH_HOME`.
    pub fn home(&self) -> &Path {
        self.client_home.path()
    }

    /// Each server as `127.0.0.1:PORT`, the name it has in output when
    /// selected with `-H`.
    pub fn names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.to_string()).collect()
    }

    /// Every server, as one `-H` value.
    pub fn host_list(&self) -> String {
        self.names().join(",")
    }

    /// The name of server `i` in the inventory [`Fleet::write_inventory`]
    /// writes: `node01`, `node02`, ...
    pub fn node(i: usize) -> String {
        format!("node{:02}", i + 1)
    }

    /// Writes the client settings (`client.toml`) in the client home: group `all` is every server,
    /// named `node01`...; each host has its port; `extra` is appended.
    pub fn write_inventory(&self, extra: &str) -> PathBuf {
        let mut text = format!("[groups]\nall = \"node[01-{:02}]\"\n", self.servers.len());
        for (i, server) in self.servers.iter().enumerate() {
            text.push_str(&format!(
                "[hosts.{}]\naddress = \"{}\"\nport = {}\n",
                Fleet::node(i),
                server.addr.ip(),
                server.addr.port()
            ));
        }
        text.push_str(extra);
        let path = self.home().join("client.toml");
        std::fs::write(&path, text).expect("writing the inventory");
        path
    }

    /// `wiresh SUBCOMMAND -H HOSTS` as a user of the client home.
    pub fn cli(&self, subcommand: &str, hosts: &str) -> tokio::process::Command {
        client_command(subcommand, hosts, self.home())
    }

    /// `wiresh SUBCOMMAND` with no `-H`, as a user of the client home.
    pub fn cli_bare(&self, subcommand: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg(subcommand);
        isolated(&mut cmd, self.home());
        cmd
    }

    /// The server whose `WIRESH_HOME` is `home` (commands read it with
    /// [`on_host`], which is how a test tells the hosts' output apart).
    pub fn by_home(&self, home: &str) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.home() == Path::new(home))
    }
}

/// `command` with `$WIRESH_HOME` set to the home of the server running it,
/// read from that server's environment (`/proc/$PPID/environ`: the server
/// starts its commands itself). Commands no longer inherit the server's
/// environment, as with ssh; each server of a fleet has a home of its own,
/// so this is how a command tells which host it runs on.
pub fn on_host(command: &str) -> String {
    format!(
        r#"WIRESH_HOME=$(tr '\0' '\n' < /proc/$PPID/environ | sed -n 's/^WIRESH_HOME=//p'); {command}"#
    )
}
