//! The modern server and the library client over real loopback TCP.
//!
//! Each test starts its own `wiresh serve` (the real binary) on
//! `127.0.0.1:0` with a fresh `WIRESH_HOME`; see `common/mod.rs`. The tests
//! talk to it through the library client (`wiresh::client::Connection`) or,
//! when the wire itself is the subject, frame by frame with the protocol
//! crate's codec. End-to-end tests of the `wiresh` client binary are in
//! `cli.rs`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Barrier, Notify};
use wiresh::client::{ClientError, Output};
use wiresh_proto::{ErrorCode, ExecRequest, Frame, Message, Preamble, Secret};

// 1. exec echo -------------------------------------------------------------

#[tokio::test]
async fn exec_echo_library_and_raw() {
    let server = Server::start();
    let mut conn = server.connect().await;
    assert_eq!(conn.hello().version, 1);
    assert_eq!(conn.hello().max_body, 1024 * 1024);

    let ran = sh(&mut conn, "echo hello world").await;
    assert_eq!(ran.stdout, b"hello world\n");
    assert_eq!(ran.stderr, b"");
    assert_exited(ran.status(), 0);

    let mut raw = server.raw().await;
    let run = raw.exec(ExecRequest::shell("echo hi")).await;
    assert!(run.pid > 1, "started pid {}", run.pid);
    assert_eq!(run.stdout, b"hi\n");
    assert_exited(&run.status, 0);
}

// 2. stdout and stderr ------------------------------------------------------

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let ran = sh(
        &mut conn,
        r"printf 'out1\n'; printf 'err1\n' >&2; printf 'out2\n'; printf '\000\377err2\n' >&2",
    )
    .await;
    assert_exited(ran.status(), 0);
    assert_eq!(ran.stdout, b"out1\nout2\n");
    assert_eq!(ran.stderr, b"err1\n\x00\xfferr2\n");
    // No chunk mixes the streams: every stdout chunk holds only "out" text.
    for c in &ran.chunks {
        match c {
            Output::Stdout(b) => assert!(!b.windows(3).any(|w| w == b"err"), "{c:?}"),
            Output::Stderr(b) => assert!(!b.windows(3).any(|w| w == b"out"), "{c:?}"),
        }
    }
}

// 3. exit codes, signals, argv ---------------------------------------------

#[tokio::test]
async fn exit_codes_signals_and_argv() {
    let server = Server::start();
    let mut conn = server.connect().await;

    assert_exited(sh(&mut conn, "exit 3").await.status(), 3);
    assert_exited(sh(&mut conn, "false").await.status(), 1);
    assert_killed(sh(&mut conn, "kill -9 $$").await.status(), 9);
    assert_killed(sh(&mut conn, "kill -TERM $$").await.status(), 15);

    // argv: no shell, so spaces, quotes and `$` stay inside their argument.
    let args = ["printf", "%s|", "a b", "c'd \"e\"", "$HOME", "*", ""];
    let ran = run(
        &mut conn,
        ExecRequest::argv(args.iter().map(|s| s.to_string()).collect()),
        None,
    )
    .await;
    assert_exited(ran.status(), 0);
    assert_eq!(ran.stdout_str(), "a b|c'd \"e\"|$HOME|*||");

    // The same words through the shell are split and expanded.
    let ran = sh(&mut conn, "printf '%s|' a   b").await;
    assert_eq!(ran.stdout_str(), "a|b|");
}

#[tokio::test]
async fn refused_requests_keep_the_connection() {
    let server = Server::start();
    let mut conn = server.connect().await;

    let ran = run(
        &mut conn,
        ExecRequest::argv(vec!["/nonexistent/wiresh-test-program".into()]),
        None,
    )
    .await;
    match &ran.result {
        Err(e @ ClientError::Remote { code, .. }) => {
            assert_eq!(*code, ErrorCode::SpawnFailed, "{e}");
            assert!(e.connection_usable());
        }
        other => panic!("expected spawn_failed, got {other:?}"),
    }
    let bad_cwd = ExecRequest {
        cwd: Some("/nonexistent/wiresh-test-dir".into()),
        ..ExecRequest::shell("true")
    };
    assert!(matches!(
        run(&mut conn, bad_cwd, None).await.result,
        Err(ClientError::Remote {
            code: ErrorCode::SpawnFailed,
            ..
        })
    ));
    assert_eq!(sh(&mut conn, "echo still").await.stdout, b"still\n");

    // bad_request, on the raw protocol: neither command nor argv, an empty
    // argv, and both.
    let mut raw = server.raw().await;
    let both = ExecRequest {
        command: Some("true".into()),
        argv: Some(vec!["true".into()]),
        ..Default::default()
    };
    for req in [ExecRequest::default(), ExecRequest::argv(vec![]), both] {
        raw.send(Message::Exec(req)).await;
        raw.expect_error(ErrorCode::BadRequest).await;
    }
    let run = raw.exec(ExecRequest::shell("echo ok")).await;
    assert_eq!(run.stdout, b"ok\n");
}

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let mut conn = server.connect().await;
    let req = ExecRequest {
        env: [("WIRESH_TEST_VAR".to_string(), "x y'z".to_string())].into(),
        cwd: Some(dir.to_str().unwrap().to_string()),
        ..ExecRequest::shell(r#"printf '%s|%s' "$WIRESH_TEST_VAR" "$(pwd -P)""#)
    };
    let ran = run(&mut conn, req, None).await;
    assert_exited(ran.status(), 0);
    assert_eq!(ran.stdout_str(), format!("x y'z|{}", dir.display()));
}

// 4. stdin -------------------------------------------------------------------

