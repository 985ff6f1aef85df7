//! Long-lived exchanges: streamed response bodies and spliced WebSocket connections.
//!
//! Bodies are never buffered: each frame is passed on as it arrives, so memory per stream is
//! bounded by hyper's buffers whatever the body size, and backpressure flows end to end (a slow
//! reader stops the writer). Server-Sent Events reach the client event by event for the same
//! reason.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use http_body::{Body, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;

use crate::config::WebSocketConfig;
use crate::core::io::IdleTimeout;
use crate::proxy::body::BoxError;
use crate::proxy::upstream::Source;

/// Hop-by-hop names that must not travel in trailers either.
const HOP_BY_HOP_TRAILERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop fields from response trailers.
fn clean_trailers(trailers: &mut HeaderMap) {
    for name in HOP_BY_HOP_TRAILERS {
        trailers.remove(name);
    }
}

/// The backend's response body on its way to the client: frames pass through as they arrive,
/// trailers are cleaned, and a route's `stream_timeout` ends the body when it expires. Once the
/// body has ended, its connection goes back to the pool (src/proxy/upstream/): a hyper body's through
/// its `Lease`, a lean body's by itself.
pub(crate) struct UpstreamBody {
    inner: Source,
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The body ran past its route's `stream_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the response stream exceeded the route's stream_timeout")]
pub(crate) struct StreamTimedOut;

impl UpstreamBody {
    pub fn new(inner: Source, stream_timeout: Option<Duration>) -> UpstreamBody {
        UpstreamBody {
            inner,
            deadline: stream_timeout.map(|limit| Box::pin(tokio::time::sleep(limit))),
        }
    }

    fn release(&mut self) {
        if let Source::Hyper { lease, .. } = &mut self.inner {
            if let Some(lease) = lease.take() {
                lease.release();
            }
        }
    }

    /// Never reuse the connection: its framing is lost.
    fn forfeit(&mut self) {
        match &mut self.inner {
            Source::Hyper { lease, .. } => *lease = None,
            Source::Lean(body) => body.forfeit(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body nobody polled to the end may still be complete (HEAD, 204, Content-Length: 0).
        // (A lean body gives its connection back by itself, at its exact end.)
        if let Source::Hyper { body, .. } = &self.inner {
            if body.is_end_stream() {
                self.release();
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.forfeit();
                return Poll::Ready(Some(Err(Box::new(StreamTimedOut))));
            }
        }
        let polled = match &mut this.inner {
            Source::Hyper { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|err| Box::new(err) as BoxError),
            Source::Lean(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|err| Box::new(err) as BoxError),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        clean_trailers(&mut trailers);
                        // Trailers end the body; hyper's server may not poll for the end after
                        // them, so the connection goes back to the pool now.
                        this.release();
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.forfeit();
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Hyper { body, .. } => body.is_end_stream(),
            Source::Lean(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Hyper { body, .. } => body.size_hint(),
            Source::Lean(body) => body.size_hint(),
        }
    }
}

/// `Upgrade: websocket` with `Connection: upgrade` (RFC 6455 section 4.1).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .map(|text| {
                    text.split(',')
                        .any(|item| item.trim().eq_ignore_ascii_case(token))
                })
                .unwrap_or(false)
        })
    };
    has_token(UPGRADE, "websocket") && has_token(CONNECTION, "upgrade")
}

/// Whether the request was marked as a WebSocket handshake before the header rewrite; the
/// pipeline records it in the extensions because the rewrite removes the upgrade headers.
pub(crate) fn is_websocket_upgrade_requested(extensions: &http::Extensions) -> bool {
    extensions.get::<WebSocketRequested>().is_some()
}

/// Marker put in the request extensions when the client asked for a WebSocket upgrade.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WebSocketRequested;

/// The upgrade headers the backend needs, put back after the hop-by-hop strip.
pub(crate) fn request_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Splices the client and backend connections once both upgrades complete, within the route's
/// limits: `idle` with no bytes either way, `max_lifetime` in total, and the token's expiry when
/// `close_on_expiry` is set (`expires_in`).
pub(crate) fn splice(
    client: OnUpgrade,
    backend: OnUpgrade,
    limits: WebSocketConfig,
    expires_in: Option<Duration>,
) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(error = %err, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = IdleTimeout::new(TokioIo::new(client), limits.idle);
        let mut backend = TokioIo::new(backend);
        let lifetime = match (limits.close_on_expiry, expires_in) {
            (true, Some(expiry)) => limits.max_lifetime.min(expiry),
            _ => limits.max_lifetime,
        };
        match tokio::time::timeout(
            lifetime,
            tokio::io::copy_bidirectional(&mut client, &mut backend),
        )
        .await
        {
            Ok(Ok((up, down))) => tracing::debug!(up, down, "websocket closed"),
            Ok(Err(err)) => tracing::debug!(error = %err, "websocket ended"),
            Err(_) => tracing::debug!(?lifetime, "websocket closed at its lifetime limit"),
        }
    });
}
