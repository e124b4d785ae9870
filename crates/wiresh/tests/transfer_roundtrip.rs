//! File transfers that succeed: `wiresh put` and `wiresh get` (the client
//! binary) against a real `wiresh serve --files-root DIR` on loopback, for
//! small and binary files, 1 GiB with bounded memory at both ends, a
//! directory tree (and `list` over the wire), `-p` (mode and mtime, and what
//! `stat` says), and the longest file names.
//!
//! Every wait is bounded; the 1 GiB transfers get [`BIG_BOUND`] because a
//! debug build is slow.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::disk::*;
use common::file_requests::*;
use common::files::*;
use common::*;
use wiresh_proto::{FileKind, Message};

/// The issue's memory bound for either end during a large transfer.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Bound on one 1 GiB transfer in a debug build (it only turns a hang into
/// a failure; the measured times are printed).
const BIG_BOUND: Duration = Duration::from_secs(600);

/// Runs a client to its end within `bound`, sampling its RSS; returns the
/// output, the client's peak RSS in KiB and the run time.
async fn timed(
    mut cmd: tokio::process::Command,
    bound: Duration,
    what: &str,
) -> (CliOutput, u64, Duration) {
    cmd.stdin(Stdio::null());
    let begun = Instant::now();
    let child = cmd.spawn().expect("cannot start the wiresh client");
    let sampler = RssSampler::start(child.id().expect("the client's pid"));
    let out = match tokio::time::timeout(bound, child.wait_with_output()).await {
        Ok(out) => out.expect("waiting for the client"),
        Err(_) => panic!("{what} did not finish within {bound:?}"),
    };
    let took = begun.elapsed();
    let peak = sampler.peak_kib();
    drop(sampler);
    (
        CliOutput {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        },
        peak,
        took,
    )
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

#[tokio::test]
async fn small_files_round_trip() {
    let fx = Files::start();
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        (
            "hello.txt",
            b"hello, wiresh\nsecond line \xc3\xa9\n".to_vec(),
        ),
        ("binary.bin", all_bytes()),
    ];
    for (name, data) in &cases {
        let src = fx.local.join(name);
        write(&src, data);
        let want = hex_blake3(data);

        // Upload under a new name in a directory that does not exist yet.
        let remote_name = format!("up/{name}");
        let out = fx.run("put", &args![&src, &remote_name]).await;
        assert_ok(&out, &format!("put {name}"));
        let remote = fx.root.join("up").join(name);
        assert_eq!(
            read(&remote).len(),
            data.len(),
            "{name}: size on the server"
        );
        assert_eq!(file_blake3(&remote), want, "{name}: BLAKE3 on the server");
        assert!(read(&remote) == *data, "{name}: bytes on the server differ");

        // And back under another name.
        let back = fx.local.join(format!("{name}.back"));
        let out = fx.run("get", &args![&remote_name, &back]).await;
        assert_ok(&out, &format!("get {name}"));
        assert_eq!(
            file_blake3(&back),
            want,
            "{name}: BLAKE3 after the round trip"
        );
        assert!(
            read(&back) == *data,
            "{name}: bytes after the round trip differ"
        );
    }

    // Several sources go into an existing directory, keeping their names.
    std::fs::create_dir(fx.root.join("multi")).unwrap();
    let out = fx
        .run(
            "put",
            &args![
                fx.local.join("hello.txt"),
                fx.local.join("binary.bin"),
                "multi"
            ],
        )
        .await;
    assert_ok(&out, "put two files into a directory");
    assert_eq!(read(&fx.root.join("multi/hello.txt")), cases[1].1);
    assert!(read(&fx.root.join("multi/binary.bin")) == cases[2].1);

    // One source and an existing remote directory: into it.
    let out = fx.run("put", &args![fx.local.join("empty"), "multi"]).await;
    assert_ok(&out, "put one file into a directory");
    assert_eq!(read(&fx.root.join("multi/empty")), b"");

    // Several remote sources into an existing local directory.
    let dest = fx.local.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = fx
        .run("get", &args!["multi/hello.txt", "multi/binary.bin", &dest])
        .await;
    assert_ok(&out, "get two files into a directory");
    assert_eq!(read(&dest.join("hello.txt")), cases[1].1);
    assert!(read(&dest.join("binary.bin")) == cases[2].1);

    // One remote source and an existing local directory: into it.
    let out = fx.run("get", &args!["multi/empty", &dest]).await;
    assert_ok(&out, "get one file into a directory");
    assert_eq!(read(&dest.join("empty")), b"");

    // -q: nothing at all on stdout or stderr.
    let out = fx
        .run("put", &args!["-q", fx.local.join("hello.txt"), "quiet.txt"])
        .await;
    assert_ok(&out, "put -q");
    assert_eq!(out.stdout_str(), "", "put -q printed on stdout");
    assert_eq!(out.stderr_str(), "", "put -q printed on stderr");
    let out = fx
        .run("get", &args!["-q", "quiet.txt", fx.local.join("quiet.txt")])
        .await;
    assert_ok(&out, "get -q");
    assert_eq!(out.stdout_str(), "", "get -q printed on stdout");
    assert_eq!(out.stderr_str(), "", "get -q printed on stderr");

    assert_eq!(
        parts_below(&fx.base),
        Vec::<PathBuf>::new(),
        "part files left"
    );
}

