//! What a running command sends back, and where the client hands it on.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::zero_copy::PassedBody;

/// A chunk of a command's output, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes the command wrote to its standard output.
    Stdout(Bytes),
    /// Bytes the command wrote to its standard error.
    Stderr(Bytes),
}

/// Where [`super::Connection::run`] hands a command's output, in the order
/// it arrived; a full queue slows the command down (backpressure).
///
/// Any queue of items made from [`Output`] is a sink (an
/// `mpsc::Sender<Output>`, say): every byte reaches it in memory. A sink
/// that writes to a descriptor of its own (a printer of stdout) may also
/// take large `stdout` bodies while their rest is still on the socket, and
/// move that rest with a [`super::zero_copy::Splicer`]: the bytes then
/// never pass through memory.
pub trait OutputSink {
    /// What the queue holds.
    type Item: From<Output> + Send;

    /// The queue.
    fn queue(&self) -> &mpsc::Sender<Self::Item>;

    /// How to hand over a `stdout` body whose rest is still on the socket,
    /// if this sink moves such bodies itself; `None` (the default): it
    /// takes output in memory only.
    fn passed_bodies(&self) -> Option<fn(PassedBody) -> Self::Item> {
        None
    }
}

impl<T: From<Output> + Send> OutputSink for mpsc::Sender<T> {
    type Item = T;

    fn queue(&self) -> &mpsc::Sender<T> {
        self
    }
}
