//! `wiresh exec` output over plain TCP, where large `stdout` bodies go from
//! the socket to stdout with `splice(2)`: byte for byte into a pipe
//! (straight in), a file (through a relay pipe), a file opened for
//! appending (which refuses splices: copied), as over TLS (always copied);
//! and a reader that goes away still stops the remote command.

mod common;

use std::process::Stdio;

use common::*;

/// A file on the server of `len` bytes of the test pattern, and the bytes.
fn data_file(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("data");
    let bytes = binary_pattern(len);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// `wiresh exec -n [--plaintext] -- cat FILE; printf end >&2`.
fn cat_command(
    server: &Server,
    plaintext: bool,
    file: &std::path::Path,
) -> tokio::process::Command {
    let mut cmd = server.cli("exec");
    if plaintext {
        cmd.arg("--plaintext");
    }
    cmd.args([
        "-n",
        "--",
        &format!("cat '{}'; printf end >&2", file.display()),
    ]);
    cmd
}

/// Into a pipe (the captured stdout), over plaintext and over TLS: more
/// than the server copies before it splices, odd-sized, every byte value.
#[tokio::test]
async fn output_into_a_pipe_is_exact_over_plaintext_and_tls() {
    let server = Server::start();
    let (file, expected) = data_file(server.home(), 9 * MIB + 4321);
    for plaintext in [true, false] {
        let out = cli_output(cat_command(&server, plaintext, &file), None).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr_str());
        assert_eq!(out.stderr, b"end", "plaintext: {plaintext}");
        assert!(
            out.stdout == expected,
            "plaintext: {plaintext}: {} bytes of {} arrived, or they differ",
            out.stdout.len(),
            expected.len()
        );
    }
}

/// Into a file, new or opened for appending (`>>`), after what it held.
#[tokio::test]
async fn output_into_a_file_is_exact_when_new_and_when_appended() {
    let server = Server::start();
    let (file, expected) = data_file(server.home(), 6 * MIB + 77);
    let dir = tempfile::tempdir().unwrap();
    for append in [false, true] {
        let path = dir.path().join(format!("out-{append}"));
        std::fs::write(&path, b"held\n").unwrap();
        let stdout = std::fs::OpenOptions::new()
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .unwrap();
        let mut cmd = cat_command(&server, true, &file);
        cmd.stdout(Stdio::from(stdout));
        let out = cli_output(cmd, None).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr_str());
        let written = std::fs::read(&path).unwrap();
        let want = if append {
            [&b"held\n"[..], &expected].concat()
        } else {
            expected.clone()
        };
        assert!(
            written == want,
            "append: {append}: the file has {} bytes, {} expected, or they differ",
            written.len(),
            want.len()
        );
    }
}

/// `wiresh exec --plaintext -- yes | head -c 5` ends like the local
/// pipeline: 141, and the remote `yes` is killed, though its output had
/// long since gone over to splicing when `head` left.
#[tokio::test]
async fn a_reader_that_leaves_stops_the_command() {
    let server = Server::start();
    let pidfile = server.home().join("yes.pid");
    // 5 MiB read before leaving: past the server's copied first MiB.
    let script = format!(
        "'{bin}' exec --plaintext -n -H {addr} -- 'echo $$ > {pid}; exec yes' | head -c 5242880 | tail -c 4; echo \"rc=${{PIPESTATUS[0]}}\"",
        bin = BIN,
        addr = server.addr,
        pid = pidfile.display()
    );
    let out = cli_output(bash_script(&script, server.home()), None).await;
    assert_eq!(
        out.stdout_str(),
        "y\ny\nrc=141\n",
        "stderr: {}",
        out.stderr_str()
    );
    let pid = pid_from_file(&pidfile, &out.stderr_str());
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "remote `yes`").await;
}
