//! `[limits]`: timeouts and sizes that bound every connection and request.

use raw::RawLimits;
use std::time::Duration;
use toml::Spanned;

use super::*;

/// Limits on what one client may cost us. Every default is documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// A request head must arrive completely within this (slowloris).
    pub header_read_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// From request head to response head; the streamed body afterwards is not bounded by it.
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// HTTP/1 request head size (431 above it); also the HTTP/2 header list size.
    pub max_header_bytes: usize,
    /// Request body size, counted while streaming (413 above it).
    pub max_body_bytes: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

impl LimitsConfig {
    /// How long an HTTP/1 connection may wait for its (next) request before it is closed: the
    /// header-read timeout runs from the moment a keep-alive connection goes idle, and no silence
    /// outlasts `idle_timeout`.
    pub(crate) fn keepalive(&self) -> Duration {
        self.header_read_timeout.min(self.idle_timeout)
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            max_concurrent_streams: 100,
        }
    }
}

pub(super) fn validate_limits(
    ctx: &Ctx,
    raw: Option<&Spanned<RawLimits>>,
) -> Result<LimitsConfig, ConfigError> {
    let mut limits = LimitsConfig::default();
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return Ok(limits);
    };
    let duration = |value: &Option<Spanned<String>>, key: &str, default: Duration| {
        validate_duration(ctx, value, &format!("limits.{key}"), default, false)
    };
    limits.header_read_timeout = duration(
        &raw.header_read_timeout,
        "header_read_timeout",
        limits.header_read_timeout,
    )?;
    limits.idle_timeout = duration(&raw.idle_timeout, "idle_timeout", limits.idle_timeout)?;
    limits.request_timeout = duration(
        &raw.request_timeout,
        "request_timeout",
        limits.request_timeout,
    )?;
    limits.shutdown_grace = duration(&raw.shutdown_grace, "shutdown_grace", limits.shutdown_grace)?;
    let number =
        |value: &Option<Spanned<i64>>, key: &str, min: i64, max: i64, default: i64| match value {
            None => Ok(default),
            Some(value) if (min..=max).contains(value.get_ref()) => Ok(*value.get_ref()),
            Some(value) => Err(ctx.error(
                value,
                &format!("limits.{key}"),
                format!("must be between {min} and {max}"),
            )),
        };
    // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
    limits.max_header_bytes = number(
        &raw.max_header_bytes,
        "max_header_bytes",
        8192,
        1 << 20,
        limits.max_header_bytes as i64,
    )? as usize;
    limits.max_body_bytes = number(
        &raw.max_body_bytes,
        "max_body_bytes",
        0,
        1 << 40,
        limits.max_body_bytes as i64,
    )? as u64;
    limits.max_connections = number(
        &raw.max_connections,
        "max_connections",
        1,
        1_000_000,
        limits.max_connections as i64,
    )? as usize;
    limits.max_concurrent_streams = number(
        &raw.max_concurrent_streams,
        "max_concurrent_streams",
        1,
        10_000,
        i64::from(limits.max_concurrent_streams),
    )? as u32;
    Ok(limits)
}
