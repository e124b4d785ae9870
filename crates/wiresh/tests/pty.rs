//! Commands on a pseudo-terminal, frame by frame: `exec.pty` (the command
//! leads a session on its own terminal, stderr merged into stdout, `TERM`
//! and the size as asked), `resize`, keys such as Ctrl-C, `stdin_end` as
//! end of file, the session's every process group killed on disconnect, a
//! fast writer held back, `exec.login_shell`, the policy's `allow_pty`, the
//! audit log, and a client facing a server without the `pty` feature.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use wiresh::client::ClientError;
use wiresh_proto::{
    ErrorCode, ExecRequest, Frame, FrameCodec, Hello, Message, PtyRequest, WindowSize,
    PREAMBLE_LEN, PROTOCOL_VERSION,
};

fn pty(cols: u16, rows: u16) -> Option<PtyRequest> {
    Some(PtyRequest {
        term: "xterm-256color".into(),
        cols,
        rows,
    })
}

/// `exec` of `line` on a pty of `cols` × `rows`, with input from the client.
fn on_pty(line: &str, cols: u16, rows: u16) -> Message {
    Message::Exec(ExecRequest {
        stdin: true,
        pty: pty(cols, rows),
        ..ExecRequest::shell(line)
    })
}

/// Reads the command's output until it contains `needle` (a pty command
/// sends no `stderr`); returns all of it.
async fn read_until(raw: &mut RawConn, needle: &str) -> String {
    let mut text = Vec::new();
    while !String::from_utf8_lossy(&text).contains(needle) {
        let f = raw.recv().await;
        match f.message {
            Message::Stdout => text.extend_from_slice(&f.body),
            Message::StdinAck { .. } => {}
            other => panic!(
                "expected output with {needle:?}, got {other:?} after {:?}",
                String::from_utf8_lossy(&text)
            ),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn hello_offers_terminals() {
    let server = Server::start();
    let (_raw, hello) = server.raw_with_hello().await;
    assert!(hello.features.iter().any(|f| f == "pty"), "{hello:?}");
}

#[tokio::test]
async fn a_pty_command_leads_a_session_on_its_own_terminal() {
    let server = Server::start();
    let mut raw = server.raw().await;
    raw.send(Message::Exec(ExecRequest {
        pty: pty(100, 30),
        ..ExecRequest::shell(
            "tty; stty size; echo \"term=$TERM\"; echo \"sid=$(ps -o sid= -p $$)\"; echo to-stderr >&2",
        )
    }))
    .await;
    let run = raw.finish().await;
    assert_exited(&run.status, 0);
    assert!(
        run.stderr.is_empty(),
        "a pty sends no stderr frames: {run:?}"
    );
    let out = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines[1], "30 100", "{out:?}");
    assert_eq!(lines[2], "term=xterm-256color", "{out:?}");
    assert_eq!(
        lines[3].split_whitespace().collect::<String>(),
        format!("sid={}", run.pid)
    );
    assert_eq!(
        lines[4], "to-stderr",
        "stderr is merged into the terminal: {out:?}"
    );
}

#[tokio::test]
async fn resize_reaches_the_command_as_sigwinch() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // Ignored between commands, and the connection goes on.
    raw.send(Message::Resize(WindowSize { cols: 1, rows: 1 }))
        .await;
    let pid = raw
        .start(on_pty(
            "trap 'stty size; exit 7' WINCH; echo armed; while :; do sleep 0.05; done",
            80,
            24,
        ))
        .await;
    read_until(&mut raw, "armed").await;
    raw.send(Message::Resize(WindowSize {
        cols: 120,
        rows: 40,
    }))
    .await;
    let out = read_until(&mut raw, "40 120").await;
    assert!(!out.contains("1 1"), "{out:?}");
    let run = raw.finish_started(pid).await;
    assert_exited(&run.status, 7);
}

#[tokio::test]
async fn ctrl_c_is_a_key_that_interrupts_the_foreground_group() {
    let server = Server::start();
    let mut raw = server.raw().await;
    let pid = raw
        .start(on_pty("sleep 100; echo not-reached", 80, 24))
        .await;
    // Before `sleep` runs, the shell might take the key while it forks.
    let sleep = wait_for_member(pid, "sleep").await;
    raw.send_frame(Frame::with_body(Message::Stdin, &b"\x03"[..]))
        .await;
    let run = raw.finish_started(pid).await;
    assert_killed(&run.status, libc::SIGINT);
    assert!(!String::from_utf8_lossy(&run.stdout).contains("not-reached"));
    assert_gone(&[pid, sleep], Some(pid), GONE_WITHIN, "after Ctrl-C").await;
}

/// Waits until a process of group `pgid` runs the program `name`; its pid.
async fn wait_for_member(pgid: u32, name: &str) -> u32 {
    bounded(&format!("`{name}` to run in group {pgid}"), async {
        loop {
            let running = group_members(pgid).into_iter().find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == name)
            });
            if let Some(pid) = running {
                return pid;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn stdin_end_is_end_of_file_on_a_terminal() {
    let server = Server::start();
    let mut raw = server.raw().await;
    let pid = raw
        .start(on_pty("wc -c | sed 's/^ */bytes=/'", 80, 24))
        .await;
    // The last line is half a line: it is delivered, then the end of file.
    raw.send_frame(Frame::with_body(Message::Stdin, &b"a\nb\nc"[..]))
        .await;
    raw.send(Message::StdinEnd).await;
    let run = raw.finish_started(pid).await;
    assert_exited(&run.status, 0);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.ends_with("bytes=5\r\n"), "{out:?}");
    assert_eq!(run.acked, 5);

    // Without input (`stdin` false) the terminal gets end of file at once.
    raw.send(Message::Exec(ExecRequest {
        pty: pty(80, 24),
        ..ExecRequest::shell("cat; echo eof")
    }))
    .await;
    let run = raw.finish().await;
    assert_exited(&run.status, 0);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "eof\r\n");
}

#[tokio::test]
async fn disconnect_kills_every_process_group_of_the_session() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // Job control (`set -m`) puts the background job in a group of its own.
    let pid = raw
        .start(on_pty("set -m; sleep 1000 & echo \"bg=$!\"; wait", 80, 24))
        .await;
    let out = read_until(&mut raw, "\r\n").await;
    let bg: u32 = out
        .trim()
        .strip_prefix("bg=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out:?}"));
    let (_, _, bg_group) = proc_stat(bg).expect("the job runs");
    assert_eq!(bg_group, bg, "the job is not in a group of its own");
    assert_ne!(bg_group, pid);

    drop(raw);
    assert_gone(&[pid, bg], Some(bg), GONE_WITHIN, "after the client left").await;
}

