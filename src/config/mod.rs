//! Configuration: `gateway.toml` is parsed into raw serde types (`raw`), then validated once into the
//! typed structures below. Every error names the file, the line and the key, so an operator can fix
//! a bad config without reading our source. Nothing downstream re-validates or re-parses.

mod duration;
mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use jsonwebtoken::Algorithm;
use toml::Spanned;

pub use duration::parse_duration;
use raw::{RawAuth, RawConfig, RawRoute, RawUpstream};

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
    pub upstream: UpstreamConfig,
    pub auth: AuthConfig,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Tokio worker threads; `None` means one per core.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    pub timeout: Duration,
    pub connect_timeout: Duration,
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
    pub algorithms: Vec<Algorithm>,
    pub secret: Option<Secret>,
    pub secret_env: Option<String>,
    pub user_claim: String,
    pub identity_header: HeaderName,
    pub leeway: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub strip_headers: Vec<HeaderName>,
    pub owner_query_params: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Public,
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
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Config {
    /// Reads and validates a config file, resolving secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: file.clone(),
            line: 0,
            key: String::new(),
            message: format!("cannot read config file: {err}"),
        })?;
        Config::parse(&source, &file, &|name| std::env::var(name).ok())
    }

    /// Validates config text. `env` resolves environment variables (secrets), so that callers such
    /// as the demo and the tests can supply them without touching the process environment.
    pub fn parse(
        source: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let ctx = Ctx { file, source };
        let raw: RawConfig = toml::from_str(source).map_err(|err| {
            let line = err.span().map(|span| ctx.line_of(span.start)).unwrap_or(0);
            ConfigError {
                file: file.to_string(),
                line,
                key: String::new(),
                message: err.message().trim().to_string(),
            }
        })?;
        let server = validate_server(&ctx, raw.server)?;
        let upstream = validate_upstream(&ctx, &raw.upstream)?;
        let auth = validate_auth(&ctx, &raw.auth, env)?;
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| validate_route(&ctx, index, route, &auth))
            .collect::<Result<Vec<_>, _>>()?;
        let config = Config {
            server,
            upstream,
            auth,
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

fn validate_server(ctx: &Ctx, raw: Option<raw::RawServer>) -> Result<ServerConfig, ConfigError> {
    let mut server = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        workers: None,
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

fn validate_upstream(ctx: &Ctx, raw: &Spanned<RawUpstream>) -> Result<UpstreamConfig, ConfigError> {
    let upstream = raw.get_ref();
    let url = &upstream.url;
    let uri: Uri = url
        .get_ref()
        .parse()
        .map_err(|_| ctx.error(url, "upstream.url", "not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => {
            return Err(ctx.error(
                url,
                "upstream.url",
                "https upstreams are not supported yet; use http on a private network",
            ))
        }
        _ => return Err(ctx.error(url, "upstream.url", "the scheme must be http")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(ctx.error(url, "upstream.url", "the URL has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(ctx.error(
            url,
            "upstream.url",
            "credentials in the URL are not supported",
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ctx.error(
            url,
            "upstream.url",
            "the URL must not have a path or query; the request path is forwarded as received",
        ));
    }
    Ok(UpstreamConfig {
        scheme,
        authority,
        timeout: validate_duration(
            ctx,
            &upstream.timeout,
            "upstream.timeout",
            DEFAULT_UPSTREAM_TIMEOUT,
            false,
        )?,
        connect_timeout: validate_duration(
            ctx,
            &upstream.connect_timeout,
            "upstream.connect_timeout",
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

fn validate_auth(
    ctx: &Ctx,
    raw: &Spanned<RawAuth>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AuthConfig, ConfigError> {
    let auth = raw.get_ref();
    let algorithms = match &auth.algorithms {
        None => vec![Algorithm::HS256],
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(ctx.error(list, "auth.algorithms", "the algorithm list is empty"));
            }
            let mut algorithms = Vec::new();
            for name in list.get_ref() {
                let algorithm = crate::auth::parse_algorithm(name.get_ref()).ok_or_else(|| {
                    ctx.error(
                        name,
                        "auth.algorithms",
                        format!("unknown or unsupported algorithm `{}`", name.get_ref()),
                    )
                })?;
                if algorithms.contains(&algorithm) {
                    return Err(ctx.error(name, "auth.algorithms", "listed twice"));
                }
                algorithms.push(algorithm);
            }
            algorithms
        }
    };
    let (secret, secret_env) = match &auth.secret_env {
        None => (None, None),
        Some(var) => {
            let name = var.get_ref();
            match env(name) {
                None => {
                    return Err(ctx.error(
                        var,
                        "auth.secret_env",
                        format!("environment variable {name} is not set"),
                    ))
                }
                Some(value) if value.is_empty() => {
                    return Err(ctx.error(
                        var,
                        "auth.secret_env",
                        format!("environment variable {name} is empty"),
                    ))
                }
                Some(value) => (Some(Secret(value.into_bytes())), Some(name.clone())),
            }
        }
    };
    for algorithm in &algorithms {
        let is_hmac = matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if !is_hmac {
            let span = auth
                .algorithms
                .as_ref()
                .map(|list| list.span())
                .unwrap_or(raw.span());
            return Err(ConfigError {
                file: ctx.file.to_string(),
                line: ctx.line_of(span.start),
                key: "auth.algorithms".into(),
                message: format!(
                    "{algorithm:?} needs a public key source, and only `secret_env` (HS*) is supported in this version"
                ),
            });
        }
        if secret.is_none() {
            let span = auth
                .algorithms
                .as_ref()
                .map(|list| list.span())
                .unwrap_or(raw.span());
            return Err(ConfigError {
                file: ctx.file.to_string(),
                line: ctx.line_of(span.start),
                key: "auth.secret_env".into(),
                message: format!("{algorithm:?} needs `secret_env` naming the shared secret"),
            });
        }
    }
    if let Some(Secret(bytes)) = &secret {
        if bytes.len() < 32 {
            tracing::warn!(
                "the HMAC secret is {} bytes; use at least 32 random bytes",
                bytes.len()
            );
        }
    }
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
    let non_empty = |value: &Option<Spanned<String>>, key: &str| match value {
        Some(value) if value.get_ref().is_empty() => Err(ctx.error(
            value,
            key,
            "must not be empty; remove the key to disable the check",
        )),
        value => Ok(value.as_ref().map(|value| value.get_ref().clone())),
    };
    Ok(AuthConfig {
        algorithms,
        secret,
        secret_env,
        user_claim,
        identity_header,
        leeway: validate_duration(ctx, &auth.leeway, "auth.leeway", DEFAULT_LEEWAY, true)?,
        issuer: non_empty(&auth.issuer, "auth.issuer")?,
        audience: non_empty(&auth.audience, "auth.audience")?,
        strip_headers,
        owner_query_params,
    })
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

fn validate_route(
    ctx: &Ctx,
    index: usize,
    raw: &Spanned<RawRoute>,
    auth: &AuthConfig,
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
        Some((_, "public")) => AuthMode::Public,
        Some((mode, _)) => {
            return Err(ctx.error(mode, &key("auth"), "expected \"required\" or \"public\""))
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
            if auth_mode == AuthMode::Public {
                return Err(ctx.error(
                    owner,
                    &key("owner"),
                    "a public route has no authenticated user to compare with",
                ));
            }
            Some(owner.get_ref().clone())
        }
    };
    let owner_query_params = validate_query_params(ctx, &route.owner_query_params, &table)?
        .unwrap_or_else(|| auth.owner_query_params.clone());
    Ok(RouteConfig {
        path: route.path.get_ref().clone(),
        params,
        methods,
        auth: auth_mode,
        owner,
        owner_query_params,
        location: ctx.location(raw, &table),
    })
}
