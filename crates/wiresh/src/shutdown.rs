//! Graceful shutdown, signalled to every task through a broadcast channel.
//!
//! As in mini-redis: the server holds the sending side; each connection
//! holds a [`Shutdown`] and checks it between commands (to close) and while
//! a command runs (to start the grace period).

use tokio::sync::broadcast;

/// Listens for the server's shutdown signal.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Wraps a receiver of the server's shutdown broadcast.
    pub fn new(notify: broadcast::Receiver<()>) -> Self {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Whether shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits until shutdown is signalled; returns at once if it already was.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // A lagged or closed channel also means the server is going away.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
