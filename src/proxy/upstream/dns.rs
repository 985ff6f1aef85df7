//! The backend's addresses: looked up off the request path, and kept when DNS fails.
//!
//! Looking the upstream's name up for every new connection puts the DNS server on the request
//! path: a resolver that stalls (a container network's DNS while containers restart, a cluster
//! DNS under load) turns into connect timeouts and 502s while the backend itself is up. As HAProxy
//! (`hold valid`, `init-addr last`) and Envoy (a STRICT_DNS cluster keeps its hosts when a refresh
//! fails) do, the last good answer is kept and used while a new lookup is late or fails:
//! - before a new connection, the name is looked up again when the answer is older than
//!   [`REFRESH_AFTER`], or when a connect to it failed (the backend may have moved);
//! - one lookup runs at a time; a connection that has a last answer waits at most [`FRESH_WAIT`]
//!   for it, then uses the last answer; one with none waits up to its own deadline;
//! - after a failed lookup the next one starts no sooner than [`RETRY_AFTER_FAILURE`], so a dead
//!   resolver costs no wait per connection;
//! - an IP literal is never looked up.
//!
//! Lookups and connections made with a kept answer are counted in `/metrics`
//! (`authgate_upstream_dns_lookups_total`, `authgate_upstream_dns_stale_total`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::Name;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::metrics::{Metrics, ResultLabels};

/// An answer older than this is refreshed before the next new connection.
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(5);
/// How long a new connection that has a last answer waits for a fresher one.
pub(crate) const FRESH_WAIT: Duration = Duration::from_millis(250);
/// After a failed lookup, connections use the last answer without waiting for this long.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// What one lookup found.
pub(crate) type LookupResult = Result<Vec<SocketAddr>, String>;
type LookupFuture = Pin<Box<dyn Future<Output = LookupResult> + Send>>;
/// Looks a name up: the system resolver in the gateway, something else in unit tests.
type Lookup = Arc<dyn Fn(String, u16) -> LookupFuture + Send + Sync>;

/// The addresses of one upstream host.
pub(crate) struct UpstreamAddresses {
    host: String,
    port: u16,
    /// Set for an IP literal: the only address, never looked up.
    literal: Option<Arc<[SocketAddr]>>,
    state: Mutex<State>,
    looked_up: Notify,
    lookup: Lookup,
    metrics: Option<Arc<Metrics>>,
}

struct State {
    known: Option<Arc<[SocketAddr]>>,
    /// When the next new connection should look the name up first.
    due: Instant,
    looking_up: bool,
    /// Completed lookups, successful or not: tells a waiter whether its lookup finished.
    generation: u64,
    /// The last lookup failed: logged once, when it starts failing and when it recovers.
    failing: bool,
    /// Why the last lookup failed, for the error of a connection that has no address at all.
    last_error: Option<String>,
}

/// Why no address could be had.
#[derive(Debug)]
pub(crate) enum NoAddress {
    /// The lookup failed and no earlier answer is known.
    LookupFailed(String),
    /// No answer within the caller's deadline, and no earlier answer is known.
    TimedOut,
}

impl std::fmt::Display for NoAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAddress::LookupFailed(why) => write!(f, "DNS lookup failed: {why}"),
            NoAddress::TimedOut => f.write_str("DNS lookup did not answer in time"),
        }
    }
}

impl std::error::Error for NoAddress {}

impl UpstreamAddresses {
    /// `host` without brackets (`::1`, not `[::1]`).
    pub(crate) fn new(host: &str, port: u16, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Self::with_lookup(host, port, metrics, Arc::new(system_lookup))
    }

