//! Forwarding to the backend over pooled HTTP/1.1 keep-alive connections. Bodies stream in both
//! directions; nothing is buffered here.
//!
//! The pool is per thread and lock-free: a worker (src/server.rs) only reuses connections whose
//! driver task runs on its own thread, so an exchange with the backend never wakes another thread.
//! A connection goes back to its thread's pool when the response body has been read to the end
//! ([`Lease`], carried by the response body), and is skipped at checkout if the backend closed it
//! or it is not ready for another request yet. Each connection is hyper's HTTP/1 client driven by
//! its own task on that thread.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use thread_local::ThreadLocal;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::{BodyTooLarge, RequestBody};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Sender = http1::SendRequest<RequestBody>;

/// An idle pooled connection older than this is closed instead of reused: backends close theirs
/// after their own keep-alive timeout, and a request racing that close costs a retry.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per thread; more are closed.
const POOL_MAX_IDLE: usize = 1024;

pub struct Upstream {
    connector: Connector,
    /// `scheme://authority/`, what the connector dials.
    address: Uri,
    /// The `Host` the backend is sent: the configured authority, without a default port.
    host: HeaderValue,
    pools: Arc<Pools>,
    timeout: Duration,
}

#[derive(Default)]
struct Pools {
    per_thread: ThreadLocal<RefCell<Vec<Idle>>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    /// Closed by the backend, or idle too long to trust.
    fn stale(&self, now: Instant) -> bool {
        self.sender.is_closed() || now - self.since > POOL_IDLE_TIMEOUT
    }
}

impl Pools {
    fn idle(&self) -> &RefCell<Vec<Idle>> {
        self.per_thread.get_or(RefCell::default)
    }

    /// Amortized reaping: the oldest entry (the list is oldest first) goes if it is stale, so
    /// connections nobody reuses do not pile up.
    fn reap_oldest(idle: &mut Vec<Idle>, now: Instant) {
        if idle.first().is_some_and(|oldest| oldest.stale(now)) {
            idle.remove(0);
        }
    }

    /// The most recently used connection that can take a request now (LIFO keeps few connections
    /// hot). Stale ones met on the way are dropped.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle().borrow_mut();
        let now = Instant::now();
        Self::reap_oldest(&mut idle, now);
        let mut index = idle.len();
        while index > 0 {
            index -= 1;
            let entry = &idle[index];
            // `remove`, not `swap_remove`: the order (oldest first) is what reaping relies on.
            if entry.stale(now) {
                idle.remove(index);
            } else if entry.sender.is_ready() {
                return Some(idle.remove(index).sender);
            }
        }
        None
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle().borrow_mut();
        let now = Instant::now();
        Self::reap_oldest(&mut idle, now);
        if idle.len() < POOL_MAX_IDLE {
            idle.push(Idle { sender, since: now });
        }
    }
}

/// The connection a response came on. Released to the pool once the response body has ended;
/// dropped otherwise (hyper then closes the connection, whose framing is unknown).
pub struct Lease {
    sender: Sender,
    pools: Arc<Pools>,
}

