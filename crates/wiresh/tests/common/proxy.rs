//! [`Proxy`]: a frame-aware TCP relay between a client and a server that
//! records the headers going each way and, one way or both, can cut the
//! connection after some `file_data` bytes (interrupted transfers), stall it
//! (a network that stops moving but does not close), or flip one bit of a
//! `file_data` body (corrupted transfers).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use wiresh_proto::{FrameCodec, Message, TransferReady, PREAMBLE_LEN};

/// What the proxy does to the `file_data` frames going one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Relay everything unchanged.
    Pass,
    /// Close both connections once at least this many `file_data` body
    /// bytes have been relayed (whole frames only).
    CutAfter(u64),
    /// Flip one bit of the `file_data` byte at this offset of the stream of
    /// `file_data` bodies (the frame is re-encoded with the same length).
    FlipAt(u64),
    /// Once at least this many `file_data` body bytes have been relayed,
    /// stop relaying, both ways, and stop reading, but keep both
    /// connections open: a stalled network.
    StallAfter(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// What went through the proxy (every connection, in order).
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub connections: usize,
    /// The proxy's own address on each upstream connection, which is the
    /// peer address the server logs.
    pub upstream_peers: Vec<SocketAddr>,
    /// Headers client → server (`file_data` bodies are only counted).
    pub up: Vec<Message>,
    /// Headers server → client.
    pub down: Vec<Message>,
    pub up_data: u64,
    pub down_data: u64,
    pub cut: bool,
    pub stalled: bool,
    pub flipped: bool,
}

impl Seen {
    pub fn transfer_ready(&self) -> Vec<TransferReady> {
        self.down
            .iter()
            .filter_map(|m| match m {
                Message::TransferReady(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn transfer_starts(&self) -> Vec<u64> {
        self.up
            .iter()
            .filter_map(|m| match m {
                Message::TransferStart { offset } => Some(*offset),
                _ => None,
            })
            .collect()
    }

    pub fn get_requests(&self) -> Vec<(String, u64)> {
        self.up
            .iter()
            .filter_map(|m| match m {
                Message::Get { path, resume_from } => Some((path.clone(), *resume_from)),
                _ => None,
            })
            .collect()
    }

    pub fn transfer_oks(&self) -> Vec<u64> {
        self.down
            .iter()
            .filter_map(|m| match m {
                Message::TransferOk { bytes } => Some(*bytes),
                _ => None,
            })
            .collect()
    }
}

/// A TCP relay between a client and `upstream` that understands frames.
pub struct Proxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts the relays.
        self.accept.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, up: Tamper, down: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let accept = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => return,
                    },
                    Some(_) = relays.join_next(), if !relays.is_empty() => continue,
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue; // drops the client
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut seen = s.lock().unwrap();
                    seen.connections += 1;
                    seen.upstream_peers.push(server.local_addr().unwrap());
                }
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let link = Link::new();
                relays.spawn(relay(
                    client_read,
                    server_write,
                    Way::Up,
                    up,
                    s.clone(),
                    link.clone(),
                ));
                relays.spawn(relay(
                    server_read,
                    client_write,
                    Way::Down,
                    down,
                    s.clone(),
                    link,
                ));
            }
        });
        Proxy { addr, seen, accept }
    }

    /// A plain relay that only records.
    pub async fn pass(upstream: SocketAddr) -> Proxy {
        Proxy::start(upstream, Tamper::Pass, Tamper::Pass).await
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

/// What the two directions of one relayed connection tell each other.
#[derive(Clone)]
struct Link {
    cut_tx: watch::Sender<bool>,
    cut_rx: watch::Receiver<bool>,
    stall_tx: watch::Sender<bool>,
}

impl Link {
    fn new() -> Link {
        let (cut_tx, cut_rx) = watch::channel(false);
        let (stall_tx, _) = watch::channel(false);
        Link {
            cut_tx,
            cut_rx,
            stall_tx,
        }
    }

    fn stalled(&self) -> bool {
        *self.stall_tx.borrow()
    }
}

/// Resolves once either direction has decided to cut.
async fn cut_signal(rx: &mut watch::Receiver<bool>) {
    // (The guard `wait_for` returns must not live across an await.)
    let _ = rx.wait_for(|cut| *cut).await.map(|_| ());
}

/// Relays one direction frame by frame (after the preamble, going up).
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    way: Way,
    tamper: Tamper,
    seen: Arc<Mutex<Seen>>,
    link: Link,
) {
    let Link {
        cut_tx,
        mut cut_rx,
        stall_tx,
    } = link.clone();
    if way == Way::Up {
        let mut preamble = [0u8; PREAMBLE_LEN];
        tokio::select! {
            r = from.read_exact(&mut preamble) => if r.is_err() {
                let _ = to.shutdown().await;
                return;
            },
            () = cut_signal(&mut cut_rx) => return,
        }
        if to.write_all(&preamble).await.is_err() {
            let _ = cut_tx.send(true);
            return;
        }
    }
    let codec = FrameCodec::default();
    let mut frames = FramedRead::new(from, FrameCodec::default());
    let mut data = 0u64;
    let mut out = BytesMut::new();
    loop {
        let next = tokio::select! {
            next = frames.next() => next,
            () = cut_signal(&mut cut_rx) => return,
        };
        if link.stalled() {
            // Neither relays nor reads; holds both connections until cut.
            cut_signal(&mut cut_rx).await;
            return;
        }
        let mut frame = match next {
            Some(Ok(frame)) => frame,
            // The sender closed: pass the half-close on, keep the other way.
            None => {
                let _ = to.shutdown().await;
                return;
            }
            Some(Err(_)) => {
                let _ = cut_tx.send(true);
                return;
            }
        };
        let mut cut_now = false;
        if frame.message == Message::FileData {
            let len = frame.body.len() as u64;
            if let Tamper::FlipAt(at) = tamper {
                if (data..data + len).contains(&at) {
                    let mut body = frame.body.to_vec();
                    body[(at - data) as usize] ^= 0x10;
                    frame.body = Bytes::from(body);
                    seen.lock().unwrap().flipped = true;
                }
            }
            data += len;
            if let Tamper::CutAfter(limit) = tamper {
                cut_now = data >= limit;
            }
            if let Tamper::StallAfter(limit) = tamper {
                if data >= limit && !link.stalled() {
                    seen.lock().unwrap().stalled = true;
                    stall_tx.send_replace(true);
                }
            }
        }
        {
            let mut s = seen.lock().unwrap();
            let is_data = frame.message == Message::FileData;
            match way {
                Way::Up => {
                    if is_data {
                        s.up_data += frame.body.len() as u64;
                    }
                    s.up.push(frame.message.clone());
                }
                Way::Down => {
                    if is_data {
                        s.down_data += frame.body.len() as u64;
                    }
                    s.down.push(frame.message.clone());
                }
            }
        }
        out.clear();
        codec
            .encode_parts(&frame.message, &frame.body, &mut out)
            .expect("re-encoding a frame");
        if to.write_all(&out).await.is_err() {
            let _ = cut_tx.send(true);
            return;
        }
        if cut_now {
            seen.lock().unwrap().cut = true;
            // A FIN after the relayed frames, so the receiver gets all of them.
            let _ = to.shutdown().await;
            let _ = cut_tx.send(true);
            return;
        }
    }
}
