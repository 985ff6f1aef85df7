//! The shared store: rate-limit decisions in Redis, so a quota holds across replicas.
//!
//! Why redis-rs (`redis`) with `tokio-comp` and `connection-manager`: it is the maintained Redis
//! client for tokio; its multiplexed connection pipelines every concurrent request on one socket,
//! so no pool is needed and a decision costs one round trip; `ConnectionManager` reconnects on its
//! own after Redis restarts; `Script` runs by EVALSHA and loads the script again on NOSCRIPT (after
//! a restart or `SCRIPT FLUSH`). `tokio-rustls-comp` gives `rediss://` over rustls with this
//! process's provider (ring), and nothing else: no native TLS, no second provider.
//!
//! Each decision is one GCRA step in a Lua script that reads the time from Redis (`TIME`), so clock
//! skew between replicas cannot change a quota, and sets the key to expire when its bucket is full
//! again, so memory stays bounded by the keys active in one period.
//!
//! Failure is bounded and explicit: every operation waits at most `op_timeout`; after
//! `breaker_failures` failures in a row the circuit breaker opens and requests skip the store for
//! `breaker_open`, then one request (or the background probe) tries it again. The connection is
//! replaced when the breaker opens, so a connection that went silent (a frozen server, a dropped
//! route) is not waited on forever. State changes are logged once each; every operation is counted.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thread_local::ThreadLocal;

use crate::config::StoreConfig;
use crate::core::metrics::Metrics;
use crate::request::ratelimit::{GcraStep, SharedAnswer, SharedLimits, StoreFailure, StoreFuture};

/// One GCRA step. KEYS[1] is the bucket; ARGV: burst, the emission interval in microseconds, and
/// `1` to count the request or `0` only to look. The bucket holds its theoretical arrival time
/// (TAT) in microseconds of Redis time. Replies `{allowed, remaining, microseconds}`: until the
/// bucket is full again when allowed, until the next cell when not.
///
/// The TAT is written with `%.0f` because Lua turns a number into a string with 14 significant
/// digits, which would round a microsecond timestamp.
const GCRA_SCRIPT: &str = r"
local burst = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local new_tat = tat + interval
local latest = now + burst * interval
if new_tat > latest then
  return {0, 0, new_tat - latest}
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return {1, math.floor((latest - new_tat) / interval), new_tat - now}
";

/// How long establishing a connection may take; requests never wait for it longer than
/// `op_timeout`, this only bounds the background attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisStore {
    settings: StoreConfig,
    client: redis::Client,
    /// One connection per serving thread, made on first use there, so its driver runs on the
    /// thread whose requests it carries (no hop to another thread and back per decision); each
    /// still multiplexes that thread's concurrent requests. Dropped when the breaker opens.
    connections: ThreadLocal<ArcSwapOption<ConnectionManager>>,
    script: redis::Script,
    breaker: Breaker,
    /// Whether the last operation got an answer, for `/readyz`.
    last_ok: AtomicBool,
    metrics: Arc<Metrics>,
    probe_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(task) = &self.probe_task {
            task.abort();
        }
    }
}

/// The store's state, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// The last operation was answered.
    Up,
    /// The last operation failed, or none has been answered yet.
    Down,
    /// Failures in a row opened the breaker: requests skip the store.
    CircuitOpen,
}

impl StoreState {
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Up => "up",
            StoreState::Down => "down",
            StoreState::CircuitOpen => "circuit_open",
        }
    }
}

