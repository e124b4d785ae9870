//! A server whose disk fills up during an upload, for real: the files root
//! is a 32 MiB tmpfs mounted for the test (it needs root, and is skipped,
//! saying so, without), filled but for 1 MiB. The client shows the server's `io_error`, with the
//! space the file needs and what to do next, never a lost connection; the
//! partial keeps what was written, unlocked; `put --resume` continues from
//! it once space is freed; a fresh `put` discards it.

mod common;

use common::disk::*;
use common::files::*;
use common::*;

/// Size of the server's filesystem.
const FS_SIZE: usize = 32 * MIB;

/// A transfer refused for want of space: exit 1, the server's own words,
/// how much space is needed, and how to go on.
#[track_caller]
fn assert_no_space(out: &CliOutput, what: &str) {
    assert_transfer_error(out, what);
    let err = out.stderr_str();
    assert!(
        err.contains("io_error") && err.contains("No space left on device"),
        "{what}: the server's error is not shown: {err}"
    );
    assert!(
        err.contains("more than the") && err.contains("free at least"),
        "{what}: the space needed is not said: {err}"
    );
    assert!(
        err.contains("--resume"),
        "{what}: what to do is not said: {err}"
    );
    assert!(
        !err.contains("connection to the server was lost"),
        "{what}: {err}"
    );
}

/// Fills the small filesystem with `filler` until `room` bytes are left.
fn fill(fx: &Files, filler: &std::path::Path, room: usize) {
    let free = fx.small_fs.as_ref().unwrap().free() as usize;
    let len = std::fs::metadata(filler).map_or(0, |m| m.len() as usize);
    write(filler, &vec![0u8; len + free - room]);
}

#[tokio::test]
async fn a_full_disk_is_reported_and_the_partial_resumed_or_discarded() {
    let Some(fx) = Files::start_on_small_fs(FS_SIZE, &[]) else {
        return;
    };
    let filler = fx.root.join("filler.bin");
    fill(&fx, &filler, MIB);
    // Far more than fits, and than the sockets hold: the disk fills up
    // while the client is still sending.
    let src = fx.local.join("big.bin");
    write_big(&src, 24 * MIB);
    let data = read(&src);
    let target = fx.root.join("big.bin");
    let part = part_of(&target);

    let out = fx.run("put", &args![&src, "big.bin"]).await;
    eprintln!("put onto a full disk: {}", out.stderr_str().trim());
    assert_no_space(&out, "put onto a full disk");
    assert!(!target.exists(), "a file appeared under the real name");
    let kept = std::fs::metadata(&part)
        .unwrap_or_else(|e| panic!("no partial kept for a resume: {e}"))
        .len() as usize;
    assert!(0 < kept && kept < data.len(), "kept {kept} bytes");
    assert!(read(&part) == data[..kept], "the partial is not a prefix");
    assert!(!part_locked(&part), "the partial is still locked");

    // Still full: a resume says so again, and keeps what it had.
    let out = fx.run("put", &args!["--resume", &src, "big.bin"]).await;
    assert_no_space(&out, "put --resume onto a disk still full");
    let still = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(still >= kept, "the resume lost bytes: {still} < {kept}");
    assert!(read(&part) == data[..still]);

    // Space freed: the resume continues from what was kept.
    std::fs::remove_file(&filler).unwrap();
    let seen = fx
        .run_ok_recorded(
            "put",
            &args!["--resume", &src, "big.bin"],
            "put --resume after freeing space",
        )
        .await;
    assert_eq!(seen.transfer_starts(), vec![still as u64], "resumed at");
    assert_eq!(seen.up_data, (data.len() - still) as u64, "bytes sent");
    assert!(read(&target) == data, "content after the resume");
    assert!(!part.exists(), "the partial is still there");

    // Full again, for a file that is all sent before the disk refuses its
    // end; then the user starts over with another file under the same
    // name: a put without --resume discards the partial, and the space it
    // held, before it writes.
    std::fs::remove_file(&target).unwrap();
    fill(&fx, &filler, MIB);
    let small = fx.local.join("small.bin");
    write(&small, &data[..3 * MIB / 2]);
    let out = fx.run("put", &args![&small, "again.bin"]).await;
    assert_no_space(&out, "a small put onto a full disk");
    let part = part_of(&fx.root.join("again.bin"));
    let kept = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(kept > 0);
    let free = fx.small_fs.as_ref().unwrap().free() as usize;
    let smaller = binary_pattern(free + kept / 2);
    let other = fx.local.join("smaller.bin");
    write(&other, &smaller);
    let out = fx.run("put", &args![&other, "again.bin"]).await;
    assert_ok(&out, "a fresh put over the partial of a failed one");
    assert!(read(&fx.root.join("again.bin")) == smaller);
    assert!(!part.exists(), "the old partial is still there");
}
