//! Configuration: `gateway.toml` is parsed into raw serde types (`raw`), then validated once into the
//! typed structures below. Every error names the file, the line and the key, so an operator can fix
//! a bad config without reading our source. Nothing downstream re-validates or re-parses.

mod auth;
mod cors;
mod limits;
mod log;
mod rate_limit;
mod raw;
mod routes;
mod server;
mod session;
mod store;
mod tls;
mod upstream;

pub use auth::*;
pub use cors::*;
pub use limits::*;
pub use log::*;
pub use rate_limit::*;
pub use routes::*;
pub use server::*;
pub use session::*;
pub use store::*;
pub use upstream::*;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;
use toml::Spanned;

pub use crate::core::duration::parse_duration;
pub use crate::core::ipnet::IpNet;
use raw::RawConfig;

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 && self.key.is_empty() {
            // Nothing in the file to point at (it could not be read).
            write!(f, "{}: {}", self.file, self.message)
        } else if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: `{}`: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a config item was written, kept for errors found after validation (route conflicts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub key: String,
}

impl Location {
    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            key: self.key.clone(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// The default upstream (`[upstream]`), for routes that name none.
    pub upstream: Option<UpstreamConfig>,
    /// `[upstreams.NAME]`, in name order; routes refer to them by index.
    pub named_upstreams: Vec<(String, UpstreamConfig)>,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub limits: LimitsConfig,
    /// The admin listener (health, readiness, metrics, revocations); off when unset.
    pub admin_listen: Option<SocketAddr>,
    /// `[admin] token_env`: the bearer token `POST /revoke` requires. Without it, only a peer on
    /// loopback may revoke.
    pub admin_token: Option<Secret>,
    pub log: LogConfig,
    /// `[cors]`: the gateway answers CORS preflights and labels responses; off when unset.
    pub cors: Option<CorsConfig>,
    /// `[store]`: limits shared through Redis across replicas; in process when unset.
    pub store: Option<StoreConfig>,
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// The upstreams for logs: `http://host:port` for the default, `NAME=http://...` for the rest.
    pub fn upstream_summary(&self) -> String {
        let default = self
            .upstream
            .iter()
            .map(|u| format!("{}://{}", u.scheme, u.authority));
        let named = self
            .named_upstreams
            .iter()
            .map(|(name, u)| format!("{name}={}://{}", u.scheme, u.authority));
        default.chain(named).collect::<Vec<_>>().join(", ")
    }

    /// Reads and validates a config file, resolving secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &|name| std::env::var(name).ok())
    }

