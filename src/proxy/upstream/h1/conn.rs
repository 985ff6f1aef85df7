//! A pooled connection to the backend: the socket (plain TCP or TLS) and the bytes read from it
//! but not yet consumed.

use std::io::{self};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// A response head (status line and fields) larger than this is refused.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Read buffer growth step.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// One idle or busy connection to the backend, with the bytes read from it but not yet used.
pub struct Conn {
    pub(crate) stream: Io,
    pub(crate) buffer: BytesMut,
}

/// The connection's bytes: plain TCP, or TLS over it (an `https://` backend).
pub type Io = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// The TCP socket under the connection.
pub(crate) fn tcp(io: &Io) -> &TcpStream {
    match io {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    }
}

impl Conn {
    pub fn new(stream: Io) -> Conn {
        Conn {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Whether an idle connection can take a request: nothing has arrived on its socket since
    /// its last response (no EOF, no reset, no stray bytes). Costs a syscall only when the reactor
    /// saw the socket become readable.
    pub(crate) fn is_reusable(&self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        let tcp = tcp(&self.stream);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last read; only the socket knows. (On a TLS
            // connection the bytes would be a record: not reusable either way.)
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// For TLS, what the socket check cannot see: plaintext the TLS layer already decrypted and
    /// holds, or a close_notify. Reads with a no-op waker: anything but `Pending` means the
    /// connection has something it should not, or has ended.
    pub(crate) fn has_nothing_buffered(&mut self) -> bool {
        match &mut self.stream {
            Either::Left(_) => true,
            Either::Right(tls) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut probe = [0u8; 1];
                let mut probe = ReadBuf::new(&mut probe);
                Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut probe)
                    .is_pending()
            }
        }
    }

    /// Writes the whole head; on failure, says how many bytes had been written.
    pub(crate) async fn write_request(&mut self, head: &[u8]) -> Result<(), usize> {
        let mut written = 0;
        while written < head.len() {
            let outcome = std::future::poll_fn(|cx| {
                Pin::new(&mut self.stream).poll_write(cx, &head[written..])
            })
            .await;
            match outcome {
                Ok(0) | Err(_) => return Err(written),
                Ok(n) => written += n,
            }
        }
        // TLS may hold the last record until flushed; plain TCP has nothing to flush.
        std::future::poll_fn(|cx| Pin::new(&mut self.stream).poll_flush(cx))
            .await
            .map_err(|_| written)
    }

    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.buffer.capacity() - self.buffer.len() < 1024 {
            self.buffer.reserve(READ_CHUNK);
        }
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.buffer
        ))?;
        Poll::Ready(Ok(read > 0))
    }
}
