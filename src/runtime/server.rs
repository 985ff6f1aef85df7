//! Listeners and connections: accept TCP, optionally terminate TLS (src/tls.rs), speak HTTP/1.1
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
//! upstream pool is per thread, src/upstream/) and the response. No task migrates and no wake-up
//! crosses threads on the request path, which is what a work-stealing runtime spends its time on
//! when every request is two short socket exchanges.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::core::io::IdleTimeout;
use crate::request::headers::ClientInfo;
use crate::runtime::keepalive::{self, drained, BodyGuard, ConnState, InFlight};
use crate::runtime::live::Live;
use crate::runtime::placement::Placement;
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
/// (src/keepalive.rs); the same settings as `connection_builder`'s HTTP/1 half.
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

/// `serve` with TLS on every connection (src/tls.rs): the handshake must finish within
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
fn connection_slots(live: &Live) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(
        live.gateway().server_limits().max_connections,
    ))
}

/// The serving threads started by `spawn_workers`.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Waits until every worker has drained its connections and stopped.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// Spreads connections over the workers by how many each serves. `SO_REUSEPORT` picks a worker
/// by a hash of the peer's address and port, so the split of a few dozen connections varies from
/// run to run, and the busier worker's clients get the longer tail latency (p99 at 32
/// connections went from 0.89-1.71x HAProxy's to 0.81-0.97x with this); so the worker that accepted a connection hands it to the least loaded worker when
/// that one serves fewer, as HAProxy's listeners do. A handoff costs one channel message per
/// connection, never per request.
struct Peers {
    load: Box<[std::sync::atomic::AtomicUsize]>,
    inboxes: Box<[tokio::sync::mpsc::UnboundedSender<Handoff>]>,
}

struct Balance {
    me: usize,
    peers: Arc<Peers>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

struct Handoff {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
}

type Accepted = (
    tokio::net::TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
);

impl Peers {
    /// One entry and one inbox per worker; none for a single worker.
    #[allow(clippy::type_complexity)]
    fn new(
        workers: usize,
    ) -> (
        Option<Arc<Peers>>,
        Vec<tokio::sync::mpsc::UnboundedReceiver<Handoff>>,
    ) {
        if workers < 2 {
            return (None, Vec::new());
        }
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let peers = Peers {
            load: (0..workers).map(|_| Default::default()).collect(),
            inboxes: senders.into(),
        };
        (Some(Arc::new(peers)), receivers)
    }

