//! Cancelling a running command, so that a cancel is never lost.
//!
//! The library's `Connection::run` sends `cancel` when the future its
//! `cancel` argument returns resolves, on the data path behind the
//! command's `exec` (a server ignores a `cancel` that comes before its
//! command, PROTOCOL.md 7.5). A cancel asked for from any thread is held
//! until `run` takes it; one that has not ended the command within
//! [`WATCHDOG`] is followed by a second, which makes the library give the
//! connection up: the server then kills the command with the lost
//! connection, and the `Client` says it is closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a sent cancel may take to end the command: the server's kill
/// grace (2 s by default), its wait for the pipes to close (2 s), a margin.
pub const WATCHDOG: Duration = Duration::from_secs(6);

/// The cancels asked for a command, and what has been sent.
#[derive(Debug)]
pub struct Canceller {
    /// Cancels asked for and not yet sent.
    pending: AtomicUsize,
    /// Wakes the sender when one is asked for.
    asked: Notify,
    /// Told when one has been sent (for the watchdog).
    sent: Notify,
}

impl Default for Canceller {
    fn default() -> Canceller {
        Canceller::new()
    }
}

impl Canceller {
    /// For a command started now.
    pub fn new() -> Canceller {
        Canceller {
            pending: AtomicUsize::new(0),
            asked: Notify::new(),
            sent: Notify::new(),
        }
    }

    /// Asks for a cancel (from any thread). The second one sent ends the
    /// library's `run` at once, giving the connection up.
    pub fn cancel(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.asked.notify_waiters();
    }

    /// Resolves when a cancel is to be sent (what `Connection::run` awaits).
    /// Dropping it before it resolves loses nothing: what is pending stays.
    pub async fn next(&self) {
        loop {
            let asked = self.asked.notified();
            tokio::pin!(asked);
            asked.as_mut().enable();
            if self.pending.load(Ordering::Acquire) > 0 {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.sent.notify_one();
                return;
            }
            asked.await;
        }
    }

    /// Resolves [`WATCHDOG`] after a cancel was sent.
    pub async fn overdue(&self) {
        self.sent.notified().await;
        tokio::time::sleep(WATCHDOG).await;
    }
}
