//! The shared store: rate-limit decisions in Redis, so a quota holds across replicas.
//!
//! Why redis-rs (`redis`) with `tokio-comp` and `connection-manager`: it is the maintained Redis
//! client for tokio; its multiplexed connection pipelines every concurrent request on one socket,
//! so no pool is needed and a decision costs one round trip; `ConnectionManager` reconnects on its
//! own after Redis restarts. The script runs by EVALSHA, and by EVAL on NOSCRIPT (after a restart
//! or `SCRIPT FLUSH`), which also caches it again. `tokio-rustls-comp` gives `rediss://` over
//! rustls with this process's provider (ring), and nothing else: no native TLS, no second provider.
//!
//! Each decision is one GCRA step in a Lua script that reads the time from Redis (`TIME`), so clock
//! skew between replicas cannot change a quota, and sets the key to expire when its bucket is full
//! again, so memory stays bounded by the keys active in one period. The decisions a serving thread
//! queues while it runs its ready requests go to Redis in one script call: a request still waits
//! for one round trip, but Redis pays its per-call cost (command, `TIME`, reply) once per batch.
//!
//! Failure is bounded and explicit: every operation waits at most `op_timeout`; after
//! `breaker_failures` failures in a row the circuit breaker opens and requests skip the store for
//! `breaker_open`, then one request (or the background probe) tries it again. The connection is
//! replaced when the breaker opens, so a connection that went silent (a frozen server, a dropped
//! route) is not waited on forever. State changes are logged once each; every operation is counted.

use std::fmt::Display;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thread_local::ThreadLocal;
use tokio::sync::oneshot;

use crate::config::StoreConfig;
use crate::core::metrics::Metrics;
use crate::request::ratelimit::{GcraStep, SharedAnswer, SharedLimits, StoreFailure, StoreFuture};

/// GCRA steps for every decision a serving thread queued in one scheduler pass, so a burst of
/// concurrent requests costs Redis one script call (one `TIME`, one reply) rather than one each.
/// KEYS are the buckets; ARGV holds three values per key: burst, the emission interval in
/// microseconds, and `1` to count the request or `0` only to look. A bucket holds its theoretical
/// arrival time (TAT) in microseconds of Redis time. Replies three integers per key, in order:
/// `allowed`, `remaining`, and microseconds until the bucket is full again when allowed, until the
/// next cell when not. Keys are stepped in order, so a key named twice sees its first step.
///
/// A bucket expires at its TAT rounded up to the next whole second (`PXAT`), so it lives at most a
/// second longer than it matters. The expiry is only rewritten when that second changes (else
/// `KEEPTTL`): a hot key costs Redis no expiry update per request. Needs Redis 6.2 or newer.
///
/// The TAT is written with `%.0f` because Lua turns a number into a string with 14 significant
/// digits, which would round a microsecond timestamp.
const GCRA_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local replies = {}
for i = 1, #KEYS do
  local burst = tonumber(ARGV[3 * i - 2])
  local interval = tonumber(ARGV[3 * i - 1])
  local stored = tonumber(redis.call('GET', KEYS[i]))
  local tat = stored
  if not tat or tat < now then
    tat = now
  end
  local new_tat = tat + interval
  local latest = now + burst * interval
  if new_tat > latest then
    replies[3 * i - 2] = 0
    replies[3 * i - 1] = 0
    replies[3 * i] = new_tat - latest
  else
    if ARGV[3 * i] == '1' then
      local expire_second = math.ceil(new_tat / 1000000)
      if stored and math.ceil(stored / 1000000) == expire_second then
        redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'KEEPTTL')
      else
        redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PXAT', expire_second * 1000)
      end
    end
    replies[3 * i - 2] = 1
    replies[3 * i - 1] = math.floor((latest - new_tat) / interval)
    replies[3 * i] = new_tat - now
  end
