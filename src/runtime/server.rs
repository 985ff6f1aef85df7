//! Listeners and connections: accept TCP, optionally terminate TLS (src/runtime/tls.rs), speak HTTP/1.1
//! or HTTP/2 (ALPN on TLS; h2c prior knowledge detected per connection on plain listeners), hand
//! each request to the pipeline, and shut down gracefully.
//!
//! Limits enforced here, all from `[limits]`:
//! - `max_connections`: one budget shared by every worker; a worker that accepted a connection
//!   waits for a slot before serving it (holding at most that one), so connections above the cap
//!   wait in the kernel's listen backlog until a slot frees; nothing is crashed or reset.
//! - `header_read_timeout`: hyper enforces it only when a timer is installed on the builder, which
//!   `connection_builder` does; without it a slowloris client holds a connection forever. An
//!   HTTP/1 connection waiting for its (next) request, parked or new, plain or TLS, is closed after
//!   `min(idle_timeout, header_read_timeout)` (`LimitsConfig::keepalive`).
//! - `idle_timeout`: no bytes either way for this long closes the connection (`IdleTimeout`).
//! - HTTP/2: `max_concurrent_streams`, header list size, keep-alive pings.
//!
//! Threading (`spawn_workers`): one OS thread per worker, each running a single-threaded tokio
//! runtime that accepts from its own socket of an `SO_REUSEPORT` group and runs every
//! connection it accepted to the end on that thread: the request, the upstream exchange (the
//! upstream pool is per thread, src/proxy/upstream/) and the response. No task migrates and no wake-up
//! crosses threads on the request path, which is what a work-stealing runtime spends its time on
//! when every request is two short socket exchanges.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::core::io::IdleTimeout;
use crate::request::headers::ClientInfo;
use crate::runtime::detect::first_bytes;
use crate::runtime::detect::FirstBytes;
use crate::runtime::handoff::Balance;
use crate::runtime::handoff::Peers;
use crate::runtime::http2::serve_auto;
use crate::runtime::http2::IdleStreams;
use crate::runtime::keepalive::{self, BodyGuard, ConnState, InFlight};
use crate::runtime::live::Live;
use crate::runtime::tls::ClientStream;
use crate::runtime::tls::TlsListener;

/// One request through the gateway, with what the connection adds to its answer. An `async fn`
/// rather than an `async` block around `handle`: the block's future came out twice the size of
/// `handle`'s, and hyper moves it once per request.
async fn serve_request(
    gateway: Arc<crate::proxy::pipeline::Gateway>,
    request: http::Request<hyper::body::Incoming>,
    client: Arc<ClientInfo>,
    body_guard: Option<BodyGuard>,
    hsts: Option<http::HeaderValue>,
    in_flight: InFlight,
) -> Result<http::Response<keepalive::TrackedBody<crate::proxy::pipeline::ResponseBody>>, Infallible>
{
    let http1 = request.version() < http::Version::HTTP_2;
    let mut response = gateway.handle(request, &client, body_guard).await;
    crate::runtime::tls::add_hsts(&mut response, hsts);
    // A request answered without its body being read (a refusal): close after the answer rather
    // than leave hyper to drain a body nobody wants, or the connection unable to park meanwhile.
    if http1 && in_flight.body_abandoned() {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(keepalive::track(in_flight, response))
}

/// The HTTP/1.1-only builder for connections that park between requests
/// (src/runtime/keepalive.rs); the same settings as `connection_builder`'s HTTP/1 half.
pub(crate) fn http1_builder(limits: &LimitsConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
}

pub(crate) fn connection_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting and waits up
/// to `shutdown_grace` for open connections to finish their requests.
pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: impl Future<Output = ()>) {
    let slots = connection_slots(&live);
    serve_with(listener, live, None, slots, None, shutdown).await
}

/// `serve` with TLS on every connection (src/runtime/tls.rs): the handshake must finish within
/// `header_read_timeout`, ALPN picks `h2` or `http/1.1`, `X-Forwarded-Proto` is `https`, and the
/// configured `Strict-Transport-Security` is added to every response.
pub async fn serve_tls(
    listener: TcpListener,
    live: Arc<Live>,
    tls: Arc<TlsListener>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = connection_slots(&live);
    serve_with(listener, live, Some(tls), slots, None, shutdown).await
}

