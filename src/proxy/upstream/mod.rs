//! Forwarding to the backend over pooled HTTP/1.1 keep-alive connections. Bodies stream in both
//! directions; nothing is buffered here.
//!
//! Two clients share the work. Every request but a WebSocket upgrade takes the lean path of
//! src/proxy/upstream/h1/, over plain TCP or TLS: the request task itself writes the request and reads
//! the response. WebSocket upgrades go through hyper's HTTP/1 client (its upgrade hand-off feeds
//! the splice in src/proxy/stream.rs), whose connections are each driven by a task of their own.
//!
//! The pools are per thread and lock-free: a worker (src/runtime/server.rs) only reuses connections made on
//! its own thread, so an exchange with the backend never wakes another thread. A connection goes
//! back to its thread's pool when the response body has been read to the end (carried by the
//! response body: [`Lease`], or the lean body itself). At checkout, one the backend closed is
//! dropped, as is a lean one on which anything arrived while it was idle; a hyper one that is not
//! ready yet is skipped.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::header::{HOST, UPGRADE};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::ServerName;
use thread_local::ThreadLocal;
use tokio::time::Instant;
use tower_service::Service;

use crate::config::UpstreamConfig;
use crate::core::error::GatewayError;
use crate::core::metrics::Metrics;
use crate::proxy::body::{BodyTooLarge, RequestBody};
use crate::request::authz::multipart::ScanRefusal;

pub(crate) mod dns;
pub mod h1;
pub(crate) mod tls;

use dns::{CachedResolver, UpstreamAddresses};

type Connector = hyper_rustls::HttpsConnector<HttpConnector<CachedResolver>>;
type Sender = http1::SendRequest<RequestBody>;

/// An idle pooled connection older than this is closed instead of reused: backends close theirs
/// after their own keep-alive timeout, and a request racing that close costs a retry.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per thread; more are closed.
const POOL_MAX_IDLE: usize = 1024;

pub(crate) struct Upstream {
    connector: Connector,
    /// `scheme://authority/`, what the connector dials.
    address: Uri,
    /// The `Host` the backend is sent: the configured authority, without a default port.
    host: HeaderValue,
    /// `host:port` as configured, for messages.
    authority: String,
    pools: Arc<Pools>,
    timeout: Duration,
    /// The backend host's addresses (src/proxy/upstream/dns.rs), for both clients.
    addresses: Arc<UpstreamAddresses>,
    /// For an `https://` backend: the TLS client the lean path wraps its connections in, and the
    /// name the backend's certificate must carry.
    lean_tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    is_https: bool,
    connect_timeout: Duration,
}

/// A backend response body, from whichever client carried it.
pub(crate) enum Source {
    Hyper {
        body: Incoming,
        lease: Option<Lease>,
    },
    Lean(h1::LeanBody),
}

impl Source {
    /// The body without its connection's lease: for a connection that now carries a WebSocket.
    pub(crate) fn detached(self) -> Source {
        match self {
            Source::Hyper { body, .. } => Source::Hyper { body, lease: None },
            Source::Lean(mut body) => {
                body.forfeit();
                Source::Lean(body)
            }
        }
    }
}

/// Idle connections, per thread: the lean client's (src/proxy/upstream/h1/, every request but
/// WebSocket upgrades) and hyper's (upgrades answered with something other than 101).
#[derive(Default)]
pub(crate) struct Pools {
    per_thread: ThreadLocal<RefCell<ThreadPools>>,
}

#[derive(Default)]
struct ThreadPools {
    hyper: IdleList<Sender>,
    lean: IdleList<h1::Conn>,
}

/// What the pool needs to know of a connection.
trait Pooled {
    /// Closed by the backend, or otherwise unfit for another request.
    fn is_closed(&self) -> bool;
    /// Can take a request right now.
    fn is_ready(&mut self) -> bool;
    /// Whether a connection that is not ready is finished with (rather than busy for now).
    const DEAD_WHEN_UNREADY: bool;
}