end
return replies
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
    /// Decisions waiting on each serving thread; the first one queued spawns the task that sends
    /// them all in one script call when the thread has run its other ready requests.
    queues: ThreadLocal<Arc<DecisionQueue>>,
    /// This store, for the flush tasks it spawns.
    this: Weak<RedisStore>,
    script: redis::Script,
    breaker: Breaker,
    /// Whether the last operation got an answer, for `/readyz`.
    last_ok: AtomicBool,
    metrics: Arc<Metrics>,
    counted: Outcomes,
    probe_task: Option<tokio::task::JoinHandle<()>>,
}

/// One decision waiting for its thread's next script call.
struct Pending {
    /// Where its key ends in `Waiting::keys` (it starts where the previous one ends).
    key_end: usize,
    burst: u32,
    interval_micros: u64,
    consume: bool,
    answer: oneshot::Sender<Result<SharedAnswer, StoreFailure>>,
}

/// The decisions queued on one thread, with their keys side by side in one buffer.
#[derive(Default)]
struct Waiting {
    keys: Vec<u8>,
    decisions: Vec<Pending>,
}

#[derive(Default)]
struct DecisionQueue(Mutex<Waiting>);

impl DecisionQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything queued so far, leaving buffers of the same size for the next batch.
    fn take(&self) -> Waiting {
        let mut waiting = self.lock();
        let next = Waiting {
            keys: Vec::with_capacity(waiting.keys.capacity()),
            decisions: Vec::with_capacity(waiting.decisions.capacity()),
        };
        std::mem::replace(&mut *waiting, next)
    }
}

/// `authgate_store_operations` by result, looked up once rather than per decision.
struct Outcomes {
    allowed: Counter,
    limited: Counter,
    timeout: Counter,
    error: Counter,
    circuit_open: Counter,
}

