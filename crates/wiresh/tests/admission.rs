//! Who gets in when strangers flood the server: connections still
//! authenticating have a budget of their own, with a cap per address and
//! fair shares between networks (silent connections giving way first), so
//! that silent or dripping connections from one address or from many
//! cannot lock real clients out; an address whose connections time out is
//! refused for a while; a client that proves an authorized key in its TLS
//! handshake leaves its address's cap; a refused peer is told why; the
//! lockout after wrong tokens and the penalties spare the operator's
//! exempt networks.

mod common;

use std::net::SocketAddr;

use common::keys::{authorized_clients, tls_presenting, KeyClient};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wiresh_proto::{ErrorCode, Message};

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(server).await
}

/// 2,000 connections from one address that say nothing (a tenth of them
/// dripping the first bytes of a TLS handshake) while 48 real clients from
/// another address connect and run a command: every real client gets in,
/// and a newcomer from the flooding address is told why it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_does_not_lock_out_real_clients() {
    const FLOOD: usize = 2000;
    const REAL: usize = 48;
    let server = Server::start();
    // (connection, whether it dripped a TLS record header)
    let mut flood = Vec::with_capacity(FLOOD);
    for n in 0..FLOOD {
        // Connections the server has already turned away may fail here:
        // the flood only has to be attempted.
        if let Ok(mut stream) =
            bounded("a flood connection", connect_from("127.0.0.2", server.addr)).await
        {
            let drips = n % 10 == 0;
            if drips {
                // A TLS record header, then nothing more.
                let _ = stream.write_all(&[0x16, 0x03, 0x01]).await;
            }
            flood.push((stream, drips));
        }
    }
    assert!(flood.len() > FLOOD / 2, "the flood never got going");

    // Real clients, a few at a time, from another address.
    let locked_out = real_clients_get_in(&server, REAL, "beside a flood from one address").await;
    assert!(locked_out.is_empty(), "{locked_out:#?}");

    // Someone new at the flooding address is turned away: told why, or
    // (while the server is busy refusing the flood) just closed, never
    // reset.
    let stream = bounded("a late connection", connect_from("127.0.0.2", server.addr))
        .await
        .expect("connect");
    let mut late = RawConn::from_stream(stream);
    match late.next().await {
        Some(Ok(frame)) => match frame.message {
            Message::Error {
                code: ErrorCode::TooManyConnections,
                ..
            } => {}
            other => panic!("expected too_many_connections, got {other:?}"),
        },
        None => {}
        Some(Err(e)) => panic!("the late connection broke: {e}"),
    }

    // The flood's connections were closed, answered or are still waiting;
    // none that stayed silent was reset. A dripping one may be: past the
    // refusals it holds open, the server closes a connection at once
    // (reading what has arrived, see `a_refusal_past_the_budget_closes_with_a_fin`),
    // and bytes that arrive after that are answered with a reset, as TCP
    // does. That takes the bytes losing a race with the server; a server
    // that reset connections would reset most of them.
    let mut buf = [0u8; 256];
    let (mut silent_resets, mut dripping, mut dripping_resets) = (0, 0, 0);
    for (stream, drips) in &flood {
        let reset = matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        match drips {
            true => {
                dripping += 1;
                dripping_resets += usize::from(reset);
            }
            false => silent_resets += usize::from(reset),
        }
    }
    assert_eq!(
        silent_resets, 0,
        "{silent_resets} silent connections were reset"
    );
    assert!(
        dripping_resets <= dripping / 10,
        "{dripping_resets} of {dripping} dripping connections were reset"
    );
}

/// Past its address's share of the connections authenticating, a
/// connection waits a moment for a place, then is told why it is refused
/// (in the clear before any preamble, as here, or inside TLS).
#[tokio::test]
async fn over_its_addresss_share_a_connection_is_told_why() {
    let server = Server::start_with(&["--max-startups-per-address", "2"]);
    let _holding = [
        connect_from("127.0.0.2", server.addr).await.unwrap(),
        connect_from("127.0.0.2", server.addr).await.unwrap(),
    ];
    let third = connect_from("127.0.0.2", server.addr).await.unwrap();
    let why = RawConn::from_stream(third)
        .expect_error(ErrorCode::TooManyConnections)
        .await;
    assert!(why.contains("127.0.0.2"), "{why}");
    // Another address is not held back.
    let mut conn = server.connect().await;
    assert_eq!(sh(&mut conn, "echo in").await.stdout, b"in\n");
}

/// A wrong-token flood locks its address out for a while, even with the
/// right token; an exempt network is not locked out.
#[tokio::test]
async fn exempt_networks_are_not_locked_out_by_wrong_tokens() {
    for exempt in [false, true] {
        let mut args = vec![];
        if exempt {
            args = vec!["--exempt", "127.0.0.0/8"];
        }
        let server = Server::start_with(&args);
        wrong_tokens(server.addr, 6).await;
        let (mut c, _) = RawConn::greeted(server.addr).await;
        c.send(Message::Auth {
            token: server.token.clone(),
        })
        .await;
        let answer = c.recv().await.message;
        match (exempt, answer) {
            (true, Message::AuthOk) => {}
            (
                false,
                Message::Error {
                    code: ErrorCode::RateLimited,
                    ..
                },
            ) => {}
            (exempt, other) => panic!("exempt={exempt}: got {other:?}"),
        }
    }
}

