//! What a server says reaches the user's terminal without its control
//! sequences (issue 19, 4), over real connections: a fake server whose
//! `error` frames, `hello` and listing names carry OSC 52 (a clipboard
//! write), OSC 0 (the title) and `ESC[2J` (clear the screen), and real
//! servers whose commands print them.
//!
//! - Every message wiresh prints itself has them written out (`\x1b`...):
//!   `exec`, `exec -t`, a `WIRESH-ERROR` line, fan-out (live, gathered,
//!   `--json`, `--outdir`), `put`, `get`, `get -r` names, `put` on many
//!   hosts.
//! - Fan-out output on a terminal (a pseudo-terminal here) keeps text and
//!   colours only, unless `--raw`; to a pipe it passes as it came.
//! - A single host's `exec` is byte for byte, on a terminal too (ssh's way).

mod common;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use common::fake_server::{fentry, FakeScript, FakeServer, Hostile};
use common::fleet::Fleet;
use common::*;
use wiresh_proto::{ErrorCode, FileKind};

/// A clipboard write, a new window title, a cleared screen.
const ATTACK: &str = "\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J";
/// [`ATTACK`] written out, as wiresh shows it.
const WRITTEN_OUT: &str = "\\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07\\x1b[2J";

/// Where `bytes` holds a control byte (C0 but tab, newline and a CR before
/// a newline; DEL; C1, as a byte or in UTF-8), or an ESC that does not
/// start a plain colour (SGR: `ESC [ digits ; m`).
fn raw_control(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let bad = match c {
            '\t' | '\n' => false,
            '\r' => chars.get(i + 1) != Some(&'\n'),
            '\x1b' => {
                let rest: String = chars[i + 1..].iter().take(64).collect();
                let sgr = rest.strip_prefix('[').and_then(|r| {
                    r.find('m')
                        .filter(|&end| r[..end].chars().all(|c| c.is_ascii_digit() || c == ';'))
                });
                sgr.is_none()
            }
            '\0'..='\x1f' | '\x7f'..='\u{9f}' => true,
            _ => false,
        };
        if bad {
            return Some(i);
        }
    }
    // A raw C1 byte is not UTF-8: lossy decoding made it U+FFFD.
    bytes
        .iter()
        .position(|&b| (0x80..=0x9f).contains(&b) && std::str::from_utf8(bytes).is_err())
}

/// `what` went to a terminal (or would have): nothing in it can act on
/// one, and the attack is there, written out.
#[track_caller]
fn assert_defused(bytes: &[u8], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    if let Some(at) = raw_control(bytes) {
        panic!("{what}: a raw control character at {at}: {text:?}");
    }
    assert!(
        text.contains(WRITTEN_OUT),
        "{what}: the server's words are not shown written out: {text:?}"
    );
}

/// A fake server that refuses everything with an error whose message
/// holds [`ATTACK`].
async fn refusing() -> FakeServer {
    let hostile = Hostile {
        refusal: Some((ErrorCode::Forbidden, format!("no {ATTACK} no"))),
        ..Hostile::default()
    };
    FakeServer::start_hostile(no_files(), hostile).await
}

fn no_files() -> FakeScript {
    FakeScript {
        dirs: vec![],
        listing: vec![],
        content: |_| Vec::new(),
        announced_size: None,
    }
}

/// `wiresh SUB -H HOSTS --plaintext ARGS` with the fake servers' token.
fn fake_cmd(sub: &str, fakes: &[&FakeServer], args: &[&str]) -> tokio::process::Command {
    let hosts: Vec<String> = fakes.iter().map(|f| f.addr.to_string()).collect();
    let mut cmd = client_command(sub, &hosts.join(","), fakes[0].home());
    cmd.arg("--plaintext").args(args);
    cmd
}

#[tokio::test]
async fn a_servers_error_message_is_shown_written_out() {
    let (a, b) = (refusing().await, refusing().await);

    let out = cli_output(fake_cmd("exec", &[&a], &["--", "true"]), None).await;
    assert_eq!(out.code, Some(255), "{}", out.stderr_str());
    assert_defused(&out.stderr, "exec");

    let both = [&a, &b];
    let out = cli_output(fake_cmd("exec", &both, &["--", "true"]), None).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    assert_defused(&out.stderr, "fan-out, prefixed");
    assert!(out.stderr_str().contains("refused by policy (2)"));

    let out = cli_output(fake_cmd("exec", &both, &["-b", "--", "true"]), None).await;
    assert_defused(&out.stderr, "fan-out, gathered");

    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out").display().to_string();
    let out = cli_output(
        fake_cmd("exec", &both, &["--outdir", &outdir, "--", "true"]),
        None,
    )
    .await;
    assert_defused(&out.stderr, "fan-out, --outdir");

    let out = cli_output(fake_cmd("exec", &both, &["--json", "--", "true"]), None).await;
    assert!(raw_control(&out.stdout).is_none(), "{}", out.stdout_str());
    for line in out.stdout_str().lines() {
        let host: serde_json::Value = serde_json::from_str(line).unwrap();
        let message = host["error"]["message"].as_str().unwrap();
        assert!(message.contains(WRITTEN_OUT), "{message:?}");
    }

    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"data").unwrap();
    let file = file.display().to_string();
    let out = cli_output(fake_cmd("put", &[&a], &[&file, "x.txt"]), None).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    assert_defused(&out.stderr, "put");
    let out = cli_output(fake_cmd("get", &[&a], &["x.txt", &outdir]), None).await;
    assert_defused(&out.stderr, "get");
    let out = cli_output(fake_cmd("put", &both, &[&file, "x.txt"]), None).await;
    assert_defused(&out.stderr, "put on many hosts");
}

