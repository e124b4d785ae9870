//! Legacy encodings: `serve --legacy-encoding gbk` reads commands and sends
//! answers in gbk, as the original lesson's Windows server with a gbk
//! console did; `exec --legacy --encoding gbk` and `shell --legacy
//! --encoding gbk` turn such answers into UTF-8. A round trip over real
//! TCP on loopback, checked on the wire and at both ends.

mod common;

use std::net::SocketAddr;

use common::*;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `你好` in gbk.
const NIHAO_GBK: [u8; 4] = [0xc4, 0xe3, 0xba, 0xc3];

fn legacy_server(extra: &[&str]) -> (Server, SocketAddr) {
    let server = Server::start_with(&[&["--legacy-listen", "127.0.0.1:0"], extra].concat());
    let addr = server
        .banner
        .iter()
        .find_map(|line| line.split("legacy protocol (no authentication) on ").nth(1))
        .and_then(|a| a.trim().parse().ok())
        .expect("the legacy address in the banner");
    (server, addr)
}

/// One command over a raw socket: the reply's payload and announced md5.
async fn raw_exchange(addr: SocketAddr, command: &[u8]) -> (Vec<u8>, String) {
    let mut s = tcp(addr).await;
    s.write_all(command).await.unwrap();
    let mut len = [0u8; 4];
    bounded("the header length", s.read_exact(&mut len))
        .await
        .unwrap();
    let mut header = vec![0u8; u32::from_ne_bytes(len) as usize];
    bounded("the header", s.read_exact(&mut header))
        .await
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    let mut payload = vec![0u8; header["total_size"].as_u64().unwrap() as usize];
    bounded("the payload", s.read_exact(&mut payload))
        .await
        .unwrap();
    (payload, header["md5"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_gbk_round_trip_through_the_legacy_server() {
    let (server, addr) = legacy_server(&["--legacy-encoding", "gbk"]);

    // On the wire: the command read as gbk, the answer sent as gbk.
    let mut command = b"printf '%s\\n' ".to_vec();
    command.extend_from_slice(&NIHAO_GBK);
    let (payload, md5) = raw_exchange(addr, &command).await;
    assert_eq!(payload, [&NIHAO_GBK[..], b"\n"].concat());
    assert_eq!(
        md5,
        format!("{:x}", Md5::digest(&payload)),
        "md5 of the gbk bytes"
    );

    // The client turns it back into UTF-8, and sends the command in gbk.
    let mut cmd = client_command("exec", &addr.to_string(), server.home());
    cmd.args([
        "--legacy",
        "--encoding",
        "gbk",
        "--",
        "echo 你好; echo 错误 >&2",
    ]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "你好\n错误\n");

    // The shell too, line after line.
    let mut cmd = client_command("shell", &addr.to_string(), server.home());
    cmd.args(["--legacy", "--encoding", "GBK"]);
    let out = cli_output(cmd, Some("echo 世界\necho 你好\n".as_bytes().to_vec())).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "世界\n你好\n");
}

#[tokio::test]
async fn without_an_encoding_bytes_pass_unchanged_and_bad_labels_are_refused() {
    let (server, addr) = legacy_server(&[]);
    let (payload, _) = raw_exchange(addr, "echo 你好".as_bytes()).await;
    assert_eq!(payload, "你好\n".as_bytes());
    // The client decodes only when told to: gbk bytes from a UTF-8 server
    // would be mojibake, so it must not guess.
    let mut cmd = client_command("exec", &addr.to_string(), server.home());
    cmd.args(["--legacy", "--", "echo 你好"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout, "你好\n".as_bytes());

    let mut cmd = client_command("exec", &addr.to_string(), server.home());
    cmd.args(["--legacy", "--encoding", "klingon", "--", "true"]);
    let out = cli_output(cmd, None).await;
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr_str().contains("WHATWG label such as gbk"),
        "{}",
        out.stderr_str()
    );
    // --encoding is for the legacy protocol only.
    let mut cmd = client_command("exec", &addr.to_string(), server.home());
    cmd.args(["--encoding", "gbk", "--", "true"]);
    assert_eq!(cli_output(cmd, None).await.code, Some(2));
}
