//! Configuration: `gateway.toml` is parsed into raw serde types (`raw`), then validated once into the
//! typed structures below. Every error names the file, the line and the key, so an operator can fix
//! a bad config without reading our source. Nothing downstream re-validates or re-parses.

mod duration;
mod raw;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use toml::Spanned;

use crate::auth::JwsAlgorithm;
pub use crate::forwarded::IpNet;
use crate::policy::{ClaimCondition, ClaimHeader, Condition};
pub use duration::parse_duration;
use raw::{
    IssuerField, RawAdmin, RawAuth, RawConfig, RawCors, RawIssuer, RawLimits, RawLog, RawRateLimit,
    RawRoute, RawRouteRateLimit, RawUpstream,
};

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
        if self.key.is_empty() {
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
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
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
    /// The admin listener (health, readiness, metrics); off when unset.
    pub admin_listen: Option<SocketAddr>,
    pub log: LogConfig,
    /// `[cors]`: the gateway answers CORS preflights and labels responses; off when unset.
    pub cors: Option<CorsConfig>,
    pub routes: Vec<RouteConfig>,
}

/// Which browser origins may call the API, and what they may send and read (`[cors]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// `None`: any origin (`"*"`, only without credentials). Otherwise exact origins, lower-case,
    /// as browsers serialize them: `scheme://host[:port]`.
    pub allow_origins: Option<Vec<String>>,
    pub allow_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One line per request on the `authgate::access` target.
    pub access: bool,
}

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
    pub fn keepalive(&self) -> Duration {
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

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Tokio worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Bind each worker thread to a CPU of its own when there are exactly as many workers as
    /// CPUs the process may run on (`server::spawn_workers`).
    pub pin_workers: bool,
    /// Peers whose X-Forwarded-For we believe. Empty: we believe nobody.
    pub trusted_proxies: Vec<IpNet>,
    /// `[server.tls]`: TLS on `listen` (see src/tls.rs).
    pub tls: Option<crate::tls::ServerTlsConfig>,
    /// A plain-HTTP listener answering 308 redirects to HTTPS.
    pub redirect_http: Option<SocketAddr>,
}

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

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Set for an https upstream (see src/tls.rs).
    pub tls: Option<crate::tls::UpstreamTls>,
}

/// An HMAC secret. Debug never prints it.
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// At least one. With several, each names its `issuer` and a token's `iss` selects one.
    pub issuers: Vec<IssuerConfig>,
    pub user_claim: String,
    pub identity_header: HeaderName,
    pub strip_headers: Vec<HeaderName>,
    pub owner_query_params: Vec<String>,
    /// Verified tokens remembered, so a repeated token skips signature verification.
    pub token_cache_size: usize,
    /// The longest a token may live, from its `iat` and from now (`auth.max_lifetime`).
    pub max_lifetime: Duration,
}

impl AuthConfig {
    /// The first HMAC secret and HS* algorithm configured, for minting local test tokens.
    pub fn hmac_secret(&self) -> Option<(&Secret, JwsAlgorithm)> {
        self.issuers.iter().find_map(|issuer| {
            let secret = issuer.secret.as_ref()?;
            let algorithm = issuer.algorithms.iter().copied().find(|a| a.is_hmac())?;
            Some((secret, algorithm))
        })
    }
}

/// Who issues tokens and how to check them.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// When set, the token's `iss` must equal it (and selects this issuer).
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<JwsAlgorithm>,
    pub leeway: Duration,
    pub secret: Option<Secret>,
    pub jwks_url: Option<Uri>,
    /// A local JWKS, read and checked at load time.
    pub jwks_file: Option<JwksFile>,
    pub jwks_refresh: Duration,
    pub jwks_cooldown: Duration,
    pub jwks_timeout: Duration,
    /// `auth` or `auth.issuer[N]`, for logs.
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct JwksFile {
    pub path: String,
    pub json: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    /// A valid token forwards its identity, no token forwards none, a bad token is still 401.
    Optional,
    Public,
}

/// Which upstream a route forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRef {
    Default,
    Named(usize),
}

/// `body_owner_fields`: top-level JSON fields that must name the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyOwner {
    pub fields: Vec<String>,
    pub max_bytes: usize,
}

/// A route's WebSocket settings (`websocket = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketConfig {
    /// No bytes either way for this long closes the spliced connection.
    pub idle: Duration,
    /// The spliced connection is closed after this long, whatever happens.
    pub max_lifetime: Duration,
    /// Close the spliced connection when the token that opened it expires.
    pub close_on_expiry: bool,
}