impl Outcomes {
    fn new(metrics: &Metrics) -> Outcomes {
        let counter = |result: &'static str| {
            metrics
                .store_operations
                .get_or_create(&crate::core::metrics::ResultLabels { result })
                .clone()
        };
        Outcomes {
            allowed: counter("allowed"),
            limited: counter("limited"),
            timeout: counter("timeout"),
            error: counter("error"),
            circuit_open: counter("circuit_open"),
        }
    }

    fn failure(&self, failure: StoreFailure) -> &Counter {
        match failure {
            StoreFailure::Timeout => &self.timeout,
            StoreFailure::Error => &self.error,
            StoreFailure::CircuitOpen => &self.circuit_open,
        }
    }
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
            let runtime = tokio::runtime::Handle::try_current().ok();
            let probe_task = runtime
                .as_ref()
                .map(|runtime| runtime.spawn(probe(weak.clone(), settings.breaker_open)));
            RedisStore {
                settings: settings.clone(),
                client,
                connections: ThreadLocal::new(),
                queues: ThreadLocal::new(),
                this: weak.clone(),
                script: redis::Script::new(GCRA_SCRIPT),
                breaker: Breaker::new(settings.breaker_failures, settings.breaker_open),
                last_ok: AtomicBool::new(false),
                counted: Outcomes::new(&metrics),
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

    /// Opens this serving thread's connection now, so its first decisions do not pay for
    /// connecting within `op_timeout` (they would fall back to `on_error` instead). Called by
    /// each worker as it starts.
    pub fn warm_up(&self) {
        let Ok(mut connection) = self.connection() else {
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                CONNECT_TIMEOUT,
                redis::cmd("PING").query_async::<String>(&mut connection),
            )
            .await;
        });
    }

    /// Runs one store command under the breaker, answered by `deadline` or failed; the caller
    /// counts the outcome per decision.
    async fn run<T>(
        &self,
        deadline: Instant,
        operation: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, StoreFailure> {
        let probe = match self.breaker.admit() {
            Admission::Closed => None,
            Admission::Probe(guard) => Some(guard),
            Admission::Skip => return Err(StoreFailure::CircuitOpen),
        };
        let started = Instant::now();
        let outcome = match self.connection() {
            Ok(mut connection) => {
                tokio::time::timeout_at(deadline.into(), operation(&mut connection)).await
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

    /// Queues one decision for this thread's next script call and waits for its answer, which
    /// comes within `op_timeout` of the first decision in that call (the call's own bound).
    async fn step(
        &self,
        namespace: &str,
        id: &(dyn Display + Sync),
        step: GcraStep,
    ) -> Result<SharedAnswer, StoreFailure> {
        if self.breaker.skipping() {
            self.counted.circuit_open.inc();
            return Err(StoreFailure::CircuitOpen);
        }
        let (answer, answered) = oneshot::channel();
        let queue = self.queues.get_or_default();
        let first = {
            let mut waiting = queue.lock();
            let Waiting { keys, decisions } = &mut *waiting;
            // Writing into a Vec<u8> cannot fail.
            let _ = write!(keys, "{}:{namespace}:{id}", self.settings.key_prefix);
            decisions.push(Pending {
                key_end: keys.len(),
                burst: step.burst,
                interval_micros: u64::try_from(step.interval.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
                consume: step.consume,
                answer,
            });
            decisions.len() == 1
        };
        if first {
            let deadline = Instant::now() + self.settings.op_timeout;
            match self.this.upgrade() {
                Some(store) => drop(tokio::spawn(store.flush(queue.clone(), deadline))),
                None => drop(queue.take()),
            }
        }
        answered.await.unwrap_or_else(|_| {
            // The flush task was dropped unanswered: the runtime is shutting down.
            self.counted.error.inc();
            Err(StoreFailure::Error)
        })
    }

    /// Sends every decision queued on `queue` in one script call and answers each, counting
    /// every decision's outcome.
    async fn flush(self: Arc<Self>, queue: Arc<DecisionQueue>, deadline: Instant) {
        // Let the requests made ready by this pass of the I/O driver queue theirs first: a bigger
        // batch costs Redis less per decision.
        tokio::task::yield_now().await;
        let Waiting { keys, decisions } = queue.take();
        if decisions.is_empty() {
            return;
        }
        let command = |verb: &str, script: &str| {
            let mut command = redis::cmd(verb);
            command.arg(script).arg(decisions.len());
            let mut start = 0;
            for decision in &decisions {
                command.arg(&keys[start..decision.key_end]);
                start = decision.key_end;
            }
            for decision in &decisions {
                command
                    .arg(decision.burst)
                    .arg(decision.interval_micros)
                    .arg(u8::from(decision.consume));
            }
            command
        };
        let reply = self
            .run(deadline, async |connection| {
                let reply = command("EVALSHA", self.script.get_hash())
                    .query_async::<redis::Value>(&mut *connection)
                    .await;
                match reply {
                    // Redis restarted, or its scripts were flushed: EVAL sends the script again,
                    // and caches it for the next EVALSHA.
                    Err(err)
                        if err.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        command("EVAL", GCRA_SCRIPT).query_async(connection).await
                    }
                    reply => reply,
                }
            })
            .await;
        let values = match reply {
            Ok(redis::Value::Array(values)) if values.len() == 3 * decisions.len() => values,
            Ok(other) => {
                tracing::warn!(
                    decisions = decisions.len(),
                    reply = ?other,
                    "the shared store's rate-limit script answered with something other than three integers per decision"
                );
                return self.fail(decisions, StoreFailure::Error);
            }
            Err(failure) => return self.fail(decisions, failure),
        };
        let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
        for (decision, reply) in decisions.into_iter().zip(values.chunks_exact(3)) {
            let answer = match reply {
                [redis::Value::Int(1), redis::Value::Int(remaining), redis::Value::Int(reset)] => {
                    self.counted.allowed.inc();
                    Ok(SharedAnswer::Allowed {
                        remaining: u32::try_from(*remaining).unwrap_or(0),
                        reset: micros(*reset),
                    })
                }
                [redis::Value::Int(_), redis::Value::Int(_), redis::Value::Int(retry_after)] => {
                    self.counted.limited.inc();
                    Ok(SharedAnswer::Limited {
                        retry_after: micros(*retry_after),
                    })
                }
                _ => {
                    self.counted.error.inc();
                    Err(StoreFailure::Error)
                }
            };
            // A waiter that went away (its client disconnected) needs no answer.
            let _ = decision.answer.send(answer);
        }
    }

    fn fail(&self, batch: Vec<Pending>, failure: StoreFailure) {
        self.counted
            .failure(failure)
            .inc_by(u64::try_from(batch.len()).unwrap_or(u64::MAX));
        for decision in batch {
            let _ = decision.answer.send(Err(failure));
        }
    }

    async fn ping(&self) -> Result<(), StoreFailure> {
        let deadline = Instant::now() + self.settings.op_timeout;
        let outcome = self
            .run(deadline, async |connection| {
                redis::cmd("PING")
                    .query_async::<String>(connection)
                    .await
                    .map(drop)
            })
            .await;
        if let Err(failure) = outcome {
            self.counted.failure(failure).inc();
        }
        outcome
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Revocation reads and writes are not on a request's path: they may wait longer than
/// `op_timeout`.
const REVOCATION_OP_TIMEOUT: Duration = Duration::from_millis(500);

/// The shared revocations (`proxy::revocation_sync` follows them): the sorted set
/// `{prefix}:revocations` of encoded revocations scored by expiry, its version counter, and the
/// channel each new one is published on.
impl RedisStore {
    pub(crate) fn revocations_key(&self) -> String {
        format!("{}:revocations", self.settings.key_prefix)
    }

    pub(crate) fn revocations_channel(&self) -> String {
        format!("{}:revocations:events", self.settings.key_prefix)
    }

    /// A client for the subscription, with this store's address, password and TLS settings.
    pub(crate) fn pubsub_client(&self) -> redis::Client {
        self.client.clone()
    }

    fn revocation_deadline(&self) -> Instant {
        Instant::now() + self.settings.op_timeout.max(REVOCATION_OP_TIMEOUT)
    }

    /// Records a revocation, bumps the version counter and publishes it, in one transaction.
    pub async fn publish_revocation(
        &self,
        revocation: &crate::request::revocation::Revocation,
        expires_at: u64,
    ) -> Result<(), String> {
        let key = self.revocations_key();
        let member = revocation.encode();
        let message = revocation.to_message(expires_at);
        let outcome = self
            .run(self.revocation_deadline(), async |connection| {
                redis::pipe()
                    .atomic()
                    .zadd(&key, &member, expires_at)
                    .ignore()
                    // Entries past their expiry refuse nothing any more.
                    .zrembyscore(&key, "-inf", unix_now())
                    .ignore()
                    .incr(format!("{key}:version"), 1)
                    .ignore()
                    .publish(self.revocations_channel(), &message)
                    .ignore()
                    .query_async::<()>(connection)
                    .await
            })
            .await;
        outcome.map_err(|failure| format!("{failure:?}"))
    }

    /// The version counter; `None` before the first revocation.
    pub(crate) async fn revocations_version(&self) -> Result<Option<i64>, StoreFailure> {
        if self.breaker.skipping() {
            return Err(StoreFailure::CircuitOpen);
        }
        let key = format!("{}:version", self.revocations_key());
        self.run(self.revocation_deadline(), async |connection| {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<i64>>(connection)
                .await
        })
        .await
    }

    /// Every revocation still in force at `now`, encoded, with its expiry.
    pub(crate) async fn revocations_in_force(
        &self,
        now: u64,
    ) -> Result<Vec<(String, u64)>, StoreFailure> {
        let key = self.revocations_key();
        self.run(self.revocation_deadline(), async |connection| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(now)
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async::<Vec<(String, u64)>>(connection)
                .await
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

    /// Whether `admit` would skip now: open, and either not yet time to probe or a probe is
    /// under way. Lets a request fail over without queueing for a call that will not be made.
    fn skipping(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && (self.now_ms() < until || self.probing.load(Ordering::Acquire))
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
