//! `[auth.session]`: Better Auth session cookies, checked against Better Auth's own session
//! endpoint and cached; and `[admin] token_env`.

use http::Uri;
use raw::RawSession;
use std::time::Duration;
use toml::Spanned;

use super::*;

/// How the gateway recognises and checks a Better Auth session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Better Auth's `baseURL`; the session is asked of `{base_url}/api/auth/get-session`.
    pub base_url: Uri,
    /// Better Auth's `advanced.cookiePrefix`: the cookie is `{prefix}.session_token`, or
    /// `__Secure-{prefix}.session_token` over HTTPS.
    pub cookie_prefix: String,
    /// Better Auth's secret, which signs the cookie: a forged cookie is refused without a call.
    pub secret: Secret,
    /// The longest a session answer is reused (shorter when the session expires sooner).
    pub cache_ttl: Duration,
    /// Session answers remembered at most.
    pub cache_size: usize,
    /// The longest one call to Better Auth may take.
    pub timeout: Duration,
}

impl SessionConfig {
    /// `{base_url}/api/auth/get-session`.
    pub fn session_url(&self) -> String {
        format!(
            "{}/api/auth/get-session",
            self.base_url.to_string().trim_end_matches('/')
        )
    }
}

pub(super) const DEFAULT_SESSION_CACHE_TTL: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_SESSION_CACHE_SIZE: usize = 100_000;
pub(super) const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Better Auth refuses secrets shorter than this in production; so does the gateway.
const MIN_SECRET_BYTES: usize = 32;

pub(super) fn validate_session(
    ctx: &Ctx,
    raw: &Spanned<RawSession>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SessionConfig, ConfigError> {
    let session = raw.get_ref();
    let base_url: Uri = session.base_url.get_ref().parse().map_err(|_| {
        ctx.error(
            &session.base_url,
            "auth.session.base_url",
            "not a valid URL; write Better Auth's baseURL, e.g. \"http://auth:3000\"",
        )
    })?;
    if !matches!(base_url.scheme_str(), Some("http" | "https")) || base_url.authority().is_none() {
        return Err(ctx.error(
            &session.base_url,
            "auth.session.base_url",
            "must be an http:// or https:// URL with a host, e.g. \"http://auth:3000\"",
        ));
    }
    if base_url.query().is_some() || !matches!(base_url.path(), "" | "/") {
        return Err(ctx.error(
            &session.base_url,
            "auth.session.base_url",
            "must be Better Auth's baseURL without a path (the gateway adds /api/auth/get-session)",
        ));
    }
    let cookie_prefix = match &session.cookie_prefix {
        None => "better-auth".to_string(),
        Some(prefix) => {
            let valid = !prefix.get_ref().is_empty()
                && prefix
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(ctx.error(
                    prefix,
                    "auth.session.cookie_prefix",
                    "must be Better Auth's cookiePrefix: letters, digits, '-', '_' or '.'",
                ));
            }
            prefix.get_ref().clone()
        }
    };
    let secret_env = session
        .secret_env
        .as_ref()
        .map_or("BETTER_AUTH_SECRET", |name| name.get_ref().as_str());
    let secret_error = |message: String| match &session.secret_env {
        Some(name) => ctx.error(name, "auth.session.secret_env", message),
        None => ctx.error(raw, "auth.session.secret_env", message),
    };
    let secret = match env(secret_env) {
        None => {
            return Err(secret_error(format!(
                "environment variable {secret_env} is not set (Better Auth's secret, which signs \
                 its session cookies)"
            )))
        }
        Some(value) if value.len() < MIN_SECRET_BYTES => {
            return Err(secret_error(format!(
                "environment variable {secret_env} holds {} bytes; Better Auth's secret must be at \
                 least {MIN_SECRET_BYTES}",
                value.len()
            )))
        }
        Some(value) => Secret(value.into_bytes()),
    };
    let cache_ttl = validate_duration(
        ctx,
        &session.cache_ttl,
        "auth.session.cache_ttl",
        DEFAULT_SESSION_CACHE_TTL,
        true,
    )?;
    if cache_ttl > Duration::from_secs(3600) {
        if let Some(value) = &session.cache_ttl {
            return Err(ctx.error(
                value,
                "auth.session.cache_ttl",
                "at most 1h: a signed-out session is honoured until its answer leaves the cache",
            ));
        }
    }
    let cache_size = match &session.cache_size {
        None => DEFAULT_SESSION_CACHE_SIZE,
        Some(size) if (0..=10_000_000).contains(size.get_ref()) => *size.get_ref() as usize,
        Some(size) => {
            return Err(ctx.error(
                size,
                "auth.session.cache_size",
                "must be between 0 (no cache) and 10000000",
            ))
        }
    };
    let timeout = validate_duration(
        ctx,
        &session.timeout,
        "auth.session.timeout",
        DEFAULT_SESSION_TIMEOUT,
        false,
    )?;
    if timeout > Duration::from_secs(30) {
        if let Some(value) = &session.timeout {
            return Err(ctx.error(value, "auth.session.timeout", "at most 30s"));
        }
    }
    Ok(SessionConfig {
        base_url,
        cookie_prefix,
        secret,
        cache_ttl,
        cache_size,
        timeout,
    })
}