#[tokio::test]
async fn stdin_is_forwarded_byte_exact() {
    let server = Server::start();
    let mut conn = server.connect().await;

    // Larger than one frame body and not a multiple of anything.
    let input = binary_pattern(3 * 1024 * 1024 + 4321);
    let ran = run(&mut conn, ExecRequest::shell("cat"), Some(input.clone())).await;
    assert_exited(ran.status(), 0);
    assert!(
        ran.stdout == input,
        "cat did not return the input byte for byte"
    );

    let ran = run(&mut conn, ExecRequest::shell("wc -c"), Some(input.clone())).await;
    assert_eq!(ran.stdout_str().trim(), input.len().to_string());

    // An empty input still ends: the command sees end-of-file at once.
    let ran = run(&mut conn, ExecRequest::shell("wc -c"), Some(Vec::new())).await;
    assert_eq!(ran.stdout_str().trim(), "0");

    // Without stdin the command reads /dev/null, so `cat` ends at once.
    let ran = sh(&mut conn, "cat; echo done").await;
    assert_eq!(ran.stdout, b"done\n");

    // Input the command does not read is dropped; the next command is clean.
    let ran = run(
        &mut conn,
        ExecRequest::shell("head -c 5"),
        Some(vec![b'x'; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!(ran.stdout, b"xxxxx");
    assert_eq!(sh(&mut conn, "echo next").await.stdout, b"next\n");
}

// 5. 256 MiB with bounded server memory --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_256_mib_with_bounded_server_memory() {
    const TOTAL: u64 = 256 * 1024 * 1024;
    const PAUSE_AT: u64 = 16 * 1024 * 1024;
    // The issue's target is 32 MiB in release; tests run the debug binary.
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    // What may sit between the producer and the client while the client
    // reads nothing: pipe, server queues, both socket buffers (the receive
    // buffer autotunes up to net.ipv4.tcp_rmem's max, 32 MiB here).
    const IN_FLIGHT_LIMIT: u64 = 96 * 1024 * 1024;

    let server = Server::start();
    let sampler = RssSampler::start(server.pid());
    let baseline_kib = status_kib(server.pid(), "VmRSS").unwrap();
    let mut conn = server.connect().await;
    let (tx, mut rx) = mpsc::channel::<Output>(4);
    let req = ExecRequest::shell(format!("exec head -c {TOTAL} /dev/zero"));
    let running = tokio::spawn(async move {
        let res = conn.run(req, None, &tx, never).await;
        drop(tx);
        res
    });

    let zeros = vec![0u8; 1024 * 1024];
    let mut received = 0u64;
    let mut paused = false;
    let begun = Instant::now();
    while let Some(out) = bounded("output of the 256 MiB command", rx.recv()).await {
        let chunk = match out {
            Output::Stdout(b) => b,
            Output::Stderr(b) => panic!("unexpected stderr: {:?}", String::from_utf8_lossy(&b)),
        };
        assert!(chunk.len() <= zeros.len(), "chunk of {} bytes", chunk.len());
        assert!(chunk[..] == zeros[..chunk.len()], "output corrupted");
        received += chunk.len() as u64;
        if !paused && received >= PAUSE_AT {
            paused = true;
            // Stop reading. Backpressure must stop the producer long before
            // it has written everything, and the server must not buffer.
            let producers = children_of(server.pid());
            assert_eq!(producers.len(), 1, "server children: {producers:?}");
            let stalled_at = wait_until_stalled(producers[0]).await.unwrap_or_else(|| {
                panic!(
                    "the producer wrote all {TOTAL} bytes while the client had read only \
                     {received}: no backpressure"
                )
            });
            let in_flight = stalled_at - received;
            let rss_kib = status_kib(server.pid(), "VmRSS").unwrap();
            eprintln!(
                "paused at {received} bytes: producer stalled at {stalled_at} ({} MiB in flight), \
                 server VmRSS {rss_kib} KiB",
                in_flight >> 20
            );
            assert!(stalled_at < TOTAL);
            assert!(
                in_flight < IN_FLIGHT_LIMIT,
                "{in_flight} bytes between producer and client while the client is paused"
            );
            assert!(
                sampler.peak_kib() < RSS_LIMIT_KIB,
                "server VmRSS peaked at {} KiB while the client was paused",
                sampler.peak_kib()
            );
        }
    }
    let elapsed = begun.elapsed();
    let result = bounded("the run to return", running).await.unwrap();
    assert_exited(&result.expect("the 256 MiB command"), 0);
    assert_eq!(received, TOTAL, "not all output arrived");

    let hwm_kib = status_kib(server.pid(), "VmHWM").unwrap();
    let peak_kib = sampler.peak_kib();
    eprintln!(
        "256 MiB in {elapsed:?} ({:.0} MiB/s); server VmRSS baseline {baseline_kib} KiB, \
         sampled peak {peak_kib} KiB, VmHWM {hwm_kib} KiB",
        256.0 / elapsed.as_secs_f64()
    );
    assert!(paused);
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "server VmRSS peaked at {peak_kib} KiB"
    );
    assert!(hwm_kib < RSS_LIMIT_KIB, "server VmHWM {hwm_kib} KiB");
}

// 6. concurrency ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_clients() {
    const CLIENTS: usize = 100;
    let server = std::sync::Arc::new(Server::start());
    let barrier = std::sync::Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (server, barrier) = (server.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut conn = server.connect().await;
                // All connections are open at once before any command runs.
                barrier.wait().await;
                let req = ExecRequest {
                    env: [("WIRESH_N".to_string(), n.to_string())].into(),
                    ..ExecRequest::shell(format!("echo {n} $WIRESH_N"))
                };
                let ran = run(&mut conn, req, None).await;
                assert_exited(ran.status(), 0);
                assert_eq!(ran.stdout_str(), format!("{n} {n}\n"));
                n
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(
            bounded("a client task", t)
                .await
                .expect("client task failed"),
        );
    }
    assert_eq!(done, (0..CLIENTS).collect::<Vec<_>>());
}

// 7. disconnect kills the command -----------------------------------------------

#[tokio::test]
async fn disconnect_kills_the_process_group() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // A shell with a background child: both are in the command's group.
    raw.send(exec("sleep 1000 & echo $!; wait")).await;
    let pid = raw.expect_started().await;
    let bg: u32 = raw.read_lines(1).await[0].parse().unwrap();
    assert!(alive(pid) && alive(bg));
    assert_eq!(
        proc_stat(bg).unwrap().2,
        pid,
        "background child not in the group"
    );

    drop(raw);
    assert_gone(&[pid, bg], Some(pid), GONE_WITHIN, "after the client left").await;
}

#[tokio::test]
async fn library_client_dropped_mid_command_kills_it() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let (tx, mut rx) = mpsc::channel::<Output>(16);
    let task = tokio::spawn(async move {
        let _ = conn
            .run(
                ExecRequest::shell("sleep 1000 & echo $!; echo $$; wait"),
                None,
                &tx,
                never,
            )
            .await;
    });
    let mut text = Vec::new();
    while text.iter().filter(|&&b| b == b'\n').count() < 2 {
        match bounded("the pids", rx.recv()).await {
            Some(Output::Stdout(b)) => text.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    let pids: Vec<u32> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| alive(p)));

    // Dropping the future drops the connection.
    task.abort();
    let _ = task.await;
    assert_gone(
        &pids,
        Some(pids[1]),
        GONE_WITHIN,
        "after the client was dropped",
    )
    .await;
}