/// `strip_prefix`: leading path segments removed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripPrefix {
    pub prefix: String,
    pub segments: usize,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: String,
    /// Parameter names in pattern order.
    pub params: Vec<String>,
    /// `None` means every method we proxy.
    pub methods: Option<Vec<Method>>,
    pub auth: AuthMode,
    pub owner: Option<String>,
    pub owner_query_params: Vec<String>,
    /// `Some` when the route overrides the global quotas (it then has buckets of its own).
    pub rate_limit: Option<RouteRateLimit>,
    pub require: Vec<ClaimCondition>,
    pub owner_bypass: Vec<ClaimCondition>,
    pub body_owner: Option<BodyOwner>,
    pub claim_headers: Vec<ClaimHeader>,
    pub upstream: UpstreamRef,
    pub strip_prefix: Option<StripPrefix>,
    /// `Some` when the route accepts WebSocket upgrades.
    pub websocket: Option<WebSocketConfig>,
    /// Bounds how long a streamed response body may last (none: only `idle_timeout` applies).
    pub stream_timeout: Option<Duration>,
    /// Forward method overrides (`X-HTTP-Method-Override`, `_method`) that name a method this
    /// route allows, instead of stripping the headers.
    pub allow_method_override: bool,
    pub location: Location,
}

/// Methods a route may list. CONNECT and TRACE are never proxied.
pub const SUPPORTED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Better Auth's own tokens live 15 minutes; a day leaves room for any sane issuer.
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);
const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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
    pub fn parse_in(
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
            .map_err(|(key, err)| ConfigError {
                file: file.to_string(),
                line: err.span().map_or(0, |span| ctx.line_of(span.start)),
                key,
                message: err.message().trim().to_string(),
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
        let admin_listen = validate_admin(&ctx, raw.admin.as_ref())?;
        let log = validate_log(&ctx, raw.log.as_ref())?;
        let cors = validate_cors(&ctx, raw.cors.as_ref())?;
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
            log,
            cors,
            routes,
        };
        // Compiling the route table finds conflicts and unreachable routes; doing it here means
        // `authgate check` reports them too.
        crate::routes::RouteTable::compile(&config.routes)?;
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

fn validate_server(ctx: &Ctx, raw: Option<raw::RawServer>) -> Result<ServerConfig, ConfigError> {
    let mut server = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        workers: None,
        pin_workers: true,
        trusted_proxies: Vec::new(),
        tls: None,
        redirect_http: None,
    };
    let Some(raw) = raw else { return Ok(server) };
    if let Some(listen) = &raw.listen {
        server.listen = listen.get_ref().parse().map_err(|_| {
            ctx.error(
                listen,
                "server.listen",
                "expected a socket address such as \"127.0.0.1:8080\"",
            )
        })?;
    }
    if let Some(workers) = &raw.workers {
        let count = *workers.get_ref();
        if !(1..=1024).contains(&count) {
            return Err(ctx.error(workers, "server.workers", "must be between 1 and 1024"));
        }
        server.workers = Some(count as usize);
    }
    if let Some(pin) = &raw.pin_workers {
        server.pin_workers = *pin.get_ref();
    }
    for net in raw.trusted_proxies.iter().flatten() {
        let parsed = net.get_ref().parse().map_err(|why| {
            ctx.error(
                net,
                "server.trusted_proxies",
                format!("`{}`: {why}", net.get_ref()),
            )
        })?;
        server.trusted_proxies.push(parsed);
    }
    server.tls = tls::validate_server_tls(ctx, raw.tls.as_ref())?;
    server.redirect_http = tls::validate_redirect(
        ctx,
        raw.redirect_http.as_ref(),
        server.listen,
        server.tls.is_some(),
    )?;
    Ok(server)
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

fn validate_upstream(
    ctx: &Ctx,
    raw: &Spanned<RawUpstream>,
    table: &str,
) -> Result<UpstreamConfig, ConfigError> {
    let upstream = raw.get_ref();
    let url = &upstream.url;
    let url_key = format!("{table}.url");
    let uri: Uri = url
        .get_ref()
        .parse()
        .map_err(|_| ctx.error(url, &url_key, "not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(ctx.error(url, &url_key, "the scheme must be http or https")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(ctx.error(url, &url_key, "the URL has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(ctx.error(url, &url_key, "credentials in the URL are not supported"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ctx.error(
            url,
            &url_key,
            "the URL must not have a path or query; the request path is forwarded as received",
        ));
    }
    let tls = tls::validate_upstream_tls(ctx, upstream, &scheme, authority.as_str(), table)?;
    Ok(UpstreamConfig {
        scheme,
        authority,
        tls,
        timeout: validate_duration(
            ctx,
            &upstream.timeout,
            &format!("{table}.timeout"),
            DEFAULT_UPSTREAM_TIMEOUT,
            false,
        )?,
        connect_timeout: validate_duration(
            ctx,
            &upstream.connect_timeout,
            &format!("{table}.connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
            false,
        )?,
    })
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

/// The key-source keys shared by the single-issuer `[auth]` form and `[[auth.issuer]]` tables.
struct IssuerFields<'a> {
    issuer: Option<&'a Spanned<String>>,
    audience: &'a Option<Spanned<String>>,
    algorithms: &'a Option<Spanned<Vec<Spanned<String>>>>,
    leeway: &'a Option<Spanned<String>>,
    secret_env: &'a Option<Spanned<String>>,
    jwks_url: &'a Option<Spanned<String>>,
    jwks_file: &'a Option<Spanned<String>>,
    jwks_refresh: &'a Option<Spanned<String>>,
    jwks_cooldown: &'a Option<Spanned<String>>,
    jwks_timeout: &'a Option<Spanned<String>>,
}

impl<'a> IssuerFields<'a> {
    fn of_table(table: &'a RawIssuer) -> IssuerFields<'a> {
        IssuerFields {
            issuer: table.issuer.as_ref(),
            audience: &table.audience,
            algorithms: &table.algorithms,
            leeway: &table.leeway,
            secret_env: &table.secret_env,
            jwks_url: &table.jwks_url,
            jwks_file: &table.jwks_file,
            jwks_refresh: &table.jwks_refresh,
            jwks_cooldown: &table.jwks_cooldown,
            jwks_timeout: &table.jwks_timeout,
        }
    }

    /// The names of key-source keys that are set, for refusing them next to `[[auth.issuer]]`.
    fn set_keys(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let checks: [(&'static str, bool); 9] = [
            ("audience", self.audience.is_some()),
            ("algorithms", self.algorithms.is_some()),
            ("leeway", self.leeway.is_some()),
            ("secret_env", self.secret_env.is_some()),
            ("jwks_url", self.jwks_url.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
            ("jwks_refresh", self.jwks_refresh.is_some()),
            ("jwks_cooldown", self.jwks_cooldown.is_some()),
            ("jwks_timeout", self.jwks_timeout.is_some()),
        ];
        for (name, is_set) in checks {
            if is_set {
                set.push(name);
            }
        }
        set
    }
}

fn validate_auth(
    ctx: &Ctx,
    raw: &Spanned<RawAuth>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AuthConfig, ConfigError> {
    let auth = raw.get_ref();
    let top_level = IssuerFields {
        issuer: None,
        audience: &auth.audience,
        algorithms: &auth.algorithms,
        leeway: &auth.leeway,
        secret_env: &auth.secret_env,
        jwks_url: &auth.jwks_url,
        jwks_file: &auth.jwks_file,
        jwks_refresh: &auth.jwks_refresh,
        jwks_cooldown: &auth.jwks_cooldown,
        jwks_timeout: &auth.jwks_timeout,
    };
    let issuers = match auth.issuer.as_ref().map(|field| (field, field.get_ref())) {
        Some((field, IssuerField::Tables(tables))) => {
            if let Some(key) = top_level.set_keys().first() {
                return Err(ctx.error(
                    field,
                    &format!("auth.{key}"),
                    "with [[auth.issuer]] tables, key settings belong inside each table",
                ));
            }
            if tables.is_empty() {
                return Err(ctx.error(field, "auth.issuer", "no [[auth.issuer]] tables"));
            }
            let mut issuers: Vec<IssuerConfig> = Vec::new();
            for (index, table) in tables.iter().enumerate() {
                let label = format!("auth.issuer[{index}]");
                let fields = IssuerFields::of_table(table.get_ref());
                let issuer = validate_issuer(ctx, raw, &fields, None, &label, env)?;
                if tables.len() > 1 && issuer.issuer.is_none() {
                    return Err(ctx.error(
                        table,
                        &format!("{label}.issuer"),
                        "with several issuers, each must name its `issuer` (the token's `iss` selects one)",
                    ));
                }
                if let Some(name) = &issuer.issuer {
                    if issuers
                        .iter()
                        .any(|other| other.issuer.as_ref() == Some(name))
                    {
                        return Err(ctx.error(table, &format!("{label}.issuer"), "listed twice"));
                    }
                }
                issuers.push(issuer);
            }
            issuers
        }
        Some((field, IssuerField::Url(url))) => {
            let name = Spanned::new(field.span(), url.clone());
            vec![validate_issuer(
                ctx,
                raw,
                &top_level,
                Some(&name),
                "auth",
                env,
            )?]
        }
        None => vec![validate_issuer(ctx, raw, &top_level, None, "auth", env)?],
    };
    let user_claim = match &auth.user_claim {
        None => "sub".to_string(),
        Some(claim) if claim.get_ref().is_empty() => {
            return Err(ctx.error(claim, "auth.user_claim", "must not be empty"))
        }
        Some(claim) => claim.get_ref().clone(),
    };
    let identity_header = match &auth.identity_header {
        None => HeaderName::from_static("x-user-id"),
        Some(name) => validate_header_name(ctx, name, "auth.identity_header")?,
    };
    let strip_headers = auth
        .strip_headers
        .iter()
        .flatten()
        .map(|name| validate_header_name(ctx, name, "auth.strip_headers"))
        .collect::<Result<Vec<_>, _>>()?;
    let owner_query_params = validate_query_params(ctx, &auth.owner_query_params, "auth")?
        .unwrap_or_else(|| vec!["user_id".to_string()]);
    let token_cache_size = match &auth.token_cache_size {
        None => DEFAULT_TOKEN_CACHE_SIZE,
        Some(size) if (0..=10_000_000).contains(size.get_ref()) => *size.get_ref() as usize,
        Some(size) => {
            return Err(ctx.error(
                size,
                "auth.token_cache_size",
                "must be between 0 (off) and 10000000",
            ))
        }
    };
    let max_lifetime = validate_duration(
        ctx,
        &auth.max_lifetime,
        "auth.max_lifetime",
        DEFAULT_MAX_LIFETIME,
        false,
    )?;
    Ok(AuthConfig {
        issuers,
        user_claim,
        identity_header,
        strip_headers,
        owner_query_params,
        token_cache_size,
        max_lifetime,
    })
}

fn validate_issuer(
    ctx: &Ctx,
    table: &Spanned<RawAuth>,
    fields: &IssuerFields,
    name_override: Option<&Spanned<String>>,
    label: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IssuerConfig, ConfigError> {
    let key = |name: &str| format!("{label}.{name}");
    let algorithms = match fields.algorithms {
        None => vec![JwsAlgorithm::HS256],
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(ctx.error(list, &key("algorithms"), "the algorithm list is empty"));
            }
            let mut algorithms = Vec::new();
            for name in list.get_ref() {
                let algorithm = JwsAlgorithm::from_name(name.get_ref()).ok_or_else(|| {
                    ctx.error(
                        name,
                        &key("algorithms"),
                        format!("unknown or unsupported algorithm `{}`", name.get_ref()),
                    )
                })?;
                if algorithms.contains(&algorithm) {
                    return Err(ctx.error(name, &key("algorithms"), "listed twice"));
                }
                algorithms.push(algorithm);
            }
            algorithms
        }
    };
    let secret = match fields.secret_env {
        None => None,
        Some(var) => {
            let name = var.get_ref();
            match env(name) {
                None => {
                    return Err(ctx.error(
                        var,
                        &key("secret_env"),
                        format!("environment variable {name} is not set"),
                    ))
                }
                Some(value) if value.is_empty() => {
                    return Err(ctx.error(
                        var,
                        &key("secret_env"),
                        format!("environment variable {name} is empty"),
                    ))
                }
                Some(value) => Some(Secret(value.into_bytes())),
            }
        }
    };
    if let Some(Secret(bytes)) = &secret {
        if bytes.len() < 32 {
            tracing::warn!(
                "{label}: the HMAC secret is {} bytes; use at least 32 random bytes",
                bytes.len()
            );
        }
    }
    let jwks_url = match fields.jwks_url {
        None => None,
        Some(url) => Some(validate_jwks_url(ctx, url, &key("jwks_url"))?),
    };
    let jwks_file = match fields.jwks_file {
        None => None,
        Some(path) => {
            let resolved = ctx.base.join(path.get_ref());
            let json = std::fs::read(&resolved).map_err(|err| {
                ctx.error(
                    path,
                    &key("jwks_file"),
                    format!("cannot read {}: {err}", resolved.display()),
                )
            })?;
            let (set, problems) = crate::auth::KeySet::parse(&json).map_err(|why| {
                ctx.error(
                    path,
                    &key("jwks_file"),
                    format!("{}: {why}", resolved.display()),
                )
            })?;
            for problem in problems {
                tracing::warn!("{}: skipped a key: {problem}", resolved.display());
            }
            if set.is_empty() {
                return Err(ctx.error(path, &key("jwks_file"), "the key set has no usable key"));
            }
            Some(JwksFile {
                path: resolved.display().to_string(),
                json,
            })
        }
    };
    let algorithms_span = fields
        .algorithms
        .as_ref()
        .map(|list| list.span())
        .unwrap_or(table.span());
    for algorithm in &algorithms {
        let (needs, missing) = if algorithm.is_hmac() {
            ("`secret_env` naming the shared secret", secret.is_none())
        } else {
            (
                "a public key source (`jwks_url` or `jwks_file`)",
                jwks_url.is_none() && jwks_file.is_none(),
            )
        };
        if missing {
            return Err(ConfigError {
                file: ctx.file.to_string(),
                line: ctx.line_of(algorithms_span.start),
                key: key("algorithms"),
                message: format!("{algorithm} needs {needs}"),
            });
        }
    }
    let non_empty = |value: Option<&Spanned<String>>, name: &str| match value {
        Some(value) if value.get_ref().is_empty() => Err(ctx.error(
            value,
            &key(name),
            "must not be empty; remove the key to disable the check",
        )),
        value => Ok(value.map(|value| value.get_ref().clone())),
    };
    Ok(IssuerConfig {
        issuer: non_empty(name_override.or(fields.issuer), "issuer")?,
        audience: non_empty(fields.audience.as_ref(), "audience")?,
        algorithms,
        leeway: validate_duration(ctx, fields.leeway, &key("leeway"), DEFAULT_LEEWAY, true)?,
        secret,
        jwks_url,
        jwks_file,
        jwks_refresh: validate_duration(
            ctx,
            fields.jwks_refresh,
            &key("jwks_refresh"),
            DEFAULT_JWKS_REFRESH,
            false,
        )?,
        jwks_cooldown: validate_duration(
            ctx,
            fields.jwks_cooldown,
            &key("jwks_cooldown"),
            DEFAULT_JWKS_COOLDOWN,
            false,
        )?,
        jwks_timeout: validate_duration(
            ctx,
            fields.jwks_timeout,
            &key("jwks_timeout"),
            DEFAULT_JWKS_TIMEOUT,
            false,
        )?,
        label: label.to_string(),
    })
}

fn validate_jwks_url(ctx: &Ctx, url: &Spanned<String>, key: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = url
        .get_ref()
        .parse()
        .map_err(|_| ctx.error(url, key, "not a valid URL"))?;
    // https is verified against the Mozilla roots (webpki-roots); http is for private networks.
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ctx.error(url, key, "the scheme must be http or https"));
    }
    if uri.authority().is_none() {
        return Err(ctx.error(url, key, "the URL has no host"));
    }
    Ok(uri)
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

fn validate_admin(
    ctx: &Ctx,
    raw: Option<&Spanned<RawAdmin>>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(admin) = raw.map(Spanned::get_ref) else {
        return Ok(None);
    };
    admin.listen.get_ref().parse().map(Some).map_err(|_| {
        ctx.error(
            &admin.listen,
            "admin.listen",
            "expected a socket address such as \"127.0.0.1:9090\"",
        )
    })
}

/// Browsers cap the preflight cache anyway (Firefox at 24 h, Chromium at 2 h).
const MAX_CORS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

fn validate_cors(
    ctx: &Ctx,
    raw: Option<&Spanned<RawCors>>,
) -> Result<Option<CorsConfig>, ConfigError> {
    let Some(cors) = raw.map(Spanned::get_ref) else {
        return Ok(None);
    };
    let allow_credentials = cors
        .allow_credentials
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    let origins = cors.allow_origins.get_ref();
    if origins.is_empty() {
        return Err(ctx.error(
            &cors.allow_origins,
            "cors.allow_origins",
            "must name at least one origin, e.g. \"https://app.example.com\"",
        ));
    }
    let allow_origins = if origins.iter().any(|origin| origin.get_ref() == "*") {
        if origins.len() > 1 {
            return Err(ctx.error(
                &cors.allow_origins,
                "cors.allow_origins",
                "\"*\" (any origin) cannot be combined with other origins",
            ));
        }
        if let Some(credentials) = cors.allow_credentials.as_ref().filter(|v| *v.get_ref()) {
            return Err(ctx.error(
                credentials,
                "cors.allow_credentials",
                "cannot be true with allow_origins = [\"*\"]: browsers refuse credentials for any origin; list the origins",
            ));
        }
        None
    } else {
        let mut exact = Vec::with_capacity(origins.len());
        for (index, origin) in origins.iter().enumerate() {
            let key = format!("cors.allow_origins[{index}]");
            exact.push(
                validate_origin(origin.get_ref()).map_err(|why| ctx.error(origin, &key, why))?,
            );
        }
        Some(exact)
    };
    let header_names = |names: &Option<Vec<Spanned<String>>>, key: &str| {
        names
            .iter()
            .flatten()
            .map(|name| {
                HeaderName::from_bytes(name.get_ref().as_bytes())
                    .map_err(|_| ctx.error(name, key, "not a valid header name"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let allow_headers = match &cors.allow_headers {
        None => vec![http::header::AUTHORIZATION, http::header::CONTENT_TYPE],
        Some(_) => header_names(&cors.allow_headers, "cors.allow_headers")?,
    };
    let expose_headers = match &cors.expose_headers {
        None => vec![HeaderName::from_static("x-request-id")],
        Some(_) => header_names(&cors.expose_headers, "cors.expose_headers")?,
    };
    let max_age = validate_duration(
        ctx,
        &cors.max_age,
        "cors.max_age",
        Duration::from_secs(600),
        true,
    )?;
    if let (Some(value), true) = (&cors.max_age, max_age > MAX_CORS_MAX_AGE) {
        return Err(ctx.error(
            value,
            "cors.max_age",
            "must be at most 24h (browsers cap it anyway)",
        ));
    }
    Ok(Some(CorsConfig {
        allow_origins,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
    }))
}

/// An origin as a browser sends it in `Origin`: `scheme://host[:port]`, nothing else. Returned
/// lower-case, since browsers serialize scheme and host that way and matching is exact.
fn validate_origin(origin: &str) -> Result<String, String> {
    const SHAPE: &str = "expected an origin such as \"https://app.example.com\" or \"http://localhost:3000\" (scheme, host and port only)";
    if origin == "null" {
        return Err("\"null\" is the origin of sandboxed frames and local files: any page can send it, so it cannot be allowed".into());
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| SHAPE.to_string())?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!("{SHAPE}; the scheme must be http or https"));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*']) || rest.ends_with(':') {
        return Err(SHAPE.into());
    }
    let authority: Authority = rest.parse().map_err(|_| SHAPE.to_string())?;
    if authority.as_str() != rest || rest.contains('%') {
        return Err(SHAPE.into());
    }
    // Browsers never send the scheme's default port, nor a port with leading zeros: such an
    // entry would silently never match.
    if let Some(port) = authority.port() {
        let default = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        if port.as_u16() == default {
            return Err(format!(
                "{SHAPE}; leave out the default port {default}, browsers do"
            ));
        }
        if port.as_str().starts_with('0') {
            return Err(format!("{SHAPE}; the port has a leading zero"));
        }
    }
    Ok(origin.to_ascii_lowercase())
}

fn validate_log(ctx: &Ctx, raw: Option<&Spanned<RawLog>>) -> Result<LogConfig, ConfigError> {
    let mut log = LogConfig {
        format: LogFormat::Json,
        access: true,
    };
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return Ok(log);
    };
    if let Some(format) = &raw.format {
        log.format = match format.get_ref().as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => return Err(ctx.error(format, "log.format", "expected \"json\" or \"pretty\"")),
        };
    }
    log.access = raw.access.unwrap_or(true);
    Ok(log)
}

fn validate_limits(
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

const DEFAULT_AUTH_FAILURES: QuotaConfig = QuotaConfig {
    count: 10,
    period: Duration::from_secs(60),
    burst: 20,
};
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);

/// Parses `"100/s"`, `"20/m"`, `"1000/h"` or `"off"` (None), with an optional burst that defaults
/// to the count.
fn validate_quota(
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

fn validate_rate_limit(
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

/// `{ claim = value, "org.role" = ["a", "b"], email = "*" }`; nested tables are dotted paths too.
fn validate_conditions(
    ctx: &Ctx,
    table: &Spanned<toml::Table>,
    key: &str,
) -> Result<Vec<ClaimCondition>, ConfigError> {
    fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => flatten(&path, inner, out),
                other => out.push((path, other.clone())),
            }
        }
    }
    let mut entries = Vec::new();
    flatten("", table.get_ref(), &mut entries);
    if entries.is_empty() {
        return Err(ctx.error(table, key, "an empty table: remove it, or name a claim"));
    }
    let scalar = |value: &toml::Value| -> Option<serde_json::Value> {
        match value {
            toml::Value::String(text) => Some(serde_json::Value::from(text.clone())),
            toml::Value::Integer(number) => Some(serde_json::Value::from(*number)),
            toml::Value::Float(number) => {
                serde_json::Number::from_f64(*number).map(serde_json::Value::Number)
            }
            toml::Value::Boolean(flag) => Some(serde_json::Value::from(*flag)),
            _ => None,
        }
    };
    let mut conditions = Vec::new();
    for (path, value) in entries {
        if path.split('.').any(str::is_empty) {
            return Err(ctx.error(table, key, format!("`{path}` is not a claim path")));
        }
        let condition = match &value {
            toml::Value::String(text) if text == "*" => Condition::Exists,
            toml::Value::Array(items) => {
                let values: Option<Vec<_>> = items.iter().map(scalar).collect();
                match values {
                    Some(values) if !values.is_empty() => Condition::OneOf(values),
                    _ => {
                        return Err(ctx.error(
                            table,
                            key,
                            format!("`{path}`: a list must hold strings, numbers or booleans"),
                        ))
                    }
                }
            }
            other => Condition::Equals(scalar(other).ok_or_else(|| {
                ctx.error(
                    table,
                    key,
                    format!("`{path}`: expected a string, number, boolean, list or \"*\""),
                )
            })?),
        };
        let description = match &condition {
            Condition::Exists => format!("claim `{path}` must be present"),
            Condition::Equals(expected) => format!("claim `{path}` must equal {expected}"),
            Condition::OneOf(allowed) => format!(
                "claim `{path}` must be one of {}",
                serde_json::Value::Array(allowed.clone())
            ),
        };
        conditions.push(ClaimCondition {
            path: path.split('.').map(String::from).collect(),
            condition,
            description: description.into(),
        });
    }
    Ok(conditions)
}

fn validate_route_rate_limit(
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

fn validate_route(
    ctx: &Ctx,
    index: usize,
    raw: &Spanned<RawRoute>,
    auth: &AuthConfig,
    rate_limit: &RateLimitConfig,
    has_default_upstream: bool,
    named_upstreams: &[(String, UpstreamConfig)],
) -> Result<RouteConfig, ConfigError> {
    let route = raw.get_ref();
    let table = format!("route[{index}]");
    let key = |name: &str| format!("{table}.{name}");
    let params = crate::routes::parse_pattern(route.path.get_ref())
        .map_err(|why| ctx.error(&route.path, &key("path"), why))?;
    let methods = match &route.methods {
        None => None,
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(ctx.error(
                    list,
                    &key("methods"),
                    "the method list is empty; remove the key to allow every method",
                ));
            }
            let mut methods: Vec<Method> = Vec::new();
            for name in list.get_ref() {
                let method = SUPPORTED_METHODS
                    .iter()
                    .find(|method| method.as_str() == name.get_ref())
                    .ok_or_else(|| {
                        ctx.error(
                            name,
                            &key("methods"),
                            format!(
                                "unsupported method `{}` (methods are upper-case: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS)",
                                name.get_ref()
                            ),
                        )
                    })?;
                if methods.contains(method) {
                    return Err(ctx.error(name, &key("methods"), "listed twice"));
                }
                methods.push(method.clone());
            }
            Some(methods)
        }
    };
    let auth_mode = match route
        .auth
        .as_ref()
        .map(|mode| (mode, mode.get_ref().as_str()))
    {
        None | Some((_, "required")) => AuthMode::Required,
        Some((_, "optional")) => AuthMode::Optional,
        Some((_, "public")) => AuthMode::Public,
        Some((mode, _)) => {
            return Err(ctx.error(
                mode,
                &key("auth"),
                "expected \"required\", \"optional\" or \"public\"",
            ))
        }
    };
    let owner = match &route.owner {
        None => None,
        Some(owner) => {
            if !params.iter().any(|param| param == owner.get_ref()) {
                return Err(ctx.error(
                    owner,
                    &key("owner"),
                    format!(
                        "the path `{}` has no parameter `{{{}}}`",
                        route.path.get_ref(),
                        owner.get_ref()
                    ),
                ));
            }
            if auth_mode != AuthMode::Required {
                return Err(ctx.error(
                    owner,
                    &key("owner"),
                    "the owner rule needs auth = \"required\": without a user there is nothing to compare with",
                ));
            }
            Some(owner.get_ref().clone())
        }
    };
    let owner_query_params = validate_query_params(ctx, &route.owner_query_params, &table)?
        .unwrap_or_else(|| auth.owner_query_params.clone());
    let route_rate_limit = match &route.rate_limit {
        None => None,
        Some(raw) => Some(validate_route_rate_limit(
            ctx,
            raw.get_ref(),
            &table,
            rate_limit,
        )?),
    };
    let needs_user = |value: Option<&Spanned<toml::Table>>, name: &str| match value {
        Some(table) if auth_mode == AuthMode::Public => Err(ctx.error(
            table,
            &key(name),
            "a public route has no verified claims to check",
        )),
        _ => Ok(()),
    };
    needs_user(route.require.as_ref(), "require")?;
    needs_user(route.owner_bypass.as_ref(), "owner_bypass")?;
    needs_user(route.claim_headers.as_ref(), "claim_headers")?;
    let require = match &route.require {
        Some(table) => validate_conditions(ctx, table, &key("require"))?,
        None => Vec::new(),
    };
    let owner_bypass = match &route.owner_bypass {
        Some(table) => validate_conditions(ctx, table, &key("owner_bypass"))?,
        None => Vec::new(),
    };
    let body_owner = match &route.body_owner_fields {
        None => {
            if let Some(max) = &route.max_body_owner_bytes {
                return Err(ctx.error(
                    max,
                    &key("max_body_owner_bytes"),
                    "needs body_owner_fields",
                ));
            }
            None
        }
        Some(fields) => {
            if auth_mode != AuthMode::Required {
                return Err(ctx.error(
                    raw,
                    &key("body_owner_fields"),
                    "owner fields need auth = \"required\"",
                ));
            }
            let mut names = Vec::new();
            for field in fields {
                if field.get_ref().is_empty() {
                    return Err(ctx.error(
                        field,
                        &key("body_owner_fields"),
                        "names must not be empty",
                    ));
                }
                names.push(field.get_ref().clone());
            }
            let max_bytes = match &route.max_body_owner_bytes {
                None => 1024 * 1024,
                Some(max) if (1..=64 * 1024 * 1024).contains(max.get_ref()) => {
                    *max.get_ref() as usize
                }
                Some(max) => {
                    return Err(ctx.error(
                        max,
                        &key("max_body_owner_bytes"),
                        "must be between 1 and 67108864",
                    ))
                }
            };
            Some(BodyOwner {
                fields: names,
                max_bytes,
            })
        }
    };
    let mut claim_headers = Vec::new();
    if let Some(table) = &route.claim_headers {
        for (name, claim) in table.get_ref() {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ctx.error(
                    table,
                    &key("claim_headers"),
                    format!("`{name}` is not a valid header name"),
                )
            })?;
            if RESERVED_HEADERS.contains(&header.as_str()) || header == auth.identity_header {
                return Err(ctx.error(
                    table,
                    &key("claim_headers"),
                    format!("`{name}` is reserved by the gateway"),
                ));
            }
            let Some(claim) = claim.as_str().filter(|claim| !claim.is_empty()) else {
                return Err(ctx.error(
                    table,
                    &key("claim_headers"),
                    format!("`{name}` must name a claim, e.g. \"email\""),
                ));
            };
            claim_headers.push(ClaimHeader {
                name: header,
                path: claim.split('.').map(String::from).collect(),
            });
        }
    }
    let upstream = match &route.upstream {
        None if has_default_upstream => UpstreamRef::Default,
        None => {
            return Err(ctx.error(
                raw,
                &table,
                "this route names no `upstream` and there is no default [upstream] table",
            ))
        }
        Some(name) => {
            let index = named_upstreams
                .iter()
                .position(|(named, _)| named == name.get_ref())
                .ok_or_else(|| {
                    ctx.error(
                        name,
                        &key("upstream"),
                        format!("no [upstreams.{}] table", name.get_ref()),
                    )
                })?;
            UpstreamRef::Named(index)
        }
    };
    let strip_prefix = match &route.strip_prefix {
        None => None,
        Some(prefix) => {
            let text = prefix.get_ref();
            let literal = crate::routes::parse_pattern(text)
                .ok()
                .filter(|params| params.is_empty());
            let covers = route.path.get_ref() == text
                || route.path.get_ref().starts_with(&format!("{text}/"));
            if text == "/" || literal.is_none() || !covers {
                return Err(ctx.error(
                    prefix,
                    &key("strip_prefix"),
                    "must be whole literal leading segments of this route's path, e.g. \"/tasks-api\"",
                ));
            }
            Some(StripPrefix {
                prefix: text.clone(),
                segments: text.matches('/').count(),
            })
        }
    };
    let websocket_keys_set = route.websocket_idle.is_some()
        || route.websocket_max_lifetime.is_some()
        || route.websocket_close_on_expiry.is_some();
    let websocket = match route.websocket {
        Some(true) => Some(WebSocketConfig {
            idle: validate_duration(
                ctx,
                &route.websocket_idle,
                &key("websocket_idle"),
                Duration::from_secs(300),
                false,
            )?,
            max_lifetime: validate_duration(
                ctx,
                &route.websocket_max_lifetime,
                &key("websocket_max_lifetime"),
                Duration::from_secs(24 * 3600),
                false,
            )?,
            close_on_expiry: route.websocket_close_on_expiry.unwrap_or(false),
        }),
        _ if websocket_keys_set => {
            return Err(ctx.error(
                raw,
                &key("websocket"),
                "websocket_* settings need websocket = true",
            ))
        }
        _ => None,
    };
    let stream_timeout = match &route.stream_timeout {
        None => None,
        Some(_) => Some(validate_duration(
            ctx,
            &route.stream_timeout,
            &key("stream_timeout"),
            Duration::ZERO,
            false,
        )?),
    };
    Ok(RouteConfig {
        path: route.path.get_ref().clone(),
        params,
        methods,
        auth: auth_mode,
        owner,
        owner_query_params,
        rate_limit: route_rate_limit,
        require,
        owner_bypass,
        body_owner,
        claim_headers,
        upstream,
        strip_prefix,
        websocket,
        stream_timeout,
        allow_method_override: route.allow_method_override.unwrap_or(false),
        location: ctx.location(raw, &table),
    })
}
