//! Who gets in when strangers flood the server: connections still
//! authenticating have a budget of their own, with a cap per address, so
//! that silent or dripping connections cannot lock real clients out; a
//! refused peer is told why; the lockout after wrong tokens spares the
//! operator's exempt networks.

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::AsyncWriteExt;
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
    for batch in 0..REAL / 8 {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let endpoint = server.endpoint();
                tokio::spawn(async move {
                    let mut conn = wiresh::client::Connection::connect(&endpoint)
                        .await
                        .unwrap_or_else(|e| panic!("real client {batch}.{i} was locked out: {e}"));
                    let ran =
                        run(&mut conn, wiresh_proto::ExecRequest::shell("echo in"), None).await;
                    assert_eq!(ran.stdout, b"in\n");
                })
            })
            .collect();
        for task in tasks {
            bounded("a real client", task).await.unwrap();
        }
    }

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
