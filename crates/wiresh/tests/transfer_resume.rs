//! Interrupted transfers, resumed with `--resume`: a [`Proxy`] cuts an
//! upload or a download part-way; the partial left behind is a prefix of the
//! file, and the resumed transfer sends only the rest. A partial that is not
//! a prefix, or is longer than the file, starts over; a complete one sends
//! no data at all. A name too long for `.NAME.wiresh-part` resumes from a
//! partial named after its hash.

mod common;

use common::disk::*;
use common::file_requests::*;
use common::files::*;
use common::proxy::*;
use common::*;
use wiresh_proto::Message;

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
    // Whatever the server received is written, and the partial let go of,
    // by the time it reports the connection's end.
    for peer in &seen.upstream_peers {
        wait_connection_end(&fx.server, *peer).await;
    }
    assert!(
        !part_locked(&part_of(&target)),
        "the server reported the end of the connection while still holding the partial"
    );
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
    let seen = fx
        .run_ok_recorded(
            "put",
            &args!["--resume", &src, "dir/big.bin"],
            "put --resume",
        )
        .await;
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

    let seen = fx
        .run_ok_recorded(
            "get",
            &args!["--resume", "big.bin", &dest_dir],
            "get --resume",
        )
        .await;
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
    let seen = fx
        .run_ok_recorded(
            "put",
            &args!["--resume", &src, "f.bin"],
            "put --resume over a stale partial",
        )
        .await;
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
    let seen = fx
        .run_ok_recorded(
            "get",
            &args!["--resume", "f.bin", &back],
            "get --resume over a stale partial",
        )
        .await;
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
    let seen = fx
        .run_ok_recorded(
            "put",
            &args!["--resume", &src, "f.bin"],
            "put --resume over a too-long partial",
        )
        .await;
    assert_eq!(seen.transfer_starts(), vec![0]);
    assert_eq!(file_blake3(&remote), want);
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
    let seen = fx
        .run_ok_recorded(
            "put",
            &args!["--resume", &src, "f.bin"],
            "put --resume of a complete partial",
        )
        .await;
    assert_eq!(seen.transfer_starts(), vec![data.len() as u64]);
    assert_eq!(seen.up_data, 0);
    assert_eq!(seen.transfer_oks(), vec![0]);
    assert!(read(&remote) == data);
    assert!(!part_of(&remote).exists());
}

/// When `.NAME.wiresh-part` would be longer than 255 bytes, the partial is
/// `.wiresh-part-` and the first 32 hex digits of the BLAKE3 of NAME, beside
/// the target; an interrupted upload leaves it there and a resumed one is
/// offered its length.
#[tokio::test]
async fn a_long_name_resumes_from_its_hashed_partial() {
    let fx = Files::start();
    let name = format!("{}.bin", "n".repeat(240));
    let data = binary_pattern(1000);
    let part = fx.root.join(format!(
        ".wiresh-part-{}",
        &hex_blake3(name.as_bytes())[..32]
    ));

    let mut c = fx.server.raw().await;
    let peer = c.framed.get_ref().local_addr().unwrap();
    raw_put_start(&mut c, &name, data.len() as u64)
        .await
        .expect("put of a long name");
    send_file_data(&mut c, &data[..400]).await;
    drop(c);
    wait_connection_end(&fx.server, peer).await;
    assert!(!part_locked(&part), "the partial is still locked");
    assert_eq!(read(&part), data[..400], "the partial {}", part.display());

    let mut c = fx.server.raw().await;
    let ready = raw_put_offered(&mut c, &name, data.len() as u64).await;
    assert_eq!(ready.offset, 400);
    assert_eq!(ready.prefix_blake3, Some(hex_blake3(&data[..400])));
    c.send(Message::TransferStart { offset: 400 }).await;
    send_file_data(&mut c, &data[400..]).await;
    assert_eq!(raw_put_end(&mut c, &name, hex_blake3(&data)).await, Ok(600));
    assert_eq!(read(&fx.root.join(&name)), data);
    assert!(
        !part.exists(),
        "the partial is still there after publishing"
    );
}

/// A `put --resume` sent as soon as the server has reported the end of an
/// interrupted upload's connection is never refused because that upload
/// still holds the partial: the server's disk writer is done (and has let
/// go of the partial's lock) before the end is reported. The window it
/// closed was narrow (chunks still queued for the disk when the end was
/// logged), so this tries a few times.
#[tokio::test]
async fn put_resume_right_after_an_interrupted_put_finds_the_partial_free() {
    const ROUNDS: usize = 6;
    let fx = Files::start();
    let data = binary_pattern(8 * MIB + 7);
    let src = fx.local.join("big.bin");
    write(&src, &data);
    for round in 0..ROUNDS {
        let name = format!("big-{round}.bin");
        let target = fx.root.join(&name);
        let proxy = Proxy::start(
            fx.server.addr,
            Tamper::CutAfter(5 * MIB as u64),
            Tamper::Pass,
        )
        .await;
        let out = fx.run_via(&proxy, "put", &args![&src, &name]).await;
        let seen = proxy.seen();
        assert!(seen.cut, "round {round}: the proxy never cut: {seen:?}");
        assert_failed(&out, "interrupted put");
        drop(proxy);
        for peer in &seen.upstream_peers {
            wait_connection_end(&fx.server, *peer).await;
        }
        let locked = part_locked(&part_of(&target));
        let out = fx.run("put", &args!["--resume", &src, &name]).await;
        assert!(
            !locked,
            "round {round}: the partial was still locked after the end was reported; \
             the resume said: {}",
            out.stderr_str()
        );
        assert_ok(
            &out,
            &format!("round {round}: put --resume right after the cut"),
        );
        assert!(
            read(&target) == data,
            "round {round}: content after resuming"
        );
    }
}

