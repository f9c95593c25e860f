//! One system call per flush of a gRPC connection. h2 sends a DATA frame of 256 bytes or more from the message
//! itself (a vectored write) and has to flush it before it can encode the next frame, so a reply carrying one
//! small tensor took two writes, headers and data then the trailers: two TCP segments the client is woken for,
//! and the second `writev` was about a tenth of the server's CPU per request. Writes up to `GATHER_LIMIT` are
//! gathered here until h2 flushes; a larger one goes out in one vectored write behind whatever was gathered, so
//! large tensors are still not copied.
//!
//! That alone does not join a reply's frames: h2 flushes at the end of every poll of the connection, and hyper
//! sends the trailers from the call's own task only after the connection task has granted it send capacity
//! again, one poll later. So the first flush of gathered bytes yields instead (the connection task wakes itself
//! and returns `Pending`), giving the tasks it has just woken one turn to add their frames; the next flush writes.
//! Under load the same turn gathers the replies of several calls into one write.
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before a write goes to the socket without waiting for the flush: one reply's frames, or those
/// of several replies finished in the same poll, without holding a large message back in a copy.
const GATHER_LIMIT: usize = 16 * 1024;

/// At most this many of the caller's slices join the gathered bytes in one vectored write (h2 passes two: the
/// frame's head and its payload).
const MAX_SLICES: usize = 8;

/// A connection whose small writes are gathered until the next flush.
pub struct WriteBuffer<T> {
    inner: T,
    gathered: Vec<u8>,
    /// How much of `gathered` has reached the socket.
    sent: usize,
    /// A flush has already yielded once for what is gathered.
    yielded: bool,
}

impl<T> WriteBuffer<T> {
    pub fn new(inner: T) -> Self {
        WriteBuffer {
            inner,
            gathered: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.gathered[self.sent..]
    }

    /// Records that `n` bytes of what was gathered reached the socket.
    fn advance(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.gathered.len() {
            self.gathered.clear();
            self.sent = 0;
        }
    }
}

impl<T: AsyncWrite + Unpin> WriteBuffer<T> {
    /// Sends everything gathered.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteBuffer<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.gathered.len() + total <= GATHER_LIMIT {
            for b in bufs {
                this.gathered.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        // Too large to gather: one vectored write of what is gathered followed by the caller's slices. Only
        // bytes of the caller's that reached the socket count as written; while the socket takes only gathered
        // bytes, keep writing (or wait for it to be writable again).
        loop {
            let pending = this.gathered.len() - this.sent;
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES + 1];
                slices[0] = IoSlice::new(&this.gathered[this.sent..]);
                let mut count = 1;
                for b in bufs.iter().filter(|b| !b.is_empty()).take(MAX_SLICES) {
                    slices[count] = *b;
                    count += 1;
                }
                let slices = if pending == 0 {
                    &slices[1..count]
                } else {
                    &slices[..count]
                };
                ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > pending {
                this.advance(pending);
                return Poll::Ready(Ok(n - pending));
            }
            this.advance(n);
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.yielded && !this.pending().is_empty() {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        ready!(this.poll_send_gathered(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_gathered(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteBuffer<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for WriteBuffer<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A socket that records each write it is given, taking at most `cap` bytes of one.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        cap: Option<usize>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if let Some(cap) = this.cap {
                all.truncate(cap);
            }
            let n = all.len();
            this.writes.push(all);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn sent(w: &WriteBuffer<Recorder>) -> Vec<u8> {
        w.inner.writes.concat()
    }

    #[tokio::test]
    async fn small_writes_reach_the_socket_together_at_the_flush() {
        let mut w = WriteBuffer::new(Recorder::default());
        w.write_all(b"headers+").await.unwrap();
        w.write_vectored(&[IoSlice::new(b"head"), IoSlice::new(&[7u8; 300])])
            .await
            .unwrap();
        w.write_all(b"+trailers").await.unwrap();
        assert!(w.inner.writes.is_empty(), "nothing is written before the flush");
        w.flush().await.unwrap();
        assert_eq!(w.inner.writes.len(), 1, "one write for the whole reply");
        let expected = [&b"headers+head"[..], &[7u8; 300], b"+trailers"].concat();
        assert_eq!(sent(&w), expected);
        assert_eq!(w.inner.flushes, 1);
    }

    #[test]
    fn a_flush_yields_once_before_it_writes_what_is_gathered() {
        let waker = std::sync::Arc::new(Woken::default());
        let waker_ref = std::task::Waker::from(waker.clone());
        let mut cx = Context::from_waker(&waker_ref);
        let mut w = WriteBuffer::new(Recorder::default());
        assert!(Pin::new(&mut w).poll_write(&mut cx, b"reply").is_ready());
        assert!(
            Pin::new(&mut w).poll_flush(&mut cx).is_pending(),
            "the first flush yields"
        );
        assert_eq!(
            waker.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "and wakes its task to come back"
        );
        assert!(w.inner.writes.is_empty());
        assert!(Pin::new(&mut w).poll_write(&mut cx, b"+trailers").is_ready());
        assert!(Pin::new(&mut w).poll_flush(&mut cx).is_ready(), "the next one writes");
        assert_eq!(w.inner.writes, vec![b"reply+trailers".to_vec()]);
        assert!(
            Pin::new(&mut w).poll_flush(&mut cx).is_ready(),
            "nothing gathered: nothing to wait for"
        );
        assert_eq!(w.inner.writes.len(), 1);
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_large_write_goes_out_behind_what_was_gathered_in_one_call() {
        let mut w = WriteBuffer::new(Recorder::default());
        let big = vec![1u8; GATHER_LIMIT * 4];
        w.write_all(b"frame head").await.unwrap();
        let n = w
            .write_vectored(&[IoSlice::new(b"h9"), IoSlice::new(&big)])
            .await
            .unwrap();
        assert_eq!(n, 2 + big.len(), "all of the caller's bytes count as written");
        assert_eq!(
            w.inner.writes.len(),
            1,
            "gathered bytes and the large payload in one vectored write"
        );
        assert_eq!(sent(&w), [&b"frame headh9"[..], &big].concat());
        w.flush().await.unwrap();
        assert_eq!(w.inner.writes.len(), 1, "nothing left to write at the flush");
    }

    #[tokio::test]
    async fn short_writes_of_the_socket_lose_and_repeat_nothing() {
        // The socket takes 5 bytes a call: fewer than are gathered, so the first calls count none of the
        // caller's bytes.
        let mut w = WriteBuffer::new(Recorder {
            cap: Some(5),
            ..Recorder::default()
        });
        let big: Vec<u8> = (0..GATHER_LIMIT as u32 + 100).map(|i| i as u8).collect();
        w.write_all(b"gathered-12").await.unwrap();
        w.write_all(&big).await.unwrap();
        w.write_all(b"tail").await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(sent(&w), [&b"gathered-12"[..], &big, b"tail"].concat());
    }
}