impl Pooled for Sender {
    fn is_closed(&self) -> bool {
        http1::SendRequest::is_closed(self)
    }
    fn is_ready(&mut self) -> bool {
        http1::SendRequest::is_ready(self)
    }
    const DEAD_WHEN_UNREADY: bool = false;
}

impl Pooled for h1::Conn {
    fn is_closed(&self) -> bool {
        !self.is_reusable()
    }
    fn is_ready(&mut self) -> bool {
        self.has_nothing_buffered()
    }
    // Not ready means bytes or an end arrived on an idle connection: never use it again.
    const DEAD_WHEN_UNREADY: bool = true;
}

/// Oldest first.
struct IdleList<C>(Vec<Idle<C>>);

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList(Vec::new())
    }
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

impl<C: Pooled> Idle<C> {
    /// Closed by the backend, or idle too long to trust.
    fn stale(&self, now: Instant) -> bool {
        now - self.since > POOL_IDLE_TIMEOUT || self.conn.is_closed()
    }
}

impl<C: Pooled> IdleList<C> {
    /// Amortized reaping: the oldest entry goes if it is stale, so connections nobody reuses do
    /// not pile up.
    fn reap_oldest(&mut self, now: Instant) {
        if self.0.first().is_some_and(|oldest| oldest.stale(now)) {
            self.0.remove(0);
        }
    }

    /// The most recently used connection that can take a request now (LIFO keeps few connections
    /// hot). Stale ones met on the way are dropped.
    fn checkout(&mut self, now: Instant) -> Option<C> {
        self.reap_oldest(now);
        let mut index = self.0.len();
        while index > 0 {
            index -= 1;
            let entry = &mut self.0[index];
            // `remove`, not `swap_remove`: the order (oldest first) is what reaping relies on.
            if entry.stale(now) {
                self.0.remove(index);
            } else if entry.conn.is_ready() {
                return Some(self.0.remove(index).conn);
            } else if C::DEAD_WHEN_UNREADY {
                self.0.remove(index);
            }
        }
        None
    }

    /// `now` may be a little old (the start of the exchange the connection served): it only
    /// decides when an idle connection is too old to trust, in tens of seconds.
    fn put(&mut self, conn: C, now: Instant) {
        self.reap_oldest(now);
        // Kept in order (reaping looks at the oldest only): a slightly old `now` is raised to the
        // newest entry's time.
        let since = self.0.last().map_or(now, |newest| newest.since.max(now));
        if self.0.len() < POOL_MAX_IDLE {
            self.0.push(Idle { conn, since });
        }
    }
}

impl Pools {
    fn local(&self) -> &RefCell<ThreadPools> {
        self.per_thread.get_or(RefCell::default)
    }

    fn checkout(&self) -> Option<Sender> {
        self.local().borrow_mut().hyper.checkout(Instant::now())
    }

    fn put(&self, sender: Sender) {
        if !sender.is_closed() {
            self.local().borrow_mut().hyper.put(sender, Instant::now());
        }
    }

    fn checkout_lean(&self, now: Instant) -> Option<h1::Conn> {
        self.local().borrow_mut().lean.checkout(now)
    }

    pub(crate) fn put_lean(&self, conn: h1::Conn, now: Instant) {
        self.local().borrow_mut().lean.put(conn, now);
    }
}

/// The connection a response came on. Released to the pool once the response body has ended;
/// dropped otherwise (hyper then closes the connection, whose framing is unknown).
pub(crate) struct Lease {
    sender: Sender,
    pools: Arc<Pools>,
}

impl Lease {
    pub(crate) fn release(self) {
        self.pools.put(self.sender);
    }
}

