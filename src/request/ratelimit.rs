//! Rate limits (GCRA, from governor): per user, per client IP, per route, and the brute-force guard
//! on failed authentications.
//!
//! Limits are per process. With several replicas, divide each quota by the replica count.
//!
//! Memory: a keyed limiter keeps one entry per key it has seen, forever, unless told otherwise. A
//! background task calls `retain_recent()` (which drops keys whose bucket is full again, i.e. that
//! are indistinguishable from a key never seen) and `shrink_to_fit()` every `cleanup_interval`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio::task::JoinHandle;

use crate::config::{QuotaConfig, RateLimitConfig, RouteConfig};
use crate::core::error::GatewayError;

pub use crate::core::allowance::{
    Allowance, RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET,
};

/// The blocked-IP table of the brute-force guard never grows past this.
const MAX_BLOCKED: usize = 100_000;

type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

struct Limiter<K: Hash + Eq + Clone> {
    limiter: KeyedLimiter<K>,
    burst: u32,
    replenish: Duration,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(quota: &QuotaConfig) -> Limiter<K> {
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
    cleanup_task: Option<JoinHandle<()>>,
}

impl Drop for RateLimits {
    fn drop(&mut self) {
        if let Some(task) = &self.cleanup_task {
            task.abort();
        }
    }
}

impl RateLimits {
    /// Builds the limiters; inside a tokio runtime it also starts the cleanup task.
    pub fn new(config: &RateLimitConfig, routes: &[RouteConfig]) -> RateLimits {
        let limiters = Arc::new(Limiters {
            global: RouteLimiters {
                per_user: config.per_user.as_ref().map(Limiter::new),
                per_ip: config.per_ip.as_ref().map(Limiter::new),
            },
            routes: routes
                .iter()
                .map(|route| {
                    route.rate_limit.map(|limits| RouteLimiters {
                        per_user: limits.per_user.as_ref().map(Limiter::new),
                        per_ip: limits.per_ip.as_ref().map(Limiter::new),
                    })
                })
                .collect(),
            auth_failures: config.auth_failures.as_ref().map(Limiter::new),
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
            cleanup_task,
        }
    }

    /// Counts a request by an authenticated user against its route's (or the global) quota.
    pub(crate) fn check_user(
        &self,
        route: usize,
        user: &String,
    ) -> Result<Option<Allowance>, GatewayError> {
        match &self.limiters.for_route(route).per_user {
            Some(limiter) => limiter.check(user).map(Some),
            None => Ok(None),
        }
    }

    /// Counts a request without a valid identity against its client IP.
    pub fn check_ip(&self, route: usize, ip: IpAddr) -> Result<Option<Allowance>, GatewayError> {
        match &self.limiters.for_route(route).per_ip {
            Some(limiter) => limiter.check(&ip).map(Some),
            None => Ok(None),
        }
    }

    /// The brute-force guard: an IP that used up its failed-authentication quota gets 429 before any
    /// token is parsed or verified, so guessing costs it nothing but time, and us nothing at all.
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

    /// Records a failed authentication from `ip`. When that leaves its bucket empty, the IP is
    /// blocked until the next cell is due, so exactly `burst` failures are let through, not
    /// `burst + 1`.
    pub(crate) fn record_auth_failure(&self, ip: IpAddr) {
        let Some(limiter) = &self.limiters.auth_failures else {
            return;
        };
        let block_for = match limiter.check(&ip) {
            Ok(allowance) if allowance.remaining == 0 => limiter.replenish,
            Ok(_) => return,
            Err(GatewayError::RateLimited { retry_after, .. }) => Duration::from_secs(retry_after),
            Err(_) => return,
        };
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
            blocked.insert(ip, (now + block_for, limiter.burst));
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
