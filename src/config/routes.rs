//! `[[route]]`: the path pattern, methods, authentication and authorization rules of each route.

use crate::core::policy::{ClaimCondition, ClaimHeader, Condition};
use http::header::HeaderName;
use http::Method;
use raw::RawRoute;
use std::time::Duration;
use toml::Spanned;

use super::*;

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
    /// Which credentials the route accepts (`auth_methods`).
    pub auth_methods: AuthMethods,
    /// Forward Better Auth's cookies to the backend instead of stripping them.
    pub forward_session_cookie: bool,
    pub location: Location,
}

/// `auth_methods`: a bearer JWT, a Better Auth session cookie, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMethods {
    pub bearer: bool,
    pub session: bool,
}

/// Methods a route may list. CONNECT and TRACE are never proxied.
pub(crate) const SUPPORTED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

/// `{ claim = value, "org.role" = ["a", "b"], email = "*" }`; nested tables are dotted paths too.
pub(super) fn validate_conditions(
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

pub(super) fn validate_route(
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
    let params = parse_pattern(route.path.get_ref())
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
            let literal = parse_pattern(text).ok().filter(|params| params.is_empty());
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
    let auth_methods = match &route.auth_methods {
        None => AuthMethods {
            bearer: !auth.issuers.is_empty() || auth.session.is_none(),
            session: auth.session.is_some(),
        },
        Some(list) => {
            if auth_mode == AuthMode::Public {
                return Err(ctx.error(
                    list,
                    &key("auth_methods"),
                    "a public route authenticates no one",
                ));
            }
            if list.get_ref().is_empty() {
                return Err(ctx.error(
                    list,
                    &key("auth_methods"),
                    "the list is empty; remove the key to accept every configured method",
                ));
            }
            let mut methods = AuthMethods {
                bearer: false,
                session: false,
            };
            for name in list.get_ref() {
                let slot =
                    match name.get_ref().as_str() {
                        "bearer" => &mut methods.bearer,
                        "session" if auth.session.is_none() => return Err(ctx.error(
                            name,
                            &key("auth_methods"),
                            "\"session\" needs an [auth.session] table (Better Auth's base_url)",
                        )),
                        "session" => &mut methods.session,
                        _ => {
                            return Err(ctx.error(
                                name,
                                &key("auth_methods"),
                                "expected \"bearer\" or \"session\"",
                            ))
                        }
                    };
                if *slot {
                    return Err(ctx.error(name, &key("auth_methods"), "listed twice"));
                }
                *slot = true;
            }
            methods
        }
    };
    if auth_methods.bearer && auth.issuers.is_empty() && route.auth_methods.is_some() {
        return Err(ctx.error(
            raw,
            &key("auth_methods"),
            "\"bearer\" needs a key source in [auth] (secret_env, jwks_url or jwks_file)",
        ));
    }
    let forward_session_cookie = match &route.forward_session_cookie {
        Some(value) if auth.session.is_none() && *value.get_ref() => {
            return Err(ctx.error(
                value,
                &key("forward_session_cookie"),
                "needs an [auth.session] table: without it no cookie is stripped",
            ))
        }
        value => value.as_ref().is_some_and(|value| *value.get_ref()),
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
        auth_methods,
        forward_session_cookie,
        location: ctx.location(raw, &table),
    })
}

/// The checks a route table needs across routes, done here so that `authgate check` reports
/// them: two routes with one pattern may not share a method (the later one could never be
/// reached), and two patterns may not conflict in the matcher (`/a/{x}` and `/a/{y}`).
pub(super) fn check_table(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut router = matchit::Router::new();
    for (index, route) in routes.iter().enumerate() {
        let same_pattern = routes[..index]
            .iter()
            .filter(|other| other.path == route.path);
        let mut first_of_pattern = None;
        for (position, other) in same_pattern.enumerate() {
            let first = *first_of_pattern.get_or_insert(other);
            if methods_overlap(other.methods.as_deref(), route.methods.as_deref()) {
                return Err(route.location.error(format!(
                    "can never be reached: an earlier route for `{}` (line {}, route #{}) already handles some of the same methods",
                    route.path,
                    first.location.line,
                    position + 1
                )));
            }
        }
        if first_of_pattern.is_none() {
            router
                .insert(route.path.as_str(), index)
                .map_err(|err| route.location.error(format!("route conflicts: {err}")))?;
        }
    }
    Ok(())
}

/// Whether two routes' method lists share a method (`None` is every method).
fn methods_overlap(a: Option<&[Method]>, b: Option<&[Method]>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.iter().any(|method| b.contains(method)),
    }
}

/// Checks a route pattern's syntax and returns its parameter names in order.
///
/// Patterns are `/`-separated segments; a segment is literal text, a whole-segment `{name}`, or a
/// final `{*name}` that takes the rest of the path. Literal segments are compared with decoded
/// request segments, so they must be decoded text that a valid request could contain.
pub fn parse_pattern(pattern: &str) -> Result<Vec<String>, String> {
    if !pattern.starts_with('/') {
        return Err("a route path must start with `/`".into());
    }
    if pattern == "/" {
        return Ok(Vec::new());
    }
    let segments: Vec<&str> = pattern[1..].split('/').collect();
    let mut params: Vec<String> = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err("empty segment in route path (`//` or a trailing `/`)".into());
        }
        if let Some(inner) = segment.strip_prefix('{') {
            let Some(inner) = inner.strip_suffix('}') else {
                return Err(format!(
                    "segment `{segment}`: a parameter must be a whole segment `{{name}}`"
                ));
            };
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if catch_all && index + 1 != segments.len() {
                return Err(format!("`{{*{name}}}` must be the last segment"));
            }
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "parameter name `{name}` must be letters, digits or `_`"
                ));
            }
            if params.iter().any(|param| param == name) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            params.push(name.to_string());
            continue;
        }
        if segment == &"." || segment == &".." {
            return Err(format!(
                "segment `{segment}` can never match a valid request"
            ));
        }
        // Express, Rails and Sinatra write `/:id`: here it would be a literal segment that no
        // real request has, so every request would get 404.
        if let Some(name) = segment.strip_prefix(':') {
            return Err(format!(
                "segment `{segment}` is a literal `:` segment here; parameters are written `{{{name}}}`"
            ));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| matches!(c, '{' | '}' | '%' | '\\' | ';' | '?' | '#') || c.is_control())
        {
            return Err(format!(
                "segment `{segment}` contains `{bad}`; write literal segments as decoded text without delimiters"
            ));
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_syntax() {
        assert_eq!(
            parse_pattern("/api/{user_id}/tasks/{*rest}").unwrap(),
            vec!["user_id", "rest"]
        );
        assert!(parse_pattern("/").unwrap().is_empty());
        for bad in [
            "api",
            "/a//b",
            "/a/",
            "/{x}{y}",
            "/a{x}",
            "/{*rest}/x",
            "/{x}/{x}",
            "/{}",
            "/{a-b}",
            "/a%20",
            "/..",
            "/a;b",
            "/api/:user_id/tasks",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            parse_pattern("/api/:user_id/tasks").unwrap_err(),
            "segment `:user_id` is a literal `:` segment here; parameters are written `{user_id}`"
        );
    }
}
