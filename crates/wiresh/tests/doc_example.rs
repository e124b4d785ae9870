//! The example client of `docs/PROTOCOL.md` (section 9), taken from the
//! document as it stands and run by `python3` against a real server: over
//! TLS with the printed fingerprint pinned, and in plaintext on loopback. A
//! wrong pin stops it before it sends anything. So the document's promise
//! that a client can be written from it alone is checked with the client
//! it shows.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The Python code block of section 9, exactly as the document has it.
fn example_client() -> String {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&doc)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc.display()));
    let section = doc
        .split("\n## 9. ")
        .nth(1)
        .and_then(|rest| rest.split("\n## 10. ").next())
        .expect("PROTOCOL.md has a section 9 followed by a section 10");
    let code = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("section 9 has a ```python block");
    format!("{code}\n")
}

/// The fingerprint the server printed when it started.
fn printed_fingerprint(server: &Server) -> String {
    server
        .banner
        .iter()
        .find_map(|l| l.split("TLS fingerprint ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no fingerprint in the banner {:?}", server.banner))
}

/// The example client, written to a scratch directory.
struct Example {
    dir: tempfile::TempDir,
}

impl Example {
    fn new() -> Example {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wiresh_run.py"), example_client()).unwrap();
        Example { dir }
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("wiresh_run.py")
    }

    /// `WIRESH_TOKEN=token python3 wiresh_run.py HOST PORT PIN COMMAND`
    /// against `server`, as the document's usage line says.
    async fn run(&self, server: &Server, token: &str, pin: &str, command: &str) -> CliOutput {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(self.script())
            .arg(server.addr.ip().to_string())
            .arg(server.addr.port().to_string())
            .arg(pin)
            .arg(command);
        isolated(&mut cmd, self.dir.path()).env("WIRESH_TOKEN", token);
        cli_output(cmd, None).await
    }
}

#[tokio::test]
async fn the_example_client_runs_commands_over_tls_and_plaintext() {
    let server = Server::start();
    let example = Example::new();
    let fingerprint = printed_fingerprint(&server);
    // The token as the server's file holds it, newline included.
    let token = format!("{}\n", server.token.expose());
    for pin in [fingerprint.as_str(), "plaintext"] {
        let out = example
            .run(
                &server,
                &token,
                pin,
                "printf 'hi\\000\\n'; echo err >&2; exit 3",
            )
            .await;
        assert_eq!(out.code, Some(3), "{pin}: stderr {}", out.stderr_str());
        assert_eq!(out.stdout, b"hi\0\n", "{pin}");
        assert_eq!(out.stderr_str(), "err\n", "{pin}");

        // Killed by a signal: 128 + its number.
        let out = example.run(&server, &token, pin, "kill -TERM $$").await;
        assert_eq!(out.code, Some(128 + 15), "{pin}: {}", out.stderr_str());
    }

    // The server's error frames end it with their code and message.
    let out = example
        .run(&server, "not-the-token", "plaintext", "true")
        .await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr_str().starts_with("wiresh: auth_failed: "),
        "{}",
        out.stderr_str()
    );
}

#[tokio::test]
async fn the_example_client_sends_nothing_to_a_server_it_has_not_pinned() {
    let server = Server::start();
    let example = Example::new();
    let fingerprint = printed_fingerprint(&server);
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert_ne!(wrong, fingerprint);
    let marker = example.dir.path().join("ran");
    let out = example
        .run(
            &server,
            server.token.expose(),
            &wrong,
            &format!("touch {}", marker.display()),
        )
        .await;
    assert_eq!(out.code, Some(1));
    let err = out.stderr_str();
    assert!(err.contains("WARNING"), "{err}");
    assert!(err.contains(&fingerprint) && err.contains(&wrong), "{err}");
    // The server saw the TLS handshake and then no preamble at all.
    server
        .wait_for_log("connection lost before the preamble")
        .await;
    assert!(!marker.exists(), "the command ran");
}