impl Upstream {
    /// `metrics` counts the lookups of the backend's name.
    pub fn new(config: &UpstreamConfig, metrics: &Arc<Metrics>) -> Upstream {
        let default_port = if config.scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        let bare_host = config
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addresses = UpstreamAddresses::new(
            bare_host,
            config.authority.port_u16().unwrap_or(default_port),
            Some(metrics.clone()),
        );
        let mut connector = HttpConnector::new_with_resolver(CachedResolver {
            addresses: addresses.clone(),
            wait: config.connect_timeout,
        });
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        // http:// stays plain TCP; https:// gets TLS, never falling back to plain (src/runtime/tls.rs).
        let connector =
            crate::proxy::upstream::tls::upstream_connector(connector, config.tls.as_ref());
        let address = Uri::builder()
            .scheme(config.scheme.clone())
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let host = match config.authority.port_u16() {
            Some(port) if port == default_port => config.authority.host(),
            _ => config.authority.as_str(),
        };
        // Config validation checked the scheme and TLS settings; a host that is not a valid
        // server name cannot get a certificate either, so such a backend only ever gets 502s.
        let lean_tls = match (&config.tls, ServerName::try_from(bare_host.to_string())) {
            (Some(tls), Ok(name)) => {
                let mut client = rustls::ClientConfig::clone(&tls.client);
                // This client speaks HTTP/1.1 only; say so if the backend negotiates.
                client.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some((tokio_rustls::TlsConnector::from(Arc::new(client)), name))
            }
            _ => None,
        };
        Upstream {
            connector,
            address,
            host: HeaderValue::from_str(host)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            pools: Arc::default(),
            timeout: config.timeout,
            addresses,
            authority: config.authority.to_string(),
            lean_tls,
            is_https: config.scheme == Scheme::HTTPS,
            connect_timeout: config.connect_timeout,
        }
    }

