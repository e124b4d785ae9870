//! Local stdin, read once and sent to every host.
//!
//! What is read goes to a temporary file, so hosts launched later (beyond
//! `--fanout`) get it from its start, while memory holds only the pieces in
//! flight. If the temporary file cannot be written (or read back), no host
//! sees its input end: every host is stopped instead, so that no command
//! takes the part it got for the whole. Reading stops whenever a running host lags more than [`LAG`]
//! behind: the slowest host sets the pace, as with `tee`. A host whose
//! command stops reading holds everyone up until its command ends (or its
//! `--timeout` ends it); from then on it no longer counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

use super::spool::{Holding, NotKept, Spool, PIECE};
use super::{DiskFault, Interrupts};
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
    /// The spool failed: stdin will never end.
    failed: bool,
}

/// Stdin for many hosts.
#[derive(Debug)]
pub(crate) struct Broadcast {
    spool: Arc<Spool>,
    level: watch::Receiver<Level>,
    level_tx: Arc<watch::Sender<Level>>,
    fail: Failure,
    /// How far each running host has read.
    positions: Arc<Mutex<HashMap<usize, u64>>>,
    moved: Arc<Notify>,
    _reader: AbortOnDrop<()>,
}

impl Broadcast {
    /// Starts reading `source` (local stdin, in chunks) into a new spool;
    /// a spool that fails later is told to `fault`, which stops every host.
    pub(crate) fn start(
        source: mpsc::Receiver<Bytes>,
        fault: DiskFault,
        interrupts: Interrupts,
    ) -> Result<Broadcast, NotKept> {
        let spool = Spool::new(Holding::Stdin)?;
        let fail = Failure { fault, interrupts };
        let (level_tx, level) = watch::channel(Level::default());
        let positions = Arc::new(Mutex::new(HashMap::new()));
        let moved = Arc::new(Notify::new());
        let level_tx = Arc::new(level_tx);
        let reader = tokio::spawn(fill(
            source,
            spool.clone(),
            level_tx.clone(),
            positions.clone(),
            moved.clone(),
            fail.clone(),
        ));
        Ok(Broadcast {
            spool,
            level,
            level_tx,
            fail,
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
        let task = tokio::spawn(send(
            reader,
            self.spool.clone(),
            (self.level.clone(), self.level_tx.clone()),
            self.fail.clone(),
            tx,
        ));
        (rx, AbortOnDrop(task))
    }
}

/// Where a spool that fails is told.
#[derive(Debug, Clone)]
struct Failure {
    fault: DiskFault,
    interrupts: Interrupts,
}

impl Failure {
    /// Stops every host, marks stdin as never ending, and waits for ever:
    /// the host's input must not end, or its command would take what it
    /// got for all of it.
    async fn fail(&self, error: NotKept, level: &watch::Sender<Level>) -> ! {
        self.fault.stop(error, &self.interrupts);
        level.send_modify(|l| l.failed = true);
        std::future::pending().await
    }
}

/// Reads stdin into the spool, never more than [`LAG`] ahead of the
/// slowest running host.
async fn fill(
    mut source: mpsc::Receiver<Bytes>,
    spool: Arc<Spool>,
    level: Arc<watch::Sender<Level>>,
    positions: Arc<Mutex<HashMap<usize, u64>>>,
    moved: Arc<Notify>,
    fail: Failure,
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
        if let Err(e) = spool.append(&chunk) {
            fail.fail(e, &level).await;
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
        ..Level::default()
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
    (mut level, level_tx): (watch::Receiver<Level>, Arc<watch::Sender<Level>>),
    fail: Failure,
    tx: mpsc::Sender<Bytes>,
) {
    let mut at = 0u64;
    loop {
        let now = match level
            .wait_for(|l| l.ended || l.failed || l.written > at)
            .await
        {
            Ok(l) => *l,
            Err(_) => return,
        };
        if now.failed {
            // Never `stdin_end`: the host is being stopped.
            std::future::pending::<()>().await;
        }
        if now.written == at {
            return; // all of stdin sent: dropping `tx` ends the host's input
        }
        let len = PIECE.min((now.written - at) as usize);
        let piece = match spool.read(at, len) {
            Ok(piece) => piece,
            Err(e) => fail.fail(e, &level_tx).await,
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
        let broadcast = Broadcast::start(rx, DiskFault::default(), Interrupts::new()).unwrap();
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
        let broadcast = Broadcast::start(rx, DiskFault::default(), Interrupts::new()).unwrap();
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
