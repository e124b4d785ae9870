//! [`Files`]: a `wiresh serve --files-root` with a local scratch directory
//! beside its root, run through the client binary (directly or through a
//! [`Proxy`]); the `args!` macro for their command lines; and what a
//! transfer's exit and output must look like.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use tempfile::TempDir;

use super::disk::SmallFs;
use super::proxy::{Proxy, Seen};
use super::{cli_output, client_command, CliOutput, Server};

/// `[OsString; N]` from anything a command line can take. (Like the rest
/// of the harness, only some test binaries use it.)
#[allow(unused_macros)]
macro_rules! args {
    ($($a:expr),* $(,)?) => { [$(::std::ffi::OsString::from($a)),*] };
}
#[allow(unused_imports)]
pub(crate) use args;

/// A `wiresh serve --files-root BASE/root` with a local scratch directory
/// `BASE/local` beside it; BASE holds nothing else, so anything a transfer
/// writes outside the two shows up there.
pub struct Files {
    // Dropped in this order: the server, then the filesystem it used.
    pub server: Server,
    pub base: PathBuf,
    pub root: PathBuf,
    pub local: PathBuf,
    pub small_fs: Option<SmallFs>,
    _tmp: TempDir,
}

impl Files {
    pub fn start() -> Files {
        Files::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Files {
        Files::start_on(None, extra).expect("a files root on the ordinary disk")
    }

    /// Like [`Files::start_with`], with the root on a tmpfs of `bytes`
    /// ([`SmallFs`]); `None` where mounting is not allowed (the test is
    /// then skipped, and says so).
    pub fn start_on_small_fs(bytes: usize, extra: &[&str]) -> Option<Files> {
        Files::start_on(Some(bytes), extra)
    }

    fn start_on(small_fs: Option<usize>, extra: &[&str]) -> Option<Files> {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("root");
        let local = base.join("local");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&local).unwrap();
        let small_fs = match small_fs {
            Some(bytes) => Some(SmallFs::mount(&root, bytes)?),
            None => None,
        };
        let mut args = vec!["--files-root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = Server::start_with(&args);
        Some(Files {
            server,
            base,
            root,
            local,
            small_fs,
            _tmp: tmp,
        })
    }

    /// `wiresh SUB -H ADDR ARGS...` against the server, or through `via`.
    pub fn cmd(
        &self,
        sub: &str,
        via: Option<&Proxy>,
        args: &[OsString],
    ) -> tokio::process::Command {
        let host = via.map_or(self.server.addr, |p| p.addr).to_string();
        let mut cmd = client_command(sub, &host, self.server.home());
        if via.is_some() {
            // The proxies read and rewrite frames, so they need them in clear.
            cmd.arg("--plaintext");
        }
        cmd.args(args);
        cmd
    }

    pub async fn run(&self, sub: &str, args: &[OsString]) -> CliOutput {
        cli_output(self.cmd(sub, None, args), None).await
    }

    pub async fn run_via(&self, proxy: &Proxy, sub: &str, args: &[OsString]) -> CliOutput {
        cli_output(self.cmd(sub, Some(proxy), args), None).await
    }

    /// `wiresh SUB ARGS...` through a [`Proxy`] that only records; it must
    /// succeed (`what` names it in the failure). Returns what went over
    /// the wire.
    pub async fn run_ok_recorded(&self, sub: &str, args: &[OsString], what: &str) -> Seen {
        let proxy = Proxy::pass(self.server.addr).await;
        let out = self.run_via(&proxy, sub, args).await;
        assert_ok(&out, what);
        proxy.seen()
    }
}

#[track_caller]
pub fn assert_ok(out: &CliOutput, what: &str) {
    assert_eq!(
        out.code,
        Some(0),
        "{what} failed; stdout: {}; stderr: {}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert_no_progress_bar(out, what);
}

/// Output is not a terminal here, so no progress bar may be drawn.
#[track_caller]
pub fn assert_no_progress_bar(out: &CliOutput, what: &str) {
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains(&b'\r') && !text.contains(&0x1b),
            "{what}: progress-bar control characters on {name} without a terminal: {:?}",
            String::from_utf8_lossy(text)
        );
    }
}

/// A failed transfer: exit 1 and a message on stderr.
#[track_caller]
pub fn assert_transfer_error(out: &CliOutput, what: &str) {
    assert_eq!(
        out.code,
        Some(1),
        "{what}: expected exit 1 (transfer error); stdout: {}; stderr: {}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert!(
        !out.stderr_str().trim().is_empty(),
        "{what}: no message on stderr"
    );
}

/// Any failure exit (1 or 255), not a signal, with a message.
#[track_caller]
pub fn assert_failed(out: &CliOutput, what: &str) {
    assert!(
        matches!(out.code, Some(c) if c != 0),
        "{what}: expected a failure exit, got {:?}; stdout: {}; stderr: {}",
        out.code,
        out.stdout_str(),
        out.stderr_str()
    );
    assert!(
        !out.stderr_str().trim().is_empty(),
        "{what}: no message on stderr"
    );
}

/// Waits until the server has logged the end of the connection that came
/// from `peer` (its session, and whatever it wrote, is finished then).
pub async fn wait_connection_end(server: &Server, peer: SocketAddr) {
    let needle = format!("peer={peer}");
    server
        .wait_for_log_line(&format!("the end of the connection from {peer}"), |l| {
            l.contains(&needle)
                && (l.contains("connection ended") || l.contains("connection closed"))
        })
        .await;
}
