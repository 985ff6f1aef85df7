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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::server::IdleTimeout;
use crate::tls::ClientStream;

/// A client connection as the keep-alive loop holds it: plain or TLS (HTTP/1.1 by ALPN), the
/// idle timer under either.
pub type Stream = ClientStream<IdleTimeout<TcpStream>>;

/// What the service side tells the IO side about one connection. The connection's own task
/// touches it (hyper polls the service future and the response body there), and so does the
/// upstream connection's task, which drops the request body and with it the [`BodyGuard`]: that
/// release wakes the connection's task (`waker`) so it can park. Each field is its own atomic;
/// none needs ordering with another.
#[derive(Debug)]
pub struct ConnState {
    /// The client connection's task, registered when it waits for bytes.
    waker: AtomicWaker,
    in_flight: AtomicU32,
    /// Responses finished (their body dropped by hyper), wrapping.
    answered: AtomicU32,
    /// No byte read since the last response finished.
    quiet: AtomicBool,
    /// A 101 was sent: the socket now belongs to the upgraded protocol and must never park.
    upgraded: AtomicBool,
    /// A request body was dropped before its end: hyper drains (reads) the rest before the next
    /// request, so the connection must not park until that next request has started.
    unfinished_body: AtomicBool,
    /// Requests between the service call and the end of their response body.
    requests: AtomicU32,
    /// Responses whose head is out and whose body is not yet all handed to hyper.
    responding: AtomicU32,
    /// Bumped (wrapping) for every response head and body frame handed to hyper, and every
    /// request body frame read: a body that stops moving (HTTP/2 flow control held shut, an
    /// upload stalled) shows as no change.
    progress: AtomicU32,
}

/// What `ConnState::activity` reports; two equal looks mean nothing moved in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Requests in flight that have no response head yet.
    pub waiting: bool,
    answered: u32,
    progress: u32,
}

impl ConnState {
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            waker: AtomicWaker::new(),
            in_flight: AtomicU32::new(0),
            answered: AtomicU32::new(0),
            quiet: AtomicBool::new(true),
            upgraded: AtomicBool::new(false),
            unfinished_body: AtomicBool::new(false),
            requests: AtomicU32::new(0),
            responding: AtomicU32::new(0),
            progress: AtomicU32::new(0),
        })
    }

    /// A snapshot for the HTTP/2 idle rule (src/server.rs, `IdleStreams`).
    pub fn activity(&self) -> Activity {
        Activity {
            waiting: self.requests.load(Ordering::Relaxed)
                > self.responding.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            progress: self.progress.load(Ordering::Relaxed),
        }
    }

    /// Whether responses are still being sent (their bodies not all handed to hyper).
    pub fn responding(&self) -> bool {
        self.responding.load(Ordering::Relaxed) > 0
    }

    /// One request, response or request body less in flight.
    fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.quiet.store(true, Ordering::Relaxed);
        }
    }
}

/// Held from the moment the service is called until hyper drops the response body, i.e. until
/// the response is entirely in hyper's write buffer (or the request was abandoned).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    pub fn start(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed);
        // hyper parses a request head only once the previous body has been read to its end.
        state.unfinished_body.store(false, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl InFlight {
    /// Whether this request's body was dropped before its end: a refusal never reads it.
    pub fn body_abandoned(&self) -> bool {
        self.0.unfinished_body.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.release();
    }
}

/// Held by a request body until it has been read to its end. A response can end before its
/// request body does (a backend answering early): the connection must not park while hyper is
/// still reading that body, or the rest of it would be taken for a new request.
#[derive(Debug)]
pub struct BodyGuard {
    state: Arc<ConnState>,
    finished: bool,
}

impl BodyGuard {
    pub fn start(state: &Arc<ConnState>) -> BodyGuard {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        BodyGuard {
            state: state.clone(),
            finished: false,
        }
    }

    /// A frame of the body was read.
    pub fn moved(&self) {
        self.state.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// The body was read to its end.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.unfinished_body.store(true, Ordering::Relaxed);
        }
        self.state.release();
        // Usually dropped in the upstream connection's task: the client connection's task may be
        // waiting with no park timer armed.
        self.state.waker.wake();
    }
}

/// A response body that carries its request's [`InFlight`] guard.
pub struct TrackedBody<B> {
    inner: B,
    in_flight: InFlight,
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        self.in_flight.0.responding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands the request's guard to its response body. A 101 stops parking for good: after it the
/// socket carries the upgraded protocol (a WebSocket), which hyper reads through this same IO.
pub fn track<B>(in_flight: InFlight, response: Response<B>) -> Response<TrackedBody<B>> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        in_flight.0.upgraded.store(true, Ordering::Relaxed);
    }
    in_flight.0.responding.fetch_add(1, Ordering::Relaxed);
    in_flight.0.progress.fetch_add(1, Ordering::Relaxed);
    response.map(|inner| TrackedBody { inner, in_flight })
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(_)) = frame {
            this.in_flight.0.progress.fetch_add(1, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long closing a parked connection may wait for the socket (TLS close_notify).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How long a connection must be quiet before it parks.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// The IO hyper reads from and writes to on a parkable connection: first the bytes left over from
/// the previous hyper connection, then the socket; end-of-stream when the connection is quiet.
pub struct Parkable {
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
    pub fn parked(&self) -> bool {
        self.parked
    }

    pub fn into_inner(self) -> Stream {
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
pub async fn drained(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|drain| *drain).await;
}