#[tokio::test]
async fn the_end_of_the_leader_ends_the_session() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // The job holds the terminal open; the leader's exit still ends the
    // command, and the job with it, as a terminal's hangup would.
    let run = raw
        .exec(ExecRequest {
            pty: pty(80, 24),
            ..ExecRequest::shell("set -m; sleep 1000 & echo \"bg=$!\"; exit 4")
        })
        .await;
    assert_exited(&run.status, 4);
    let out = String::from_utf8(run.stdout).unwrap();
    let bg: u32 = out.trim().strip_prefix("bg=").unwrap().parse().unwrap();
    assert_gone(&[bg], Some(bg), GONE_WITHIN, "left in the session").await;
}

#[tokio::test]
async fn a_fast_writer_on_a_terminal_is_held_back() {
    // What may sit between the writer and a client that reads nothing: the
    // terminal's buffer, the server's queues and both socket buffers.
    const IN_FLIGHT_LIMIT: u64 = 96 * 1024 * 1024;
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let server = Server::start();
    let mut raw = server.raw().await;
    let pid = raw.start(on_pty("exec yes", 80, 24)).await;
    let stalled_at = wait_until_stalled(pid)
        .await
        .expect("`yes` never ends by itself");
    assert!(
        stalled_at < IN_FLIGHT_LIMIT,
        "`yes` wrote {stalled_at} bytes to a terminal nobody read"
    );
    let rss = status_kib(server.pid(), "VmRSS").unwrap();
    assert!(rss < RSS_LIMIT_KIB, "server RSS {rss} KiB");
    // Reading again lets it go on.
    read_until(&mut raw, "y\r\ny\r\n").await;
    raw.send(Message::Cancel).await;
}

