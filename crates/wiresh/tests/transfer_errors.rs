//! File requests that cannot be served, and how they fail: `hello` lists the
//! feature `files` only when they can be; without `--files-root`
//! (`files_disabled`), missing paths (`not_found`, next to `stat` and
//! `mkdir` of what exists), paths of the wrong kind (`io_error`), a named
//! pipe (refused, not hung), and the client binary's exit codes (1 for a
//! failed transfer, 255 when it cannot connect or authenticate). The
//! connection survives every refusal. A server that dies in the middle of
//! an upload is a lost connection, which `--resume` continues.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::disk::*;
use common::fake_server::{FakeScript, FakeServer, Hostile};
use common::file_requests::*;
use common::files::*;
use common::*;
use tokio::net::TcpListener;
use wiresh_proto::{ErrorCode, FileKind, Message, PutRequest};

/// `hello.features` lists `"files"` exactly when file requests are served:
/// with `--files-root` and a policy that allows files. Without either, a
/// file request is refused (`files_disabled`, `forbidden`).
#[tokio::test]
async fn hello_lists_files_only_when_files_are_served() {
    let always = ["exec", "stdin", "cancel", "ping", "pty", "signal"];
    let stat = || Message::Stat { path: ".".into() };

    let server = Server::start();
    let (mut c, hello) = server.raw_with_hello().await;
    assert_eq!(hello.features, always);
    expect_refusal(&mut c, stat(), ErrorCode::FilesDisabled).await;

    let fx = Files::start();
    let (mut c, hello) = fx.server.raw_with_hello().await;
    assert_eq!(hello.features, [&always[..], &["files"]].concat());
    assert_eq!(raw_stat(&mut c, ".").await.kind, FileKind::Dir);

    let policy = fx.base.join("policy.json");
    std::fs::write(&policy, r#"{"allow_files": false}"#).unwrap();
    let fx = Files::start_with(&["--policy", policy.to_str().unwrap()]);
    let (mut c, hello) = fx.server.raw_with_hello().await;
    assert_eq!(hello.features, always);
    expect_refusal(&mut c, stat(), ErrorCode::Forbidden).await;
}

#[tokio::test]
async fn file_requests_without_files_root_are_refused() {
    let server = Server::start();
    let mut c = server.raw().await;
    for msg in [
        Message::Stat { path: "x".into() },
        Message::List { path: ".".into() },
        Message::Mkdir {
            path: "d".into(),
            mode: None,
        },
        Message::Get {
            path: "x".into(),
            resume_from: 0,
        },
        Message::Put(PutRequest {
            path: "x".into(),
            size: 1,
            mode: None,
            mtime: None,
            resume: false,
        }),
    ] {
        expect_refusal(&mut c, msg, ErrorCode::FilesDisabled).await;
    }
    assert_usable(&mut c).await;

    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("f.txt");
    write(&src, b"x\n");
    let mut cmd = server.cli("put");
    cmd.args(args![&src, "f.txt"]);
    let out = cli_output(cmd, None).await;
    assert_transfer_error(&out, "put without --files-root");
    let err = out.stderr_str();
    assert!(
        err.contains("files_disabled") || err.contains("--files-root"),
        "{err}"
    );
    let dest = local.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut cmd = server.cli("get");
    cmd.args(args!["f.txt", &dest]);
    let out = cli_output(cmd, None).await;
    assert_transfer_error(&out, "get without --files-root");
    assert!(tree(&dest).is_empty(), "{:?}", tree(&dest));
}

#[tokio::test]
async fn missing_paths_are_not_found_and_the_connection_survives() {
    let fx = Files::start();
    write(&fx.root.join("here.txt"), b"here\n");
    let mut c = fx.server.raw().await;
    for msg in [
        Message::Stat {
            path: "missing".into(),
        },
        Message::Stat {
            path: "no/such/dir/file".into(),
        },
        Message::List {
            path: "missing".into(),
        },
        Message::Get {
            path: "missing.txt".into(),
            resume_from: 0,
        },
    ] {
        expect_refusal(&mut c, msg, ErrorCode::NotFound).await;
    }
    assert_usable(&mut c).await;

    // stat of what exists, and mkdir.
    let e = raw_stat(&mut c, "here.txt").await;
    let meta = std::fs::metadata(fx.root.join("here.txt")).unwrap();
    assert_eq!(e.path, "here.txt");
    assert_eq!(e.kind, FileKind::File);
    assert_eq!(e.size, 5);
    assert_eq!(e.mode, meta.mode() & 0o7777);
    assert_eq!(e.mtime, meta.mtime());
    raw_mkdir(&mut c, "made/deep", Some(0o750)).await;
    let meta = std::fs::metadata(fx.root.join("made/deep")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o750);
    assert_eq!(raw_stat(&mut c, "made").await.kind, FileKind::Dir);
    assert_usable(&mut c).await;

    // The client binary: exit 1 with a message naming the problem.
    let dest = fx.local.join("missing.txt");
    let out = fx.run("get", &args!["missing.txt", &dest]).await;
    assert_transfer_error(&out, "get of a missing file");
    let err = out.stderr_str().to_lowercase();
    assert!(
        err.contains("not_found") || err.contains("no such") || err.contains("not found"),
        "{err}"
    );
    assert!(!dest.exists());
    assert_eq!(parts_below(&fx.local), Vec::<PathBuf>::new());
    let out = fx
        .run("put", &args![fx.local.join("missing-local.txt"), "x.txt"])
        .await;
    assert_transfer_error(&out, "put of a missing local file");
    assert!(!fx.root.join("x.txt").exists());
}

/// A path of the wrong kind is `io_error`, with the reason in the message:
/// `list` of a file, `get` of a directory, `put` onto a directory, `mkdir`
/// over a file, and any path that goes through a file as if it were a
/// directory. The connection survives each.
#[tokio::test]
async fn wrong_kinds_are_io_errors_and_the_connection_survives() {
    let fx = Files::start();
    write(&fx.root.join("here.txt"), b"here\n");
    std::fs::create_dir(fx.root.join("sub")).unwrap();
    let mut c = fx.server.raw().await;
    let put = |path: &str| {
        Message::Put(PutRequest {
            path: path.into(),
            size: 1,
            mode: None,
            mtime: None,
            resume: false,
        })
    };
    let mkdir = |path: &str| Message::Mkdir {
        path: path.into(),
        mode: None,
    };
    for (msg, says) in [
        (
            Message::List {
                path: "here.txt".into(),
            },
            "here.txt: not a directory",
        ),
        (
            Message::Get {
                path: "sub".into(),
                resume_from: 0,
            },
            "not a regular file",
        ),
        (put("sub"), "sub: is a directory"),
        (mkdir("here.txt"), "here.txt"),
        (
            Message::Stat {
                path: "here.txt/x".into(),
            },
            "Not a directory",
        ),
        (
            Message::List {
                path: "here.txt/x".into(),
            },
            "Not a directory",
        ),
        (
            Message::Get {
                path: "here.txt/x".into(),
                resume_from: 0,
            },
            "Not a directory",
        ),
        (put("here.txt/x"), "here.txt/x"),
        (mkdir("here.txt/x"), "here.txt/x"),
    ] {
        let what = format!("{msg:?}");
        c.send(msg).await;
        match answer(&mut c).await.message {
            Message::Error { code, message } => {
                assert_eq!(code, ErrorCode::IoError, "{what}: {message}");
                // The wording is the server's or the kernel's; either case.
                assert!(
                    message.to_lowercase().contains(&says.to_lowercase()),
                    "{what}: {message}"
                );
            }
            other => panic!("{what}: expected error io_error, got {other:?}"),
        }
    }
    assert_usable(&mut c).await;
    assert_eq!(tree(&fx.root).len(), 2, "{:?}", tree(&fx.root));
}

/// A named pipe inside the root is "other": `stat` says so, and `get`
/// refuses it (`io_error`, not a regular file) instead of blocking the
/// session in `open` until some writer appears.
#[tokio::test]
async fn get_of_a_fifo_is_refused_not_hung() {
    let fx = Files::start();
    let fifo = fx.root.join("pipe");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let mut c = fx.server.raw().await;
    assert_eq!(raw_stat(&mut c, "pipe").await.kind, FileKind::Other);
    match raw_get(&mut c, "pipe").await {
        Err((code, message)) => {
            assert_eq!(code, ErrorCode::IoError, "{message}");
            assert!(message.contains("not a regular file"), "{message}");
        }
        Ok(v) => panic!("get of a fifo succeeded: {v:?}"),
    }
    assert_usable(&mut c).await;
}

#[tokio::test]
async fn connection_and_auth_failures_exit_255() {
    let fx = Files::start();
    let src = fx.local.join("f.txt");
    write(&src, b"x\n");

    let mut cmd = fx.cmd("put", None, &args![&src, "f.txt"]);
    cmd.env("WIRESH_TOKEN", "wrong-token-0123456789");
    let out = cli_output(cmd, None).await;
    assert_eq!(
        out.code,
        Some(255),
        "put with a wrong token: {}",
        out.stderr_str()
    );
    let dest = fx.local.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut cmd = fx.cmd("get", None, &args!["f.txt", &dest]);
    cmd.env("WIRESH_TOKEN", "wrong-token-0123456789");
    let out = cli_output(cmd, None).await;
    assert_eq!(
        out.code,
        Some(255),
        "get with a wrong token: {}",
        out.stderr_str()
    );

    // A port nobody listens on.
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let mut cmd = client_command("put", &addr.to_string(), fx.server.home());
    cmd.args(args![&src, "f.txt"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(
        out.code,
        Some(255),
        "put to a closed port: {}",
        out.stderr_str()
    );
    assert!(!fx.root.join("f.txt").exists());
}

/// One `mkdir` can make a tree some two thousand levels deep (a path just
/// under `PATH_MAX`); listing it sends every level and the server stays up.
/// (Walked by recursion, such a tree overflowed the walking thread's stack
/// and aborted the whole server, every connection and command with it.)
#[tokio::test]
async fn a_very_deep_tree_is_listed_and_the_server_stays_up() {
    let fx = Files::start();
    let mut c = fx.server.raw().await;
    let depth = 2000;
    raw_mkdir(&mut c, &vec!["d"; depth].join("/"), None).await;
    c.send(Message::List { path: ".".into() }).await;
    let mut deepest = String::new();
    loop {
        match answer(&mut c).await.message {
            Message::Entry(e) => deepest = e.path,
            Message::ListEnd { count } => {
                assert_eq!(count, depth as u64);
                break;
            }
            other => panic!("expected entries and list_end, got {other:?}"),
        }
    }
    assert_eq!(deepest.split('/').count(), depth);
    assert_usable(&mut c).await;
}

/// A server killed in the middle of a `put` (its kernel resets the
/// connection) is a lost connection, with what to do, not a protocol
/// error (issue 19, 9).
#[tokio::test]
async fn a_reset_during_put_is_a_lost_connection_that_resume_continues() {
    let killed = FakeServer::start_hostile(
        FakeScript {
            dirs: vec![],
            listing: vec![],
            content: |_| Vec::new(),
            announced_size: None,
        },
        Hostile {
            reset_during_put: true,
            ..Hostile::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, binary_pattern(4 * MIB)).unwrap();
    let out = cli_output(killed.cmd("put", &args![&file, "big.bin"]), None).await;
    let err = out.stderr_str();
    assert_eq!(out.code, Some(255), "{err}");
    assert!(err.contains("was lost during a transfer"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(!err.contains("protocol error"), "{err}");
}

/// Local names that are not UTF-8 cannot travel (the protocol's paths are
/// UTF-8): `put` and `put -r` leave each out with a warning that shows its
/// bytes, copy all the rest, and exit 23 at the end, as rsync does.
#[tokio::test]
async fn put_leaves_out_names_that_are_not_utf8_and_copies_the_rest() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Files::start();
    let bad = |dir: &std::path::Path, bytes: &[u8]| dir.join(std::ffi::OsStr::from_bytes(bytes));
    let src = fx.local.join("src");
    write(&src.join("ok.txt"), b"ok\n");
    write(&src.join("sub/good.txt"), b"good\n");
    write(&bad(&src, b"f\xfename"), b"bad\n");
    write(
        &bad(&src.join("sub"), b"\xffdir").join("inner.txt"),
        b"bad\n",
    );
    let mut cmd = fx.server.cli("put");
    cmd.args(args!["-r", &src, "dest/"]);
    let out = cli_output(cmd, None).await;
    let err = out.stderr_str();
    assert_eq!(out.code, Some(23), "{err}");
    let copied: Vec<String> = tree(&fx.root.join("dest")).into_keys().collect();
    assert_eq!(
        copied,
        ["src", "src/ok.txt", "src/sub", "src/sub/good.txt"],
        "{err}"
    );
    assert_eq!(
        std::fs::read(fx.root.join("dest/src/sub/good.txt")).unwrap(),
        b"good\n"
    );
    assert!(
        err.contains("skipping ") && err.contains("f\\xfename"),
        "{err}"
    );
    assert!(err.contains("\\xffdir"), "{err}");
    assert!(err.contains("2 paths were left out"), "{err}");

    // A named source is left out the same way; the next one is copied.
    let mut cmd = fx.server.cli("put");
    cmd.args(args![bad(&src, b"f\xfename"), src.join("ok.txt"), "flat/"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(23), "{}", out.stderr_str());
    assert_eq!(std::fs::read(fx.root.join("flat/ok.txt")).unwrap(), b"ok\n");
    assert_eq!(std::fs::read_dir(fx.root.join("flat")).unwrap().count(), 1);
}

/// `get FILE DIR/` names a directory: when it is not there, that is what
/// is said (not the part file's name), and nothing is written; a file
/// whose directory is missing says the same of its directory.
#[tokio::test]
async fn get_into_a_missing_directory_says_so() {
    let fx = Files::start();
    write(&fx.root.join("docs/a.txt"), b"a\n");
    let before = tree(&fx.base);
    let run = |dest: &str| {
        let mut cmd = fx.server.cli("get");
        cmd.current_dir(&fx.local).args(["docs/a.txt", dest]);
        cli_output(cmd, None)
    };
    let out = run("nodir/sub/").await;
    assert_transfer_error(&out, "get into a missing directory");
    assert_eq!(out.stderr_str(), "wiresh: nodir/sub/: no such directory\n");
    let out = run("nodir/b.txt").await;
    assert_transfer_error(&out, "get beside a missing directory");
    assert_eq!(out.stderr_str(), "wiresh: nodir/: no such directory\n");
    write(&fx.local.join("plain"), b"x\n");
    let out = run("plain/").await;
    assert_eq!(out.stderr_str(), "wiresh: plain/: not a directory\n");
    std::fs::remove_file(fx.local.join("plain")).unwrap();
    assert_eq!(tree(&fx.base), before, "nothing written");
    // Where the directory is, the file lands in it.
    std::fs::create_dir_all(fx.local.join("there")).unwrap();
    let out = run("there/").await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(std::fs::read(fx.local.join("there/a.txt")).unwrap(), b"a\n");
}