impl RedisStore {
    /// A store for `settings`; connects lazily. Inside a runtime it also starts the probe that
    /// finds out the store's state without waiting for traffic, and closes the breaker when the
    /// store answers again.
    pub fn new(settings: &StoreConfig, metrics: Arc<Metrics>) -> Result<Arc<RedisStore>, String> {
        crate::core::tls::install_default_provider();
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.redis_url.as_str())
            .map_err(|err| format!("store.redis_url: {err}"))?;
        if let Some(password) = &settings.password {
            let password = String::from_utf8_lossy(&password.0).into_owned();
            let redis_settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis_settings);
        }
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|err| format!("store.redis_url: {err}"))?;
        let store = Arc::new_cyclic(|weak: &Weak<RedisStore>| {
            let probe_task = tokio::runtime::Handle::try_current()
                .ok()
                .map(|runtime| runtime.spawn(probe(weak.clone(), settings.breaker_open)));
            RedisStore {
                settings: settings.clone(),
                client,
                connections: ThreadLocal::new(),
                script: redis::Script::new(GCRA_SCRIPT),
                breaker: Breaker::new(settings.breaker_failures, settings.breaker_open),
                last_ok: AtomicBool::new(false),
                metrics,
                probe_task,
            }
        });
        tracing::info!(
            redis_url = %settings.redis_url,
            op_timeout = ?settings.op_timeout,
            on_error = settings.on_error.name(),
            "rate limits are shared through the store"
        );
        Ok(store)
    }

    /// The settings this store was built from: a reload keeps the store (and its connection)
    /// when they did not change.
    pub fn settings(&self) -> &StoreConfig {
        &self.settings
    }

    pub fn state(&self) -> StoreState {
        if self.breaker.is_open() {
            StoreState::CircuitOpen
        } else if self.last_ok.load(Ordering::Relaxed) {
            StoreState::Up
        } else {
            StoreState::Down
        }
    }

    fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let slot = self.connections.get_or_default();
        if let Some(connection) = slot.load_full() {
            return Ok((*connection).clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Requests are bounded by `op_timeout` here; the client's own would only duplicate it.
            .set_response_timeout(None);
        let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        slot.store(Some(Arc::new(connection.clone())));
        Ok(connection)
    }

    /// Runs one store command under the breaker and `op_timeout`, counting the outcome.
    async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, StoreFailure> {
        let probe = match self.breaker.admit() {
            Admission::Closed => None,
            Admission::Probe(guard) => Some(guard),
            Admission::Skip => {
                self.metrics.record_store_operation("circuit_open");
                return Err(StoreFailure::CircuitOpen);
            }
        };
        let started = Instant::now();
        let outcome = match self.connection() {
            Ok(mut connection) => {
                tokio::time::timeout(self.settings.op_timeout, operation(&mut connection)).await
            }
            Err(err) => Ok(Err(err)),
        };
        self.metrics
            .store_duration
            .observe(started.elapsed().as_secs_f64());
        let (failure, why) = match outcome {
            Ok(Ok(value)) => {
                self.last_ok.store(true, Ordering::Relaxed);
                if self.breaker.succeeded() {
                    self.metrics.store_up.set(1);
                    tracing::info!(
                        redis_url = %self.settings.redis_url,
                        "the shared store answers again; limits are shared across replicas"
                    );
                } else if self.metrics.store_up.get() == 0 {
                    self.metrics.store_up.set(1);
                }
                return Ok(value);
            }
            Ok(Err(err)) => (StoreFailure::Error, err.to_string()),
            Err(_) => (
                StoreFailure::Timeout,
                format!(
                    "no answer within op_timeout ({:?})",
                    self.settings.op_timeout
                ),
            ),
        };
        self.metrics.record_store_operation(match failure {
            StoreFailure::Timeout => "timeout",
            _ => "error",
        });
        self.last_ok.store(false, Ordering::Relaxed);
        if self.breaker.failed(probe) {
            self.metrics.store_up.set(0);
            // A fresh connection for the next probe: the old one may be silent rather than closed.
            for slot in self.connections.iter() {
                slot.store(None);
            }
            tracing::warn!(
                redis_url = %self.settings.redis_url,
                error = %why,
                on_error = self.settings.on_error.name(),
                retry_in = ?self.settings.breaker_open,
                "the shared store is not answering; limits follow on_error until it does"
            );
        } else {
            tracing::debug!(error = %why, "shared store operation failed");
        }
        Err(failure)
    }

    async fn step(
        &self,
        namespace: &str,
        id: &(dyn Display + Sync),
        step: GcraStep,
    ) -> Result<SharedAnswer, StoreFailure> {
        let key = format!("{}:{namespace}:{id}", self.settings.key_prefix);
        let interval = u64::try_from(step.interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(key);
        invocation
            .arg(step.burst)
            .arg(interval)
            .arg(u8::from(step.consume));
        let reply: (i64, i64, i64) = self
            .run(async |connection| invocation.invoke_async(connection).await)
            .await?;
        let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
        let answer = match reply {
            (1, remaining, reset) => SharedAnswer::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset: micros(reset),
            },
            (_, _, retry_after) => SharedAnswer::Limited {
                retry_after: micros(retry_after),
            },
        };
        self.metrics.record_store_operation(match answer {
            SharedAnswer::Allowed { .. } => "allowed",
            SharedAnswer::Limited { .. } => "limited",
        });
        Ok(answer)
    }

    async fn ping(&self) -> Result<(), StoreFailure> {
        self.run(async |connection| {
            redis::cmd("PING")
                .query_async::<String>(connection)
                .await
                .map(drop)
        })
        .await
    }
}