    /// Sends the request to the backend with the original path and query bytes, and returns the
    /// response head as soon as it arrives (its body streams, and carries the connection back to
    /// the pool at its end). Refused or reset: 502. No response head within the timeout: 504.
    /// Body over the limit: 413.
    ///
    /// A request that was never written (its pooled connection turned out closed) is resent on a
    /// new connection: nothing reached the backend, so this is safe for every method. A body-less
    /// GET or HEAD whose connection closed before any response byte (a stale pooled connection
    /// racing the backend's keep-alive timeout) is retried once too (the lean client always on a
    /// new connection): those requests are idempotent. Nothing else is retried. The lean client's
    /// `connect_timeout` covers the TCP connect and, for TLS, the handshake.
    ///
    /// Everything but WebSocket upgrades takes the lean path (src/proxy/upstream/h1/); upgrades go
    /// through hyper's client.
    pub(crate) fn forward(
        &self,
        mut parts: Parts,
        body: RequestBody,
        started: std::time::Instant,
    ) -> impl Future<Output = Result<Response<Source>, GatewayError>> + '_ {
        // The preparation is synchronous, so that what the returned future holds (and every
        // request moves) is only what the exchange needs: not the request's parts, nor the other
        // client's state.
        // Origin-form on the wire; the client's Host was dropped by the rewrite.
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.headers.insert(HOST, self.host.clone());
        let started = Instant::from_std(started);
        let deadline = started + self.timeout;
        if parts.headers.contains_key(UPGRADE) {
            // hyper's client, for WebSocket upgrades: the rare path, boxed.
            return Either::Right(Box::pin(self.forward_with_hyper(
                parts,
                path_and_query,
                body,
                deadline,
            )));
        }
        let framing = h1::RequestFraming::of(&body);
        let head = h1::encode_request(
            &parts.method,
            path_and_query.as_str(),
            &parts.headers,
            framing,
        );
        let head_request = parts.method == Method::HEAD;
        let idempotent = parts.method == Method::GET || head_request;
        let retry = idempotent && framing == h1::RequestFraming::Empty;
        // Boxed: only requests with a body have one, and it would sit in every request's future.
        let upload = (framing != h1::RequestFraming::Empty)
            .then(|| Box::new(h1::Upload::new(body, framing)));
        Either::Left(self.forward_lean(head, upload, head_request, retry, started))
    }

    async fn forward_lean(
        &self,
        head: Vec<u8>,
        upload: Option<Box<h1::Upload>>,
        head_request: bool,
        retry: bool,
        started: Instant,
    ) -> Result<Response<Source>, GatewayError> {
        let deadline = started + self.timeout;
        // Written inline (no intermediate future values): every future held across an await is
        // part of this one, and a moved future keeps its old slot too.
        let outcome = tokio::time::timeout_at(deadline, async {
            match self
                .send_lean(&head, upload, head_request, true, started)
                .await
            {
                Err(Attempt::Stale) if retry => {
                    tracing::debug!("stale upstream connection; retrying the idempotent request");
                    self.send_lean(&head, None, head_request, false, Instant::now())
                        .await
                }
                outcome => outcome,
            }
        })
        .await;
        self.settle(outcome)
    }

    async fn forward_with_hyper(
        &self,
        mut parts: Parts,
        path_and_query: PathAndQuery,
        body: RequestBody,
        deadline: Instant,
    ) -> Result<Response<Source>, GatewayError> {
        let idempotent = parts.method == Method::GET || parts.method == Method::HEAD;
        parts.uri = Uri::from(path_and_query);
        // The backend speaks HTTP/1.1 whatever the client spoke to us.
        parts.version = Version::HTTP_11;
        let retry = if idempotent && body.is_end_stream() {
            retry_head(&parts)
        } else {
            None
        };
        let outcome = tokio::time::timeout_at(deadline, async {
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
        })
        .await;
        self.settle(outcome)
    }

    /// The exchange's outcome as the pipeline sees it.
    fn settle(
        &self,
        outcome: Result<Result<Response<Source>, Attempt>, tokio::time::error::Elapsed>,
    ) -> Result<Response<Source>, GatewayError> {
        match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(attempt)) => Err(attempt.into_error()),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "upstream timed out");
                Err(GatewayError::UpstreamTimeout)
            }
        }
    }

    /// One lean attempt: a pooled connection (or a new one; always a new one without
    /// `from_pool`, for a retry), and the request on it. A request that a pooled connection could
    /// not take at all (not a byte written, the body untouched) goes once more, on a new one.
    /// `started` is the exchange's start, which also serves as the checkout's "now".
    async fn send_lean(
        &self,
        head: &[u8],
        mut upload: Option<Box<h1::Upload>>,
        head_request: bool,
        from_pool: bool,
        started: Instant,
    ) -> Result<Response<Source>, Attempt> {
        let mut pooled = if from_pool {
            self.pools.checkout_lean(started)
        } else {
            None
        };
        loop {
            let fresh = pooled.is_none();
            let conn = match pooled.take() {
                Some(conn) => conn,
                None => Box::pin(self.connect_lean()).await?,
            };
            let sending = upload.take();
            match h1::exchange(conn, head, sending, head_request, &self.pools, started).await {
                Ok(response) => return Ok(response.map(Source::Lean)),
                Err(h1::ExchangeError::Unsent(unsent)) if !fresh => upload = unsent,
                Err(h1::ExchangeError::Stale) => return Err(Attempt::Stale),
                Err(h1::ExchangeError::Unsent(_)) => {
                    tracing::warn!("cannot write to a new upstream connection");
                    return Err(Attempt::Failed);
                }
                Err(h1::ExchangeError::Failed(why)) => {
                    tracing::warn!(error = why, "upstream response refused");
                    return Err(Attempt::Failed);
                }
                Err(h1::ExchangeError::Upload(err)) if err.is::<BodyTooLarge>() => {
                    return Err(Attempt::BodyTooLarge)
                }
                Err(h1::ExchangeError::Upload(err)) if err.is::<ScanRefusal>() => {
                    let refused = err.downcast_ref::<ScanRefusal>().map(|r| r.0.clone());
                    return Err(refused.map_or(Attempt::Failed, Attempt::Refused));
                }
                Err(h1::ExchangeError::Upload(err)) if is_malformed_body(err.as_ref()) => {
                    return Err(Attempt::MalformedBody)
                }
                Err(h1::ExchangeError::Upload(err)) => {
                    tracing::warn!(error = %err, "the request body failed on its way upstream");
                    return Err(Attempt::Failed);
                }
            }
        }
    }

    /// Whether the backend's host has a known address (an IP literal always has); starts a
    /// lookup when it has none.
    pub(crate) fn address_known_or_look_up(&self) -> bool {
        self.addresses.known_or_look_up()
    }

    /// `host:port` as configured.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// A new connection: TCP, and TLS over it for an `https://` backend (never plain for one),
    /// both within `connect_timeout`.
    async fn connect_lean(&self) -> Result<h1::Conn, Attempt> {
        let deadline = Instant::now() + self.connect_timeout;
        let addresses = match self.addresses.get(deadline).await {
            Ok(addresses) => addresses,
            Err(why) => {
                tracing::warn!(error = %why, "cannot find the upstream's address");
                return Err(Attempt::Failed);
            }
        };
        let connecting = async {
            let stream = tokio::net::TcpStream::connect(&addresses[..])
                .await
                .map_err(|err| {
                    self.addresses.connect_failed();
                    format!("cannot connect to the upstream: {err}")
                })?;
            // The head goes in one write; Nagle would hold a second one back for an ACK.
            let _ = stream.set_nodelay(true);
            match &self.lean_tls {
                // Never plain TCP to an https backend.
                None if self.is_https => {
                    Err("the upstream host is not a name a TLS certificate can carry".to_string())
                }
                None => Ok(tokio_util::either::Either::Left(stream)),
                Some((connector, name)) => connector
                    .connect(name.clone(), stream)
                    .await
                    .map(|tls| tokio_util::either::Either::Right(Box::new(tls)))
                    .map_err(|err| format!("upstream TLS handshake failed: {err}")),
            }
        };
        match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(stream)) => Ok(h1::Conn::new(stream)),
            Ok(Err(why)) => {
                tracing::warn!(error = %why, "cannot open an upstream connection");
                Err(Attempt::Failed)
            }
            Err(_) => {
                self.addresses.connect_failed();
                tracing::warn!(timeout = ?self.connect_timeout, "upstream connect timed out");
                Err(Attempt::Failed)
            }
        }
    }

    /// One attempt: a pooled connection (or a new one), and the request on it. A request that a
    /// pooled connection gave back unsent goes once more, on a new connection.
    async fn send(&self, request: Request<RequestBody>) -> Result<Response<Source>, Attempt> {
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
                    return Ok(response.map(|body| Source::Hyper {
                        body,
                        lease: Some(lease),
                    }));
                }
                Err(mut err) => match err.take_message() {
                    // Not written: the pooled connection was closing. Resend on a new one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(classify(err.error())),
                },
            }
        }
    }

    /// A new connection for the hyper client: the name, TCP, TLS for an `https://` backend and
    /// the HTTP/1.1 handshake, all within one `connect_timeout` (the connector bounds the lookup
    /// and the TCP connect separately, and a TLS handshake not at all).
    async fn connect(&self) -> Result<Sender, Attempt> {
        match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(opened) => opened,
            Err(_) => {
                self.addresses.connect_failed();
                tracing::warn!(timeout = ?self.connect_timeout, "upstream connect timed out");
                Err(Attempt::Failed)
            }
        }
    }

    async fn open(&self) -> Result<Sender, Attempt> {
        let mut connector = self.connector.clone();
        let io = connector.call(self.address.clone()).await.map_err(|err| {
            self.addresses.connect_failed();
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
    /// The client's body broke its own framing (a bad chunk): the client's fault, not the
    /// backend's.
    MalformedBody,
    /// The body failed a check made while it streamed (multipart owner fields).
    Refused(GatewayError),
    Failed,
}

impl Attempt {
    fn into_error(self) -> GatewayError {
        match self {
            Attempt::BodyTooLarge => GatewayError::PayloadTooLarge,
            Attempt::MalformedBody => GatewayError::BadRequest("the request body is malformed"),
            Attempt::Refused(err) => err,
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

/// hyper reports a chunked request body that breaks its framing (a chunk size that is not hex,
/// a chunk longer than declared, a bare LF) as an `InvalidData` or `InvalidInput` I/O error
/// under the body error; a client that went away is `UnexpectedEof` instead.
fn is_malformed_body(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        cause = err.source();
    }
    false
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
    match std::error::Error::source(err) {
        Some(source) => {
            tracing::warn!(error = %err, source = %source, "upstream request failed");
        }
        None => tracing::warn!(error = %err, "upstream request failed"),
    }
    Attempt::Failed
}
