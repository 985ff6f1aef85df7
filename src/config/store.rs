//! `[store]`: the Redis that replicas share their rate limits and brute-force guard through.

use raw::RawStore;
use std::time::Duration;
use toml::Spanned;

use super::*;

/// What a request gets when the store cannot answer in time (down, slow, or the breaker is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailurePolicy {
    /// Decide with this replica's own in-process limiter.
    Local,
    /// Let the request through uncounted.
    Allow,
    /// Refuse with 503 and Retry-After.
    Deny,
}

impl StoreFailurePolicy {
    pub fn name(self) -> &'static str {
        match self {
            StoreFailurePolicy::Local => "local",
            StoreFailurePolicy::Allow => "allow",
            StoreFailurePolicy::Deny => "deny",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `redis://` or `rediss://` (TLS), with no password in it.
    pub redis_url: String,
    /// Read from `password_env` at load time; never logged.
    pub password: Option<Secret>,
    /// The longest a request waits for one store operation.
    pub op_timeout: Duration,
    pub on_error: StoreFailurePolicy,
    /// Prepended to every key, so several gateways (or other programs) can share one Redis.
    pub key_prefix: String,
    /// Consecutive failed operations that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips the store before one request probes it again.
    pub breaker_open: Duration,
    /// PEM trust anchors for a `rediss://` server with a private CA (the system roots otherwise).
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("redis_url", &self.redis_url)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("op_timeout", &self.op_timeout)
            .field("on_error", &self.on_error)
            .field("key_prefix", &self.key_prefix)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open", &self.breaker_open)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "(set)"))
            .finish()
    }
}

pub(super) const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(25);
pub(super) const DEFAULT_BREAKER_FAILURES: u32 = 5;
pub(super) const DEFAULT_BREAKER_OPEN: Duration = Duration::from_secs(1);
const MAX_OP_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn validate_store(
    ctx: &Ctx,
    raw: Option<&Spanned<RawStore>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<StoreConfig>, ConfigError> {
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return Ok(None);
    };
    let url = raw.redis_url.get_ref();
    let bad_url = |why: String| ctx.error(&raw.redis_url, "store.redis_url", why);
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(bad_url(format!(
            "`{url}` is not a Redis URL; write redis://HOST:PORT/DB, or rediss:// for TLS"
        )));
    }
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
        .map_err(|err| bad_url(format!("`{url}` is not a valid Redis URL: {err}")))?;
    if info.redis_settings().password().is_some() {
        // A password in the URL ends up in config repositories and in every log line that names
        // the store; the environment keeps it out of both.
        return Err(bad_url(
            "has a password in it; put the password in an environment variable and name it \
             with `password_env`"
                .to_string(),
        ));
    }
    let password = match &raw.password_env {
        None => None,
        Some(name) => match env(name.get_ref()) {
            Some(value) if !value.is_empty() => Some(Secret(value.into_bytes())),
            _ => {
                return Err(ctx.error(
                    name,
                    "store.password_env",
                    format!(
                        "the environment variable `{}` is not set or is empty",
                        name.get_ref()
                    ),
                ))
            }
        },
    };
    let op_timeout = validate_duration(
        ctx,
        &raw.op_timeout,
        "store.op_timeout",
        DEFAULT_OP_TIMEOUT,
        false,
    )?;
    if op_timeout > MAX_OP_TIMEOUT {
        if let Some(value) = &raw.op_timeout {
            return Err(ctx.error(
                value,
                "store.op_timeout",
                "must be at most 5s: every request that asks the store may wait this long",
            ));
        }
    }
    let on_error = match &raw.on_error {
        None => StoreFailurePolicy::Local,
        Some(value) => match value.get_ref().as_str() {
            "local" => StoreFailurePolicy::Local,
            "allow" => StoreFailurePolicy::Allow,
            "deny" => StoreFailurePolicy::Deny,
            _ => {
                return Err(ctx.error(
                    value,
                    "store.on_error",
                    "expected \"local\", \"allow\" or \"deny\"",
                ))
            }
        },
    };
    let key_prefix = match &raw.key_prefix {
        None => "authgate".to_string(),
        Some(value) => {
            let prefix = value.get_ref();
            let fits = (1..=64).contains(&prefix.len())
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
            if !fits {
                return Err(ctx.error(
                    value,
                    "store.key_prefix",
                    "must be 1 to 64 letters, digits, `_`, `-`, `.` or `:`",
                ));
            }
            prefix.clone()
        }
    };
    let breaker_failures = match &raw.breaker_failures {
        None => DEFAULT_BREAKER_FAILURES,
        Some(value) => match u32::try_from(*value.get_ref()) {
            Ok(count) if (1..=1000).contains(&count) => count,
            _ => {
                return Err(ctx.error(
                    value,
                    "store.breaker_failures",
                    "must be between 1 and 1000",
                ))
            }
        },
    };
    let breaker_open = validate_duration(
        ctx,
        &raw.breaker_open,
        "store.breaker_open",
        DEFAULT_BREAKER_OPEN,
        false,
    )?;
    let ca_pem = match &raw.ca_file {
        None => None,
        Some(path) => {
            if !url.starts_with("rediss://") {
                return Err(ctx.error(
                    path,
                    "store.ca_file",
                    "only applies to a rediss:// (TLS) redis_url",
                ));
            }
            let resolved = ctx.base.join(path.get_ref());
            let pem = std::fs::read(&resolved).map_err(|err| {
                ctx.error(
                    path,
                    "store.ca_file",
                    format!("cannot read {}: {err}", resolved.display()),
                )
            })?;
            let certificates = crate::core::tls::count_pem_certificates(&pem);
            if certificates == 0 {
                return Err(ctx.error(
                    path,
                    "store.ca_file",
                    format!("{} holds no PEM certificate", resolved.display()),
                ));
            }
            Some(pem)
        }
    };
    Ok(Some(StoreConfig {
        redis_url: url.clone(),
        password,
        op_timeout,
        on_error,
        key_prefix,
        breaker_failures,
        breaker_open,
        ca_pem,
    }))
}
