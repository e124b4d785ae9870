//! Where a transfer may write: the server confines every path to its
//! `--files-root` (no `..`, no absolute path outside it, no symbolic link
//! leading out); the client writes only below the target the user named,
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