/// `max_connections` is one budget for the whole process, shared by every worker.
pub(crate) fn connection_slots(live: &Live) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(
        live.gateway().server_limits().max_connections,
    ))
}

pub(crate) async fn serve_with(
    listener: TcpListener,
    live: Arc<Live>,
    tls: Option<Arc<TlsListener>>,
    slots: Arc<Semaphore>,
    balance: Option<Balance>,
    shutdown: impl Future<Output = ()>,
) {
    let (peers, me, inbox) = match balance {
        Some(Balance { me, peers, inbox }) => (Some(peers), me, Some(inbox)),
        None => (None, 0, None),
    };
    // Per-connection limits are read once: changing them needs a restart (a reload says so).
    let limits = *live.gateway().server_limits();
    if let Some(store) = live.gateway().store() {
        store.warm_up();
    }
    // Look the backends' names up now rather than at the first request (one lookup per name,
    // whichever worker asks first).
    let _ = live.gateway().start_resolving_upstreams();
    // Graceful shutdown by hand: hyper-util's GracefulShutdown does not take connections that
    // can upgrade (WebSocket). Each connection watches `draining` and finishes its requests.
    let (drain, draining) = tokio::sync::watch::channel(false);
    let worker = Arc::new(Worker {
        live,
        tls,
        builders: Builders {
            auto: connection_builder(&limits),
            http1: http1_builder(&limits),
        },
        limits,
        draining,
        connections: Connections::default(),
        peers: peers.clone(),
        me,
    });
    // Connections handed over by other workers are started by a task of their own, so that they
    // never wait behind this worker's wait for a slot (they bring theirs).
    if let Some(mut inbox) = inbox {
        let worker = worker.clone();
        tokio::spawn(async move {
            while let Some(handoff) = inbox.recv().await {
                match tokio::net::TcpStream::from_std(handoff.stream) {
                    Ok(stream) => worker.start(stream, handoff.peer, handoff.slot),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot take over a connection");
                        if let Some(peers) = &worker.peers {
                            peers.done(worker.me);
                        }
                    }
                }
            }
        });
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually EMFILE/ENFILE: back off instead of spinning, keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The slot is taken after `accept`: a worker waiting for a slot holds one accepted
        // connection and its backlog waits behind it. (Taken before, an idle worker would sit on
        // a slot while the connections the kernel gave another worker could not be served.)
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        match &peers {
            Some(peers) => {
                if let Some((stream, peer, slot)) = peers.dispatch(me, stream, peer, slot) {
                    worker.start(stream, peer, slot);
                } // else: handed to a less loaded worker
            }
            None => worker.start(stream, peer, slot),
        }
    }
    if let Some(peers) = &peers {
        peers.stop(me);
    }
    drop(listener);
    // Every worker drains; one says so.
    if me == 0 {
        tracing::info!("shutting down: waiting for in-flight requests");
    }
    let _ = drain.send(true);
    if tokio::time::timeout(limits.shutdown_grace, worker.connections.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period elapsed with connections still open");
    }
}

/// What every connection of one worker shares.
struct Worker {
    live: Arc<Live>,
    tls: Option<Arc<TlsListener>>,
    builders: Builders,
    limits: LimitsConfig,
    draining: tokio::sync::watch::Receiver<bool>,
    connections: Connections,
    peers: Option<Arc<Peers>>,
    me: usize,
}

/// The connections a worker is serving, for the drain at shutdown.
#[derive(Default)]
struct Connections {
    open: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
}

impl Connections {
    async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one connection for the drain and, with balancing, against its worker's load.
struct ConnectionGuard {
    worker: Arc<Worker>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let worker = &self.worker;
        if let Some(peers) = &worker.peers {
            peers.done(worker.me);
        }
        let connections = &worker.connections;
        if connections
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            connections.closed.notify_waiters();
        }
    }
}

