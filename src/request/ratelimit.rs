//! Rate limits (GCRA): per user, per client IP, per route, and the brute-force guard on failed
//! authentications.
//!
//! Without `[store]` every limit is this process's own (governor). With it, each decision is one
//! GCRA step in the shared store (`SharedLimits`, implemented over Redis in src/proxy/store.rs),
//! so a quota holds across every replica. A key the store found over its limit is remembered here
//! until its retry time, so a flood of refused requests costs the store nothing. When the store
//! does not answer, `[store] on_error` decides: this process's own limiter (`local`), let through
//! (`allow`), or 503 (`deny`); each such decision is counted in `authgate_store_fallbacks`.
//!
//! Memory: a keyed limiter keeps one entry per key it has seen, forever, unless told otherwise. A
//! background task calls `retain_recent()` (which drops keys whose bucket is full again, i.e. that
//! are indistinguishable from a key never seen) and `shrink_to_fit()` every `cleanup_interval`.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio::task::JoinHandle;

use crate::config::{QuotaConfig, RateLimitConfig, RouteConfig, StoreFailurePolicy};
use crate::core::error::GatewayError;
use crate::core::metrics::Metrics;

pub use crate::core::allowance::{
    Allowance, RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET,
};

/// The blocked-IP table of the brute-force guard, and each limiter's table of keys the store found
/// over their limit, never grow past this.
const MAX_BLOCKED: usize = 100_000;

/// One GCRA step in the shared store: `burst` cells, one freed every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraStep {
    pub burst: u32,
    pub interval: Duration,
    /// False to ask whether one more would be allowed without counting it (the guard's look).
    pub consume: bool,
}

/// What the store decided for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedAnswer {
    /// `remaining` cells are left; the bucket is full again after `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Over the limit: the next cell is due after `retry_after`.
    Limited { retry_after: Duration },
}

/// Why the store gave no answer. Each is counted by the store; the caller applies `on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// No answer within `op_timeout`.
    Timeout,
    /// Refused, disconnected, or an answer that was not a GCRA reply.
    Error,
    /// The circuit breaker is open: the store was not asked.
    CircuitOpen,
}

pub type StoreFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SharedAnswer, StoreFailure>> + Send + 'a>>;

/// The shared store's side of a limit decision. Implemented over Redis in src/proxy/store.rs; the
/// decisions here stay free of I/O.
pub trait SharedLimits: Send + Sync {
    /// One GCRA step for the key `namespace:id`, bounded in time by the store.
    fn gcra<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a (dyn Display + Sync),
        step: GcraStep,
    ) -> StoreFuture<'a>;

    /// Seconds a client refused under `on_error = "deny"` should wait before retrying.
    fn retry_after(&self) -> u64;
}

/// The shared store and what to do when it does not answer.
pub struct SharedStore {
    pub store: Arc<dyn SharedLimits>,
    pub on_error: StoreFailurePolicy,
    pub metrics: Arc<Metrics>,
}

type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