/// Partial files untouched for more than a day are removed at the next
/// upload into their directory; fresh ones, ones a transfer holds, ones
/// in other directories and the upload's own (which it resumes) are not.
#[tokio::test]
async fn stale_partials_are_removed_at_the_next_put_to_their_directory() {
    let fx = Files::start();
    let two_days_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 24 * 3600;
    let inbox = fx.root.join("inbox");
    let stale = part_of(&inbox.join("old.bin"));
    let fresh = part_of(&inbox.join("new.bin"));
    let held = part_of(&inbox.join("busy.bin"));
    let elsewhere = part_of(&fx.root.join("other/old.bin"));
    let data = binary_pattern(MIB + 3);
    let own = part_of(&inbox.join("own.bin"));
    for (part, content) in [
        (&stale, &b"stale"[..]),
        (&fresh, b"fresh"),
        (&held, b"held"),
        (&elsewhere, b"elsewhere"),
        (&own, &data[..MIB / 2]),
    ] {
        write(part, content);
        if part != &fresh {
            set_mtime(part, two_days_ago);
        }
    }
    // A transfer in progress holds its partial's lock.
    let holder = std::fs::File::open(&held).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let src = fx.local.join("own.bin");
    write(&src, &data);
    let seen = fx
        .run_ok_recorded(
            "put",
            &args!["--resume", &src, "inbox/own.bin"],
            "put --resume into a directory with stale partials",
        )
        .await;
    assert_eq!(
        seen.transfer_starts(),
        vec![(MIB / 2) as u64],
        "the upload's own partial, however old, is resumed"
    );
    assert!(read(&inbox.join("own.bin")) == data);
    assert!(!stale.exists(), "the stale partial is still there");
    assert!(fresh.exists(), "a fresh partial was removed");
    assert!(held.exists(), "a partial a transfer holds was removed");
    assert!(
        elsewhere.exists(),
        "a partial in another directory was removed"
    );
    fx.server
        .wait_for_log("removed 1 partial file(s) untouched for over 24 h: .old.bin.wiresh-part")
        .await;
    drop(holder);
}

/// Ctrl-C typed while `put` copies (in a real terminal, progress bar and
/// all) stops it with a word on what to do: "interrupted; the same command
/// with --resume continues", exit 130; and that command does continue,
/// from the part the server kept.
#[tokio::test]
async fn ctrl_c_during_put_says_how_to_resume() {
    let Some(tmux) = common::tmux::Tmux::new() else {
        return;
    };
    let fx = Files::start();
    let data = binary_pattern(8 * MIB);
    let src = fx.local.join("big.bin");
    write(&src, &data);
    let target = fx.root.join("big.bin");
    // The network stops moving after 2 MiB: the copy is surely under way
    // when the key is pressed.
    let proxy = Proxy::start(
        fx.server.addr,
        Tamper::StallAfter(2 * MIB as u64),
        Tamper::Pass,
    )
    .await;
    let put = format!(
        "env -u WIRESH_TOKEN -u WIRESH_HOST WIRESH_HOME='{home}' '{BIN}' put --plaintext -H {addr} \
         '{src}' big.bin",
        home = fx.server.home().display(),
        addr = proxy.addr,
        src = src.display()
    );
    tmux.start(&common::tmux::recording(tmux.dir(), &put), 100, 24);
    bounded("the proxy to stall the copy", async {
        while !proxy.seen().stalled {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    tmux.press(&["C-c"]);
    let rec = common::tmux::Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 130, "{screen}");
    assert!(
        screen.contains("wiresh: interrupted; the same command with --resume continues"),
        "{screen}"
    );
    assert_eq!(rec.stty_before, rec.stty_after, "terminal changed");
    let peers = proxy.seen().upstream_peers;
    drop(proxy);
    // The server lets go of the part once the connection has ended.
    for peer in peers {
        wait_connection_end(&fx.server, peer).await;
    }
    assert!(!target.exists(), "no file under the real name yet");
    assert!(part_of(&target).exists(), "the server kept the part");

    // The same command with --resume finishes the copy.
    let out = fx.run("put", &args!["--resume", &src, "big.bin"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(std::fs::read(&target).unwrap(), data);
}
