//! File transfer end to end: `wiresh put` and `wiresh get` (the client
//! binary) against a real `wiresh serve --files-root DIR` on loopback, and
//! the `stat`, `list`, `mkdir`, `put` and `get` messages frame by frame.
//!
//! The test doubles that sit on the wire, [`Proxy`] and [`FakeServer`], are
//! in `common/proxy.rs` and `common/fake_server.rs`.
//!
//! Every wait is bounded; the 1 GiB transfers get [`BIG_BOUND`] because a
//! debug build is slow.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::disk::*;
use common::fake_server::*;
use common::file_requests::*;
use common::files::*;
use common::proxy::*;
use common::*;
use tokio::net::TcpListener;
use wiresh_proto::{ErrorCode, FileKind, Frame, Message, PutRequest};

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

const EVIL: &[u8] = b"EVIL: written where the user did not ask\n";

const FINE: &[u8] = b"fine\n";

/// `ok.txt` is harmless; every other name gets the evil content.
fn evil_content(path: &str) -> Vec<u8> {
    if path.ends_with("ok.txt") {
        FINE.to_vec()
    } else {
        EVIL.to_vec()
    }
}

/// Twenty bytes for any path.
fn twenty_bytes(_: &str) -> Vec<u8> {
    b"0123456789ABCDEFGHIJ".to_vec()
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

#[tokio::test]
async fn interrupted_put_resumes_from_the_verified_partial() {
    let fx = Files::start();
    let data = binary_pattern(8 * MIB + 12_345);
    let want = hex_blake3(&data);
    let src = fx.local.join("big.bin");
    write(&src, &data);
    let target = fx.root.join("dir/big.bin");

    // Cut after about 3 MiB of file data reached the server.
    let proxy = Proxy::start(
        fx.server.addr,
        Tamper::CutAfter(3 * MIB as u64),
        Tamper::Pass,
    )
    .await;
    let out = fx.run_via(&proxy, "put", &args![&src, "dir/big.bin"]).await;
    let seen = proxy.seen();
    eprintln!(
        "interrupted put: exit {:?}, stderr {:?}; relayed {} bytes of file data",
        out.code,
        out.stderr_str(),
        seen.up_data
    );
    assert!(seen.cut, "the proxy never cut the connection: {seen:?}");
    assert_failed(&out, "interrupted put");
    drop(proxy);
    // Whatever the server received is written once its session has ended.
    for peer in &seen.upstream_peers {
        wait_connection_end(&fx.server, *peer).await;
    }
    assert!(
        !target.exists(),
        "an interrupted upload left a file under the real name"
    );
    let part = part_of(&target);
    let part_len = std::fs::metadata(&part)
        .unwrap_or_else(|e| panic!("no partial {} after the cut: {e}", part.display()))
        .len();
    eprintln!("partial on the server: {part_len} bytes");
    assert!(part_len > 0, "the partial is empty");
    assert!(
        part_len <= seen.up_data,
        "the partial holds more than was sent"
    );
    assert!(
        read(&part) == data[..part_len as usize],
        "the partial is not a prefix of the file"
    );

    // Resume, through a recording relay to see the offsets on the wire.
    let proxy = Proxy::pass(fx.server.addr).await;
    let out = fx
        .run_via(&proxy, "put", &args!["--resume", &src, "dir/big.bin"])
        .await;
    assert_ok(&out, "put --resume");
    let seen = proxy.seen();
    let ready = seen.transfer_ready();
    assert_eq!(ready.len(), 1, "transfer_ready frames: {ready:?}");
    assert_eq!(ready[0].offset, part_len, "the server's resume offer");
    assert_eq!(
        ready[0].prefix_blake3.as_deref(),
        Some(hex_blake3(&data[..part_len as usize]).as_str()),
        "prefix_blake3 of the offer"
    );
    assert_eq!(
        seen.transfer_starts(),
        vec![part_len],
        "the client's transfer_start"
    );
    assert_eq!(
        seen.up_data,
        data.len() as u64 - part_len,
        "file data sent on resume"
    );
    assert_eq!(
        seen.transfer_oks(),
        vec![data.len() as u64 - part_len],
        "transfer_ok bytes"
    );
    assert_eq!(
        file_blake3(&target),
        want,
        "content after the resumed upload"
    );
    assert!(
        !part.exists(),
        "the partial is still there after publishing"
    );
}

#[tokio::test]
async fn interrupted_get_resumes_from_the_local_partial() {
    let fx = Files::start();
    let data = binary_pattern(8 * MIB + 4321);
    let want = hex_blake3(&data);
    write(&fx.root.join("big.bin"), &data);
    let dest_dir = fx.local.join("in");
    std::fs::create_dir(&dest_dir).unwrap();
    let target = dest_dir.join("big.bin");

    let proxy = Proxy::start(
        fx.server.addr,
        Tamper::Pass,
        Tamper::CutAfter(3 * MIB as u64),
    )
    .await;
    let out = fx
        .run_via(&proxy, "get", &args!["big.bin", &dest_dir])
        .await;
    let seen = proxy.seen();
    eprintln!(
        "interrupted get: exit {:?}, stderr {:?}; relayed {} bytes of file data",
        out.code,
        out.stderr_str(),
        seen.down_data
    );
    assert!(seen.cut, "the proxy never cut the connection: {seen:?}");
    assert_failed(&out, "interrupted get");
    drop(proxy);
    assert!(
        !target.exists(),
        "an interrupted download left a file under the real name"
    );
    let part = part_of(&target);
    let part_len = std::fs::metadata(&part)
        .unwrap_or_else(|e| {
            panic!(
                "no local partial {} after the cut ({e}); local dir: {:?}",
                part.display(),
                tree(&dest_dir)
            )
        })
        .len();
    eprintln!("local partial: {part_len} bytes");
    assert!(part_len > 0, "the local partial is empty");
    assert!(part_len <= seen.down_data);
    assert!(
        read(&part) == data[..part_len as usize],
        "the local partial is not a prefix of the file"
    );

    let proxy = Proxy::pass(fx.server.addr).await;
    let out = fx
        .run_via(&proxy, "get", &args!["--resume", "big.bin", &dest_dir])
        .await;
    assert_ok(&out, "get --resume");
    let seen = proxy.seen();
    assert_eq!(
        seen.get_requests(),
        vec![("big.bin".to_string(), part_len)],
        "the client's get request"
    );
    let ready = seen.transfer_ready();
    assert_eq!(ready.len(), 1, "transfer_ready frames: {ready:?}");
    assert_eq!(ready[0].offset, part_len, "the server's resume offer");
    assert_eq!(ready[0].size, Some(data.len() as u64));
    assert_eq!(
        seen.transfer_starts(),
        vec![part_len],
        "the client's transfer_start"
    );
    assert_eq!(
        seen.down_data,
        data.len() as u64 - part_len,
        "file data received on resume"
    );
    assert_eq!(
        file_blake3(&target),
        want,
        "content after the resumed download"
    );
    assert!(!part.exists(), "the local partial is still there");
}

#[tokio::test]
async fn resume_with_a_stale_partial_starts_over() {
    let fx = Files::start();
    let data = binary_pattern(2 * MIB + 99);
    let want = hex_blake3(&data);
    let src = fx.local.join("f.bin");
    write(&src, &data);

    // A partial upload that is not a prefix of the file.
    let remote = fx.root.join("f.bin");
    write(&part_of(&remote), &vec![0x5a; MIB]);
    let proxy = Proxy::pass(fx.server.addr).await;
    let out = fx
        .run_via(&proxy, "put", &args!["--resume", &src, "f.bin"])
        .await;
    assert_ok(&out, "put --resume over a stale partial");
    let seen = proxy.seen();
    assert_eq!(
        seen.transfer_ready().first().map(|r| r.offset),
        Some(MIB as u64),
        "the server offers its partial"
    );
    assert_eq!(
        seen.transfer_starts(),
        vec![0],
        "the prefixes differ: start over"
    );
    assert_eq!(seen.up_data, data.len() as u64);
    assert_eq!(file_blake3(&remote), want);
    assert!(!part_of(&remote).exists());

    // A local partial download that is not a prefix of the file.
    let back = fx.local.join("back.bin");
    write(&part_of(&back), &vec![0xa5; MIB]);
    let proxy = Proxy::pass(fx.server.addr).await;
    let out = fx
        .run_via(&proxy, "get", &args!["--resume", "f.bin", &back])
        .await;
    assert_ok(&out, "get --resume over a stale partial");
    let seen = proxy.seen();
    assert_eq!(
        seen.transfer_starts(),
        vec![0],
        "the prefixes differ: start over"
    );
    assert_eq!(seen.down_data, data.len() as u64);
    assert_eq!(file_blake3(&back), want);
    assert!(!part_of(&back).exists());

    // A partial longer than the file is not offered.
    write(&part_of(&remote), &binary_pattern(3 * MIB));
    let proxy = Proxy::pass(fx.server.addr).await;
    let out = fx
        .run_via(&proxy, "put", &args!["--resume", &src, "f.bin"])
        .await;
    assert_ok(&out, "put --resume over a too-long partial");
    let seen = proxy.seen();
    assert_eq!(seen.transfer_starts(), vec![0]);
    assert_eq!(file_blake3(&remote), want);
}

#[tokio::test]
async fn corrupted_put_is_rejected_and_the_old_file_kept() {
    let fx = Files::start();
    let old = b"the old content, which must survive\n".to_vec();
    let remote = fx.root.join("data.bin");
    write(&remote, &old);
    let new = binary_pattern(3 * MIB + 5);
    let src = fx.local.join("data.bin");
    write(&src, &new);

    let proxy = Proxy::start(fx.server.addr, Tamper::FlipAt(1_500_000), Tamper::Pass).await;
    let out = fx.run_via(&proxy, "put", &args![&src, "data.bin"]).await;
    assert!(proxy.seen().flipped, "the proxy flipped nothing");
    assert_transfer_error(&out, "corrupted put");
    let err = out.stderr_str().to_lowercase();
    assert!(
        err.contains("checksum"),
        "the error does not mention the checksum: {err}"
    );
    assert_eq!(read(&remote), old, "the old file changed");
    assert_eq!(
        parts_below(&fx.root),
        Vec::<PathBuf>::new(),
        "partial left on the server"
    );

    // The same upload without the proxy goes through.
    let out = fx.run("put", &args![&src, "data.bin"]).await;
    assert_ok(&out, "clean put");
    assert!(read(&remote) == new);
}

#[tokio::test]
async fn corrupted_get_is_rejected_and_the_local_file_kept() {
    let fx = Files::start();
    let new = binary_pattern(3 * MIB + 5);
    write(&fx.root.join("data.bin"), &new);
    let old = b"the old local content, which must survive\n".to_vec();
    let local = fx.local.join("data.bin");
    write(&local, &old);

    let proxy = Proxy::start(fx.server.addr, Tamper::Pass, Tamper::FlipAt(2_000_000)).await;
    let out = fx.run_via(&proxy, "get", &args!["data.bin", &local]).await;
    assert!(proxy.seen().flipped, "the proxy flipped nothing");
    assert_transfer_error(&out, "corrupted get");
    let err = out.stderr_str().to_lowercase();
    assert!(
        err.contains("checksum"),
        "the error does not mention the checksum: {err}"
    );
    assert_eq!(read(&local), old, "the local file changed");
    assert_eq!(
        parts_below(&fx.local),
        Vec::<PathBuf>::new(),
        "local partial left"
    );

    let out = fx.run("get", &args!["data.bin", &local]).await;
    assert_ok(&out, "clean get");
    assert!(read(&local) == new);
}

#[tokio::test]
async fn server_refuses_paths_that_escape_the_root() {
    let fx = Files::start();
    let outside = fx.base.join("outside");
    write(&outside.join("secret.txt"), b"TOP SECRET\n");
    write(&fx.root.join("sub/a.txt"), b"inside\n");
    std::os::unix::fs::symlink(&outside, fx.root.join("link_out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), fx.root.join("file_out")).unwrap();
    std::os::unix::fs::symlink(outside.join("nothing-here"), fx.root.join("dangling")).unwrap();
    std::os::unix::fs::symlink(fx.root.join("sub"), fx.root.join("link_in")).unwrap();
    let outside_before = tree(&outside);
    let base_before: Vec<_> = std::fs::read_dir(&fx.base)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let abs_outside = fx.base.join("x").to_str().unwrap().to_string();
    let abs_in_outside = outside.join("x").to_str().unwrap().to_string();
    let mut c = fx.server.raw().await;
    for path in [
        "../x",
        "a/../../x",
        "sub/../../x",
        "./../x",
        "..",
        abs_outside.as_str(),
        abs_in_outside.as_str(),
        "/x",
        "link_out/x",
        "link_out/new/deeper/x",
        "file_out",
        "dangling",
        "x\0y",
    ] {
        refused_with(
            &format!("put {path:?}"),
            raw_put(&mut c, path, b"should not land\n").await,
            ErrorCode::PathRefused,
        );
    }
    let secret_abs = outside.join("secret.txt").to_str().unwrap().to_string();
    for path in [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        secret_abs.as_str(),
        "link_out/secret.txt",
        "file_out",
        "/etc/passwd",
    ] {
        refused_with(
            &format!("get {path:?}"),
            raw_get(&mut c, path).await,
            ErrorCode::PathRefused,
        );
    }
    for msg in [
        Message::Stat { path: "..".into() },
        Message::Stat { path: "/".into() },
        Message::Stat {
            path: "link_out".into(),
        },
        Message::Stat {
            path: "link_out/secret.txt".into(),
        },
        Message::List { path: "..".into() },
        Message::List {
            path: "link_out".into(),
        },
        Message::Mkdir {
            path: "../newdir".into(),
            mode: None,
        },
        Message::Mkdir {
            path: "link_out/newdir".into(),
            mode: None,
        },
    ] {
        expect_refusal(&mut c, msg, ErrorCode::PathRefused).await;
    }
    // The connection survived every refusal.
    assert_usable(&mut c).await;

    // What stays inside is fine: an absolute path inside the root, and a
    // symlink that points inside it.
    let abs_inside = fx.root.join("abs.txt").to_str().unwrap().to_string();
    assert_eq!(raw_put(&mut c, &abs_inside, b"ok\n").await, Ok(3));
    assert_eq!(read(&fx.root.join("abs.txt")), b"ok\n");
    let (_, got, _) = raw_get(&mut c, "link_in/a.txt")
        .await
        .expect("get link_in/a.txt");
    assert_eq!(got, b"inside\n");
    let (_, got, _) = raw_get(&mut c, "sub/./a.txt")
        .await
        .expect("get sub/./a.txt");
    assert_eq!(got, b"inside\n");

    // The same through the client binary: exit 1, nothing written.
    let src = fx.local.join("payload.txt");
    write(&src, b"should not land\n");
    for remote in [
        "../x",
        "a/../../x",
        abs_outside.as_str(),
        "link_out",
        "link_out/x",
    ] {
        let out = fx.run("put", &args![&src, remote]).await;
        assert_transfer_error(&out, &format!("put to {remote:?}"));
    }
    let dest = fx.local.join("dest");
    std::fs::create_dir(&dest).unwrap();
    for remote in ["link_out/secret.txt", "file_out", "../outside/secret.txt"] {
        let out = fx.run("get", &args![remote, &dest]).await;
        assert_transfer_error(&out, &format!("get {remote:?}"));
    }
    let out = fx.run("get", &args!["-r", "link_out", &dest]).await;
    assert_transfer_error(&out, "get -r link_out");
    assert!(
        tree(&dest).is_empty(),
        "refused gets wrote {:?}",
        tree(&dest)
    );

    // A tree that contains an escaping symlink: whatever the client does
    // with it, the secret must not be copied.
    std::fs::create_dir(fx.root.join("tree")).unwrap();
    write(&fx.root.join("tree/plain.txt"), b"plain\n");
    std::os::unix::fs::symlink(&outside, fx.root.join("tree/escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), fx.root.join("tree/secret")).unwrap();
    let out = fx.run("get", &args!["-r", "tree", &dest]).await;
    eprintln!(
        "get -r of a tree with escaping symlinks: exit {:?}, stderr {:?}, got {:?}",
        out.code,
        out.stderr_str(),
        tree(&dest)
    );
    for p in all_paths(&dest) {
        if p.is_file() {
            assert_ne!(
                read(&p),
                b"TOP SECRET\n",
                "{} holds the secret",
                p.display()
            );
        }
    }

    assert_eq!(
        tree(&outside),
        outside_before,
        "something was written outside the root"
    );
    let base_after: Vec<_> = std::fs::read_dir(&fx.base)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        base_after, base_before,
        "something was written beside the root"
    );
}

#[tokio::test]
async fn client_refuses_names_that_escape_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let local = base.join("a/b/c/local");
    std::fs::create_dir_all(&local).unwrap();
    let abs = base.join("abs");
    let listing = vec![
        fentry("ok.txt", FileKind::File, FINE.len() as u64),
        fentry("../evil", FileKind::File, EVIL.len() as u64),
        fentry("../../evil2", FileKind::File, EVIL.len() as u64),
        fentry(abs.to_str().unwrap(), FileKind::File, EVIL.len() as u64),
        fentry("a/../../../evil3", FileKind::File, EVIL.len() as u64),
        fentry("../../../evildir", FileKind::Dir, 0),
        fentry("sub/../../../../evil4", FileKind::File, EVIL.len() as u64),
        fentry("..", FileKind::Dir, 0),
        fentry("ok2/../../evil5", FileKind::File, EVIL.len() as u64),
    ];
    let fake = FakeServer::start(FakeScript {
        dirs: vec!["dir".into()],
        listing,
        content: evil_content,
        announced_size: None,
    })
    .await;

    let out = cli_output(fake.cmd("get", &args!["-r", "dir", &local]), None).await;
    eprintln!(
        "get -r from the malicious server: exit {:?}; stderr: {}; requests: {:?}; local: {:?}",
        out.code,
        out.stderr_str(),
        fake.requests(),
        tree(&local)
    );
    assert_failed(&out, "get -r of a listing with escaping names");
    // Nothing outside LOCALDIR (its ancestors aside) ...
    for p in all_paths(&base) {
        assert!(
            p.starts_with(&local) || local.starts_with(&p),
            "the client created {} outside {}",
            p.display(),
            local.display()
        );
    }
    // ... and nothing evil inside it either (`../evil` would land in LOCALDIR
    // itself, outside the tree asked for).
    for p in all_paths(&local) {
        if std::fs::symlink_metadata(&p).unwrap().is_file() {
            assert_ne!(
                read(&p),
                EVIL,
                "{} was written from an escaping name",
                p.display()
            );
        }
    }
    assert!(!abs.exists());
}

#[tokio::test]
async fn client_rejects_a_size_the_data_does_not_match() {
    for (announced, what) in [(10u64, "more"), (30u64, "fewer")] {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().canonicalize().unwrap();
        let fake = FakeServer::start(FakeScript {
            dirs: vec![],
            listing: vec![],
            content: twenty_bytes,
            announced_size: Some(announced),
        })
        .await;
        let dest = local.join("out.bin");
        let out = cli_output(fake.cmd("get", &args!["file.bin", &dest]), None).await;
        eprintln!(
            "{what} bytes than announced: exit {:?}; stderr: {}; requests: {:?}; local: {:?}",
            out.code,
            out.stderr_str(),
            fake.requests(),
            tree(&local)
        );
        assert_failed(&out, &format!("get with {what} bytes than announced"));
        assert!(
            !dest.exists(),
            "the client published a file with {what} bytes than announced"
        );
    }
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
    c.send(Message::Mkdir {
        path: "made/deep".into(),
        mode: Some(0o750),
    })
    .await;
    assert_eq!(
        answer(&mut c).await.message,
        Message::TransferOk { bytes: 0 }
    );
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

/// A partial that is already complete (the cut came after the last byte
/// but before `file_end`) resumes with no data at all.
#[tokio::test]
async fn resume_of_a_complete_partial_sends_no_data() {
    let fx = Files::start();
    let data = binary_pattern(MIB + 1);
    let src = fx.local.join("f.bin");
    write(&src, &data);
    let remote = fx.root.join("f.bin");
    write(&part_of(&remote), &data);
    let proxy = Proxy::pass(fx.server.addr).await;
    let out = fx
        .run_via(&proxy, "put", &args!["--resume", &src, "f.bin"])
        .await;
    assert_ok(&out, "put --resume of a complete partial");
    let seen = proxy.seen();
    assert_eq!(seen.transfer_starts(), vec![data.len() as u64]);
    assert_eq!(seen.up_data, 0);
    assert_eq!(seen.transfer_oks(), vec![0]);
    assert!(read(&remote) == data);
    assert!(!part_of(&remote).exists());
}

/// A named pipe inside the root is "other": `stat` says so, and `get`
/// refuses it instead of blocking the session in `open` until some writer
/// appears.
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
        Err((code, message)) => eprintln!("get pipe: {code}: {message}"),
        Ok(v) => panic!("get of a fifo succeeded: {v:?}"),
    }
    assert_usable(&mut c).await;
}

/// Two uploads to the same path at once: whatever the server decides, the
/// file it publishes is exactly one of the two, and an upload it confirmed
/// is not changed afterwards by the other one.
#[tokio::test]
async fn concurrent_uploads_to_one_path_never_publish_a_mix() {
    let fx = Files::start();
    let size = 2 * MIB;
    let a_data = vec![b'A'; size];
    let b_data = vec![b'B'; size];
    let target = fx.root.join("same.bin");

    // A starts and sends the first half.
    let mut a = fx.server.raw().await;
    a.send(Message::Put(PutRequest {
        path: "same.bin".into(),
        size: size as u64,
        mode: None,
        mtime: None,
        resume: false,
    }))
    .await;
    match answer(&mut a).await.message {
        Message::TransferReady(_) => {}
        other => panic!("A: expected transfer_ready, got {other:?}"),
    }
    a.send(Message::TransferStart { offset: 0 }).await;
    for chunk in a_data[..size / 2].chunks(256 * KIB) {
        a.send_frame(Frame::with_body(
            Message::FileData,
            Bytes::copy_from_slice(chunk),
        ))
        .await;
    }
    // A pong means the server has taken in everything sent before the ping.
    a.send_frame(Frame::with_body(Message::Ping, Bytes::from_static(b"sync")))
        .await;
    assert_eq!(a.expect_pong().await, b"sync"[..]);

    // B uploads the whole file meanwhile.
    let b_result = raw_put(&mut fx.server.raw().await, "same.bin", &b_data).await;
    eprintln!("B: {b_result:?}");
    if b_result.is_ok() {
        assert!(
            read(&target) == b_data,
            "B's confirmed upload is not what B sent"
        );
    }

    // A finishes.
    for chunk in a_data[size / 2..].chunks(256 * KIB) {
        a.send_frame(Frame::with_body(
            Message::FileData,
            Bytes::copy_from_slice(chunk),
        ))
        .await;
    }
    a.send(Message::FileEnd {
        blake3: hex_blake3(&a_data),
    })
    .await;
    let a_result = match answer(&mut a).await.message {
        Message::TransferOk { bytes } => Ok(bytes),
        Message::Error { code, message } => Err((code, message)),
        other => panic!("A: expected transfer_ok or error, got {other:?}"),
    };
    eprintln!("A: {a_result:?}");
    let published = std::fs::read(&target).ok();
    let what = |d: &Option<Vec<u8>>| match d {
        None => "nothing".to_string(),
        Some(d) if *d == a_data => "A's data".to_string(),
        Some(d) if *d == b_data => "B's data".to_string(),
        Some(d) => format!(
            "a mix: {} bytes of A, {} of B",
            d.iter().filter(|&&b| b == b'A').count(),
            d.iter().filter(|&&b| b == b'B').count()
        ),
    };
    match (&a_result, &b_result) {
        (Ok(_), _) => assert!(
            published.as_ref() == Some(&a_data),
            "A was confirmed last, but the file holds {}",
            what(&published)
        ),
        (Err(_), Ok(_)) => assert!(
            published.as_ref() == Some(&b_data),
            "B was confirmed and A refused, but the file holds {}",
            what(&published)
        ),
        (Err(_), Err(_)) => panic!("both uploads were refused"),
    }
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

/// A symlink planted under the predictable part name (`.NAME.wiresh-part`)
/// beside the target. Following it would write through it, and the rename
/// would publish the symlink itself under the real name.
fn plant_part_symlink(target: &Path, victim: &Path) {
    write(victim, b"victim content\n");
    std::os::unix::fs::symlink(victim, part_of(target)).unwrap();
}

#[track_caller]
fn assert_not_followed(victim: &Path, published: &Path, who: &str) {
    assert_eq!(
        String::from_utf8_lossy(&read(victim)),
        "victim content\n",
        "the {who} wrote through a planted part symlink"
    );
    if let Ok(meta) = std::fs::symlink_metadata(published) {
        assert!(
            meta.is_file(),
            "the {who} published {} as a {:?}, not a regular file",
            published.display(),
            meta.file_type()
        );
    }
}

/// The server must not follow a symlink planted under the part name: it
/// would write outside the root.
#[tokio::test]
async fn server_does_not_follow_a_planted_part_symlink() {
    let fx = Files::start();
    let victim = fx.base.join("victim.txt");
    plant_part_symlink(&fx.root.join("x.txt"), &victim);
    let src = fx.local.join("x.txt");
    write(&src, b"uploaded\n");
    let out = fx.run("put", &args![&src, "x.txt"]).await;
    eprintln!(
        "put over a planted part symlink: exit {:?}, stderr {:?}",
        out.code,
        out.stderr_str()
    );
    assert_not_followed(&victim, &fx.root.join("x.txt"), "server");
}

/// The client must not follow a symlink planted under the part name (the
/// classic predictable-temp-file attack in a shared directory).
#[tokio::test]
async fn client_does_not_follow_a_planted_part_symlink() {
    let fx = Files::start();
    write(&fx.root.join("y.txt"), b"downloaded\n");
    let dest = fx.local.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let victim = fx.base.join("victim.txt");
    plant_part_symlink(&dest.join("y.txt"), &victim);
    let out = fx.run("get", &args!["y.txt", &dest]).await;
    eprintln!(
        "get over a planted part symlink: exit {:?}, stderr {:?}",
        out.code,
        out.stderr_str()
    );
    assert_not_followed(&victim, &dest.join("y.txt"), "client");
}
