//! The request body as forwarded: the client's body, counted while it streams.
//!
//! Threat: a chunked body has no Content-Length to check up front, so a limit checked only on the
//! header is no limit. Counting every frame as it passes bounds what a client can push through us
//! without ever buffering the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::lifetime::BodyGuard;
use crate::request::authz::json_scan::JsonMethodScan;
use crate::request::authz::multipart::{OwnerScan, ScanRefusal};
use crate::request::headers::TrailerPolicy;

/// A check of a body's fields as it streams: each frame is scanned before it is forwarded, and
/// only what the scan cleared goes.
pub(crate) enum BodyScan {
    /// Owner fields (and `_method`) in a `multipart/form-data` body (src/request/authz/multipart.rs).
    Multipart(OwnerScan),
    /// `_method` in a JSON body (src/request/authz/json_scan.rs).
    Json(JsonMethodScan),
}

impl BodyScan {
    /// The body offset up to which bytes may be forwarded.
    fn feed(&mut self, data: &[u8]) -> Result<u64, ScanRefusal> {
        match self {
            BodyScan::Multipart(scan) => scan.feed(data),
            BodyScan::Json(scan) => scan.feed(data),
        }
    }

    fn finish(&self) -> Result<(), ScanRefusal> {
        match self {
            BodyScan::Multipart(scan) => scan.finish(),
            BodyScan::Json(scan) => scan.finish(),
        }
    }
}

/// The body went past `max_body_bytes`; found in the upstream error's source chain, becomes 413.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the configured limit")]
pub(crate) struct BodyTooLarge;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
    /// Applied to trailers: the same names are dropped as from headers.
    trailers: Option<TrailerPolicy>,
    /// A body already read in full (for an owner-field check), sent as one frame.
    buffered: Option<Bytes>,
    /// Keeps the client connection from parking until the body has been read to its end.
    guard: Option<BodyGuard>,
    /// Fields of a multipart or JSON body, checked frame by frame before each is forwarded.
    owner_scan: Option<BodyScan>,
    /// Scanned bytes not yet cleared to go (an owner part's content until its delimiter).
    held: BytesMut,
    /// How many body bytes have been handed on.
    forwarded: u64,
}

impl RequestBody {
    pub(crate) fn limited(
        inner: Incoming,
        limit: u64,
        trailers: TrailerPolicy,
        guard: Option<BodyGuard>,
    ) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            remaining: limit,
            trailers: Some(trailers),
            buffered: None,
            guard,
            owner_scan: None,
            held: BytesMut::new(),
            forwarded: 0,
        }
    }

    /// Checks the body's fields as it streams.
    pub(crate) fn with_owner_scan(mut self, scan: BodyScan) -> RequestBody {
        self.owner_scan = Some(scan);
        self
    }

    /// No body: what a retried GET/HEAD carries.
    pub(crate) fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            remaining: 0,
            trailers: None,
            buffered: None,
            guard: None,
            owner_scan: None,
            held: BytesMut::new(),
            forwarded: 0,
        }
    }

    /// The exact bytes received, already checked.
    pub(crate) fn buffered(bytes: Bytes) -> RequestBody {
        RequestBody {
            inner: None,
            remaining: 0,
            trailers: None,
            buffered: Some(bytes),
            guard: None,
            owner_scan: None,
            held: BytesMut::new(),
            forwarded: 0,
        }
    }
}

impl RequestBody {
    /// Ends the body with a scan's refusal (found in the upstream error's source chain).
    fn refuse(&mut self, refusal: ScanRefusal) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner = None;
        self.owner_scan = None;
        Poll::Ready(Some(Err(Box::new(refusal))))
    }

    fn finish_guard(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.finish();
        }
    }
}

fn inner_ended(inner: &Option<Incoming>) -> bool {
    inner.as_ref().is_some_and(Body::is_end_stream)
}

/// Reads a whole body, refusing more than `max` bytes (413) without holding more than that, and
/// tells `guard` the body was read to its end.
pub(crate) async fn read_to_limit(
    body: Incoming,
    max: usize,
    guard: Option<BodyGuard>,
) -> Result<Bytes, crate::core::error::GatewayError> {
    use http_body_util::BodyExt;
    let bytes = match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(crate::core::error::GatewayError::PayloadTooLarge)
        }
        Err(_) => Err(crate::core::error::GatewayError::BadRequest(
            "the request body could not be read",
        )),
    }?;
    if let Some(guard) = guard {
        guard.finish();
    }
    Ok(bytes)
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(bytes) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(Box::new(err)))),
                Poll::Ready(None) => {
                    if let Some(Err(refusal)) = this.owner_scan.take().map(|scan| scan.finish()) {
                        return this.refuse(refusal);
                    }
                    this.finish_guard();
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            };
            let Some(data) = frame.data_ref() else {
                // Trailers are the last frame (the upstream client does not poll past them).
                if let Some(Err(refusal)) = this.owner_scan.take().map(|scan| scan.finish()) {
                    return this.refuse(refusal);
                }
                this.finish_guard();
                let frame = match (frame.into_trailers(), &this.trailers) {
                    (Ok(mut trailers), Some(policy)) => {
                        policy.clean(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    (Ok(trailers), None) => Frame::trailers(trailers),
                    (Err(frame), _) => frame,
                };
                return Poll::Ready(Some(Ok(frame)));
            };
            let len = data.len() as u64;
            if len > this.remaining {
                this.inner = None;
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
            this.remaining -= len;
            if let Some(guard) = &this.guard {
                guard.moved();
            }
            // The upstream client may stop polling once a body says it has ended, so the last
            // data frame is where the guard learns it, and where a scan must be finished.
            let ended = inner_ended(&this.inner);
            let Some(scan) = this.owner_scan.as_mut() else {
                if ended {
                    this.finish_guard();
                }
                return Poll::Ready(Some(Ok(frame)));
            };
            // Scanned before it goes, and only what the scan cleared goes: a refusal must keep
            // the body incomplete, and an owner value unchecked must not reach the backend.
            let scanned = scan.feed(data).and_then(|safe| {
                if ended {
                    scan.finish().map(|()| safe)
                } else {
                    Ok(safe)
                }
            });
            let safe = match scanned {
                Ok(safe) => safe,
                Err(refusal) => return this.refuse(refusal),
            };
            if this.held.is_empty() && safe == this.forwarded + len {
                // Nothing held back: the frame goes as it is, uncopied.
                this.forwarded = safe;
                if ended {
                    this.finish_guard();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            this.held.extend_from_slice(data);
            let ready = safe
                .saturating_sub(this.forwarded)
                .min(this.held.len() as u64);
            this.forwarded += ready;
            let cleared = this.held.split_to(ready as usize).freeze();
            if ended {
                this.finish_guard();
            }
            if !cleared.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(cleared))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(bytes) = &self.buffered {
            return SizeHint::with_exact(bytes.len() as u64);
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
