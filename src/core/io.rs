//! IO wrappers shared by the runtime (client connections) and the proxy (upstream bodies and the
//! WebSocket splice).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Closes a connection that moved no bytes in either direction for `idle`.
///
/// The timer is re-armed lazily: reads and writes only record the time, and when the timer fires
/// early because of recent activity it is pushed to the new deadline. That keeps the per-IO cost to
/// one clock read instead of a timer-wheel update.
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    last_activity: Instant,
    /// Bytes read so far: under TLS, the parking logic must see bytes that made no plaintext yet.
    bytes_in: u64,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// When bytes last moved either way.
    pub(crate) fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// How many bytes have been read from the inner IO.
    pub(crate) fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Makes sure the task is woken by `deadline` (the idle timer fires early; firing early
    /// only re-arms it).
    pub(crate) fn wake_by(&mut self, deadline: Instant, cx: &mut Context<'_>) {
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
            let _ = self.timer.as_mut().poll(cx);
        }
    }

    pub fn new(inner: T, idle: Duration) -> IdleTimeout<T> {
        let now = Instant::now();
        IdleTimeout {
            inner,
            idle,
            last_activity: now,
            bytes_in: 0,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// Called when the inner IO is pending: Ready(error) once the connection has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.idle;
            if deadline <= Instant::now() {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.last_activity = Instant::now();
                    this.bytes_in += read as u64;
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