#[tokio::test]
async fn one_gib_round_trip_with_bounded_memory() {
    let fx = Files::start();
    let src = fx.local.join("big.bin");
    let begun = Instant::now();
    let want = write_big(&src, GIB);
    eprintln!("generated 1 GiB in {:?}", begun.elapsed());
    let pid = fx.server.pid();
    let hwm_idle = status_kib(pid, "VmHWM").unwrap();

    let server_rss = RssSampler::start(pid);
    let (out, client_peak, took) = timed(
        fx.cmd("put", None, &args!["-q", &src, "big.bin"]),
        BIG_BOUND,
        "put of 1 GiB",
    )
    .await;
    assert_ok(&out, "put of 1 GiB");
    let hwm = status_kib(pid, "VmHWM").unwrap();
    eprintln!(
        "put 1 GiB: {took:.2?} ({:.0} MiB/s); server VmHWM {hwm} KiB (idle {hwm_idle} KiB, \
         sampled VmRSS peak {} KiB); client VmRSS peak {client_peak} KiB",
        mib_per_s(GIB, took),
        server_rss.peak_kib()
    );
    assert!(
        hwm < RSS_LIMIT_KIB,
        "server VmHWM {hwm} KiB during the 1 GiB put"
    );
    assert!(
        client_peak < RSS_LIMIT_KIB,
        "client VmRSS reached {client_peak} KiB during the 1 GiB put"
    );
    let remote = fx.root.join("big.bin");
    assert_eq!(std::fs::metadata(&remote).unwrap().len(), GIB as u64);
    assert_eq!(file_blake3(&remote), want, "BLAKE3 on the server");

    let back = fx.local.join("back.bin");
    let (out, client_peak, took) = timed(
        fx.cmd("get", None, &args!["-q", "big.bin", &back]),
        BIG_BOUND,
        "get of 1 GiB",
    )
    .await;
    assert_ok(&out, "get of 1 GiB");
    let hwm = status_kib(pid, "VmHWM").unwrap();
    eprintln!(
        "get 1 GiB: {took:.2?} ({:.0} MiB/s); server VmHWM {hwm} KiB (sampled VmRSS peak {} KiB); \
         client VmRSS peak {client_peak} KiB",
        mib_per_s(GIB, took),
        server_rss.peak_kib()
    );
    assert!(
        hwm < RSS_LIMIT_KIB,
        "server VmHWM {hwm} KiB during the 1 GiB get"
    );
    assert!(
        client_peak < RSS_LIMIT_KIB,
        "client VmRSS reached {client_peak} KiB during the 1 GiB get"
    );
    assert_eq!(std::fs::metadata(&back).unwrap().len(), GIB as u64);
    assert_eq!(file_blake3(&back), want, "BLAKE3 after the round trip");
    assert_eq!(
        parts_below(&fx.base),
        Vec::<PathBuf>::new(),
        "part files left"
    );
}