    pub(crate) fn with_lookup(
        host: &str,
        port: u16,
        metrics: Option<Arc<Metrics>>,
        lookup: Lookup,
    ) -> Arc<Self> {
        let literal = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| Arc::from([SocketAddr::new(ip, port)]));
        Arc::new(UpstreamAddresses {
            host: host.to_string(),
            port,
            literal,
            state: Mutex::new(State {
                known: None,
                due: Instant::now(),
                looking_up: false,
                generation: 0,
                failing: false,
                last_error: None,
            }),
            looked_up: Notify::new(),
            lookup,
            metrics,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a few plain fields updated in one step each: usable after a panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The addresses to connect to now, by `deadline` at the latest.
    pub(crate) async fn get(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Arc<[SocketAddr]>, NoAddress> {
        if let Some(literal) = &self.literal {
            return Ok(literal.clone());
        }
        let looked_up = self.looked_up.notified();
        tokio::pin!(looked_up);
        looked_up.as_mut().enable();
        let now = Instant::now();
        let (known, generation) = {
            let mut state = self.state();
            if now < state.due {
                if let Some(known) = &state.known {
                    if state.failing {
                        self.count_stale();
                    }
                    return Ok(known.clone());
                }
            }
            if now >= state.due || state.known.is_none() {
                self.start_lookup(&mut state);
            }
            (state.known.clone(), state.generation)
        };
        let wait_until = match &known {
            Some(_) => deadline.min(now + FRESH_WAIT),
            None => deadline,
        };
        let finished = tokio::time::timeout_at(wait_until, looked_up).await.is_ok();
        let state = self.state();
        match &state.known {
            Some(addresses) => {
                if !finished || state.generation == generation || state.failing {
                    self.count_stale();
                }
                Ok(addresses.clone())
            }
            None if finished && state.generation != generation => Err(NoAddress::LookupFailed(
                state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no answer".to_string()),
            )),
            None => Err(NoAddress::TimedOut),
        }
    }

    /// Whether a new connection has an address to go to; when none is known yet, starts a lookup
    /// (if none runs). For readiness: a replica that cannot find its backend takes no traffic.
    pub(crate) fn known_or_look_up(self: &Arc<Self>) -> bool {
        if self.literal.is_some() {
            return true;
        }
        let mut state = self.state();
        if state.known.is_some() {
            return true;
        }
        self.start_lookup(&mut state);
        false
    }

    /// A connect to the known addresses failed: look the name up again before the next one.
    pub(crate) fn connect_failed(&self) {
        if self.literal.is_none() {
            let mut state = self.state();
            if !state.failing {
                state.due = Instant::now();
            }
        }
    }

    /// Starts a lookup unless one runs (`state` is this one's, locked).
    fn start_lookup(self: &Arc<Self>, state: &mut State) {
        if !state.looking_up {
            state.looking_up = true;
            tokio::spawn(self.clone().look_up());
        }
    }

    async fn look_up(self: Arc<Self>) {
        // Ends the lookup however the task ends: a task dropped with its runtime must not leave
        // `looking_up` set, or no lookup would ever start again.
        let _in_flight = LookupInFlight(self.clone());
        let result = (self.lookup)(self.host.clone(), self.port).await;
        let result = match result {
            Ok(addresses) if addresses.is_empty() => Err("the name has no address".to_string()),
            other => other,
        };
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        if let Some(metrics) = &self.metrics {
            metrics
                .upstream_dns_lookups
                .get_or_create(&ResultLabels { result: outcome })
                .inc();
        }
        {
            let mut state = self.state();
            let now = Instant::now();
            state.generation = state.generation.wrapping_add(1);
            match result {
                Ok(addresses) => {
                    if state.failing {
                        tracing::info!(host = %self.host, "upstream DNS lookups answer again");
                    }
                    state.failing = false;
                    state.last_error = None;
                    state.known = Some(addresses.into());
                    state.due = now + REFRESH_AFTER;
                }
                Err(why) => {
                    if !state.failing {
                        match &state.known {
                            Some(known) => tracing::warn!(
                                host = %self.host,
                                error = %why,
                                addresses = known.len(),
                                "upstream DNS lookup failed; new connections use the last known addresses until it answers"
                            ),
                            None => tracing::warn!(
                                host = %self.host,
                                error = %why,
                                "upstream DNS lookup failed and no address is known: requests get 502 until it answers"
                            ),
                        }
                    }
                    state.failing = true;
                    state.last_error = Some(why);
                    state.due = now + RETRY_AFTER_FAILURE;
                }
            }
        }
    }

    fn count_stale(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.upstream_dns_stale.inc();
        }
    }
}

/// A running lookup; dropped when it ends, finished or not: lets the next one start and wakes
/// the connections waiting for it.
struct LookupInFlight(Arc<UpstreamAddresses>);

impl Drop for LookupInFlight {
    fn drop(&mut self) {
        self.0.state().looking_up = false;
        self.0.looked_up.notify_waiters();
    }
}

fn system_lookup(host: String, port: u16) -> LookupFuture {
    Box::pin(async move {
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|addresses| addresses.collect())
            .map_err(|err| err.to_string())
    })
}

/// The same addresses for hyper's connector (WebSocket upgrades): it dials only this upstream.
#[derive(Clone)]
pub(crate) struct CachedResolver {
    pub(crate) addresses: Arc<UpstreamAddresses>,
    /// How long a connection may wait for its first answer.
    pub(crate) wait: Duration,
}

/// The known addresses, one by one, as hyper's connector takes them.
pub(crate) struct KnownAddresses {
    addresses: Arc<[SocketAddr]>,
    next: usize,
}

impl Iterator for KnownAddresses {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        let address = self.addresses.get(self.next).copied();
        self.next += 1;
        address
    }
}