#[tokio::test]
async fn disconnect_kills_a_group_that_ignores_sigterm() {
    let server = Server::start();
    let mut raw = server.raw().await;
    raw.send(exec("trap '' TERM; sleep 1000 & echo $!; wait"))
        .await;
    let pid = raw.expect_started().await;
    let bg: u32 = raw.read_lines(1).await[0].parse().unwrap();
    drop(raw);
    // SIGTERM is ignored, so this takes the SIGKILL after the kill grace.
    assert_gone(&[pid, bg], Some(pid), BOUND, "SIGKILL never came").await;
}

#[tokio::test]
async fn leftovers_in_the_group_end_with_the_command() {
    let server = Server::start();
    let mut raw = server.raw().await;
    // The background child does not hold the output pipes, so the command
    // ends at once; whatever it left in its group is terminated with it.
    let run = raw
        .exec(ExecRequest::shell("sleep 1000 >/dev/null 2>&1 & echo $!"))
        .await;
    assert_exited(&run.status, 0);
    let bg: u32 = String::from_utf8(run.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_gone(&[bg], Some(run.pid), GONE_WITHIN, "left behind").await;
}

// 8. timeouts -------------------------------------------------------------------

#[tokio::test]
async fn request_timeout_kills_the_command() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let req = ExecRequest {
        timeout_ms: Some(300),
        ..ExecRequest::shell("echo before; sleep 30; echo after")
    };
    let ran = run(&mut conn, req, None).await;
    let status = ran.status();
    assert!(status.timed_out, "{status:?}");
    assert_killed(status, 15);
    assert_eq!(ran.stdout, b"before\n");

    // A command that ignores SIGTERM gets SIGKILL after the grace.
    let req = ExecRequest {
        timeout_ms: Some(300),
        ..ExecRequest::shell("trap '' TERM; sleep 30")
    };
    let ran = run(&mut conn, req, None).await;
    assert!(ran.status().timed_out);
    assert_killed(ran.status(), 9);

    // A command that ends in time is not marked.
    let req = ExecRequest {
        timeout_ms: Some(60_000),
        ..ExecRequest::shell("echo quick")
    };
    let ran = run(&mut conn, req, None).await;
    assert_exited(ran.status(), 0);

    // The connection is fine afterwards.
    assert_eq!(sh(&mut conn, "echo after").await.stdout, b"after\n");
}

#[tokio::test]
async fn server_command_timeout_applies_to_every_command() {
    let server = Server::start_with(&["--command-timeout", "300ms"]);
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "sleep 30").await;
    assert!(ran.status().timed_out, "{:?}", ran.status());
    assert_killed(ran.status(), 15);

    // A request cannot ask for more than the server allows.
    let req = ExecRequest {
        timeout_ms: Some(600_000),
        ..ExecRequest::shell("sleep 30")
    };
    let ran = run(&mut conn, req, None).await;
    assert!(ran.status().timed_out);

    assert_exited(sh(&mut conn, "true").await.status(), 0);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = Server::start_with(&["--idle-timeout", "300ms"]);
    let mut c = server.raw().await;
    // A command that runs longer than the idle timeout is not cut off.
    let run = c.exec(ExecRequest::shell("sleep 0.6; echo survived")).await;
    assert_eq!(run.stdout, b"survived\n");
    // Then, idle, the connection is told and closed.
    let msg = c.expect_error(ErrorCode::Timeout).await;
    assert!(msg.contains("idle"), "{msg}");
    c.expect_closed().await;
}

// 9. malformed frames ----------------------------------------------------------