struct Limiter<K: Hash + Eq + Clone> {
    limiter: KeyedLimiter<K>,
    burst: u32,
    replenish: Duration,
    /// This limiter's keys in the shared store: `user:*`, `ip:/tasks/{id}`, `auth_failures`.
    namespace: Box<str>,
    /// Keys the shared store found over the limit, and until when: refused without asking it.
    over_limit: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(quota: &QuotaConfig, namespace: String) -> Limiter<K> {
        let replenish = quota.period / quota.count;
        let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
        let governor_quota = Quota::with_period(replenish.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limiter {
            limiter: RateLimiter::dashmap(governor_quota)
                .with_middleware::<StateInformationMiddleware>(),
            burst: burst.get(),
            replenish,
            namespace: namespace.into_boxed_str(),
            over_limit: Mutex::new(HashMap::new()),
        }
    }

    fn step(&self, consume: bool) -> GcraStep {
        GcraStep {
            burst: self.burst,
            interval: self.replenish,
            consume,
        }
    }

    /// When the store last found `key` over its limit and that still holds, the refusal.
    fn remembered_refusal(&self, key: &K) -> Option<GatewayError> {
        let over_limit = self.over_limit.lock().unwrap_or_else(|p| p.into_inner());
        let until = *over_limit.get(key)?;
        let now = Instant::now();
        (until > now).then(|| GatewayError::RateLimited {
            limit: self.burst,
            retry_after: ceil_secs(until - now).max(1),
        })
    }

    fn remember_refusal(&self, key: &K, retry_after: Duration) {
        let now = Instant::now();
        let mut over_limit = self.over_limit.lock().unwrap_or_else(|p| p.into_inner());
        if over_limit.len() >= MAX_BLOCKED {
            over_limit.retain(|_, until| *until > now);
        }
        if over_limit.len() < MAX_BLOCKED {
            over_limit.insert(key.clone(), now + retry_after);
        }
    }

    fn refused(&self, retry_after: Duration) -> GatewayError {
        GatewayError::RateLimited {
            limit: self.burst,
            retry_after: ceil_secs(retry_after).max(1),
        }
    }

    fn check(&self, key: &K) -> Result<Allowance, GatewayError> {
        match self.limiter.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = self.burst.saturating_sub(remaining);
                Ok(Allowance {
                    limit: self.burst,
                    remaining,
                    reset: ceil_secs(self.replenish * missing),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(GatewayError::RateLimited {
                    limit: self.burst,
                    retry_after: ceil_secs(wait).max(1),
                })
            }
        }
    }

    fn cleanup(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        let mut over_limit = self.over_limit.lock().unwrap_or_else(|p| p.into_inner());
        over_limit.retain(|_, until| *until > now);
        over_limit.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

struct RouteLimiters {
    per_user: Option<Limiter<String>>,
    per_ip: Option<Limiter<IpAddr>>,
}

struct Limiters {
    global: RouteLimiters,
    /// Indexed by route index; `Some` for routes with their own quotas.
    routes: Vec<Option<RouteLimiters>>,
    auth_failures: Option<Limiter<IpAddr>>,
    /// IPs that used up their auth-failure quota, and until when. Checked before any token work.
    blocked: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiters {
    fn for_route(&self, route: usize) -> &RouteLimiters {
        self.routes
            .get(route)
            .and_then(Option::as_ref)
            .unwrap_or(&self.global)
    }

    fn all_user_limiters(&self) -> impl Iterator<Item = &Limiter<String>> {
        std::iter::once(&self.global)
            .chain(self.routes.iter().flatten())
            .filter_map(|limits| limits.per_user.as_ref())
    }

    fn all_ip_limiters(&self) -> impl Iterator<Item = &Limiter<IpAddr>> {
        std::iter::once(&self.global)
            .chain(self.routes.iter().flatten())
            .filter_map(|limits| limits.per_ip.as_ref())
            .chain(self.auth_failures.as_ref())
    }

    fn cleanup(&self) {
        self.all_user_limiters().for_each(Limiter::cleanup);
        self.all_ip_limiters().for_each(Limiter::cleanup);
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.retain(|_, (until, _)| *until > now);
        blocked.shrink_to_fit();
    }
}

pub struct RateLimits {
    limiters: Arc<Limiters>,
    pub headers: bool,
    shared: Option<SharedStore>,
    cleanup_task: Option<JoinHandle<()>>,
}

impl Drop for RateLimits {
    fn drop(&mut self) {
        if let Some(task) = &self.cleanup_task {
            task.abort();
        }
    }
}

/// A route's store namespace: its methods and pattern, which the route table keeps unique.
fn route_scope(route: &RouteConfig) -> String {
    let methods = match &route.methods {
        Some(methods) => methods
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(","),
        None => "*".to_string(),
    };
    format!("{methods} {}", route.path)
}

impl RateLimits {
    /// Builds in-process limiters; inside a tokio runtime it also starts the cleanup task.
    pub fn new(config: &RateLimitConfig, routes: &[RouteConfig]) -> RateLimits {
        RateLimits::with_store(config, routes, None)
    }

    /// Builds the limiters, deciding through `shared` when it is set.
    pub fn with_store(
        config: &RateLimitConfig,
        routes: &[RouteConfig],
        shared: Option<SharedStore>,
    ) -> RateLimits {
        let limiters = Arc::new(Limiters {
            global: RouteLimiters {
                per_user: config
                    .per_user
                    .as_ref()
                    .map(|quota| Limiter::new(quota, "user:*".into())),
                per_ip: config
                    .per_ip
                    .as_ref()
                    .map(|quota| Limiter::new(quota, "ip:*".into())),
            },
            routes: routes
                .iter()
                .map(|route| {
                    route.rate_limit.map(|limits| {
                        let scope = route_scope(route);
                        RouteLimiters {
                            per_user: limits
                                .per_user
                                .as_ref()
                                .map(|quota| Limiter::new(quota, format!("user:{scope}"))),
                            per_ip: limits
                                .per_ip
                                .as_ref()
                                .map(|quota| Limiter::new(quota, format!("ip:{scope}"))),
                        }
                    })
                })
                .collect(),
            auth_failures: config
                .auth_failures
                .as_ref()
                .map(|quota| Limiter::new(quota, "auth_failures".into())),
            blocked: Mutex::new(HashMap::new()),
        });
        let cleanup_task = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let limiters = limiters.clone();
            let interval = config.cleanup_interval;
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    limiters.cleanup();
                }
            })
        });
        RateLimits {
            limiters,
            headers: config.headers,
            shared,
            cleanup_task,
        }
    }

    /// Counts a request by an authenticated user against its route's (or the global) quota.
    pub(crate) async fn check_user(
        &self,
        route: usize,
        user: &String,
    ) -> Result<Option<Allowance>, GatewayError> {
        match &self.limiters.for_route(route).per_user {
            Some(limiter) => self.check(limiter, user).await.map(Some),
            None => Ok(None),
        }
    }

    /// Counts a request without a valid identity against its client IP.
    pub async fn check_ip(
        &self,
        route: usize,
        ip: IpAddr,
    ) -> Result<Option<Allowance>, GatewayError> {
        match &self.limiters.for_route(route).per_ip {
            Some(limiter) => self.check(limiter, &ip).await.map(Some),
            None => Ok(None),
        }
    }

    /// One request against `limiter`: in the shared store when there is one, else here.
    async fn check<K: Hash + Eq + Clone + Display + Sync>(
        &self,
        limiter: &Limiter<K>,
        key: &K,
    ) -> Result<Allowance, GatewayError> {
        let Some(shared) = &self.shared else {
            return limiter.check(key);
        };
        if let Some(refusal) = limiter.remembered_refusal(key) {
            shared.metrics.store_local_refusals.inc();
            return Err(refusal);
        }
        match shared
            .store
            .gcra(&limiter.namespace, key, limiter.step(true))
            .await
        {
            Ok(SharedAnswer::Allowed { remaining, reset }) => Ok(Allowance {
                limit: limiter.burst,
                remaining,
                reset: ceil_secs(reset),
            }),
            Ok(SharedAnswer::Limited { retry_after }) => {
                limiter.remember_refusal(key, retry_after);
                Err(limiter.refused(retry_after))
            }
            Err(_) => {
                shared.metrics.record_store_fallback(shared.on_error.name());
                match shared.on_error {
                    StoreFailurePolicy::Local => limiter.check(key),
                    // Allowed and uncounted: the headers still tell the quota.
                    StoreFailurePolicy::Allow => Ok(Allowance {
                        limit: limiter.burst,
                        remaining: limiter.burst,
                        reset: 0,
                    }),
                    StoreFailurePolicy::Deny => Err(GatewayError::StoreUnavailable {
                        retry_after: shared.store.retry_after(),
                    }),
                }
            }
        }
    }

    /// The brute-force guard: an IP that used up its failed-authentication quota gets 429 before any
    /// token is parsed or verified, so guessing costs it nothing but time, and us nothing at all.
    /// This is the replica's own memory; `shared_auth_guard` asks the store.
    pub(crate) fn auth_guard(&self, ip: IpAddr) -> Result<(), GatewayError> {
        if self.limiters.auth_failures.is_none() {
            return Ok(());
        }
        let blocked = self
            .limiters
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some((until, limit)) => {
                let now = Instant::now();
                if *until > now {
                    return Err(GatewayError::RateLimited {
                        limit: *limit,
                        retry_after: ceil_secs(*until - now).max(1),
                    });
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// With a shared store, the guard as every replica sees it: asked before a token this replica
    /// has not verified yet is looked at, without counting anything.
    pub(crate) async fn shared_auth_guard(&self, ip: IpAddr) -> Result<(), GatewayError> {
        let (Some(shared), Some(limiter)) = (&self.shared, &self.limiters.auth_failures) else {
            return Ok(());
        };
        match shared
            .store
            .gcra(&limiter.namespace, &ip, limiter.step(false))
            .await
        {
            Ok(SharedAnswer::Allowed { .. }) => Ok(()),
            Ok(SharedAnswer::Limited { retry_after }) => {
                self.block(ip, retry_after, limiter.burst);
                Err(limiter.refused(retry_after))
            }
            Err(_) => {
                shared.metrics.record_store_fallback(shared.on_error.name());
                match shared.on_error {
                    // `local`: the replica's own guard (`auth_guard`) already ran.
                    StoreFailurePolicy::Local | StoreFailurePolicy::Allow => Ok(()),
                    StoreFailurePolicy::Deny => Err(GatewayError::StoreUnavailable {
                        retry_after: shared.store.retry_after(),
                    }),
                }
            }
        }
    }

    /// Records a failed authentication from `ip`. When that leaves its bucket empty, the IP is
    /// blocked until the next cell is due, so exactly `burst` failures are let through, not
    /// `burst + 1`. With a shared store, a failure the store finds already over the quota (other
    /// replicas used it up) is answered 429 instead of 401.
    pub(crate) async fn record_auth_failure(&self, ip: IpAddr) -> Result<(), GatewayError> {
        let Some(limiter) = &self.limiters.auth_failures else {
            return Ok(());
        };
        let answer = match &self.shared {
            None => None,
            Some(shared) => match shared
                .store
                .gcra(&limiter.namespace, &ip, limiter.step(true))
                .await
            {
                Ok(answer) => Some(answer),
                Err(_) => {
                    shared.metrics.record_store_fallback(shared.on_error.name());
                    match shared.on_error {
                        StoreFailurePolicy::Local => None,
                        StoreFailurePolicy::Allow | StoreFailurePolicy::Deny => return Ok(()),
                    }
                }
            },
        };
        let answer = match answer {
            Some(answer) => answer,
            None => match limiter.check(&ip) {
                Ok(allowance) => SharedAnswer::Allowed {
                    remaining: allowance.remaining,
                    reset: Duration::ZERO,
                },
                Err(GatewayError::RateLimited { retry_after, .. }) => SharedAnswer::Limited {
                    retry_after: Duration::from_secs(retry_after),
                },
                Err(_) => return Ok(()),
            },
        };
        match answer {
            SharedAnswer::Allowed { remaining: 0, .. } => {
                self.block(ip, limiter.replenish, limiter.burst);
                Ok(())
            }
            SharedAnswer::Allowed { .. } => Ok(()),
            SharedAnswer::Limited { retry_after } => {
                self.block(ip, retry_after, limiter.burst);
                match self.shared {
                    Some(_) => Err(limiter.refused(retry_after)),
                    None => Ok(()),
                }
            }
        }
    }

    fn block(&self, ip: IpAddr, block_for: Duration, limit: u32) {
        let now = Instant::now();
        let mut blocked = self
            .limiters
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= MAX_BLOCKED {
            blocked.retain(|_, (until, _)| *until > now);
        }
        if blocked.len() < MAX_BLOCKED {
            blocked.insert(ip, (now + block_for, limit));
        } else {
            tracing::warn!(%ip, "auth-failure guard table full; not blocking");
        }
    }

    /// Runs the periodic cleanup now (the background task does this every `cleanup_interval`).
    pub fn cleanup(&self) {
        self.limiters.cleanup();
    }

    /// Keys held across every limiter, for metrics and memory tests.
    pub fn tracked_keys(&self) -> usize {
        self.limiters
            .all_user_limiters()
            .map(Limiter::len)
            .sum::<usize>()
            + self
                .limiters
                .all_ip_limiters()
                .map(Limiter::len)
                .sum::<usize>()
    }
}