#[tokio::test]
async fn directory_tree_round_trip() {
    let fx = Files::start();
    let src = fx.local.join("src");
    write(&src.join("a.txt"), b"top-level file\n");
    write(&src.join("sub/b.bin"), &binary_pattern(MIB + MIB / 2 + 3));
    write(&src.join("sub/deeper/c.txt"), b"deep\n");
    write(&src.join("sub/deeper/zero.dat"), b"");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::create_dir_all(src.join("sub/empty2")).unwrap();
    let want = tree(&src);

    // With -r the remote directory receives `src` (it exists, so this is
    // "into it" whichever way the client reads a missing target).
    std::fs::create_dir(fx.root.join("up")).unwrap();
    let out = fx.run("put", &args!["-r", &src, "up"]).await;
    assert_ok(&out, "put -r");
    assert_eq!(tree(&fx.root.join("up/src")), want, "tree on the server");
    assert_eq!(
        tree(&fx.root.join("up"))
            .keys()
            .filter(|k| !k.starts_with("src"))
            .count(),
        0,
        "put -r wrote beside the tree: {:?}",
        tree(&fx.root.join("up"))
    );

    // `list` over the wire: every entry, relative, a directory before its
    // contents, and the count.
    let mut c = fx.server.raw().await;
    c.send(Message::List {
        path: "up/src".into(),
    })
    .await;
    let mut entries = Vec::new();
    let count = loop {
        match answer(&mut c).await.message {
            Message::Entry(e) => entries.push(e),
            Message::ListEnd { count } => break count,
            other => panic!("list: unexpected {other:?}"),
        }
    };
    assert_eq!(count, entries.len() as u64, "list_end count");
    let listed: BTreeMap<String, FileKind> =
        entries.iter().map(|e| (e.path.clone(), e.kind)).collect();
    let expected: BTreeMap<String, FileKind> = want
        .iter()
        .map(|(k, v)| {
            let kind = if v == "dir" {
                FileKind::Dir
            } else {
                FileKind::File
            };
            (k.clone(), kind)
        })
        .collect();
    assert_eq!(listed, expected, "list of up/src");
    for (i, e) in entries.iter().enumerate() {
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            let at = entries.iter().position(|p| p.path == parent);
            assert!(
                at.is_some_and(|at| at < i),
                "{} listed before its directory {parent}: {entries:?}",
                e.path
            );
        }
        if e.kind == FileKind::File {
            let len = std::fs::metadata(src.join(&e.path)).unwrap().len();
            assert_eq!(e.size, len, "size of {}", e.path);
        }
    }
    assert_usable(&mut c).await;

    // And back into an existing local directory.
    let dest = fx.local.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = fx.run("get", &args!["-r", "up/src", &dest]).await;
    assert_ok(&out, "get -r");
    assert_eq!(tree(&dest.join("src")), want, "tree after the round trip");
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        1,
        "get -r wrote beside the tree: {:?}",
        tree(&dest)
    );
}