fn malformed_cases() -> Vec<(&'static str, Vec<u8>, ErrorCode)> {
    vec![
        (
            "header length 0xffffffff",
            vec![0xff, 0xff, 0xff, 0xff],
            ErrorCode::FrameTooLarge,
        ),
        (
            "header length 65537",
            65537u32.to_be_bytes().to_vec(),
            ErrorCode::FrameTooLarge,
        ),
        (
            "body_len over the limit",
            raw_frame(br#"{"type":"stdin","body_len":1048577}"#, b""),
            ErrorCode::FrameTooLarge,
        ),
        (
            "header not JSON",
            raw_frame(b"this is not json", b""),
            ErrorCode::BadFrame,
        ),
        (
            "header not an object",
            raw_frame(b"[1,2,3]", b""),
            ErrorCode::BadFrame,
        ),
        ("header length 0", vec![0, 0, 0, 0], ErrorCode::BadFrame),
        (
            "no body_len",
            raw_frame(br#"{"type":"ping"}"#, b""),
            ErrorCode::BadFrame,
        ),
        (
            "unknown type",
            raw_frame(br#"{"type":"frobnicate","body_len":0}"#, b""),
            ErrorCode::UnknownType,
        ),
        (
            "body on a bodyless type",
            raw_frame(br#"{"type":"cancel","body_len":3}"#, b"abc"),
            ErrorCode::BadFrame,
        ),
        (
            "ill-typed field",
            raw_frame(br#"{"type":"exec","command":42,"body_len":0}"#, b""),
            ErrorCode::BadFrame,
        ),
    ]
}

#[tokio::test]
async fn malformed_frames_close_only_their_own_connection() {
    let server = Server::start();
    // A connection that keeps working throughout, with a command running
    // across all the bad connections.
    let mut good = server.connect().await;
    assert_eq!(sh(&mut good, "echo before").await.stdout, b"before\n");
    let mut running = server.raw().await;
    running.send(exec_with_stdin("cat")).await;
    let running_pid = running.expect_started().await;

    for (name, bytes, code) in malformed_cases() {
        // Before authentication: right after the preamble.
        let mut c = RawConn::preambled(server.addr).await;
        c.send_raw(&bytes).await;
        assert!(
            matches!(c.recv().await.message, Message::Hello(_)),
            "{name}"
        );
        // Before authentication only a small `auth` frame is allowed, so any
        // body at all is too large there.
        let pre_auth_code = if name == "body on a bodyless type" {
            ErrorCode::FrameTooLarge
        } else {
            code
        };
        let msg = c.expect_error(pre_auth_code).await;
        assert!(!msg.is_empty(), "{name}: empty message");
        c.expect_closed().await;

        // After authentication, while idle.
        let mut c = server.raw().await;
        c.send_raw(&bytes).await;
        c.expect_error(code).await;
        c.expect_closed().await;
    }

    // A frame cut off by the end of the stream.
    let mut c = server.raw().await;
    c.send_raw(&raw_frame(br#"{"type":"ping","body_len":10}"#, b"abc"))
        .await;
    c.framed.get_mut().shutdown().await.unwrap();
    c.expect_error(ErrorCode::BadFrame).await;
    c.expect_closed().await;

    // Not wiresh at all: a plain-text line, not a frame, then close.
    for junk in [
        &b"GET / HT"[..],
        b"\x00\x00\x00\x20{\"ty",
        b"WIRESx\x00\x01",
    ] {
        let mut s = tcp(server.addr).await;
        s.write_all(junk).await.unwrap();
        let mut reply = Vec::new();
        bounded("the bad_preamble line", s.read_to_end(&mut reply))
            .await
            .expect("reading the bad_preamble line");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("WIRESH-ERROR bad_preamble"),
            "reply to {junk:?}: {text:?}"
        );
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "{text:?}"
        );
    }

    // A frame while a command runs.
    let mut c = server.raw().await;
    c.send(exec_with_stdin("cat")).await;
    let pid = c.expect_started().await;
    c.send_raw(&raw_frame(br#"{"type":"frobnicate","body_len":0}"#, b""))
        .await;
    c.expect_error(ErrorCode::UnknownType).await;
    c.expect_closed().await;
    assert_gone(
        &[pid],
        Some(pid),
        GONE_WITHIN,
        "command survived its connection",
    )
    .await;

    // The good connections never noticed.
    assert_eq!(sh(&mut good, "echo after").await.stdout, b"after\n");
    assert!(alive(running_pid));
    running
        .send_frame(Frame::with_body(Message::Stdin, &b"still here"[..]))
        .await;
    running.send(Message::StdinEnd).await;
    let run = running.finish_started(running_pid).await;
    assert_eq!(run.stdout, b"still here");
    assert_exited(&run.status, 0);
}

#[tokio::test]
async fn header_limit_is_inclusive() {
    let server = Server::start();
    let mut c = server.raw().await;
    // A ping whose header is exactly 65536 bytes is accepted.
    let prefix = br#"{"type":"ping","body_len":2,"pad":""#;
    let suffix = br#""}"#;
    let mut header = prefix.to_vec();
    header.resize(65536 - suffix.len(), b'x');
    header.extend_from_slice(suffix);
    assert_eq!(header.len(), 65536);
    c.send_raw(&raw_frame(&header, b"ok")).await;
    assert_eq!(c.expect_pong().await, b"ok"[..]);

    // A body of exactly max_body is accepted too.
    let body = Bytes::from(binary_pattern(1024 * 1024));
    c.send_frame(Frame::with_body(Message::Ping, body.clone()))
        .await;
    assert!(c.expect_pong().await == body);

    // One more header byte is not.
    header.insert(header.len() - 2, b'x');
    c.send_raw(&raw_frame(&header, b"ok")).await;
    c.expect_error(ErrorCode::FrameTooLarge).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn unsupported_version_is_refused() {
    let server = Server::start();
    let mut s = tcp(server.addr).await;
    s.write_all(&Preamble::new(2).encode()).await.unwrap();
    let mut c = RawConn::from_stream(s);
    let msg = c.expect_error(ErrorCode::UnsupportedVersion).await;
    assert!(
        msg.contains('1'),
        "should name the supported version: {msg}"
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn messages_out_of_place() {
    let server = Server::start();

    // Late input and cancels between commands are ignored.
    let mut c = server.raw().await;
    c.send(Message::Cancel).await;
    c.send(Message::StdinEnd).await;
    c.send_frame(Frame::with_body(Message::Stdin, &b"late"[..]))
        .await;
    c.send(Message::Pong).await;
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");

    // A server-to-client message from the client.
    c.send(Message::Started { pid: 1 }).await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;

    // A second auth.
    let mut c = server.raw().await;
    c.send(Message::Auth {
        token: server.token.clone(),
    })
    .await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;

    // A second exec while one runs: refused, and the running one is killed
    // with the connection.
    let mut c = server.raw().await;
    c.send(exec_with_stdin("cat")).await;
    let pid = c.expect_started().await;
    c.send(exec("echo second")).await;
    c.expect_error(ErrorCode::UnexpectedMessage).await;
    c.expect_closed().await;
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the running command").await;
}

// 10. authentication -----------------------------------------------------------

#[tokio::test]
async fn wrong_token_is_refused() {
    let server = Server::start();
    let wrong = "not-the-token-4242424242424242";

    let (mut c, _) = RawConn::greeted(server.addr).await;
    c.send(Message::Auth {
        token: Secret(wrong.into()),
    })
    .await;
    let msg = c.expect_error(ErrorCode::AuthFailed).await;
    assert!(msg.contains("token"), "{msg}");
    c.expect_closed().await;

    // A pipelined exec after a wrong token is not acted on.
    let marker = server.home().join("pwned");
    let mut bytes = Preamble::new(1).encode().to_vec();
    bytes.extend(frame_bytes(&Frame::new(Message::Auth {
        token: Secret(wrong.into()),
    })));
    bytes.extend(frame_bytes(&Frame::new(exec(&format!(
        "touch {}",
        marker.display()
    )))));
    let mut c = RawConn::from_stream(tcp(server.addr).await);
    c.send_raw(&bytes).await;
    assert!(matches!(c.recv().await.message, Message::Hello(_)));
    c.expect_error(ErrorCode::AuthFailed).await;
    c.expect_closed().await;
    assert!(!marker.exists(), "a command ran without authentication");

    // The library client reports it.
    let err = connect_with_token(&server, wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                code: ErrorCode::AuthFailed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("token"), "{err}");

    // The failures are logged, the token is not.
    server.wait_for_log("auth_failed").await;
    assert!(!server.log().contains(wrong), "the log shows the token");
    assert!(!server.log().contains(server.token.expose()));
}

async fn connect_with_token(
    server: &Server,
    token: &str,
) -> Result<wiresh::client::Connection, ClientError> {
    bounded(
        "Connection::connect",
        wiresh::client::Connection::connect(&wiresh::client::Endpoint {
            token: Secret(token.into()),
            ..server.endpoint()
        }),
    )
    .await
}

#[tokio::test]
async fn requests_before_auth_are_refused() {
    let server = Server::start();
    for first in [
        Frame::new(exec("echo hi")),
        Frame::new(Message::Ping),
        Frame::new(Message::StdinEnd),
    ] {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send_frame(first.clone()).await;
        c.expect_error(ErrorCode::AuthRequired).await;
        c.expect_closed().await;
    }
}

/// Before authenticating, a peer may send one small frame and nothing with
/// a body: a stranger cannot make the server buffer or parse much.
#[tokio::test]
async fn unauthenticated_peers_may_send_only_a_small_frame() {
    let server = Server::start();
    let big_token = Frame::new(Message::Auth {
        token: Secret("x".repeat(5000)),
    });
    let with_body = Frame::with_body(Message::Ping, &b"p"[..]);
    for first in [big_token, with_body] {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send_frame(first).await;
        c.expect_error(ErrorCode::FrameTooLarge).await;
        c.expect_closed().await;
    }
    // After authenticating, the normal limits apply.
    let mut c = server.raw().await;
    c.send_frame(Frame::with_body(Message::Ping, vec![7u8; 100_000]))
        .await;
    assert_eq!(c.recv().await.body.len(), 100_000);
}

/// Wrong tokens are answered slowly, and an address that keeps guessing is
/// refused outright (`rate_limited`), even with the right token.
#[tokio::test]
async fn repeated_wrong_tokens_are_rate_limited() {
    let server = Server::start();
    let mut refused_for_rate = false;
    for _ in 0..8 {
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send(Message::Auth {
            token: Secret("wrong".into()),
        })
        .await;
        match c.recv().await.message {
            Message::Error {
                code: ErrorCode::AuthFailed,
                ..
            } => {}
            Message::Error {
                code: ErrorCode::RateLimited,
                ..
            } => {
                refused_for_rate = true;
                break;
            }
            other => panic!("expected auth_failed or rate_limited, got {other:?}"),
        }
    }
    assert!(refused_for_rate, "never rate limited after 8 wrong tokens");
    let (mut c, _) = RawConn::greeted(server.addr).await;
    c.send(Message::Auth {
        token: server.token.clone(),
    })
    .await;
    c.expect_error(ErrorCode::RateLimited).await;
}

/// A peer that starts a frame and never finishes it (slowloris) is dropped,
/// while another connection keeps working.
#[tokio::test]
async fn a_frame_left_unfinished_is_dropped() {
    let server = Server::start_with(&["--frame-timeout", "1s"]);
    let mut slow = server.raw().await;
    // Half a header, then nothing.
    slow.send_raw(&[0, 0, 0, 40, b'{']).await;
    let mut good = server.connect().await;
    assert_eq!(sh(&mut good, "echo fine").await.stdout, b"fine\n");
    let msg = slow.expect_error(ErrorCode::Timeout).await;
    assert!(msg.contains("not completed"), "{msg}");
    slow.expect_closed().await;
}

// 11. cancel ------------------------------------------------------------------------

#[tokio::test]
async fn cancel_kills_the_command_and_keeps_the_connection() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let cancel = std::sync::Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::channel::<Output>(16);

    let request = {
        let cancel = cancel.clone();
        async move {
            let res = conn
                .run(
                    ExecRequest::shell("sleep 1000 & echo $!; wait"),
                    None,
                    &tx,
                    move || {
                        let cancel = cancel.clone();
                        async move { cancel.notified().await }
                    },
                )
                .await;
            drop(tx);
            (conn, res)
        }
    };
    let watch = async {
        let mut text = Vec::new();
        let mut bg = None;
        while let Some(out) = rx.recv().await {
            if let Output::Stdout(b) = out {
                text.extend_from_slice(&b);
            }
            if bg.is_none() && text.ends_with(b"\n") {
                let pid: u32 = String::from_utf8_lossy(&text).trim().parse().unwrap();
                assert!(alive(pid));
                bg = Some(pid);
                cancel.notify_one(); // resolves the cancel future once
            }
        }
        bg.expect("no pid printed")
    };
    let ((mut conn, res), bg) = bounded("the cancelled command", async {
        tokio::join!(request, watch)
    })
    .await;
    let status = res.expect("a cancelled command still reports its exit");
    assert_killed(&status, 15);
    assert!(!status.timed_out);
    assert_gone(
        &[bg],
        None,
        GONE_WITHIN,
        "background child survived the cancel",
    )
    .await;

    assert_eq!(sh(&mut conn, "echo again").await.stdout, b"again\n");
}

#[tokio::test]
async fn raw_cancel() {
    let server = Server::start();
    let mut c = server.raw().await;
    c.send(exec("echo go; exec sleep 1000")).await;
    let pid = c.expect_started().await;
    assert_eq!(c.read_lines(1).await, ["go"]);
    c.send(Message::Cancel).await;
    let run = c.finish_started(pid).await;
    assert_killed(&run.status, 15);
    assert!(!alive(pid));
    // A second cancel, now idle, is ignored.
    c.send(Message::Cancel).await;
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");
}

// 12. ping and many commands ----------------------------------------------------------

#[tokio::test]
async fn ping_pong_echoes_the_body() {
    let server = Server::start();
    let mut c = server.raw().await;
    for body in [&b""[..], b"x", b"\x00\xff\r\nbinary ping body\x00"] {
        c.send_frame(Frame::with_body(Message::Ping, body)).await;
        assert_eq!(c.expect_pong().await, body);
    }

    // While a command runs, pongs come interleaved with its frames.
    c.send(exec_with_stdin("cat")).await;
    let pid = c.expect_started().await;
    c.send_frame(Frame::with_body(Message::Ping, &b"during"[..]))
        .await;
    assert_eq!(c.expect_pong().await, b"during"[..]);
    c.send_frame(Frame::with_body(Message::Stdin, &b"data"[..]))
        .await;
    c.send(Message::StdinEnd).await;
    let run = c.finish_started(pid).await;
    assert_eq!(run.stdout, b"data");

    let mut conn = server.connect().await;
    bounded("Connection::ping", conn.ping())
        .await
        .expect("ping");
}

#[tokio::test]
async fn many_commands_on_one_connection() {
    let server = Server::start();
    let mut conn = server.connect().await;
    for i in 0..200 {
        let ran = sh(
            &mut conn,
            &format!("echo {i}; echo e{i} >&2; exit {}", i % 7),
        )
        .await;
        assert_exited(ran.status(), i % 7);
        assert_eq!(ran.stdout_str(), format!("{i}\n"));
        assert_eq!(ran.stderr_str(), format!("e{i}\n"));
    }
}

#[tokio::test]
async fn pings_while_output_is_unread_do_not_end_the_command() {
    // Section 7.6: while a command runs the client may ping at any time. A
    // client whose own reader is paused (say `wiresh exec ... | less`) keeps
    // pinging every keepalive/2 while not reading, so pongs pile up behind
    // unread output. That must not end the command.
    let server = Server::start();
    let mut c = server.raw().await;
    c.send(exec("exec yes")).await;
    let pid = c.expect_started().await;
    // Read nothing until `yes` is blocked: the server's writer is stuck.
    assert!(wait_until_stalled(pid).await.is_some(), "`yes` ended");
    const PINGS: u32 = 64;
    for i in 0..PINGS {
        c.send_frame(Frame::with_body(Message::Ping, i.to_be_bytes().to_vec()))
            .await;
    }
    c.send(Message::Cancel).await;
    let mut pongs = Vec::new();
    let status = loop {
        let f = c.recv().await;
        match f.message {
            Message::Stdout | Message::Stderr => {}
            Message::Pong => pongs.push(u32::from_be_bytes(f.body[..].try_into().unwrap())),
            Message::Exit(status) => break status,
            other => panic!(
                "the server ended the command because of unanswered pings: {other:?} \
                 (after {} pongs)",
                pongs.len()
            ),
        }
    };
    assert_killed(&status, 15);
    // Every pong answers a ping, in order (the server may skip some).
    assert!(pongs.windows(2).all(|w| w[0] < w[1]) && pongs.iter().all(|&p| p < PINGS));
    assert_eq!(c.exec(ExecRequest::shell("echo ok")).await.stdout, b"ok\n");
}

// 14. graceful shutdown -------------------------------------------------------------

/// Polls until a TCP connection to `addr` is refused.
async fn wait_refused(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + BOUND;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Checks the frames a connection received after `started` until it closed
/// during a shutdown: the command's output, then its `exit` as the last frame
/// of the command (section 7.3: "exit ends the command"), then at most an
/// `error shutting_down`. Returns what the command produced.
fn command_end(pid: u32, frames: &[Frame]) -> RawRun {
    let kinds: Vec<&str> = frames.iter().map(|f| f.message.type_name()).collect();
    let exit_at = kinds
        .iter()
        .position(|&k| k == "exit")
        .unwrap_or_else(|| panic!("no exit frame: {frames:?}"));
    for f in &frames[..exit_at] {
        assert!(
            matches!(
                f.message,
                Message::Stdout | Message::Stderr | Message::StdinAck { .. }
            ),
            "before exit, only output (and stdin acks) may come, got {:?}; all frames: {kinds:?}",
            f.message
        );
    }
    match &frames[exit_at + 1..] {
        [] => {}
        [Frame {
            message:
                Message::Error {
                    code: ErrorCode::ShuttingDown,
                    ..
                },
            ..
        }] => {}
        rest => panic!("after exit only `error shutting_down` may follow, got {rest:?}"),
    }
    let Message::Exit(status) = frames[exit_at].message.clone() else {
        unreachable!()
    };
    let mut run = RawRun {
        pid,
        stdout: Vec::new(),
        stderr: Vec::new(),
        status,
        pongs: Vec::new(),
        acked: 0,
    };
    for f in &frames[..exit_at] {
        match f.message {
            Message::Stdout => run.stdout.extend_from_slice(&f.body),
            Message::Stderr => run.stderr.extend_from_slice(&f.body),
            Message::StdinAck { bytes } => run.acked += bytes,
            _ => unreachable!("checked above"),
        }
    }
    run
}

#[tokio::test]
async fn sigterm_lets_the_running_command_finish() {
    let mut server = Server::start_with(&["--shutdown-grace", "60s"]);
    let mut idle = server.raw().await;
    let mut busy = server.raw().await;
    // The command finishes when the test says so, not after some time.
    busy.send(exec_with_stdin("read line; echo \"done $line\""))
        .await;
    let pid = busy.expect_started().await;

    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down").await;
    // New connections are refused at once, while the command still runs.
    wait_refused(server.addr).await;
    assert!(alive(pid));
    // The idle connection is told and closed.
    idle.expect_error(ErrorCode::ShuttingDown).await;
    idle.expect_closed().await;

    busy.send_frame(Frame::with_body(Message::Stdin, &b"go\n"[..]))
        .await;
    busy.send(Message::StdinEnd).await;
    let frames = busy.read_until_closed().await;
    let run = command_end(pid, &frames);
    assert_eq!(run.stdout, b"done go\n");
    assert_exited(&run.status, 0);

    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "server exit: {status:?}");
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "connected after the server stopped");
}

#[tokio::test]
async fn shutdown_grace_expiry_kills_the_command() {
    let mut server = Server::start_with(&["--shutdown-grace", "200ms"]);
    let mut busy = server.raw().await;
    busy.send(exec("sleep 1000")).await;
    let pid = busy.expect_started().await;
    server.signal(libc::SIGTERM);
    let frames = busy.read_until_closed().await;
    let run = command_end(pid, &frames);
    assert_killed(&run.status, 15);
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "server exit: {status:?}");
    assert!(!alive(pid));
}

#[tokio::test]
async fn library_run_during_shutdown_returns_the_exit() {
    let mut server = Server::start_with(&["--shutdown-grace", "60s"]);
    let mut conn = server.connect().await;
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(1);
    let (tx, mut rx) = mpsc::channel::<Output>(16);
    let request = async move {
        let res = conn
            .run(
                ExecRequest::shell("echo started; read x; echo \"done $x\""),
                Some(stdin_rx),
                &tx,
                never,
            )
            .await;
        drop(tx);
        res
    };
    let drive = async {
        let mut out = Vec::new();
        let mut stdin_tx = Some(stdin_tx);
        while let Some(o) = rx.recv().await {
            if let Output::Stdout(b) = o {
                out.extend_from_slice(&b);
            }
            if out == b"started\n" {
                if let Some(tx) = stdin_tx.take() {
                    server.signal(libc::SIGTERM);
                    server.wait_for_log("shutting down").await;
                    tx.send(Bytes::from_static(b"go\n")).await.unwrap();
                }
            }
        }
        out
    };
    let (res, out) = bounded("the command during shutdown", async {
        tokio::join!(request, drive)
    })
    .await;
    assert_eq!(out, b"started\ndone go\n");
    let status = res.expect("the command's exit status, not an error");
    assert_exited(&status, 0);
    assert_eq!(server.wait_exit().await.code(), Some(0));
}

// 15. connection limit --------------------------------------------------------------

#[tokio::test]
async fn connection_limit_is_enforced() {
    let server = Server::start_with(&["--max-connections", "2"]);
    let first = server.raw().await;
    let mut second = server.connect().await;

    // A third connection is told why, instead of hello, and closed.
    let mut third = RawConn::from_stream(tcp(server.addr).await);
    let msg = third.expect_error(ErrorCode::TooManyConnections).await;
    assert!(msg.contains('2'), "{msg}");
    third.expect_closed().await;

    // The library client reports it too.
    match server.try_connect().await {
        Err(ClientError::Remote {
            code: ErrorCode::TooManyConnections,
            ..
        }) => {}
        other => panic!("expected too_many_connections, got {other:?}"),
    }

    // The admitted connections work; when one leaves its slot is reused.
    assert_eq!(sh(&mut second, "echo in").await.stdout, b"in\n");
    drop(first);
    let deadline = Instant::now() + BOUND;
    let mut third = loop {
        match server.try_connect().await {
            Ok(c) => break c,
            Err(ClientError::Remote {
                code: ErrorCode::TooManyConnections,
                ..
            }) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("slot never freed: {e}"),
        }
    };
    assert_eq!(sh(&mut third, "echo third").await.stdout, b"third\n");
}

// 16. sticky packets at the socket level ------------------------------------------

/// A whole session: preamble, auth, ping, exec with stdin, input, end.
fn whole_session(token: &Secret) -> Vec<u8> {
    let mut bytes = Preamble::new(1).encode().to_vec();
    let frames = [
        Frame::new(Message::Auth {
            token: token.clone(),
        }),
        Frame::with_body(Message::Ping, &b"p1"[..]),
        Frame::new(exec_with_stdin("cat; echo end >&2")),
        Frame::with_body(Message::Stdin, &b"hello "[..]),
        Frame::with_body(Message::Stdin, &b""[..]),
        Frame::with_body(Message::Stdin, &b"world\x00\xff"[..]),
        Frame::new(Message::StdinEnd),
    ];
    for f in &frames {
        bytes.extend(frame_bytes(f));
    }
    bytes
}

async fn check_whole_session_reply(c: &mut RawConn) {
    assert!(matches!(c.recv().await.message, Message::Hello(_)));
    assert_eq!(c.recv().await.message, Message::AuthOk);
    assert_eq!(c.expect_pong().await, b"p1"[..]);
    let run = c.finish().await;
    assert_eq!(run.stdout, b"hello world\x00\xff");
    assert_eq!(run.stderr, b"end\n");
    assert_exited(&run.status, 0);
}

#[tokio::test]
async fn whole_session_in_one_write() {
    let server = Server::start();
    let mut s = tcp(server.addr).await;
    s.write_all(&whole_session(&server.token)).await.unwrap();
    let mut c = RawConn::from_stream(s);
    check_whole_session_reply(&mut c).await;
}

#[tokio::test]
async fn whole_session_one_byte_at_a_time() {
    let server = Server::start();
    let mut s = tcp(server.addr).await;
    for b in whole_session(&server.token) {
        s.write_all(&[b]).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut c = RawConn::from_stream(s);
    check_whole_session_reply(&mut c).await;
}

// Review fixes: stdin flow control, escaped processes, second signal --------

/// A command that never reads its input: the client fills the whole stdin
/// window, and the server still reads the connection — a ping is answered
/// and a cancel ends the command — where it once stopped reading until the
/// command took its input.
#[tokio::test]
async fn unread_stdin_never_stops_the_server_listening() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    assert!(window >= 64 * 1024, "{hello:?}");
    raw.send(exec_with_stdin("sleep 1000")).await;
    let pid = raw.expect_started().await;
    let piece = 64 * 1024;
    for _ in 0..window / piece {
        raw.send_frame(Frame::with_body(Message::Stdin, vec![b'x'; piece]))
            .await;
    }
    raw.send_frame(Frame::with_body(Message::Ping, &b"still there?"[..]))
        .await;
    // The pipe takes 64 KiB at most, so the server holds most of the window
    // unacknowledged; the pong comes all the same.
    let mut acked = 0;
    loop {
        match raw.recv().await.message {
            Message::StdinAck { bytes } => acked += bytes,
            Message::Pong => break,
            other => panic!("expected pong or stdin_ack, got {other:?}"),
        }
    }
    assert!(
        acked < window as u64,
        "the command read nothing, yet {acked} acked"
    );
    raw.send(Message::Cancel).await;
    let run = raw.finish_started(pid).await;
    assert_killed(&run.status, libc::SIGTERM);
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the command").await;
}

/// Sending past the window is a protocol error that closes the connection.
#[tokio::test]
async fn stdin_beyond_the_window_is_refused() {
    let server = Server::start();
    let (mut raw, hello) = server.raw_with_hello().await;
    let window = hello.stdin_window as usize;
    raw.send(exec_with_stdin("sleep 1000")).await;
    let pid = raw.expect_started().await;
    let piece = 256 * 1024;
    for _ in 0..=window / piece {
        if !raw
            .try_send_frame(Frame::with_body(Message::Stdin, vec![0u8; piece]))
            .await
        {
            break;
        }
    }
    loop {
        match raw.recv().await.message {
            Message::StdinAck { .. } => {}
            Message::Error { code, message } => {
                assert_eq!(code, ErrorCode::FlowControl, "{message}");
                break;
            }
            other => panic!("expected error flow_control, got {other:?}"),
        }
    }
    raw.expect_closed().await;
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "the command").await;
}

/// The library client keeps to the window by itself: far more input than
/// the window, into a command that reads it slowly, arrives intact.
#[tokio::test]
async fn library_client_streams_stdin_larger_than_the_window() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let data = binary_pattern(5 * 1024 * 1024 + 17);
    let ran = run(
        &mut conn,
        ExecRequest {
            stdin: true,
            ..ExecRequest::shell("sleep 0.2; cat")
        },
        Some(data.clone()),
    )
    .await;
    assert_exited(ran.status(), 0);
    assert!(ran.stdout == data, "stdin came back altered");
}

/// A killed command whose output pipe is held by a process that escaped
/// its group (`setsid`) still gets its `exit`, after the kill grace.
#[tokio::test]
async fn cancel_ends_a_command_whose_pipe_an_escaped_process_holds() {
    let server = Server::start();
    let mut raw = server.raw().await;
    raw.send(exec("setsid sh -c 'echo $$; exec sleep 60' & wait"))
        .await;
    let pid = raw.expect_started().await;
    let escaped: u32 = raw.read_lines(1).await[0].parse().unwrap();
    raw.send(Message::Cancel).await;
    let run = raw.finish_started(pid).await;
    kill_all(&[escaped]);
    assert!(run.status.signal.is_some(), "{:?}", run.status);
    // The connection is usable for the next command.
    assert_eq!(
        raw.exec(ExecRequest::shell("echo next")).await.stdout,
        b"next\n"
    );
}

/// A second SIGTERM does not wait for the grace period: every command is
/// killed and the server exits.
#[tokio::test]
async fn second_signal_kills_everything_and_exits() {
    let mut server = Server::start_with(&["--shutdown-grace", "600s"]);
    let mut raw = server.raw().await;
    raw.send(exec("sleep 1000")).await;
    let pid = raw.expect_started().await;
    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down").await;
    server.signal(libc::SIGTERM);
    let status = server.wait_exit().await;
    assert!(!status.success(), "{status:?}");
    assert_gone(&[pid], Some(pid), GONE_WITHIN, "after the second signal").await;
}

/// `--max-commands` bounds the commands running server-wide; one over the
/// limit gets `busy` and the connection stays usable.
#[tokio::test]
async fn command_limit_is_enforced() {
    let server = Server::start_with(&["--max-commands", "1"]);
    let mut first = server.raw().await;
    first.send(exec_with_stdin("cat")).await;
    let pid = first.expect_started().await;
    let mut second = server.connect().await;
    let refused = run(&mut second, ExecRequest::shell("echo no"), None).await;
    match refused.result {
        Err(ClientError::Remote {
            code: ErrorCode::Busy,
            ..
        }) => {}
        other => panic!("expected busy, got {other:?}"),
    }
    first.send(Message::StdinEnd).await;
    let run_first = first.finish_started(pid).await;
    assert_exited(&run_first.status, 0);
    assert_eq!(sh(&mut second, "echo yes").await.stdout, b"yes\n");
}

/// `--audit-log`: one JSON line per command, with who ran what and how it
/// ended, the token never in it; a command cut off by a disconnect too.
#[tokio::test]
async fn audit_log_records_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = Server::start_with(&["--audit-log", log.to_str().unwrap()]);
    let mut conn = server.connect().await;
    assert_exited(sh(&mut conn, "echo audited").await.status(), 0);
    assert_exited(sh(&mut conn, "exit 3").await.status(), 3);
    let mut raw = server.raw().await;
    raw.send(exec("sleep 1000")).await;
    raw.expect_started().await;
    drop(raw);
    server.wait_for_log("client disconnected").await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(server.token.expose()),
        "the token leaked into the audit log"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["action"], "exec");
    assert_eq!(lines[0]["target"], "echo audited");
    assert_eq!(lines[0]["code"], 0);
    assert_eq!(lines[0]["bytes_out"], 8);
    assert_eq!(lines[1]["code"], 3);
    assert_eq!(lines[2]["target"], "sleep 1000");
    assert_eq!(lines[2]["outcome"], "aborted");
    for line in &lines {
        assert!(line["identity"].as_str().unwrap().starts_with("token:"));
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// `--policy`: shell mode off and an allow-list of programs.
#[tokio::test]
async fn policy_denies_forbidden_commands() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"allow_shell": false, "allowed_programs": ["echo"], "allow_files": false}"#,
    )
    .unwrap();
    let server = Server::start_with(&["--policy", policy.to_str().unwrap()]);
    let mut conn = server.connect().await;
    let forbidden = |ran: &Ran| {
        matches!(
            ran.result,
            Err(ClientError::Remote {
                code: ErrorCode::Forbidden,
                ..
            })
        )
    };
    assert!(forbidden(&sh(&mut conn, "echo via shell").await));
    let id = run(&mut conn, ExecRequest::argv(vec!["id".into()]), None).await;
    assert!(forbidden(&id));
    let echo = run(
        &mut conn,
        ExecRequest::argv(vec!["echo".into(), "allowed".into()]),
        None,
    )
    .await;
    assert_exited(echo.status(), 0);
    assert_eq!(echo.stdout, b"allowed\n");
    // A policy file with a typo is refused at start, not silently ignored.
    std::fs::write(&policy, r#"{"allow_shel": false}"#).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .env("WIRESH_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy"));
}

/// `--run-as USER`: a server started as root runs commands as USER; one not
/// started as root refuses the flag.
#[tokio::test]
async fn run_as_drops_root_for_every_command() {
    if !wiresh::privilege::is_root() {
        let out = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--run-as", "nobody"])
            .env("WIRESH_HOME", tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
        return;
    }
    let server = Server::start_with(&["--run-as", "nobody"]);
    let mut conn = server.connect().await;
    let ran = sh(&mut conn, "id -u; echo $HOME").await;
    assert_exited(ran.status(), 0);
    let nobody = wiresh::privilege::Account::lookup("nobody").expect("a nobody user");
    let text = ran.stdout_str();
    let uid: u32 = text.lines().next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "commands still run as root");
    assert_eq!(uid, nobody.uid(), "{text}");
}

/// `--max-frame-header` lowers the header limit for authenticated peers.
#[tokio::test]
async fn header_limit_is_configurable() {
    let server = Server::start_with(&["--max-frame-header", "1024"]);
    let mut ok = server.raw().await;
    assert_eq!(
        ok.exec(ExecRequest::shell("echo small")).await.stdout,
        b"small\n"
    );
    let mut c = server.raw().await;
    c.send(exec(&format!("echo {}", "x".repeat(2000)))).await;
    c.expect_error(ErrorCode::FrameTooLarge).await;
    c.expect_closed().await;
}