#[tokio::test]
async fn a_login_shell_reads_its_script_from_stdin_and_starts_at_home() {
    let server = Server::start();
    let mut raw = server.raw().await;
    let home = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("this account is in the user database")
        .dir;
    let pid = raw
        .start(Message::Exec(ExecRequest {
            stdin: true,
            ..ExecRequest::login_shell()
        }))
        .await;
    let script = "pwd\ncd /usr\npwd\nx=5\necho \"x=$x\"\nexit 3\necho not-reached\n";
    raw.send_frame(Frame::with_body(Message::Stdin, script.as_bytes()))
        .await;
    raw.send(Message::StdinEnd).await;
    let run = raw.finish_started(pid).await;
    assert_exited(&run.status, 3);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!("{}\n/usr\nx=5\n", home.display()),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[tokio::test]
async fn bad_terminal_types_are_refused_and_the_connection_goes_on() {
    let server = Server::start();
    let mut raw = server.raw().await;
    raw.send(Message::Exec(ExecRequest {
        pty: Some(PtyRequest {
            term: "../../tmp/evil".into(),
            cols: 80,
            rows: 24,
        }),
        ..ExecRequest::shell("true")
    }))
    .await;
    let message = raw.expect_error(ErrorCode::BadRequest).await;
    assert!(message.contains("term"), "{message}");
    let run = raw.exec(ExecRequest::shell("echo still-here")).await;
    assert_eq!(run.stdout, b"still-here\n");
}

#[tokio::test]
async fn the_policy_can_forbid_terminals_and_the_audit_log_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"allow_pty": false}"#).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = Server::start_with(&[
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    let mut raw = server.raw().await;
    raw.send(on_pty("true", 80, 24)).await;
    let message = raw.expect_error(ErrorCode::Forbidden).await;
    assert!(message.contains("pty"), "{message}");
    let run = raw.exec(ExecRequest::shell("echo piped")).await;
    assert_eq!(run.stdout, b"piped\n");

    // Allowed by default; each line says whether the command had a pty.
    let open = Server::start_with(&["--audit-log", audit.to_str().unwrap()]);
    let mut raw = open.raw().await;
    raw.send(Message::Exec(ExecRequest {
        pty: pty(80, 24),
        ..ExecRequest::shell("true")
    }))
    .await;
    assert_exited(&raw.finish().await.status, 0);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, bool)> = lines
        .iter()
        .filter(|l| l["event"] == "end")
        .map(|l| (l["outcome"].as_str().unwrap(), l["pty"] == true))
        .collect();
    assert_eq!(
        summary,
        [("refused", true), ("finished", false), ("finished", true)]
    );
}

/// A server older than terminal sessions: greets without the `pty`
/// feature, authenticates anyone, and reports the first request it gets.
async fn server_without_pty() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Option<Message>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let session = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut preamble = [0u8; PREAMBLE_LEN];
        stream.read_exact(&mut preamble).await.unwrap();
        let mut framed = Framed::new(stream, FrameCodec::default());
        let _auth = framed.next().await?.ok()?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            server: "wiresh/0.0.1".into(),
            features: vec!["exec".into(), "stdin".into(), "cancel".into()],
            keepalive_secs: 20,
            max_body: 1 << 20,
            max_header: 1 << 16,
            stdin_window: 1 << 20,
        };
        framed.send(Frame::new(Message::Hello(hello))).await.ok()?;
        framed.send(Frame::new(Message::AuthOk)).await.ok()?;
        Some(framed.next().await?.ok()?.message)
    });
    (addr, session)
}

#[tokio::test]
async fn a_server_without_the_feature_gets_no_terminal_request() {
    let (addr, session) = server_without_pty().await;
    let endpoint = wiresh::client::Endpoint {
        target: wiresh::client::Target {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        token: wiresh_proto::Secret("any".into()),
        security: wiresh::client::Security::Plaintext,
        connect_timeout: wiresh::client::CONNECT_TIMEOUT,
        persist: None,
    };
    let mut conn = bounded("connect", wiresh::client::Connection::connect(&endpoint))
        .await
        .unwrap();
    let req = ExecRequest {
        pty: pty(80, 24),
        ..ExecRequest::shell("vi")
    };
    let ran = run(&mut conn, req, None).await;
    let Err(err @ ClientError::Unsupported(_)) = ran.result else {
        panic!(
            "expected a refusal on the client side, got {:?}",
            ran.result
        );
    };
    let text = err.to_string();
    assert!(text.contains("terminal") && text.contains("pty"), "{text}");
    // Nothing was sent: the connection closes without a request.
    conn.close().await;
    assert_eq!(bounded("the fake server", session).await.unwrap(), None);
}

#[tokio::test]
async fn exec_t_tells_the_user_when_the_server_has_no_terminals() {
    let (addr, session) = server_without_pty().await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = client_command("exec", &addr.to_string(), home.path());
    cmd.env("WIRESH_TOKEN", "any-token")
        .args(["--plaintext", "-t", "--", "vi"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(255), "stdout: {}", out.stdout_str());
    let err = out.stderr_str();
    assert!(err.contains("does not offer terminal sessions"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(bounded("the fake server", session).await.unwrap(), None);
}