impl SharedLimits for RedisStore {
    fn gcra<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a (dyn Display + Sync),
        step: GcraStep,
    ) -> StoreFuture<'a> {
        Box::pin(self.step(namespace, id, step))
    }

    fn retry_after(&self) -> u64 {
        self.settings.breaker_open.as_secs().max(1)
    }
}

/// Learns the store's state at start, and while the breaker is open asks it again each time the
/// breaker would let a probe through, so the store recovers without waiting for a request.
async fn probe(store: Weak<RedisStore>, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    let mut first = true;
    loop {
        let Some(store) = store.upgrade() else { return };
        if first || store.breaker.is_open() {
            first = false;
            let _ = store.ping().await;
        }
        drop(store);
        tokio::time::sleep(every).await;
    }
}

enum Admission {
    Closed,
    /// The breaker is open and this request is the one that tries the store again.
    Probe(ProbeGuard),
    Skip,
}

/// Consecutive failures open the breaker for `open_for`; then one probe at a time may try.
struct Breaker {
    threshold: u32,
    open_for_ms: u64,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker is open; 0 while closed.
    open_until: AtomicU64,
    probing: Arc<AtomicBool>,
}

/// Held by the request probing an open breaker: dropping it (a cancelled request) lets the next
/// request probe instead of leaving the breaker open for good.
struct ProbeGuard(Arc<AtomicBool>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Breaker {
    fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold,
            open_for_ms: u64::try_from(open_for.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: Arc::new(AtomicBool::new(false)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    fn admit(&self) -> Admission {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Closed;
        }
        if self.now_ms() < until {
            return Admission::Skip;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admission::Probe(ProbeGuard(self.probing.clone())),
            Err(_) => Admission::Skip,
        }
    }

    /// Records an answer; true when that closed an open breaker.
    fn succeeded(&self) -> bool {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Records a failure; true when that opened the breaker (a failed probe keeps it open, and
    /// says nothing new).
    fn failed(&self, probe: Option<ProbeGuard>) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let reopen_at = self.now_ms().saturating_add(self.open_for_ms);
        if probe.is_some() {
            self.open_until.store(reopen_at, Ordering::Release);
            return false;
        }
        failures >= self.threshold
            && self
                .open_until
                .compare_exchange(0, reopen_at, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_probes_one_at_a_time_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_millis(20));
        assert!(!breaker.failed(None));
        assert!(!breaker.failed(None));
        assert!(matches!(breaker.admit(), Admission::Closed));
        assert!(breaker.failed(None), "the third failure in a row opens it");
        assert!(!breaker.failed(None), "opening is reported once");
        assert!(matches!(breaker.admit(), Admission::Skip));
        std::thread::sleep(Duration::from_millis(25));
        let Admission::Probe(probe) = breaker.admit() else {
            panic!("after open_for one request probes");
        };
        assert!(
            matches!(breaker.admit(), Admission::Skip),
            "only one probe at a time"
        );
        assert!(
            !breaker.failed(Some(probe)),
            "a failed probe reopens quietly"
        );
        assert!(matches!(breaker.admit(), Admission::Skip));
        std::thread::sleep(Duration::from_millis(25));
        let Admission::Probe(probe) = breaker.admit() else {
            panic!("probe again");
        };
        drop(probe);
        assert!(
            matches!(breaker.admit(), Admission::Probe(_)),
            "a cancelled probe lets the next request probe"
        );
        assert!(breaker.succeeded(), "an answer closes it, reported once");
        assert!(!breaker.succeeded());
        assert!(matches!(breaker.admit(), Admission::Closed));
    }

    #[test]
    fn a_success_resets_the_count_of_failures_in_a_row() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        assert!(!breaker.failed(None));
        assert!(!breaker.succeeded());
        assert!(!breaker.failed(None));
        assert!(matches!(breaker.admit(), Admission::Closed));
    }
}