impl tower_service::Service<Name> for CachedResolver {
    type Response = KnownAddresses;
    type Error = NoAddress;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, NoAddress>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), NoAddress>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        let addresses = self.addresses.clone();
        let deadline = Instant::now() + self.wait;
        Box::pin(async move {
            let found = addresses.get(deadline).await?;
            Ok(KnownAddresses {
                addresses: found,
                next: 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose answers the test sets: Some(list) answers, None fails, and `stall` makes
    /// a lookup take that long.
    struct Script {
        answer: Mutex<Option<Vec<SocketAddr>>>,
        stall: Mutex<Duration>,
        calls: AtomicUsize,
    }

    fn scripted(script: &Arc<Script>) -> Lookup {
        let script = script.clone();
        Arc::new(move |_host, _port| {
            let script = script.clone();
            Box::pin(async move {
                script.calls.fetch_add(1, Ordering::SeqCst);
                let stall = *script.stall.lock().unwrap();
                tokio::time::sleep(stall).await;
                script
                    .answer
                    .lock()
                    .unwrap()
                    .clone()
                    .ok_or_else(|| "SERVFAIL".to_string())
            })
        })
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 8000))
    }

    fn script(answer: Option<Vec<SocketAddr>>) -> Arc<Script> {
        Arc::new(Script {
            answer: Mutex::new(answer),
            stall: Mutex::new(Duration::ZERO),
            calls: AtomicUsize::new(0),
        })
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[tokio::test(start_paused = true)]
    async fn an_ip_literal_is_never_looked_up() {
        let s = script(None);
        let addresses = UpstreamAddresses::with_lookup("127.0.0.1", 9, None, scripted(&s));
        assert_eq!(
            &*addresses.get(soon()).await.unwrap(),
            &[SocketAddr::from(([127, 0, 0, 1], 9))]
        );
        let v6 = UpstreamAddresses::with_lookup("::1", 9, None, scripted(&s));
        assert_eq!(v6.get(soon()).await.unwrap()[0].ip().to_string(), "::1");
        assert_eq!(s.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_reused_until_it_is_due_then_refreshed() {
        let s = script(Some(vec![addr(1)]));
        let addresses = UpstreamAddresses::with_lookup("backend", 8000, None, scripted(&s));
        for _ in 0..10 {
            assert_eq!(&*addresses.get(soon()).await.unwrap(), &[addr(1)]);
        }
        assert_eq!(
            s.calls.load(Ordering::SeqCst),
            1,
            "one lookup for ten connections"
        );
        *s.answer.lock().unwrap() = Some(vec![addr(2)]);
        tokio::time::advance(REFRESH_AFTER).await;
        assert_eq!(
            &*addresses.get(soon()).await.unwrap(),
            &[addr(2)],
            "a due answer is refreshed first"
        );
        assert_eq!(s.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_resolver_keeps_the_last_answer_without_a_wait_per_connection() {
        let metrics = Metrics::new();
        let s = script(Some(vec![addr(1)]));
        let addresses =
            UpstreamAddresses::with_lookup("backend", 8000, Some(metrics.clone()), scripted(&s));
        addresses.get(soon()).await.unwrap();
        *s.answer.lock().unwrap() = None;
        tokio::time::advance(REFRESH_AFTER).await;
        assert_eq!(
            &*addresses.get(soon()).await.unwrap(),
            &[addr(1)],
            "failed lookup: last answer"
        );
        // Within RETRY_AFTER_FAILURE no lookup and no wait.
        let before = Instant::now();
        for _ in 0..5 {
            assert_eq!(&*addresses.get(soon()).await.unwrap(), &[addr(1)]);
        }
        assert_eq!(Instant::now(), before, "no connection waited");
        assert_eq!(s.calls.load(Ordering::SeqCst), 2);
        let text = metrics.render();
        assert!(
            text.contains("authgate_upstream_dns_lookups_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("authgate_upstream_dns_lookups_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("authgate_upstream_dns_stale_total 6"),
            "{text}"
        );
        // It answers again: the new answer is used.
        *s.answer.lock().unwrap() = Some(vec![addr(3)]);
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        assert_eq!(&*addresses.get(soon()).await.unwrap(), &[addr(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_resolver_costs_a_known_backend_at_most_the_fresh_wait() {
        let s = script(Some(vec![addr(1)]));
        let addresses = UpstreamAddresses::with_lookup("backend", 8000, None, scripted(&s));
        addresses.get(soon()).await.unwrap();
        *s.stall.lock().unwrap() = Duration::from_secs(15);
        *s.answer.lock().unwrap() = Some(vec![addr(2)]);
        tokio::time::advance(REFRESH_AFTER).await;
        let before = Instant::now();
        assert_eq!(&*addresses.get(soon()).await.unwrap(), &[addr(1)]);
        assert_eq!(Instant::now() - before, FRESH_WAIT);
        // The stalled lookup is the only one: more connections do not start more.
        for _ in 0..5 {
            addresses.get(soon()).await.unwrap();
        }
        assert_eq!(s.calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(15)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            &*addresses.get(soon()).await.unwrap(),
            &[addr(2)],
            "its answer lands"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_answer_yet_a_connection_waits_until_its_deadline_and_no_longer() {
        let s = script(Some(vec![addr(1)]));
        *s.stall.lock().unwrap() = Duration::from_secs(30);
        let addresses = UpstreamAddresses::with_lookup("backend", 8000, None, scripted(&s));
        let before = Instant::now();
        let err = addresses
            .get(before + Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, NoAddress::TimedOut), "{err}");
        assert_eq!(Instant::now() - before, Duration::from_secs(2));
        let failing = script(None);
        let addresses = UpstreamAddresses::with_lookup("backend", 8000, None, scripted(&failing));
        let err = addresses.get(soon()).await.unwrap_err();
        assert!(err.to_string().contains("DNS lookup failed"), "{err}");
    }

    #[test]
    fn a_lookup_dropped_with_its_runtime_does_not_stop_the_next_one() {
        let s = script(Some(vec![addr(1)]));
        *s.stall.lock().unwrap() = Duration::from_secs(3600);
        let addresses = UpstreamAddresses::with_lookup("backend", 8000, None, scripted(&s));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let err = first
            .block_on(addresses.get(Instant::now() + Duration::from_secs(1)))
            .unwrap_err();
        assert!(matches!(err, NoAddress::TimedOut), "{err}");
        drop(first);
        *s.stall.lock().unwrap() = Duration::ZERO;
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let found = second
            .block_on(addresses.get(Instant::now() + Duration::from_secs(2)))
            .unwrap();
        assert_eq!(&*found, &[addr(1)]);
        assert_eq!(s.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_makes_the_next_connection_look_up_again() {
        let s = script(Some(vec![addr(1)]));
        let addresses = UpstreamAddresses::with_lookup("backend", 8000, None, scripted(&s));
        addresses.get(soon()).await.unwrap();
        *s.answer.lock().unwrap() = Some(vec![addr(2)]);
        addresses.connect_failed();
        assert_eq!(&*addresses.get(soon()).await.unwrap(), &[addr(2)]);
        assert_eq!(s.calls.load(Ordering::SeqCst), 2);
    }
}
