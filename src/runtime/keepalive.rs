//! HTTP/1.1 keep-alive without holding buffers. An HTTP/1.1 connection, plain or TLS, that waits
//! for its next request is *parked*: hyper's connection state (an 8 KiB read buffer, an 8 KiB
//! write buffer, the dispatcher) is dropped and only the socket remains (with its TLS session),
//! the way nginx frees a keep-alive connection's buffers. When bytes arrive, a fresh hyper
//! connection picks them up. This keeps ten thousand idle keep-alive clients within a few KiB
//! each, 10.5 KiB over TLS (bench/rss-idle.sh, TLS=1). HTTP/2 connections do not park.
//!
//! How hyper is made to let go: [`Parkable`], the IO under hyper, reports end-of-stream when hyper
//! asks for bytes, none are there, and the connection has been quiet for [`PARK_AFTER`]:
//! - no request in flight, no response still streaming and no request body still arriving
//!   ([`InFlight`], held by the response body until hyper drops it, and [`BodyGuard`], held by the
//!   request body until its end; a request answered without reading its body, a refusal, gets
//!   `Connection: close` instead (`server::serve_request`), so it never waits here);
//! - hyper has flushed everything since the last response ended (hyper only calls `poll_flush`
//!   on its IO once its own write buffer is empty), and so has TLS: rustls takes a response's
//!   bytes at once and may still hold its last records for a slow reader, so the IO is flushed
//!   once more, to the end, before it parks; no response byte can be stranded;
//! - nothing was read since the last response ended: no bytes from the socket, counted under TLS
//!   too, where part of a record makes no plaintext yet (otherwise a client could wake the
//!   connection with a few bytes of a record and let it park again, forever, past every timer).
//!
//! The delay keeps a busy connection from parking between every two requests (parking after every
//! response cost about 1.3 µs of CPU per request under wrk -c32, measured from the process's CPU
//! time), while a burst of connections that go idle is down to its sockets within `PARK_AFTER`.
//!
//! hyper takes end-of-stream on an idle keep-alive connection for the client closing: it writes
//! nothing, and `into_parts` hands back the socket and whatever hyper had buffered. `poll_shutdown`
//! is a no-op once parked, so the socket stays open.
//!
//! One corner: part of a next request pipelined behind the previous one can sit in hyper's buffer
//! when the connection goes quiet. hyper then reports an incomplete message, the buffered bytes
//! come back from `into_parts`, and the next hyper connection starts with them, so nothing is
//! lost. That connection does not park before it has answered a request, so hyper's header-read
//! timeout still bounds a client that stalls mid-request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::io::IdleTimeout;
use crate::runtime::tls::ClientStream;

/// A client connection as the keep-alive loop holds it: plain or TLS (HTTP/1.1 by ALPN), the
/// idle timer under either.
pub(crate) type Stream = ClientStream<IdleTimeout<TcpStream>>;

pub use crate::proxy::lifetime::{track, Activity, BodyGuard, ConnState, InFlight, TrackedBody};

/// How long closing a parked connection may wait for the socket (TLS close_notify).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How long a connection must be quiet before it parks.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// The IO hyper reads from and writes to on a parkable connection: first the bytes left over from
/// the previous hyper connection, then the socket; end-of-stream when the connection is quiet.
pub(crate) struct Parkable {
    inner: Stream,
    leftover: Bytes,
    state: Arc<ConnState>,
    /// False while resuming a request whose first bytes were in `leftover`.
    may_park: bool,
    answered_at_start: u32,
    /// `answered` when hyper last called `poll_flush`, i.e. last had an empty write buffer.
    answered_at_flush: u32,
    parked: bool,
}

impl Parkable {
    pub fn new(inner: Stream, leftover: Bytes, state: Arc<ConnState>) -> Parkable {
        let answered = state.answered.load(Ordering::Relaxed);
        Parkable {
            inner,
            may_park: leftover.is_empty(),
            leftover,
            state,
            answered_at_start: answered,
            answered_at_flush: answered,
            parked: false,
        }
    }

    /// Whether this IO told hyper end-of-stream because the connection went quiet.
    pub(crate) fn parked(&self) -> bool {
        self.parked
    }

    pub(crate) fn into_inner(self) -> Stream {
        self.inner
    }

    fn can_park(&self) -> bool {
        let state = &self.state;
        let answered = state.answered.load(Ordering::Relaxed);
        (self.may_park || answered != self.answered_at_start)
            && !state.upgraded.load(Ordering::Relaxed)
            && !state.unfinished_body.load(Ordering::Relaxed)
            && state.in_flight.load(Ordering::Relaxed) == 0
            && state.quiet.load(Ordering::Relaxed)
            && answered == self.answered_at_flush
    }
}