    /// Counts the connection against the worker that will serve it, and returns it if that is
    /// `me`; otherwise it is on its way to that worker.
    fn dispatch(
        &self,
        me: usize,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<Accepted> {
        use std::sync::atomic::Ordering::Relaxed;
        let mine = self.load[me].load(Relaxed);
        let (target, least) = self
            .load
            .iter()
            .map(|load| load.load(Relaxed))
            .enumerate()
            .min_by_key(|&(_, load)| load)
            .unwrap_or((me, mine));
        // Ties stay here: a handoff only pays when another worker serves fewer.
        if least >= mine {
            self.load[me].fetch_add(1, Relaxed);
            return Some((stream, peer, slot));
        }
        let Ok(stream) = stream.into_std() else {
            return None; // could not detach it: the connection is dropped (closed)
        };
        self.load[target].fetch_add(1, Relaxed);
        let handoff = Handoff { stream, peer, slot };
        match self.inboxes[target].send(handoff) {
            Ok(()) => None,
            Err(returned) => {
                // That worker has stopped: serve it here after all.
                self.load[target].fetch_sub(1, Relaxed);
                let Handoff { stream, peer, slot } = returned.0;
                let stream = tokio::net::TcpStream::from_std(stream).ok()?;
                self.load[me].fetch_add(1, Relaxed);
                Some((stream, peer, slot))
            }
        }
    }

    fn done(&self, worker: usize) {
        self.load[worker].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A worker that stopped accepting gets no more handoffs: its load goes out of reach.
    fn stop(&self, worker: usize) {
        self.load[worker].fetch_add(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Binds `workers` listening sockets to `address`, one per worker, in one `SO_REUSEPORT` group:
/// the kernel spreads new connections over them by a hash of the peer's address and port. (One
/// shared socket would let whichever worker wakes first accept a whole burst of connections and
/// leave the others idle.) A plain bind is tried first, so that an address already in use, by
/// another authgate too, is an error rather than a silently shared port.
pub fn bind_workers(
    address: std::net::SocketAddr,
    workers: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let address = std::net::TcpListener::bind(address)?.local_addr()?;
    let mut listeners = Vec::with_capacity(workers.max(1));
    for _ in 0..workers.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(1024)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// Serves `listeners` (plain, or TLS when `tls` is set; from `bind_workers`) on one thread each,
/// each thread with its own single-threaded runtime. When `stop` turns true every worker stops
/// accepting and drains as `serve` does.
///
/// Runtimes and listener registrations are made here, before any thread starts, so that a
/// failure is returned to the caller instead of killing a thread.
pub fn spawn_workers(
    listeners: Vec<std::net::TcpListener>,
    live: Arc<Live>,
    tls: Option<Arc<TlsListener>>,
    stop: tokio::sync::watch::Receiver<bool>,
    pin_workers: bool,
) -> io::Result<Workers> {
    let slots = connection_slots(&live);
    let placement = Placement::plan(pin_workers, listeners.len());
    let mut prepared = Vec::with_capacity(listeners.len());
    for listener in listeners {
        listener.set_nonblocking(true)?;
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        if let Some(unbind) = placement.unbind_started_threads() {
            builder.on_thread_start(unbind);
        }
        let runtime = builder.build()?;
        let own = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        prepared.push((runtime, own));
    }
    let (peers, inboxes) = Peers::new(prepared.len());
    let mut inboxes = inboxes.into_iter();
    let mut threads = Vec::with_capacity(prepared.len());
    for (index, (runtime, own)) in prepared.into_iter().enumerate() {
        let live = live.clone();
        let tls = tls.clone();
        let slots = slots.clone();
        let balance = match (&peers, inboxes.next()) {
            (Some(peers), Some(inbox)) => Some(Balance {
                me: index,
                peers: peers.clone(),
                inbox,
            }),
            _ => None,
        };
        let mut stop = stop.clone();
        let cpu = placement.cpu_for(index);
        let thread = std::thread::Builder::new()
            .name(format!("authgate-worker-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    Placement::bind_current_thread(index, cpu);
                }
                runtime.block_on(async move {
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    serve_with(own, live, tls, slots, balance, stopped).await
                })
            })?;
        threads.push(thread);
    }
    Ok(Workers { threads })
}

async fn serve_with(
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
    tracing::info!("shutting down: waiting for in-flight requests");
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
            // HTTP/1.1 connections, plain or TLS, park between requests (src/keepalive.rs);
            // HTTP/2 ones (h2c, or h2 by ALPN) keep hyper's state for their lifetime.
            let state = ConnState::new();
            let service = {
                let state = state.clone();
                service_fn(move |request: http::Request<hyper::body::Incoming>| {
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
                })
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
                    // The TLS handshake (src/tls.rs); a failed one ends here. Boxed: its state
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
                    service,
                    state,
                    limits.keepalive(),
                    &parked,
                    &mut draining,
                )
                .await
                .map_err(Into::into),
                // Boxed: h2 state is large and most connections never need it.
                Protocol::Http2(io) => {
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

/// The HTTP/2 connection preface; a plain connection that starts with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum FirstBytes {
    Http1,
    /// Starts like the h2 preface (or is too short to tell): hyper-util's auto builder decides.
    MaybeHttp2,
    /// Closed, idle too long, or the gateway is draining: nothing to serve.
    None,
}

/// Waits (without a buffer) for a new plain connection's first bytes and peeks at them to choose
/// the protocol. A client that sends nothing within `wait` is closed, as an idle keep-alive one is.
async fn first_bytes(
    stream: &tokio::net::TcpStream,
    wait: Duration,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> FirstBytes {
    let mut head = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        biased;
        () = drained(draining) => return FirstBytes::None,
        peeked = tokio::time::timeout(wait, stream.peek(&mut head)) => peeked,
    };
    match peeked {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => FirstBytes::None,
        Ok(Ok(n)) if H2_PREFACE.starts_with(&head[..n]) => FirstBytes::MaybeHttp2,
        Ok(Ok(_)) => FirstBytes::Http1,
    }
}

/// The idle rule of a connection served by the auto builder (HTTP/2): idle means, for `limit`,
/// no request waiting for its response head, none started or finished, and no response moving
/// (a response the client's flow control holds shut is as good as idle). Bytes are no measure
/// here: HTTP/2 PINGs (the gateway's own keep-alive, or a client's) would keep an unused or
/// stalled connection, its connection slot and its backend connection, forever.
struct IdleStreams {
    state: Arc<ConnState>,
    limit: Duration,
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
async fn serve_auto<I, S, B>(
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    async fn accepted(
        listener: &TcpListener,
        slots: &Arc<Semaphore>,
    ) -> (
        tokio::net::TcpStream,
        std::net::SocketAddr,
        tokio::sync::OwnedSemaphorePermit,
        tokio::net::TcpStream,
    ) {
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let slot = slots.clone().acquire_owned().await.unwrap();
        (stream, peer, slot, client)
    }

    #[tokio::test]
    async fn new_connections_go_to_the_least_loaded_worker() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slots = Arc::new(Semaphore::new(10));
        let (peers, mut inboxes) = Peers::new(2);
        let peers = peers.expect("two workers balance");
        peers.load[0].store(2, Relaxed);

        // Worker 0 serves 2, worker 1 none: worker 1 gets it, with its slot.
        let (stream, peer, slot, _client) = accepted(&listener, &slots).await;
        assert!(peers.dispatch(0, stream, peer, slot).is_none());
        let handoff = inboxes[1]
            .try_recv()
            .expect("worker 1 received the connection");
        assert_eq!(handoff.peer, peer);
        assert_eq!(slots.available_permits(), 9, "the slot travels with it");
        assert_eq!(
            (peers.load[0].load(Relaxed), peers.load[1].load(Relaxed)),
            (2, 1)
        );

        // 2 against 1: worker 1 again. Then level (2, 2): worker 0 keeps its own.
        let (stream, peer, slot, _client2) = accepted(&listener, &slots).await;
        assert!(peers.dispatch(0, stream, peer, slot).is_none());
        assert!(inboxes[1].try_recv().is_ok());
        let (stream, peer, slot, _client3) = accepted(&listener, &slots).await;
        let here = peers.dispatch(0, stream, peer, slot).expect("served here");
        assert_eq!(here.1, peer);
        assert_eq!(
            (peers.load[0].load(Relaxed), peers.load[1].load(Relaxed)),
            (3, 2)
        );

        // A stopped worker's share comes back to the sender.
        drop(inboxes.pop());
        peers.load[1].store(0, Relaxed);
        let (stream, peer, slot, _client4) = accepted(&listener, &slots).await;
        assert!(peers.dispatch(0, stream, peer, slot).is_some());
        assert_eq!(
            (peers.load[0].load(Relaxed), peers.load[1].load(Relaxed)),
            (4, 0)
        );
        peers.done(0);
        assert_eq!(peers.load[0].load(Relaxed), 3);
    }

    #[test]
    fn a_single_worker_does_not_balance() {
        let (peers, inboxes) = Peers::new(1);
        assert!(peers.is_none() && inboxes.is_empty());
    }
}