/// `count` silent connections to `server` from `sources` loopback addresses
/// in 127.1.0.0/16 and up, `per_network` of them to a /24 (those the
/// server refuses at once are not counted).
async fn silent_flood(
    server: SocketAddr,
    count: usize,
    sources: usize,
    per_network: usize,
) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(count);
    for n in 0..count {
        let source = n % sources;
        let network = source / per_network;
        let from = format!(
            "127.{}.{}.{}",
            1 + network / 250,
            1 + network % 250,
            1 + source % per_network
        );
        if let Ok(stream) = bounded("a flood connection", connect_from(&from, server)).await {
            flood.push(stream);
        }
    }
    flood
}

/// Real clients from 127.0.0.1, eight at a time, each running a command;
/// returns why each one that was locked out was (a client let in must run
/// its command).
async fn real_clients_get_in(server: &Server, count: usize, what: &str) -> Vec<String> {
    let mut locked_out = Vec::new();
    for batch in 0..count / 8 {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let endpoint = server.endpoint();
                let what = what.to_string();
                tokio::spawn(async move {
                    let mut conn = wiresh::client::Connection::connect(&endpoint)
                        .await
                        .map_err(|e| format!("{what}: real client {batch}.{i}: {e}"))?;
                    let ran =
                        run(&mut conn, wiresh_proto::ExecRequest::shell("echo in"), None).await;
                    assert_eq!(ran.stdout, b"in\n");
                    Ok::<(), String>(())
                })
            })
            .collect();
        for task in tasks {
            if let Err(why) = bounded("a real client", task).await.unwrap() {
                locked_out.push(why);
            }
        }
    }
    locked_out
}

/// Silent connections enough to fill the budget of connections
/// authenticating four times over, from 8 addresses of one /24, and from
/// 256 addresses each in a /24 of its own (as a botnet's would be): real
/// clients from another network get in, in the places of silent ones — at
/// least 23 of 24 (the 95 % issue 19 asks): on a loaded machine a real
/// client whose first bytes the server has not seen yet counts as silent
/// too, and one in 24 may lose its place (bench/flood.sh measures it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_does_not_lock_out_real_clients() {
    for (sources, per_network) in [(8, 8), (256, 1)] {
        let what = format!("{sources} addresses, {per_network} to a /24");
        let server = Server::start();
        let flood = silent_flood(server.addr, 1024, sources, per_network).await;
        assert!(
            flood.len() >= 256,
            "{what}: the flood never filled the budget"
        );
        let locked_out = real_clients_get_in(&server, 24, &what).await;
        assert!(locked_out.len() <= 1, "{locked_out:#?}");
        server
            .wait_for_log("was dropped to make room for one from")
            .await;
    }
}

/// An address whose connections let the handshake deadline (10 s) pass
/// is refused for a while, and told why; its neighbours are not, nor is
/// an exempt network.
#[tokio::test]
async fn an_address_whose_connections_time_out_is_refused_for_a_while() {
    async fn after_two_timeouts(args: &[&str]) -> Server {
        let server = Server::start_with(args);
        let silent = [
            connect_from("127.0.0.3", server.addr).await.unwrap(),
            connect_from("127.0.0.3", server.addr).await.unwrap(),
        ];
        for mut stream in silent {
            let mut sink = [0u8; 64];
            let closed = bounded("the deadline to pass", stream.read(&mut sink)).await;
            assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        }
        server
    }
    let (penalized, exempt) = tokio::join!(
        after_two_timeouts(&[]),
        after_two_timeouts(&["--exempt", "127.0.0.3"]),
    );
    penalized
        .wait_for_log("127.0.0.3: its connections keep letting the handshake deadline pass")
        .await;
    let refused = connect_from("127.0.0.3", penalized.addr).await.unwrap();
    let why = RawConn::from_stream(refused)
        .expect_error(ErrorCode::TooManyConnections)
        .await;
    assert!(
        why.contains("127.0.0.3 keep failing to authenticate in time"),
        "{why}"
    );
    for (server, from) in [(&penalized, "127.0.0.4"), (&exempt, "127.0.0.3")] {
        let stream = connect_from(from, server.addr).await.unwrap();
        let mut conn = RawConn::from_stream(stream);
        conn.send_raw(&wiresh_proto::Preamble::new(wiresh_proto::PROTOCOL_VERSION).encode())
            .await;
        assert!(
            matches!(conn.recv().await.message, Message::Hello(_)),
            "{from}"
        );
    }
}

/// A client that presents an authorized key in its TLS handshake stops
/// counting toward its address's cap once the handshake is done: two such
/// connections held open, saying nothing more, leave room for a third
/// from the same address although the cap is 2. Unknown keys still count.
#[tokio::test]
async fn a_key_proven_in_tls_does_not_count_against_its_addresss_cap() {
    let alice = KeyClient::new("alice").await;
    let mallory = KeyClient::new("mallory").await;
    let dir = tempfile::tempdir().unwrap();
    let clients = authorized_clients(dir.path(), &[&alice.line]);
    let server = Server::start_with(&[
        "--max-startups-per-address",
        "2",
        "--authorized-clients",
        clients.to_str().unwrap(),
    ]);
    for (client, counts) in [(&alice, false), (&mallory, true)] {
        let key = client.home.path().join("client.key");
        let _held = [
            tls_presenting(server.addr, &key).await,
            tls_presenting(server.addr, &key).await,
        ];
        let third = server.try_connect().await;
        match (counts, third) {
            (false, Ok(mut conn)) => assert_eq!(sh(&mut conn, "echo in").await.stdout, b"in\n"),
            (true, Err(e)) => assert!(e.to_string().contains("127.0.0.1"), "{e}"),
            (counts, third) => panic!("unknown key counts={counts}: {:?}", third.err()),
        }
    }
}
