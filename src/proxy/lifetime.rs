//! Request lifetimes, as the connection sees them: whether a request is in flight, a response
//! still streaming (`InFlight`, held by the response body), or a request body still arriving
//! (`BodyGuard`, held by the request body until its end). The keep-alive loop
//! (`runtime::keepalive`) parks a connection only when none of these holds; the pipeline and the
//! request body hold them.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

/// What the service side tells the IO side about one connection. The connection's own task
/// touches it (hyper polls the service future and the response body there), and so does the
/// upstream connection's task, which drops the request body and with it the [`BodyGuard`]: that
/// release wakes the connection's task (`waker`) so it can park. Each field is its own atomic;
/// none needs ordering with another.
#[derive(Debug)]
pub struct ConnState {
    /// The client connection's task, registered when it waits for bytes.
    pub(crate) waker: AtomicWaker,
    pub(crate) in_flight: AtomicU32,
    /// Responses finished (their body dropped by hyper), wrapping.
    pub(crate) answered: AtomicU32,
    /// No byte read since the last response finished.
    pub(crate) quiet: AtomicBool,
    /// A 101 was sent: the socket now belongs to the upgraded protocol and must never park.
    pub(crate) upgraded: AtomicBool,
    /// A request body was dropped before its end: hyper drains (reads) the rest before the next
    /// request, so the connection must not park until that next request has started.
    pub(crate) unfinished_body: AtomicBool,
    /// Requests between the service call and the end of their response body.
    pub(crate) requests: AtomicU32,
    /// Responses whose head is out and whose body is not yet all handed to hyper.
    pub(crate) responding: AtomicU32,
    /// Bumped (wrapping) for every response head and body frame handed to hyper, and every
    /// request body frame read: a body that stops moving (HTTP/2 flow control held shut, an
    /// upload stalled) shows as no change.
    pub(crate) progress: AtomicU32,
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

    /// A snapshot for the HTTP/2 idle rule (src/runtime/server.rs, `IdleStreams`).
    pub(crate) fn activity(&self) -> Activity {
        Activity {
            waiting: self.requests.load(Ordering::Relaxed)
                > self.responding.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            progress: self.progress.load(Ordering::Relaxed),
        }
    }

    /// Whether responses are still being sent (their bodies not all handed to hyper).
    pub(crate) fn responding(&self) -> bool {
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
    pub(crate) fn start(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed);
        // hyper parses a request head only once the previous body has been read to its end.
        state.unfinished_body.store(false, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl InFlight {
    /// Whether this request's body was dropped before its end: a refusal never reads it.
    pub(crate) fn body_abandoned(&self) -> bool {
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
    pub(crate) fn start(state: &Arc<ConnState>) -> BodyGuard {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        BodyGuard {
            state: state.clone(),
            finished: false,
        }
    }

    /// A frame of the body was read.
    pub(crate) fn moved(&self) {
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