impl Worker {
    /// Serves one accepted connection on this thread, to its end. Its load was already counted.
    fn start(
        self: &Arc<Worker>,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        self.connections
            .open
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let guard = ConnectionGuard {
            worker: self.clone(),
        };
        let _ = stream.set_nodelay(true);
        let worker = self.clone();
        let client = Arc::new(ClientInfo::new(peer, worker.tls.is_some()));
        let live = worker.live.clone();
        let tls = worker.tls.clone();
        let limits = worker.limits;
        let mut draining = worker.draining.clone();
        let task = async move {
            let _slot = slot;
            let _guard = guard;
            let builders = &worker.builders;
            let open = live.metrics().open_connections.clone();
            let parked = live.metrics().parked_connections.clone();
            open.inc();
            let hsts = tls.as_ref().and_then(|tls| tls.hsts.clone());
            // HTTP/1.1 connections, plain or TLS, park between requests (src/runtime/keepalive.rs);
            // HTTP/2 ones (h2c, or h2 by ALPN) keep hyper's state for their lifetime.
            let state = ConnState::new();
            // One request through the gateway; the service of either protocol calls it.
            let call = {
                let state = state.clone();
                move |request: http::Request<hyper::body::Incoming>| {
                    let in_flight = InFlight::start(&state);
                    let body_guard = (!http_body::Body::is_end_stream(request.body()))
                        .then(|| BodyGuard::start(&state));
                    // The gateway of the moment; the request keeps it even if a reload happens.
                    serve_request(
                        live.gateway(),
                        request,
                        client.clone(),
                        body_guard,
                        hsts.clone(),
                        in_flight,
                    )
                }
            };
            let protocol = match tls {
                None => match first_bytes(&stream, limits.keepalive(), &mut draining).await {
                    FirstBytes::Http1 => Protocol::Http1(ClientStream::Plain(IdleTimeout::new(
                        stream,
                        limits.idle_timeout,
                    ))),
                    FirstBytes::MaybeHttp2 => Protocol::Http2(ClientStream::Plain(
                        IdleTimeout::new(stream, limits.idle_timeout),
                    )),
                    FirstBytes::None => Protocol::Closed,
                },
                Some(tls) => {
                    let stream = IdleTimeout::new(stream, limits.idle_timeout);
                    // The TLS handshake (src/runtime/tls.rs); a failed one ends here. Boxed: its state
                    // is large and gone once it is done. Then ALPN decides.
                    let timeout = limits.header_read_timeout;
                    match Box::pin(crate::runtime::tls::accept(
                        Some(&tls),
                        stream,
                        timeout,
                        peer,
                    ))
                    .await
                    {
                        Some(io) if io.negotiated_h2() => Protocol::Http2(io),
                        Some(io) => Protocol::Http1(io),
                        None => Protocol::Closed,
                    }
                }
            };
            let outcome = match protocol {
                Protocol::Http1(io) => keepalive::serve(
                    io,
                    &builders.http1,
                    service_fn(call),
                    state,
                    limits.keepalive(),
                    &parked,
                    &mut draining,
                )
                .await
                .map_err(Into::into),
                // Boxed: h2 state is large and most connections never need it.
                Protocol::Http2(io) => {
                    // Each stream's request future boxed: hyper spawns it as a task of its own,
                    // moving it several times on the way, and a pointer moves for less than the
                    // future (HTTP/1.1 polls it in place, and keeps it inline).
                    let service = service_fn(move |request| Box::pin(call(request)));
                    let io = TokioIo::new(io);
                    let idle = IdleStreams {
                        state,
                        limit: limits.idle_timeout,
                    };
                    Box::pin(serve_auto(&builders.auto, io, service, idle, &mut draining)).await
                }
                Protocol::Closed => Ok(()),
            };
            if let Err(err) = outcome {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            open.dec();
            crate::runtime::memory::connection_closed();
        };
        tokio::spawn(task);
    }
}

/// What a new connection speaks, once its first bytes (plain) or its TLS handshake are in.
enum Protocol {
    /// HTTP/1.1, plain or over TLS: served by the keep-alive loop, parking between requests.
    Http1(keepalive::Stream),
    /// HTTP/2 by ALPN, or a plain connection that starts like the h2c preface (hyper-util's auto
    /// builder decides): hyper keeps its state for the connection's life.
    Http2(keepalive::Stream),
    /// Closed, idle too long, a failed handshake, or the gateway is draining.
    Closed,
}

struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
}
