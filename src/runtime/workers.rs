//! The serving threads: one listening socket of an `SO_REUSEPORT` group and one single-threaded runtime per worker, placed on CPUs by `placement`.

use crate::runtime::handoff::Balance;
use crate::runtime::handoff::Peers;
use crate::runtime::live::Live;
use crate::runtime::placement::Placement;
use crate::runtime::server::{connection_slots, serve_with};
use crate::runtime::tls::TlsListener;
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;

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
