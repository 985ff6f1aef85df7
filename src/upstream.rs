//! Forwarding to the backend over a pooled keep-alive client. Bodies stream in both directions;
//! nothing is buffered here.
//!
//! Each thread has its own client and pool: a worker (src/server.rs) only ever reuses connections
//! whose driver task runs on its own thread, so an exchange with the backend never wakes another
//! thread.

use std::time::Duration;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;

use crate::body::{BodyTooLarge, RequestBody};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Upstream {
    connector: Connector,
    clients: ThreadLocal<Client<Connector, RequestBody>>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        // http:// stays plain TCP; https:// gets TLS, never falling back to plain (src/tls.rs).
        let connector = crate::tls::upstream_connector(connector, config.tls.as_ref());
        Upstream {
            connector,
            clients: ThreadLocal::new(),
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            timeout: config.timeout,
        }
    }

    /// This thread's client, made on its first request.
    fn client(&self) -> &Client<Connector, RequestBody> {
        self.clients.get_or(|| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(1024)
                // A request that never got written (its pooled connection turned out dead) is
                // resent by hyper: nothing reached the backend, so this is safe for every method.
                .retry_canceled_requests(true)
                .build(self.connector.clone())
        })
    }

    /// Sends the request to the backend with the original path and query bytes, and returns the
    /// response head as soon as it arrives (its body streams). Refused or reset: 502. No response
    /// head within the timeout: 504. Body over the limit: 413.
    ///
    /// A body-less GET or HEAD whose connection closed before any response byte (a stale pooled
    /// connection racing the backend's keep-alive timeout) is retried once on a new connection:
    /// those requests are idempotent. Nothing else is retried.
    pub async fn forward(
        &self,
        mut parts: Parts,
        body: RequestBody,
    ) -> Result<Response<Incoming>, GatewayError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path_and_query);
        parts.uri =
            Uri::from_parts(uri).map_err(|_| GatewayError::BadTarget("unforwardable target"))?;
        // The backend speaks HTTP/1.1 whatever the client spoke to us.
        parts.version = Version::HTTP_11;
        let idempotent = parts.method == Method::GET || parts.method == Method::HEAD;
        let retry = if idempotent && body.is_end_stream() {
            retry_head(&parts)
        } else {
            None
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let first = self.send(Request::from_parts(parts, body), deadline).await;
        match (first, retry) {
            (Err(Attempt::Stale), Some(parts)) => {
                tracing::debug!("stale upstream connection; retrying the idempotent request once");
                match self
                    .send(Request::from_parts(parts, RequestBody::empty()), deadline)
                    .await
                {
                    Ok(response) => Ok(response),
                    Err(attempt) => Err(attempt.into_error()),
                }
            }
            (Ok(response), _) => Ok(response),
            (Err(attempt), _) => Err(attempt.into_error()),
        }
    }

    async fn send(
        &self,
        request: Request<RequestBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Incoming>, Attempt> {
        match tokio::time::timeout_at(deadline, self.client().request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify(&err)),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "upstream timed out");
                Err(Attempt::TimedOut)
            }
        }
    }
}

enum Attempt {
    /// The connection closed before any response byte: safe to retry if idempotent.
    Stale,
    BodyTooLarge,
    TimedOut,
    Failed,
}

impl Attempt {
    fn into_error(self) -> GatewayError {
        match self {
            Attempt::BodyTooLarge => GatewayError::PayloadTooLarge,
            Attempt::TimedOut => GatewayError::UpstreamTimeout,
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

fn classify(err: &hyper_util::client::legacy::Error) -> Attempt {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<BodyTooLarge>() {
            return Attempt::BodyTooLarge;
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() || hyper_error.is_canceled() {
                return Attempt::Stale;
            }
        }
        source = cause.source();
    }
    tracing::warn!(error = %err, source = ?std::error::Error::source(err), "upstream request failed");
    Attempt::Failed
}
