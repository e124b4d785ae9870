//! Small task utilities shared by the server, the legacy server and the
//! client.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;
use tokio::time::{self, Instant};

/// Aborts a task when dropped, so helper tasks (output pumps, stdin
/// feeders) never outlive the command or connection they serve, whatever
/// path the owner takes out.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps until `at`, or forever when there is no deadline: for optional
/// deadlines in `tokio::select!` branches.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Registers `fd` with the runtime for `interest`.
pub(crate) fn watch(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // Deprecated because a type that merely implements `AsRawFd` could
    // hand out another descriptor later; an `OwnedFd` cannot, so this is
    // sound. Its replacement, `register`, is `unsafe` for that reason.
    #[allow(deprecated)]
    AsyncFd::with_interest(fd, interest)
}
