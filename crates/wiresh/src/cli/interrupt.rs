//! Ctrl-C while remote commands run, as ssh users know it from a remote
//! terminal: the first Ctrl-C interrupts the command (`SIGINT` to its
//! process group, so its traps run and it ends as it chooses, with its own
//! exit status); the second gives up on it: the command is cancelled and
//! the connection closed, which kills whatever is left. Against a server
//! that takes no signals (no `signal` feature) the first Ctrl-C cancels
//! (`SIGTERM`, then `SIGKILL`) and the second gives up.
//!
//! [`Interrupts`] counts the Ctrl-Cs of a run: one command (`exec`), one
//! line of a shell, or one command on many hosts, each host acting on the
//! count as its own connection allows ([`Interrupts::canceller`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use wiresh_proto::SignalName;

use crate::client::Signaller;
use crate::task::AbortOnDrop;

/// How many times Ctrl-C was pressed during a run (or was acted out by
/// [`Interrupts::raise`]).
#[derive(Debug, Clone)]
pub struct Interrupts {
    raise: Arc<watch::Sender<u8>>,
    count: watch::Receiver<u8>,
}

impl Default for Interrupts {
    fn default() -> Interrupts {
        Interrupts::new()
    }
}

/// The `cancel` argument of [`crate::client::Connection::run`] that
/// [`Interrupts::canceller`] makes.
pub type Canceller = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl Interrupts {
    /// Counts this process's SIGINTs (Ctrl-C) from now on, until the guard
    /// drops. Inside a runtime.
    pub fn from_ctrl_c() -> (Interrupts, impl Drop) {
        let interrupts = Interrupts::new();
        let raiser = interrupts.clone();
        // One listener for the whole run: none is lost between two Ctrl-Cs.
        let listener = signal(SignalKind::interrupt());
        let task = tokio::spawn(async move {
            let Ok(mut sigint) = listener else {
                return std::future::pending().await;
            };
            while sigint.recv().await.is_some() {
                raiser.raise();
            }
        });
        (interrupts, AbortOnDrop(task))
    }

    /// Interrupts that only [`Interrupts::raise`] raises.
    pub fn new() -> Interrupts {
        let (raise, count) = watch::channel(0u8);
        Interrupts {
            raise: Arc::new(raise),
            count,
        }
    }

    /// Acts as one Ctrl-C.
    pub fn raise(&self) {
        self.raise.send_modify(|n| *n = n.saturating_add(1));
    }

    /// Ctrl-Cs so far.
    pub fn count(&self) -> u8 {
        *self.count.borrow()
    }

    /// The `cancel` for [`crate::client::Connection::run`] of one command:
    /// with `signaller` (the server takes signals), the first Ctrl-C sends
    /// `INT` and the second resolves it twice at once (a cancel, then the
    /// end of the wait); without, each Ctrl-C resolves it once (the first
    /// cancels, the second gives up).
    pub fn canceller(&self, signaller: Option<Signaller>) -> Canceller {
        let acted = Arc::new(Acted::default());
        let count = self.count.clone();
        Box::new(move || {
            let (acted, mut count, signaller) = (acted.clone(), count.clone(), signaller.clone());
            Box::pin(async move {
                if let Some(signaller) = &signaller {
                    if !acted.interrupted.load(Ordering::Acquire) {
                        wait_for(&mut count, 1).await;
                        // A lost connection shows in the command's own end.
                        let _ = signaller.send(SignalName::Int).await;
                        acted.interrupted.store(true, Ordering::Release);
                    }
                }
                let resolved = acted.resolved.load(Ordering::Acquire);
                let want = match signaller {
                    Some(_) => 2,
                    None => resolved.saturating_add(1),
                };
                wait_for(&mut count, want).await;
                acted
                    .resolved
                    .store(resolved.saturating_add(1), Ordering::Release);
            })
        })
    }
}

/// What one command's canceller has done so far: it is called again for
/// every future, and must not act twice on one Ctrl-C.
#[derive(Debug, Default)]
struct Acted {
    /// `INT` was sent.
    interrupted: AtomicBool,
    /// Futures resolved.
    resolved: AtomicU8,
}

/// Waits until the count reaches `want`; forever when nobody counts any
/// more (no Ctrl-C will come).
async fn wait_for(count: &mut watch::Receiver<u8>, want: u8) {
    if count.wait_for(|&n| n >= want).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a signaller, one resolution per Ctrl-C, none before.
    #[tokio::test]
    async fn each_ctrl_c_resolves_once_without_signals() {
        use futures_util::FutureExt;
        let interrupts = Interrupts::new();
        let mut cancel = interrupts.canceller(None);
        assert!(cancel().now_or_never().is_none(), "no Ctrl-C yet");
        interrupts.raise();
        assert!(cancel().now_or_never().is_some());
        assert!(cancel().now_or_never().is_none(), "the first was acted on");
        interrupts.raise();
        assert!(cancel().now_or_never().is_some());
    }
}
