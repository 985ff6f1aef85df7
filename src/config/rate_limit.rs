//! `[rate_limit]` and a route's `rate_limit`: quotas per user, per IP, and the brute-force guard.

use raw::{RawRateLimit, RawRouteRateLimit};
use std::time::Duration;
use toml::Spanned;

use super::*;

/// A GCRA quota: `count` requests per `period`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Keyed by the authenticated user id.
    pub per_user: Option<QuotaConfig>,
    /// Keyed by client IP, for requests without a valid identity.
    pub per_ip: Option<QuotaConfig>,
    /// Keyed by client IP, counting failed authentications: the brute-force guard.
    pub auth_failures: Option<QuotaConfig>,
    /// Add RateLimit-* headers to allowed responses too.
    pub headers: bool,
    /// How often idle limiter state is dropped.
    pub cleanup_interval: Duration,
}

/// A route's own quotas (route keys override the global ones; unset keys inherit them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRateLimit {
    pub per_user: Option<QuotaConfig>,
    pub per_ip: Option<QuotaConfig>,
}

pub(super) const DEFAULT_AUTH_FAILURES: QuotaConfig = QuotaConfig {
    count: 10,
    period: Duration::from_secs(60),
    burst: 20,
};

pub(super) const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);

/// Parses `"100/s"`, `"20/m"`, `"1000/h"` or `"off"` (None), with an optional burst that defaults
/// to the count.
pub(super) fn validate_quota(
    ctx: &Ctx,
    rate: &Spanned<String>,
    burst: Option<&Spanned<i64>>,
    key: &str,
    burst_key: &str,
) -> Result<Option<QuotaConfig>, ConfigError> {
    let text = rate.get_ref().as_str();
    if text == "off" {
        return Ok(None);
    }
    let bad = || {
        ctx.error(
            rate,
            key,
            format!(
                "`{text}` is not a rate; write e.g. \"100/s\", \"20/m\", \"1000/h\" or \"off\""
            ),
        )
    };
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.parse().map_err(|_| bad())?;
    let period = match unit {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 || count > 1_000_000 {
        return Err(ctx.error(rate, key, "the count must be between 1 and 1000000"));
    }
    let burst = match burst {
        None => count,
        Some(burst) => match u32::try_from(*burst.get_ref()) {
            Ok(value) if (1..=1_000_000).contains(&value) => value,
            _ => {
                return Err(ctx.error(burst, burst_key, "must be between 1 and 1000000"));
            }
        },
    };
    Ok(Some(QuotaConfig {
        count,
        period,
        burst,
    }))
}

pub(super) fn validate_rate_limit(
    ctx: &Ctx,
    raw: Option<&Spanned<RawRateLimit>>,
) -> Result<RateLimitConfig, ConfigError> {
    let mut config = RateLimitConfig {
        per_user: None,
        per_ip: None,
        auth_failures: Some(DEFAULT_AUTH_FAILURES),
        headers: false,
        cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
    };
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return Ok(config);
    };
    let orphan_burst = [
        (
            &raw.burst,
            raw.per_user.is_none(),
            "rate_limit.burst",
            "per_user",
        ),
        (
            &raw.per_ip_burst,
            raw.per_ip.is_none(),
            "rate_limit.per_ip_burst",
            "per_ip",
        ),
        (
            &raw.auth_failures_burst,
            false,
            "rate_limit.auth_failures_burst",
            "auth_failures",
        ),
    ];
    for (burst, orphan, key, rate) in orphan_burst {
        if let (Some(burst), true) = (burst, orphan) {
            return Err(ctx.error(burst, key, format!("a burst needs `{rate}`")));
        }
    }
    if let Some(rate) = &raw.per_user {
        config.per_user = validate_quota(
            ctx,
            rate,
            raw.burst.as_ref(),
            "rate_limit.per_user",
            "rate_limit.burst",
        )?;
    }
    if let Some(rate) = &raw.per_ip {
        config.per_ip = validate_quota(
            ctx,
            rate,
            raw.per_ip_burst.as_ref(),
            "rate_limit.per_ip",
            "rate_limit.per_ip_burst",
        )?;
    }
    match (&raw.auth_failures, &raw.auth_failures_burst) {
        (Some(rate), burst) => {
            config.auth_failures = validate_quota(
                ctx,
                rate,
                burst.as_ref(),
                "rate_limit.auth_failures",
                "rate_limit.auth_failures_burst",
            )?;
        }
        (None, Some(burst)) => {
            let rate = Spanned::new(burst.span(), "10/m".to_string());
            config.auth_failures = validate_quota(
                ctx,
                &rate,
                Some(burst),
                "rate_limit.auth_failures",
                "rate_limit.auth_failures_burst",
            )?;
        }
        (None, None) => {}
    }
    config.headers = raw.rate_limit_headers.unwrap_or(false);
    config.cleanup_interval = validate_duration(
        ctx,
        &raw.cleanup_interval,
        "rate_limit.cleanup_interval",
        DEFAULT_CLEANUP_INTERVAL,
        false,
    )?;
    Ok(config)
}

pub(super) fn validate_route_rate_limit(
    ctx: &Ctx,
    raw: &RawRouteRateLimit,
    table: &str,
    global: &RateLimitConfig,
) -> Result<RouteRateLimit, ConfigError> {
    let key = |name: &str| format!("{table}.rate_limit.{name}");
    let quota = |rate: &Option<Spanned<String>>,
                 burst: &Option<Spanned<i64>>,
                 rate_name: &str,
                 burst_name: &str,
                 inherited: Option<QuotaConfig>| {
        match (rate, burst) {
            (Some(rate), burst) => {
                validate_quota(ctx, rate, burst.as_ref(), &key(rate_name), &key(burst_name))
            }
            (None, Some(burst)) => Err(ctx.error(
                burst,
                &key(burst_name),
                format!("a burst needs `{rate_name}` in the same table"),
            )),
            (None, None) => Ok(inherited),
        }
    };
    Ok(RouteRateLimit {
        per_user: quota(
            &raw.per_user,
            &raw.burst,
            "per_user",
            "burst",
            global.per_user,
        )?,
        per_ip: quota(
            &raw.per_ip,
            &raw.per_ip_burst,
            "per_ip",
            "per_ip_burst",
            global.per_ip,
        )?,
    })
}
