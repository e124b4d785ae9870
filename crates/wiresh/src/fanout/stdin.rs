//! Local stdin, read once and sent to every host.
//!
//! What is read goes to a temporary file, so hosts launched later (beyond
//! `--fanout`) get it from its start, while memory holds only the pieces in
//! flight. Reading stops whenever a running host lags more than [`LAG`]
//! behind: the slowest host sets the pace, as with `tee`. A host whose
//! command stops reading holds everyone up until its command ends (or its
//! `--timeout` ends it); from then on it no longer counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

use super::capture::{Spool, PIECE};
use crate::task::AbortOnDrop;

/// How far ahead of the slowest running host reading may go.
const LAG: u64 = 8 * 1024 * 1024;

/// How much of stdin is in the spool, and whether that is all of it.
#[derive(Debug, Clone, Copy, Default)]
struct Level {
    written: u64,
    ended: bool,
    /// Reading waits for the slowest running host to catch up.
    held: bool,
}

/// Stdin for many hosts.
#[derive(Debug)]
pub(crate) struct Broadcast {
    spool: Arc<Spool>,
    level: watch::Receiver<Level>,
    /// How far each running host has read.
    positions: Arc<Mutex<HashMap<usize, u64>>>,
    moved: Arc<Notify>,
    _reader: AbortOnDrop<()>,
}

impl Broadcast {
    /// Starts reading `source` (local stdin, in chunks) into a new spool.
    pub(crate) fn start(source: mpsc::Receiver<Bytes>) -> std::io::Result<Broadcast> {
        let spool = Spool::new()?;
        let (level_tx, level) = watch::channel(Level::default());
        let positions = Arc::new(Mutex::new(HashMap::new()));
        let moved = Arc::new(Notify::new());
        let reader = tokio::spawn(fill(
            source,
            spool.clone(),
            level_tx,
            positions.clone(),
            moved.clone(),
        ));
        Ok(Broadcast {
            spool,
            level,
            positions,
            moved,
            _reader: AbortOnDrop(reader),
        })
    }

    /// Stdin for host `id`, from the start, for [`crate::client::Connection::run`].
    pub(crate) fn feed(&self, id: usize) -> (mpsc::Receiver<Bytes>, AbortOnDrop<()>) {
        let (tx, rx) = mpsc::channel(2);
        let reader = Reader {
            id,
            positions: self.positions.clone(),
            moved: self.moved.clone(),
        };
        reader.set(0);
        let task = tokio::spawn(send(reader, self.spool.clone(), self.level.clone(), tx));
        (rx, AbortOnDrop(task))
    }
}

/// Reads stdin into the spool, never more than [`LAG`] ahead of the
/// slowest running host.
async fn fill(
    mut source: mpsc::Receiver<Bytes>,
    spool: Arc<Spool>,
    level: watch::Sender<Level>,
    positions: Arc<Mutex<HashMap<usize, u64>>>,
    moved: Arc<Notify>,
) {
    let mut written = 0u64;
    while let Some(chunk) = source.recv().await {
        loop {
            let notified = moved.notified();
            let slowest = positions
                .lock()
                .map_or(0, |p| p.values().copied().min().unwrap_or(written));
            if written - slowest <= LAG {
                break;
            }
            level.send_if_modified(|l| !std::mem::replace(&mut l.held, true));
            notified.await;
        }
        if spool.append(&chunk).is_err() {
            break; // the error ends stdin early; each host sees its end
        }
        written += chunk.len() as u64;
        level.send_replace(Level {
            written,
            ..Level::default()
        });
    }
    level.send_replace(Level {
        written,
        ended: true,
        held: false,
    });
}

/// One host's place in stdin; it stops counting when dropped.
struct Reader {
    id: usize,
    positions: Arc<Mutex<HashMap<usize, u64>>>,
    moved: Arc<Notify>,
}

impl Reader {
    fn set(&self, at: u64) {
        if let Ok(mut p) = self.positions.lock() {
            p.insert(self.id, at);
        }
        self.moved.notify_waiters();
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Ok(mut p) = self.positions.lock() {
            p.remove(&self.id);
        }
        self.moved.notify_waiters();
    }
}

/// Sends the spool to one host from its start, as it fills.
async fn send(
    reader: Reader,
    spool: Arc<Spool>,
    mut level: watch::Receiver<Level>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut at = 0u64;
    loop {
        let now = match level.wait_for(|l| l.ended || l.written > at).await {
            Ok(l) => *l,
            Err(_) => return,
        };
        if now.written == at {
            return; // all of stdin sent: dropping `tx` ends the host's input
        }
        let len = PIECE.min((now.written - at) as usize);
        let Ok(piece) = spool.read(at, len) else {
            return;
        };
        if tx.send(Bytes::from(piece)).await.is_err() {
            return; // the command is over
        }
        at += len as u64;
        reader.set(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut rx: mpsc::Receiver<Bytes>) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(b) = rx.recv().await {
            all.extend_from_slice(&b);
        }
        all
    }

    #[tokio::test]
    async fn every_host_gets_all_of_it_even_when_late() {
        let (tx, rx) = mpsc::channel(4);
        let broadcast = Broadcast::start(rx).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let early = broadcast.feed(0);
        let feeding = tokio::spawn({
            let data = data.clone();
            async move {
                for chunk in data.chunks(10_000) {
                    tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
                }
            }
        });
        assert_eq!(drain(early.0).await, data);
        feeding.await.unwrap();
        let late = broadcast.feed(1);
        assert_eq!(drain(late.0).await, data);
    }

    #[tokio::test]
    async fn a_host_that_stops_reading_holds_reading_back() {
        let (tx, rx) = mpsc::channel(1);
        let broadcast = Broadcast::start(rx).unwrap();
        let (stuck, _task) = broadcast.feed(0);
        const CHUNK: usize = 1024 * 1024;
        let total = 4 * LAG;
        let sender = tokio::spawn(async move {
            for _ in 0..total / CHUNK as u64 {
                tx.send(Bytes::from(vec![7u8; CHUNK])).await.unwrap();
            }
        });
        let mut level = broadcast.level.clone();
        let within = std::time::Duration::from_secs(10);
        let held = tokio::time::timeout(within, level.wait_for(|l| l.held))
            .await
            .expect("reading is held back")
            .map(|l| *l)
            .unwrap();
        assert!(
            (LAG..=LAG + CHUNK as u64).contains(&held.written),
            "held back after {} bytes, with a stuck host",
            held.written
        );
        assert!(!held.ended, "stdin ended early");
        // Held back, reading takes no more: the source fills up and waits.
        // Only the stuck host leaving can let it go on, and until then the
        // level stays where it was held.
        assert_eq!(level.borrow().written, held.written);
        drop(stuck); // its command ended: it no longer counts
        tokio::time::timeout(within, level.wait_for(|l| l.written == total))
            .await
            .expect("reading goes on once the stuck host is gone")
            .unwrap();
        sender.await.unwrap();
    }
}