/// Names the server gives (a listing's, its own in `hello`) and a line it
/// refuses a connection with are shown written out too.
#[tokio::test]
async fn names_and_refusal_lines_from_a_server_are_shown_written_out() {
    let evil_name = format!("evil{ATTACK}.txt");
    let listing = FakeServer::start(FakeScript {
        dirs: vec!["dir".into()],
        listing: vec![fentry(&evil_name, FileKind::File, 5)],
        content: |_| b"12345".to_vec(),
        // It announces more than it sends: the error names the file.
        announced_size: Some(10),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("got").display().to_string();
    let out = cli_output(fake_cmd("get", &[&listing], &["-r", "dir", &local]), None).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    assert!(out.stderr_str().contains("received 5 of 10 bytes"));
    assert_defused(&out.stderr, "get -r of a listing with a hostile name");

    let named = FakeServer::start_hostile(
        no_files(),
        Hostile {
            name: Some(format!("fake {ATTACK}")),
            ..Hostile::default()
        },
    )
    .await;
    let out = cli_output(fake_cmd("exec", &[&named], &["-t", "--", "true"]), None).await;
    assert_eq!(out.code, Some(255), "{}", out.stderr_str());
    assert!(out
        .stderr_str()
        .contains("does not offer terminal sessions"));
    assert_defused(&out.stderr, "exec -t naming the server");

    // A "server" that refuses with a plain-text line, as wiresh's own do.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refuser = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut stream, _) = listener.accept().await.unwrap();
        let line = format!("WIRESH-ERROR busy: {ATTACK}\n");
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let mut cmd = client_command("exec", &addr.to_string(), named.home());
    cmd.args(["--plaintext", "--", "true"]);
    let out = cli_output(cmd, None).await;
    refuser.await.unwrap();
    assert_eq!(out.code, Some(255), "{}", out.stderr_str());
    assert_defused(&out.stderr, "a WIRESH-ERROR line");
}

/// Runs `cmd` with stdout and stderr on a new pseudo-terminal (output
/// taken as it is, without turning `\n` into `\r\n`); its exit code, and
/// everything the terminal was sent.
async fn on_a_terminal(mut cmd: tokio::process::Command) -> (Option<i32>, Vec<u8>) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, OutputModes};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut modes = tcgetattr(&terminal).unwrap();
    modes.output_modes.remove(OutputModes::OPOST);
    tcsetattr(&terminal, OptionalActions::Now, &modes).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(terminal.try_clone().unwrap()))
        .stderr(Stdio::from(terminal));
    let mut child = cmd.spawn().expect("cannot start the client");
    // Our copies of the terminal go with the command: once the client
    // exits, reading the master ends.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match master.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                // EIO: nothing holds the terminal any more.
                Err(_) => return all,
            }
        }
    });
    let status = bounded("the client on a terminal", child.wait())
        .await
        .unwrap();
    let screen = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    (status.code(), screen)
}

/// What the hosts' commands print, on stdout and stderr: the attack, and
/// a colour, which passes.
const PRINTING_THE_ATTACK: &str = r"printf '\033]52;c;ZXZpbA==\007\033]0;pwned\007\033[2J\033[31mred\033[0m\n'; printf '\033]52;c;ZXZpbA==\007\033]0;pwned\007\033[2J\n' >&2";

#[tokio::test]
async fn many_hosts_output_reaches_a_terminal_as_text_and_colours() {
    let fleet = Fleet::start(2, &[]);
    let hosts = fleet.host_list();
    let command = PRINTING_THE_ATTACK;

    // Piped: as it came (pdsh's and clush's way; a file or a script gets the bytes).
    let mut cmd = fleet.cli("exec", &hosts);
    cmd.args(["--", command]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert!(out.stdout_str().contains(ATTACK), "{}", out.stdout_str());

    for display in [&[][..], &["-b"][..], &["--diff"][..]] {
        let mut cmd = fleet.cli("exec", &hosts);
        cmd.args(display).args(["--", command]);
        let (code, screen) = on_a_terminal(cmd).await;
        assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&screen));
        let what = format!("exec {display:?} on many hosts, on a terminal");
        assert_defused(&screen, &what);
        let text = String::from_utf8_lossy(&screen);
        assert!(
            text.contains("\x1b[31mred\x1b[0m"),
            "{what}: no colour: {text:?}"
        );
    }

    let mut cmd = fleet.cli("exec", &hosts);
    cmd.args(["--raw", "--", command]);
    let (code, screen) = on_a_terminal(cmd).await;
    assert_eq!(code, Some(0));
    let text = String::from_utf8_lossy(&screen);
    assert!(text.contains(ATTACK), "--raw passes the bytes: {text:?}");

    // One host: the command's own bytes, as ssh gives them.
    let mut cmd = fleet.cli("exec", &fleet.names()[0]);
    cmd.args(["--", command]);
    let (code, screen) = on_a_terminal(cmd).await;
    assert_eq!(code, Some(0));
    let text = String::from_utf8_lossy(&screen);
    assert!(
        text.contains(ATTACK),
        "single-host exec is byte for byte: {text:?}"
    );
}
