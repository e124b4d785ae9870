//! Where a transfer may write: the server confines every path to its
//! `--files-root` (no `..`, no absolute path outside it, no symbolic link
//! leading out, not even while a directory is swapped for one); the client
//! writes only below the target the user named,
//! whatever names a malicious [`FakeServer`] lists; and neither end follows a
//! symbolic link planted under the predictable part name.

mod common;

use std::path::Path;

use common::disk::*;
use common::fake_server::*;
use common::file_requests::*;
use common::files::*;
use common::*;
use wiresh_proto::{ErrorCode, FileKind, Message};

#[tokio::test]
async fn server_refuses_paths_that_escape_the_root() {
    let fx = Files::start();
    let outside = fx.base.join("outside");
    write(&outside.join("secret.txt"), b"TOP SECRET\n");
    write(&fx.root.join("sub/a.txt"), b"inside\n");
    std::os::unix::fs::symlink(&outside, fx.root.join("link_out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), fx.root.join("file_out")).unwrap();
    std::os::unix::fs::symlink(outside.join("nothing-here"), fx.root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("sub", fx.root.join("link_in")).unwrap();
    // Links are followed only when relative: an absolute one is refused
    // even when it points inside the root.
    std::os::unix::fs::symlink(fx.root.join("sub"), fx.root.join("abs_in")).unwrap();
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
        "abs_in/a.txt",
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

/// What one request of the race saw.
#[derive(Debug, Default)]
struct RaceCounts {
    attempts: u32,
    ok: u32,
    /// Refusals by error code.
    refused: std::collections::BTreeMap<String, u32>,
    /// Gets that returned the outside file, listings that showed it.
    leaked: u32,
}

/// A directory inside the root swapped for a symbolic link to a directory
/// outside, atomically and over and over (`renameat2(RENAME_EXCHANGE)`),
/// while a client gets, puts, lists and makes directories through it.
/// Whatever the timing, nothing outside may be read, listed or written,
/// and no partial file may appear outside. Bounded: at most `ROUNDS`
/// rounds, and no more than `RACE_FOR` of racing.
#[tokio::test]
async fn confinement_holds_while_a_directory_is_swapped_for_a_symlink() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const ROUNDS: u32 = 400;
    const RACE_FOR: Duration = Duration::from_secs(3);
    const OUTSIDE: &[u8] = b"OUTSIDE SECRET\n";
    const INSIDE: &[u8] = b"inside\n";

    let fx = Files::start();
    let outside = fx.base.join("outside");
    write(&outside.join("secret.txt"), OUTSIDE);
    write(&outside.join("outside-only.txt"), OUTSIDE);
    write(&fx.root.join("d/secret.txt"), INSIDE);
    std::os::unix::fs::symlink(&outside, fx.root.join("d.swap")).unwrap();
    let outside_before = tree(&outside);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let (d, swap) = (fx.root.join("d"), fx.root.join("d.swap"));
        std::thread::spawn(move || {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            while !stop.load(Ordering::Relaxed) {
                // (Fails only once the test has given up and removed the tree.)
                if renameat_with(CWD, &d, CWD, &swap, RenameFlags::EXCHANGE).is_err() {
                    return;
                }
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let (mut gets, mut puts, mut lists, mut mkdirs) = Default::default();
    let count = |c: &mut RaceCounts, outcome: Result<bool, ErrorCode>| {
        c.attempts += 1;
        match outcome {
            Ok(true) => c.ok += 1,
            Ok(false) => c.leaked += 1,
            Err(code) => *c.refused.entry(code.to_string()).or_default() += 1,
        }
    };
    let mut c = fx.server.raw().await;
    let began = Instant::now();
    for round in 0..ROUNDS {
        if began.elapsed() > RACE_FOR {
            break;
        }
        let got = raw_get(&mut c, "d/secret.txt").await;
        count(
            &mut gets,
            got.map(|(_, data, _)| data != OUTSIDE).map_err(|e| e.0),
        );
        let put = raw_put(&mut c, &format!("d/up-{round}.txt"), b"uploaded\n").await;
        count(&mut puts, put.map(|_| true).map_err(|e| e.0));
        if round % 4 == 0 {
            c.send(Message::List { path: "d".into() }).await;
            let mut showed_outside = false;
            let listed = loop {
                match answer(&mut c).await.message {
                    Message::Entry(e) => showed_outside |= e.path == "outside-only.txt",
                    Message::ListEnd { .. } => break Ok(!showed_outside),
                    Message::Error { code, .. } => break Err(code),
                    other => panic!("list: unexpected {other:?}"),
                }
            };
            if listed.is_err() {
                // A listing that fails part-way closes the connection.
                c = fx.server.raw().await;
            }
            count(&mut lists, listed);
            c.send(Message::Mkdir {
                path: format!("d/m-{round}"),
                mode: None,
            })
            .await;
            let made = match answer(&mut c).await.message {
                Message::TransferOk { .. } => Ok(true),
                Message::Error { code, .. } => Err(code),
                other => panic!("mkdir: unexpected {other:?}"),
            };
            count(&mut mkdirs, made);
        }
    }
    let raced_for = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "race: {} swaps in {raced_for:?}; get {gets:?}; put {puts:?}; list {lists:?}; mkdir {mkdirs:?}",
        swaps.load(Ordering::Relaxed)
    );
    // Both states of the swap were seen, or the race proved nothing.
    let refused = |c: &RaceCounts| c.refused.values().sum::<u32>();
    assert!(
        gets.ok + puts.ok > 0 && refused(&gets) + refused(&puts) > 0,
        "the requests never met both the directory and the link"
    );
    let outside_after = tree(&outside);
    let parts_outside = parts_below(&outside);
    let new_outside = outside_after
        .keys()
        .filter(|k| !outside_before.contains_key(*k))
        .count();
    eprintln!(
        "race: {new_outside} new entries outside the root, {} of them partial files",
        parts_outside.len()
    );
    assert_eq!(gets.leaked, 0, "gets read the file outside the root");
    assert_eq!(
        lists.leaked, 0,
        "listings showed the directory outside the root"
    );
    assert_eq!(
        parts_outside,
        Vec::<std::path::PathBuf>::new(),
        "partial files were left outside the root"
    );
    assert_eq!(
        outside_after, outside_before,
        "puts or mkdirs wrote outside the root"
    );
    // The connection is still fine, and the server is not wedged.
    assert_usable(&mut c).await;
}