#[tokio::test]
async fn p_preserves_mode_and_mtime() {
    let fx = Files::start();
    const MTIME: u64 = 1_234_567_890;
    let cases = [("kept.txt", 0o640, MTIME), ("tool.sh", 0o750, MTIME + 3600)];
    for (name, mode, mtime) in cases {
        let src = fx.local.join(name);
        write(&src, format!("content of {name}\n").as_bytes());
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&src, mtime);

        let out = fx.run("put", &args!["-p", &src, name]).await;
        assert_ok(&out, &format!("put -p {name}"));
        let meta = std::fs::metadata(fx.root.join(name)).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{name}: mode on the server");
        assert_eq!(meta.mtime(), mtime as i64, "{name}: mtime on the server");

        // `stat` reports the same.
        let mut c = fx.server.raw().await;
        let e = raw_stat(&mut c, name).await;
        assert_eq!(e.path, name);
        assert_eq!(e.kind, FileKind::File);
        assert_eq!(e.size, meta.len());
        assert_eq!(e.mode, mode, "{name}: stat mode");
        assert_eq!(e.mtime, mtime as i64, "{name}: stat mtime");

        let back = fx.local.join(format!("{name}.back"));
        let out = fx.run("get", &args!["-p", name, &back]).await;
        assert_ok(&out, &format!("get -p {name}"));
        let meta = std::fs::metadata(&back).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{name}: mode after get -p");
        assert_eq!(meta.mtime(), mtime as i64, "{name}: mtime after get -p");
        assert_eq!(read(&back), read(&src));
    }

    // -r -p keeps them for the files of a tree too.
    let dir = fx.local.join("tree");
    write(&dir.join("inner/x.cfg"), b"x\n");
    std::fs::set_permissions(
        dir.join("inner/x.cfg"),
        std::fs::Permissions::from_mode(0o604),
    )
    .unwrap();
    set_mtime(&dir.join("inner/x.cfg"), MTIME);
    let out = fx.run("put", &args!["-r", "-p", &dir, "."]).await;
    assert_ok(&out, "put -r -p");
    let meta = std::fs::metadata(fx.root.join("tree/inner/x.cfg")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o604, "mode after put -r -p");
    assert_eq!(meta.mtime(), MTIME as i64, "mtime after put -r -p");
}

/// Neither end ever sets a set-user-ID, set-group-ID or sticky bit it was
/// sent: `put -p` of a 4755 file arrives 0755 (without `-p`, 0666 less
/// the umask), a raw `put` or `mkdir`
/// asking for them gets the permission bits only, and `get -p` of a
/// set-user-ID file on the server (what a malicious server could hand
/// out) arrives without it. A directory keeps the set-group-ID bit it
/// inherits from its parent on its own filesystem.
#[tokio::test]
async fn special_mode_bits_are_never_transferred() {
    let fx = Files::start();
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    let cases = [
        ("setuid.sh", 0o4755, 0o755),
        ("setgid.sh", 0o2750, 0o750),
        ("sticky.txt", 0o1644, 0o644),
        ("all.sh", 0o7777, 0o777),
    ];
    for (name, mode, want) in cases {
        let src = fx.local.join(name);
        write(&src, b"#!/bin/sh\nid\n");
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(
            mode_of(&src),
            mode,
            "{name}: the test could not set the mode"
        );

        let out = fx.run("put", &args!["-p", &src, name]).await;
        assert_ok(&out, &format!("put -p {name}"));
        assert_eq!(
            mode_of(&fx.root.join(name)),
            want,
            "{name}: mode after put -p"
        );

        // A server file with the bits (set here, as a malicious server's
        // would be), fetched with -p.
        let served = fx.root.join(format!("served-{name}"));
        write(&served, b"#!/bin/sh\nid\n");
        std::fs::set_permissions(&served, std::fs::Permissions::from_mode(mode)).unwrap();
        let back = fx.local.join(format!("back-{name}"));
        let out = fx
            .run("get", &args!["-p", format!("served-{name}"), &back])
            .await;
        assert_ok(&out, &format!("get -p served-{name}"));
        assert_eq!(mode_of(&back), want, "{name}: mode after get -p");
    }

    // Without -p, a copy gets what a new file gets: 0666 less the umask
    // (the server and the client inherit the test's).
    let umask = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
        .expect("Umask in /proc/self/status");
    let out = fx
        .run("put", &args![fx.local.join("setuid.sh"), "plain.sh"])
        .await;
    assert_ok(&out, "put without -p");
    assert_eq!(
        mode_of(&fx.root.join("plain.sh")),
        0o666 & !umask,
        "put without -p"
    );
    let out = fx
        .run("get", &args!["served-setuid.sh", fx.local.join("plain.sh")])
        .await;
    assert_ok(&out, "get without -p");
    assert_eq!(
        mode_of(&fx.local.join("plain.sh")),
        0o666 & !umask,
        "get without -p"
    );

    // The same asked for frame by frame.
    let mut c = fx.server.raw().await;
    c.send(Message::Put(wiresh_proto::PutRequest {
        path: "raw.sh".into(),
        size: 3,
        mode: Some(0o6755),
        mtime: None,
        resume: false,
    }))
    .await;
    assert!(matches!(
        answer(&mut c).await.message,
        Message::TransferReady(_)
    ));
    c.send(Message::TransferStart { offset: 0 }).await;
    send_file_data(&mut c, b"id\n").await;
    assert_eq!(
        raw_put_end(&mut c, "raw.sh", hex_blake3(b"id\n")).await,
        Ok(3)
    );
    assert_eq!(mode_of(&fx.root.join("raw.sh")), 0o755, "raw put of 6755");
    raw_mkdir(&mut c, "made", Some(0o7777)).await;
    assert_eq!(mode_of(&fx.root.join("made")), 0o777, "mkdir with 7777");

    // A directory made inside a set-group-ID directory keeps the bit it
    // inherits (the owner's setting), whatever mode is asked for.
    std::fs::create_dir(fx.root.join("shared")).unwrap();
    std::fs::set_permissions(
        fx.root.join("shared"),
        std::fs::Permissions::from_mode(0o2775),
    )
    .unwrap();
    raw_mkdir(&mut c, "shared/team", Some(0o4750)).await;
    assert_eq!(
        mode_of(&fx.root.join("shared/team")),
        0o2750,
        "mkdir in a setgid dir"
    );

    // Trees: a sticky, set-group-ID directory copied with -r -p both ways.
    let tree = fx.local.join("tree");
    write(&tree.join("f.txt"), b"f\n");
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o3775)).unwrap();
    let out = fx.run("put", &args!["-r", "-p", &tree, "up"]).await;
    assert_ok(&out, "put -r -p");
    assert_eq!(
        mode_of(&fx.root.join("up")),
        0o775,
        "directory after put -r -p"
    );
    std::fs::set_permissions(fx.root.join("up"), std::fs::Permissions::from_mode(0o3775)).unwrap();
    let out = fx
        .run("get", &args!["-r", "-p", "up", fx.local.join("down2")])
        .await;
    assert_ok(&out, "get -r -p of a 3775 directory");
    assert_eq!(
        mode_of(&fx.local.join("down2")),
        0o775,
        "directory after get -r -p"
    );
}

