//! Buffers for a command's output, used again once their frames are
//! written.
//!
//! A frame's body is [`Bytes`] that the connection's writer drops once the
//! bytes are on their way. A fresh chunk-sized buffer for every frame comes
//! from glibc's heap, which hands freed memory back to the kernel and then
//! faults it in again a page at a time: some 45,000 page faults on the
//! server for 1 GiB of output over TLS. A pooled buffer goes back to its
//! pump instead, and is read into again.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Most idle buffers a pool keeps: enough for a connection's data queue,
/// the frames its writer is writing, and the one being read into.
const KEEP: usize = 8;

/// The buffers of one output pump, each `size` bytes.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    idle: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes, none made yet.
    pub fn new(size: usize) -> BufferPool {
        BufferPool {
            size,
            idle: Arc::default(),
        }
    }

    /// A buffer of `size` bytes: an idle one, or a new one.
    pub fn take(&self) -> Vec<u8> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        idle.unwrap_or_else(|| vec![0; self.size])
    }

    /// The first `len` bytes of `buf` as a frame body; the buffer comes
    /// back to this pool when the body is dropped (unless the pool is gone
    /// by then, or has enough).
    pub fn body(&self, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            len,
            home: Arc::downgrade(&self.idle),
        })
    }
}

/// A body in a pooled buffer.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let mut idle = home.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < KEEP {
                idle.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_body_gives_its_buffer_back() {
        let pool = BufferPool::new(16);
        let mut buf = pool.take();
        buf[..3].copy_from_slice(b"abc");
        let address = buf.as_ptr();
        let body = pool.body(buf, 3);
        assert_eq!(&body[..], b"abc");
        // A slice of the body keeps the buffer out.
        let part = body.slice(1..);
        drop(body);
        let other = pool.take();
        assert_ne!(other.as_ptr(), address);
        drop(part);
        let again = pool.take();
        assert_eq!(again.as_ptr(), address, "the same buffer again");
    }

    #[test]
    fn a_pool_keeps_a_few_and_none_once_gone() {
        let pool = BufferPool::new(4);
        let bodies: Vec<Bytes> = (0..KEEP + 3).map(|_| pool.body(pool.take(), 4)).collect();
        drop(bodies);
        assert_eq!(pool.idle.lock().unwrap().len(), KEEP);
        let body = pool.body(pool.take(), 4);
        drop(pool);
        // Nowhere to go back to: freed with the body.
        drop(body);
    }
}
