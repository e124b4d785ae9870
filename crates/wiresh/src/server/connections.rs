//! The places for authenticated connections (`max_connections`), and what
//! happens once a burst of connections has left.
//!
//! glibc keeps the memory that closed connections freed in its heaps, to
//! reuse it: after 10,000 idle TLS connections had all closed, the server
//! still held 268 MiB. Each time the connections open fall to half a peak
//! of at least [`BURST`], [`ServerConfig::release_memory`] runs on a thread
//! of its own (the binary passes glibc's `malloc_trim`), and the next peak
//! is counted from there.
//!
//! [`ServerConfig::release_memory`]: super::config::ServerConfig::release_memory

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::info;

/// Fewest connections open at a peak for their leaving to count as the end
/// of a burst: below that there is little to give back.
pub(super) const BURST: usize = 256;

/// The places for authenticated connections.
#[derive(Debug)]
pub(super) struct Connections {
    free: Arc<Semaphore>,
    max: usize,
    /// Most connections open at once since memory was last given back.
    peak: AtomicUsize,
    release: Option<fn()>,
}

impl Connections {
    /// `max` places; `release` gives freed memory back to the system.
    pub fn new(max: usize, release: Option<fn()>) -> Arc<Connections> {
        Arc::new(Connections {
            free: Arc::new(Semaphore::new(max)),
            max,
            peak: AtomicUsize::new(0),
            release,
        })
    }

    /// How many places are free.
    pub fn free(&self) -> usize {
        self.free.available_permits()
    }

    /// Whether every place is taken.
    pub fn full(&self) -> bool {
        self.free.available_permits() == 0
    }

    /// A place for one more connection, given back when dropped.
    pub fn take(self: &Arc<Self>) -> Option<ConnectionPlace> {
        let permit = self.free.clone().try_acquire_owned().ok()?;
        self.peak.fetch_max(self.open(), Ordering::Relaxed);
        Some(ConnectionPlace {
            permit: Some(permit),
            connections: self.clone(),
        })
    }

    fn open(&self) -> usize {
        self.max - self.free.available_permits()
    }

    /// After a connection left: whether the connections open have just
    /// fallen to half a peak of at least [`BURST`]. The answer is yes for
    /// one caller per fall, which starts counting the next peak from here.
    fn burst_ended(&self) -> Option<(usize, usize)> {
        let open = self.open();
        let peak = self.peak.load(Ordering::Relaxed);
        if peak < BURST || open * 2 > peak {
            return None;
        }
        self.peak
            .compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| (peak, open))
    }

    fn left(&self) {
        let Some(release) = self.release else {
            return;
        };
        let Some((peak, open)) = self.burst_ended() else {
            return;
        };
        // Giving memory back walks every heap (milliseconds after a large
        // burst): not on a thread that serves connections.
        let _ = std::thread::Builder::new()
            .name("release-memory".into())
            .spawn(move || {
                release();
                info!(
                    "authenticated connections fell from {peak} to {open}; \
                     the memory they freed was given back to the system"
                );
            });
    }
}

/// One connection's place; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct ConnectionPlace {
    permit: Option<OwnedSemaphorePermit>,
    connections: Arc<Connections>,
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        // The place is free before counting what is left open.
        drop(self.permit.take());
        self.connections.left();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_goes_back_each_time_a_burst_halves() {
        let places = Connections::new(1000, None);
        let mut held: Vec<ConnectionPlace> = (0..BURST).map(|_| places.take().unwrap()).collect();
        let leave = |held: &mut Vec<ConnectionPlace>, n| {
            (0..n)
                .filter_map(|_| {
                    drop(held.pop());
                    places.burst_ended()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(leave(&mut held, BURST / 2 - 1), vec![]);
        assert_eq!(leave(&mut held, 1), vec![(BURST, BURST / 2)]);
        // The next peak counts from there: the rest leaving is no burst.
        assert_eq!(leave(&mut held, BURST / 2), vec![]);
        // A larger burst halves twice before it is too small to count.
        held.extend((0..BURST * 2).map(|_| places.take().unwrap()));
        assert_eq!(
            leave(&mut held, BURST * 2),
            vec![(BURST * 2, BURST), (BURST, BURST / 2)]
        );
    }

    #[test]
    fn small_peaks_are_no_burst() {
        let places = Connections::new(1000, None);
        let held: Vec<ConnectionPlace> = (0..BURST - 1).map(|_| places.take().unwrap()).collect();
        drop(held);
        assert_eq!(places.burst_ended(), None);
        assert!(places.take().is_some());
    }

    #[test]
    fn places_run_out_and_come_back() {
        let places = Connections::new(2, None);
        let (a, _b) = (places.take().unwrap(), places.take().unwrap());
        assert!(places.full() && places.take().is_none());
        drop(a);
        assert!(!places.full() && places.take().is_some());
    }
}