/// Any name the filesystem allows can be copied, including one too long to
/// take a `.` prefix and a `.wiresh-part` suffix.
#[tokio::test]
async fn longest_file_names_round_trip() {
    let fx = Files::start();
    let name = "n".repeat(250);
    let src = fx.local.join(&name);
    write(&src, b"long name\n");
    let out = fx.run("put", &args![&src, &name]).await;
    assert_ok(&out, "put of a file with a 250-byte name");
    assert_eq!(read(&fx.root.join(&name)), b"long name\n");
    let dest = fx.local.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = fx.run("get", &args![&name, &dest]).await;
    assert_ok(&out, "get of a file with a 250-byte name");
    assert_eq!(read(&dest.join(&name)), b"long name\n");
}

/// A listing leaves out the partial files of transfers (`.NAME.wiresh-part`
/// and, for long names, `.wiresh-part-HASH`), so a recursive copy never
/// picks up half a file; other dot files are listed. `stat` still sees a
/// partial file by its name.
#[tokio::test]
async fn listings_leave_out_partial_files() {
    let fx = Files::start();
    for name in [
        "a.txt",
        ".a.txt.wiresh-part",
        ".wiresh-part-0123456789abcdef0123456789abcdef",
        ".hidden",
        "sub/.b.wiresh-part",
    ] {
        write(&fx.root.join("d").join(name), b"x");
    }
    let mut c = fx.server.raw().await;
    c.send(Message::List { path: "d".into() }).await;
    let mut listed = Vec::new();
    loop {
        match answer(&mut c).await.message {
            Message::Entry(e) => listed.push(e.path),
            Message::ListEnd { count } => {
                assert_eq!(count, listed.len() as u64);
                break;
            }
            other => panic!("list: unexpected {other:?}"),
        }
    }
    assert_eq!(listed, [".hidden", "a.txt", "sub"]);
    assert_eq!(
        raw_stat(&mut c, "d/.a.txt.wiresh-part").await.kind,
        FileKind::File
    );
}