impl AsyncRead for Parkable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            this.state.quiet.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let transport_before = this.inner.transport().bytes_in();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Bytes from the socket count even when they made no plaintext yet (part of a TLS
        // record): a connection in the middle of receiving something is not quiet.
        if buf.filled().len() > before || this.inner.transport().bytes_in() != transport_before {
            this.state.quiet.store(false, Ordering::Relaxed);
        }
        match polled {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending if !this.can_park() => {
                this.state.waker.register(cx.waker());
                Poll::Pending
            }
            Poll::Pending => {
                let park_at = this.inner.transport().last_activity() + PARK_AFTER;
                if Instant::now() >= park_at {
                    // Under TLS the last records of a response can still sit in rustls, waiting
                    // for the socket to drain, long after hyper's own flush returned: park only
                    // once they are out (a plain socket has nothing to flush).
                    return match Pin::new(&mut this.inner).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            this.parked = true;
                            Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                        // Woken when the socket takes more; hyper then asks for bytes again.
                        Poll::Pending => Poll::Pending,
                    };
                }
                // hyper polls again when the timer wakes the task, and the connection parks then
                // if it is still quiet.
                this.inner.transport_mut().wake_by(park_at, cx);
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Parkable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.answered_at_flush = this.state.answered.load(Ordering::Relaxed);
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        // A response whose last bytes had to wait for the socket: hyper will not ask for bytes
        // again by itself, so the park timer is armed here.
        if flushed.is_ready() && this.can_park() {
            let park_at = this.inner.transport().last_activity() + PARK_AFTER;
            this.inner.transport_mut().wake_by(park_at, cx);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on a connection (plain with its first bytes waiting, or TLS), parking it between
/// requests. Returns when the client closes, the connection stays parked longer than `keepalive`,
/// `draining` turns true while parked (an in-flight request finishes first), or hyper fails.
pub async fn serve<S, B>(
    stream: Stream,
    builder: &http1::Builder,
    service: S,
    state: Arc<ConnState>,
    keepalive: Duration,
    parked: &Gauge,
    draining: &mut watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: HttpService<Incoming, ResBody = B> + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stream = stream;
    let mut leftover = Bytes::new();
    let mut waiting = false;
    loop {
        if waiting && leftover.is_empty() {
            // Parked: a socket, no buffers. Wait for the next request's first bytes.
            parked.inc();
            let woken = tokio::select! {
                biased;
                () = drained(draining) => false,
                readable = tokio::time::timeout(keepalive, stream.transport().get_ref().readable()) => {
                    matches!(readable, Ok(Ok(())))
                }
            };
            parked.dec();
            if !woken {
                // Closed while parked (keep-alive limit, or draining): a TLS session ends with
                // close_notify, as hyper's own close would send; bounded, the peer may be gone.
                let _ = tokio::time::timeout(CLOSE_WAIT, stream.shutdown()).await;
                return Ok(());
            }
        }
        waiting = true;
        // Boxed: hyper's connection state exists only while serving, so the task of a parked
        // connection stays a few hundred bytes.
        let served = Box::pin(serve_until_parked(
            stream,
            leftover,
            builder,
            service.clone(),
            state.clone(),
            draining,
        ));
        match served.await {
            Served::Parked(parked, bytes) => (stream, leftover) = (parked, bytes),
            Served::Done(outcome) => return outcome,
        }
    }
}

enum Served {
    /// Quiet again: the socket, and any bytes of a next request hyper had already read.
    Parked(Stream, Bytes),
    Done(hyper::Result<()>),
}

async fn serve_until_parked<S, B>(
    stream: Stream,
    leftover: Bytes,
    builder: &http1::Builder,
    service: S,
    state: Arc<ConnState>,
    draining: &mut watch::Receiver<bool>,
) -> Served
where
    S: HttpService<Incoming, ResBody = B> + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(Parkable::new(stream, leftover, state));
    let mut connection = builder.serve_connection(io, service).with_upgrades();
    let outcome = tokio::select! {
        outcome = &mut connection => outcome,
        () = drained(draining) => {
            Pin::new(&mut connection).graceful_shutdown();
            return Served::Done((&mut connection).await);
        }
    };
    let Some(parts) = connection.into_parts() else {
        return Served::Done(outcome); // upgraded: the WebSocket splice owns the socket now
    };
    if !parts.io.inner().parked() {
        return Served::Done(outcome);
    }
    match outcome {
        Ok(()) => {}
        // Our end-of-stream cut a pipelined request short; its bytes are in `read_buf`.
        Err(err) if err.is_incomplete_message() => {}
        Err(err) => return Served::Done(Err(err)),
    }
    // `read_buf` shares hyper's whole read buffer, even when empty: keep a copy of the bytes
    // instead, or the parked connection would still hold the buffer.
    let leftover = if parts.read_buf.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&parts.read_buf)
    };
    Served::Parked(parts.io.into_inner().into_inner(), leftover)
}

/// Resolves once `draining` is true. The watch guard is dropped here, before the caller's handler
/// runs (it must not be held across an await: it is not `Send`).
pub(crate) async fn drained(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|drain| *drain).await;
}
