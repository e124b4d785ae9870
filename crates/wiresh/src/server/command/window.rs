//! A command's stdin window (`hello.stdin_window`, PROTOCOL.md §7.4),
//! counted as the client counts it.
//!
//! A client may have at most W bytes of input unacknowledged: sent, with
//! no `stdin_ack` for them received. The server may hold acknowledgements
//! back (less than W/4, to send them with the command's next frame), so
//! input it has written to the command but not yet acknowledged on the
//! wire still counts, as it does for the client. Judged by the bytes not
//! yet written instead, a client could overrun its window by what the
//! server holds, unnoticed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A client sent more stdin than its window allows.
#[derive(Debug, thiserror::Error)]
#[error("{unacked} bytes of stdin unacknowledged, more than the window of {window}")]
pub(super) struct WindowExceeded {
    unacked: usize,
    window: usize,
}

/// What a client has sent of one command's input that no `stdin_ack` has
/// acknowledged yet.
#[derive(Debug)]
pub(super) struct Window {
    size: usize,
    /// Input taken in and not acknowledged on the wire: waiting to be
    /// written, or written with its acknowledgement held.
    unacked: AtomicUsize,
    /// Of that, what is written (or discarded): owed an acknowledgement.
    owed: AtomicU64,
}

impl Window {
    /// A window of `size` bytes, all of it open.
    pub fn new(size: usize) -> Window {
        Window {
            size,
            unacked: AtomicUsize::new(0),
            owed: AtomicU64::new(0),
        }
    }

    /// Takes in `bytes` more input, or says how the client broke the window.
    pub fn take_in(&self, bytes: usize) -> Result<(), WindowExceeded> {
        let unacked = self.unacked.fetch_add(bytes, Ordering::AcqRel) + bytes;
        match unacked > self.size {
            true => Err(WindowExceeded {
                unacked,
                window: self.size,
            }),
            false => Ok(()),
        }
    }

    /// `bytes` of input are written to the command (or discarded, once it
    /// closed its input): they are owed an acknowledgement. Returns how much
    /// is owed now.
    pub fn written(&self, bytes: usize) -> u64 {
        self.owed.fetch_add(bytes as u64, Ordering::AcqRel) + bytes as u64
    }

    /// Whether `owed` is to be acknowledged at once rather than held: a
    /// quarter of the window, so that a client never waits on a window
    /// held shut by acknowledgements it is owed.
    pub fn ack_due(&self, owed: u64) -> bool {
        owed >= (self.size as u64 / 4).max(1)
    }

    /// Takes what is owed, for a `stdin_ack` about to be sent; from then on
    /// the client may count it acknowledged, and so does the window.
    pub fn acknowledge(&self) -> u64 {
        let bytes = self.owed.swap(0, Ordering::AcqRel);
        self.unacked.fetch_sub(bytes as usize, Ordering::AcqRel);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input written but not yet acknowledged counts, as the client counts
    /// it: the window reopens only with the acknowledgement.
    #[test]
    fn held_acknowledgements_keep_the_window_shut() {
        let window = Window::new(100);
        window.take_in(10).unwrap();
        assert_eq!(window.written(10), 10);
        assert!(!window.ack_due(10), "a tenth of the window is held");
        window.take_in(90).unwrap();
        let over = window.take_in(1).expect_err("101 bytes unacknowledged");
        assert_eq!(
            over.to_string(),
            "101 bytes of stdin unacknowledged, more than the window of 100"
        );
        let window = Window::new(100);
        window.take_in(100).unwrap();
        window.written(30);
        assert!(window.ack_due(30));
        assert_eq!(window.acknowledge(), 30);
        assert_eq!(window.acknowledge(), 0, "acknowledged once");
        window.take_in(30).unwrap();
        assert!(window.take_in(1).is_err());
    }
}
