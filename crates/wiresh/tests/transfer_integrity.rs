//! A transfer is published only if it is exactly what was sent: a bit
//! flipped on the wire (by a [`Proxy`]) fails the BLAKE3 check either way and
//! the old file is kept; a malicious [`FakeServer`] that sends more or fewer
//! bytes than it announced is refused; two uploads to one path never publish
//! a mix of both.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::disk::*;
use common::fake_server::*;
use common::file_requests::*;
use common::files::*;
use common::proxy::*;
use common::*;
use wiresh_proto::{Frame, Message};

/// A transfer refused for its checksum: exit 1, and the message says so.
#[track_caller]
fn assert_checksum_error(out: &CliOutput, what: &str) {
    assert_transfer_error(out, what);
    let err = out.stderr_str().to_lowercase();
    assert!(
        err.contains("checksum"),
        "the error does not mention the checksum: {err}"
    );
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
    assert_checksum_error(&out, "corrupted put");
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
    assert_checksum_error(&out, "corrupted get");
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

/// Twenty bytes for any path.
fn twenty_bytes(_: &str) -> Vec<u8> {
    b"0123456789ABCDEFGHIJ".to_vec()
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
    raw_put_start(&mut a, "same.bin", size as u64)
        .await
        .unwrap_or_else(|e| panic!("A: expected transfer_ready, got {e:?}"));
    send_file_data(&mut a, &a_data[..size / 2]).await;
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
    send_file_data(&mut a, &a_data[size / 2..]).await;
    let a_result = raw_put_end(&mut a, "same.bin", hex_blake3(&a_data)).await;
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