impl Lease {
    pub fn release(self) {
        self.pools.put(self.sender);
    }
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        // http:// stays plain TCP; https:// gets TLS, never falling back to plain (src/tls.rs).
        let connector = crate::tls::upstream_connector(connector, config.tls.as_ref());
        let address = Uri::builder()
            .scheme(config.scheme.clone())
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let default_port = if config.scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = match config.authority.port_u16() {
            Some(port) if port == default_port => config.authority.host(),
            _ => config.authority.as_str(),
        };
        Upstream {
            connector,
            address,
            host: HeaderValue::from_str(host)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            pools: Arc::default(),
            timeout: config.timeout,
        }
    }

    /// Sends the request to the backend with the original path and query bytes, and returns the
    /// response head as soon as it arrives (its body streams), with the connection's lease.
    /// Refused or reset: 502. No response head within the timeout: 504. Body over the limit: 413.
    ///
    /// A request that was never written (its pooled connection turned out closed) is resent on a
    /// new connection: nothing reached the backend, so this is safe for every method. A body-less
    /// GET or HEAD whose connection closed before any response byte (a stale pooled connection
    /// racing the backend's keep-alive timeout) is retried once too: those requests are
    /// idempotent. Nothing else is retried.
    pub async fn forward(
        &self,
        mut parts: Parts,
        body: RequestBody,
    ) -> Result<(Response<Incoming>, Lease), GatewayError> {
        // Origin-form on the wire; the client's Host was dropped by the rewrite.
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path_and_query);
        parts.headers.insert(HOST, self.host.clone());
        // The backend speaks HTTP/1.1 whatever the client spoke to us.
        parts.version = Version::HTTP_11;
        let idempotent = parts.method == Method::GET || parts.method == Method::HEAD;
        let retry = if idempotent && body.is_end_stream() {
            retry_head(&parts)
        } else {
            None
        };
        let deadline = Instant::now() + self.timeout;
        let exchange = async {
            match self.send(Request::from_parts(parts, body)).await {
                Err(Attempt::Stale) => match retry {
                    Some(parts) => {
                        tracing::debug!(
                            "stale upstream connection; retrying the idempotent request"
                        );
                        self.send(Request::from_parts(parts, RequestBody::empty()))
                            .await
                    }
                    None => Err(Attempt::Stale),
                },
                outcome => outcome,
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(exchanged)) => Ok(exchanged),
            Ok(Err(attempt)) => Err(attempt.into_error()),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "upstream timed out");
                Err(GatewayError::UpstreamTimeout)
            }
        }
    }

    /// One attempt: a pooled connection (or a new one), and the request on it. A request that a
    /// pooled connection gave back unsent goes once more, on a new connection.
    async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), Attempt> {
        let mut request = request;
        let mut pooled = self.pools.checkout();
        loop {
            let fresh = pooled.is_none();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                // Boxed: connecting is rare on a warm pool, and its state (resolver, TLS
                // handshake) would otherwise be part of every request's future, which hyper moves.
                None => Box::pin(self.connect()).await?,
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        sender,
                        pools: self.pools.clone(),
                    };
                    return Ok((response, lease));
                }
                Err(mut err) => match err.take_message() {
                    // Not written: the pooled connection was closing. Resend on a new one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(classify(err.error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Sender, Attempt> {
        let mut connector = self.connector.clone();
        let io = connector.call(self.address.clone()).await.map_err(|err| {
            tracing::warn!(error = %err, "cannot connect to the upstream");
            Attempt::Failed
        })?;
        let (sender, connection) = http1::Builder::new().handshake(io).await.map_err(|err| {
            tracing::warn!(error = %err, "upstream handshake failed");
            Attempt::Failed
        })?;
        // The connection's driver runs on this thread (see the module comment); upgrades are for
        // WebSocket splices.
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

enum Attempt {
    /// The connection closed before any response byte: safe to retry if idempotent.
    Stale,
    BodyTooLarge,
    Failed,
}

impl Attempt {
    fn into_error(self) -> GatewayError {
        match self {
            Attempt::BodyTooLarge => GatewayError::PayloadTooLarge,
            Attempt::Stale | Attempt::Failed => GatewayError::UpstreamUnavailable,
        }
    }
}

/// The parts needed to resend a body-less request; cloned only for GET and HEAD.
fn retry_head(parts: &Parts) -> Option<Parts> {
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .ok()?;
    *request.headers_mut() = parts.headers.clone();
    Some(request.into_parts().0)
}

fn classify(err: &hyper::Error) -> Attempt {
    if err.is_incomplete_message() || err.is_canceled() {
        return Attempt::Stale;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<BodyTooLarge>() {
            return Attempt::BodyTooLarge;
        }
        source = cause.source();
    }
    tracing::warn!(error = %err, source = ?std::error::Error::source(err), "upstream request failed");
    Attempt::Failed
}
