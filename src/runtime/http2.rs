//! HTTP/2 connections: served by hyper-util for the connection's life, and closed with a GOAWAY once no stream has moved for `idle_timeout` (`IdleStreams`; PINGs do not count).

use crate::runtime::keepalive::{drained, ConnState};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The idle rule of a connection served by the auto builder (HTTP/2): idle means, for `limit`,
/// no request waiting for its response head, none started or finished, and no response moving
/// (a response the client's flow control holds shut is as good as idle). Bytes are no measure
/// here: HTTP/2 PINGs (the gateway's own keep-alive, or a client's) would keep an unused or
/// stalled connection, its connection slot and its backend connection, forever.
pub(crate) struct IdleStreams {
    pub(crate) state: Arc<ConnState>,
    pub(crate) limit: Duration,
}

impl IdleStreams {
    /// Resolves once the connection has been idle for `limit` (checked every quarter of it, so
    /// it is closed between `limit` and 1.25 x `limit` after it last moved). A request waiting
    /// for its response head counts as moving: `request_timeout` bounds that wait.
    async fn elapsed(&self) {
        let step = self.limit / 4;
        let mut seen = self.state.activity();
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(step).await;
            let now = self.state.activity();
            if now.waiting || now != seen {
                quiet_since = Instant::now();
                seen = now;
            } else if quiet_since.elapsed() >= self.limit {
                return;
            }
        }
    }
}

/// One connection through hyper-util's auto builder (HTTP/1.1 or HTTP/2, with upgrades), closed
/// gracefully (GOAWAY for HTTP/2) when `draining` turns true or it has been idle too long.
pub(crate) async fn serve_auto<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    idle: IdleStreams,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = drained(draining) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = idle.elapsed() => {
            tracing::debug!(stalled = idle.state.responding(), "closing an idle HTTP/2 connection");
            connection.as_mut().graceful_shutdown();
            // Streams the client opened before it saw the GOAWAY are still served for as long as
            // they move; once nothing has moved for `limit` again (a stalled response, a peer
            // that stopped reading), the socket is dropped.
            tokio::select! {
                outcome = connection => outcome,
                () = idle.elapsed() => Ok(()),
            }
        }
    }
}