    /// Reads and validates a config file, resolving secrets with `env`.
    pub fn load_with(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: file.clone(),
            line: 0,
            key: String::new(),
            message: format!("cannot read config file: {err}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse_in(&source, &file, &base, env)
    }

    /// Validates config text. `env` resolves environment variables (secrets), so that callers such
    /// as the demo and the tests can supply them without touching the process environment.
    pub fn parse(
        source: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_in(source, file, Path::new("."), env)
    }

    /// Like `parse`, resolving relative paths in the config (`jwks_file`) against `base`.
    pub(crate) fn parse_in(
        source: &str,
        file: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let ctx = Ctx { file, source, base };
        let raw: RawConfig = toml::Deserializer::parse(source)
            .map_err(|err| (String::new(), err))
            .and_then(|document| {
                serde_path_to_error::deserialize(document)
                    .map_err(|err| (dotted_key(err.path()), err.into_inner()))
            })
            .map_err(|(key, err)| {
                let mut message = err.message().trim().to_string();
                // `timeout = 30`: serde can only say it wanted a string.
                if is_duration_key(&key) && message.starts_with("invalid type: ") {
                    message.push_str(
                        "; a duration is a string with its unit: \"250ms\", \"30s\", \"5m\", \"1h\"",
                    );
                }
                ConfigError {
                    file: file.to_string(),
                    line: err.span().map_or(0, |span| ctx.line_of(span.start)),
                    key,
                    message,
                }
            })?;
        let server = validate_server(&ctx, raw.server)?;
        let upstream = match &raw.upstream {
            Some(upstream) => Some(validate_upstream(&ctx, upstream, "upstream")?),
            None => None,
        };
        let mut named_upstreams = Vec::new();
        for (name, table) in &raw.upstreams {
            named_upstreams.push((
                name.clone(),
                validate_upstream(&ctx, table, &format!("upstreams.{name}"))?,
            ));
        }
        let auth = validate_auth(&ctx, &raw.auth, env)?;
        let rate_limit = validate_rate_limit(&ctx, raw.rate_limit.as_ref())?;
        let limits = validate_limits(&ctx, raw.limits.as_ref())?;
        let (admin_listen, admin_token) = validate_admin(&ctx, raw.admin.as_ref(), env)?;
        let log = validate_log(&ctx, raw.log.as_ref())?;
        let cors = validate_cors(&ctx, raw.cors.as_ref())?;
        let store = validate_store(&ctx, raw.store.as_ref(), env)?;
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                validate_route(
                    &ctx,
                    index,
                    route,
                    &auth,
                    &rate_limit,
                    upstream.is_some(),
                    &named_upstreams,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = Config {
            server,
            upstream,
            named_upstreams,
            auth,
            rate_limit,
            limits,
            admin_listen,
            admin_token,
            log,
            cors,
            store,
            routes,
        };
        routes::check_table(&config.routes)?;
        Ok(config)
    }
}

struct Ctx<'a> {
    file: &'a str,
    source: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn location<T>(&self, spanned: &Spanned<T>, key: &str) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.line_of(spanned.span().start),
            key: key.to_string(),
        }
    }

    fn error<T>(&self, spanned: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.location(spanned, key).error(message)
    }
}

/// `route[1].methods[0]` from serde's path to a failing value, without the steps that
/// `toml::Spanned` adds (`$__serde_spanned_private_value`); empty for the document itself.
/// Whether a key (`upstream.timeout`, `route[2].stream_timeout`) holds a duration.
fn is_duration_key(key: &str) -> bool {
    const DURATION_KEYS: [&str; 19] = [
        "max_age",
        "op_timeout",
        "breaker_open",
        "header_read_timeout",
        "idle_timeout",
        "request_timeout",
        "shutdown_grace",
        "cleanup_interval",
        "timeout",
        "connect_timeout",
        "leeway",
        "jwks_refresh",
        "jwks_cooldown",
        "jwks_timeout",
        "max_lifetime",
        "cache_ttl",
        "websocket_idle",
        "websocket_max_lifetime",
        "stream_timeout",
    ];
    let last = key.rsplit('.').next().unwrap_or(key);
    DURATION_KEYS.contains(&last)
}

fn dotted_key(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key: name } if name.starts_with("$__serde_spanned_private") => {}
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Unknown => {}
        }
    }
    key
}

fn validate_duration(
    ctx: &Ctx,
    value: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    allow_zero: bool,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let duration = parse_duration(value.get_ref()).map_err(|why| ctx.error(value, key, why))?;
    if duration.is_zero() && !allow_zero {
        return Err(ctx.error(value, key, "must be greater than zero"));
    }
    Ok(duration)
}

/// Header names that must never be chosen as the identity header or a stripped header, because the
/// gateway gives them another meaning.
const RESERVED_HEADERS: [&str; 11] = [
    "authorization",
    "connection",
    "host",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "content-type",
];

fn validate_header_name(
    ctx: &Ctx,
    value: &Spanned<String>,
    key: &str,
) -> Result<HeaderName, ConfigError> {
    let name = HeaderName::from_bytes(value.get_ref().as_bytes())
        .map_err(|_| ctx.error(value, key, "not a valid header name"))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(ctx.error(value, key, format!("`{name}` is reserved by the gateway")));
    }
    Ok(name)
}

fn validate_query_params(
    ctx: &Ctx,
    raw: &Option<Vec<Spanned<String>>>,
    table: &str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(names) = raw else { return Ok(None) };
    names
        .iter()
        .map(|name| {
            if name.get_ref().is_empty() {
                Err(ctx.error(
                    name,
                    &format!("{table}.owner_query_params"),
                    "names must not be empty",
                ))
            } else {
                Ok(name.get_ref().clone())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
