//! Reading a socket many TLS records at a time.
//!
//! rustls asks its transport for one record (up to about 16 KiB) per read,
//! so 1 GiB of output over TLS cost the client 65,536 `recv` calls.
//! [`ReadAhead`] reads up to [`READ_AHEAD`] bytes per call and serves the
//! small reads from what it holds: the client's system time for 1 GiB fell
//! by about a fifth. Its buffer is reserved at the first read and left
//! uninitialised, so a short exchange (a one-shot `true`) touches few of
//! its pages: a zeroed `tokio::io::BufReader` of the same size cost a
//! one-shot about 20 page faults more than no buffer, this one 5-15.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes read from the transport at once. Four records; larger saves
/// little more, and a fan-out client holds one such buffer per host.
pub const READ_AHEAD: usize = 64 * 1024;

/// A transport whose reads are taken [`READ_AHEAD`] bytes at a time;
/// writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    held: BytesMut,
}

impl<T> ReadAhead<T> {
    /// Wraps `inner`; nothing is allocated until the first read.
    pub fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            held: BytesMut::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.held.is_empty() {
            if out.remaining() >= READ_AHEAD {
                // Nothing to gain from a copy.
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.held.reserve(READ_AHEAD);
            // At the end of the stream nothing is read, and nothing given.
            ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.held
            ))?;
        }
        let n = this.held.len().min(out.remaining());
        out.put_slice(&this.held[..n]);
        this.held.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&data).await.unwrap();
        drop(far);
        let mut reader = ReadAhead::new(near);
        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        // The first read takes READ_AHEAD bytes; a thousand are given.
        let n = reader.read(&mut small).await.unwrap();
        assert_eq!(n, 1000);
        assert!(
            reader.held.len() >= READ_AHEAD - 1000,
            "{}",
            reader.held.len()
        );
        got.extend_from_slice(&small[..n]);
        loop {
            let n = reader.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert!(got == data, "bytes lost, reordered or doubled");
    }

    #[tokio::test]
    async fn large_reads_go_straight_through_and_writes_pass() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        far.write_all(&[7u8; 100]).await.unwrap();
        let mut stream = ReadAhead::new(near);
        let mut large = vec![0u8; READ_AHEAD];
        assert_eq!(stream.read(&mut large).await.unwrap(), 100);
        assert_eq!(stream.held.capacity(), 0, "nothing was held");
        stream.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
