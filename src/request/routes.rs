//! The compiled route table: default deny, case-sensitive, matched on decoded segments.
//!
//! Precedence does not depend on the order of `[[route]]` tables. For a given path, matchit picks
//! the most specific pattern segment by segment: a static segment beats a `{param}`, which beats a
//! trailing `{*rest}`. Two tables with the same pattern are alternatives chosen by method; if their
//! method sets overlap, one could never be reached, and that is a config error. Two patterns of the
//! same shape with different parameter names (`/a/{x}` and `/a/{y}`) are also an error.

use http::header::HeaderValue;
use http::Method;

use crate::config::{
    AuthMode, BodyOwner, ConfigError, RouteConfig, StripPrefix, UpstreamRef, WebSocketConfig,
    SUPPORTED_METHODS,
};
use crate::core::error::GatewayError;
use crate::core::policy::{ClaimCondition, ClaimHeader};

/// A route pattern as a `'static` label. Each distinct pattern is kept once for the life of the
/// process (a reload reuses what it finds), so this grows only with the distinct patterns ever
/// configured, not with reloads or requests.
pub(crate) fn intern_label(pattern: &str) -> &'static str {
    static LABELS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut labels = LABELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&known) = labels.get(pattern) {
        return known;
    }
    let label: &'static str = Box::leak(pattern.into());
    labels.insert(label);
    label
}

/// One `[[route]]`, ready to use.
#[derive(Debug)]
pub struct Route {
    /// Position in the config, for per-route state kept elsewhere (rate limiters).
    pub index: usize,
    pub pattern: Box<str>,
    /// The pattern as a metrics and log label: interned (see `intern_label`), so a request
    /// refers to it without touching a reference count the other workers also write.
    pub label: &'static str,
    pub auth: AuthMode,
    /// The path parameter that must equal the authenticated user id.
    pub owner: Option<Box<str>>,
    /// Query parameters that must equal the authenticated user id wherever they appear.
    pub owner_query_params: Box<[Box<str>]>,
    pub require: Box<[ClaimCondition]>,
    pub owner_bypass: Box<[ClaimCondition]>,
    pub body_owner: Option<BodyOwner>,
    pub claim_headers: Box<[ClaimHeader]>,
    pub upstream: UpstreamRef,
    pub strip_prefix: Option<StripPrefix>,
    pub websocket: Option<WebSocketConfig>,
    pub stream_timeout: Option<std::time::Duration>,
    /// Forward override headers that name an allowed method (`src/request/method_override.rs`).
    pub allow_method_override: bool,
    /// Which credentials the route takes (`auth_methods`).
    pub auth_methods: crate::config::AuthMethods,
    /// Keep Better Auth's cookies in what the backend receives.
    pub forward_session_cookie: bool,
    methods: MethodSet,
}

impl Route {
    /// The methods this route takes.
    pub(crate) fn methods(&self) -> MethodSet {
        self.methods
    }
}

/// The routes that share one pattern, and the `Allow` header for them.
#[derive(Debug)]
struct PathEntry {
    routes: Vec<Route>,
    allow: HeaderValue,
}

#[derive(Debug)]
pub struct RouteTable {
    router: matchit::Router<usize>,
    entries: Vec<PathEntry>,
}

pub struct RouteMatch<'table, 'path> {
    pub route: &'table Route,
    pub params: matchit::Params<'table, 'path>,
    /// The `Allow` header for the matched path: every method some route of it takes.
    pub allow: &'table HeaderValue,
}

impl RouteMatch<'_, '_> {
    /// The decoded value of a path parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }
}

impl RouteTable {
    pub fn compile(configs: &[RouteConfig]) -> Result<RouteTable, ConfigError> {
        let mut router = matchit::Router::new();
        let mut entries: Vec<PathEntry> = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let methods = MethodSet::from_config(config.methods.as_deref());
            let route = Route {
                index,
                pattern: config.path.as_str().into(),
                label: intern_label(&config.path),
                auth: config.auth,
                owner: config.owner.as_deref().map(Into::into),
                owner_query_params: config
                    .owner_query_params
                    .iter()
                    .map(|name| name.as_str().into())
                    .collect(),
                require: config.require.clone().into(),
                owner_bypass: config.owner_bypass.clone().into(),
                body_owner: config.body_owner.clone(),
                claim_headers: config.claim_headers.clone().into(),
                upstream: config.upstream,
                strip_prefix: config.strip_prefix.clone(),
                websocket: config.websocket,
                stream_timeout: config.stream_timeout,
                allow_method_override: config.allow_method_override,
                auth_methods: config.auth_methods,
                forward_session_cookie: config.forward_session_cookie,
                methods,
            };
            // Config validation (`config::routes::check_table`) refused overlapping methods.
            if let Some(index) = entries
                .iter()
                .position(|entry| *entry.routes[0].pattern == *config.path)
            {
                let entry = &mut entries[index];
                entry.routes.push(route);
                entry.allow = allow_header(&entry.routes);
                continue;
            }
            router
                .insert(config.path.as_str(), entries.len())
                .map_err(|err| config.location.error(format!("route conflicts: {err}")))?;
            let allow = allow_header(std::slice::from_ref(&route));
            entries.push(PathEntry {
                routes: vec![route],
                allow,
            });
        }
        Ok(RouteTable { router, entries })
    }

    /// Finds the route for a decoded path and method. No match is 404; a path match with the
    /// wrong method is 405 with `Allow`.
    pub fn lookup<'table, 'path>(
        &'table self,
        method: &Method,
        path: &'path str,
    ) -> Result<RouteMatch<'table, 'path>, GatewayError> {
        let matched = self.router.at(path).map_err(|_| GatewayError::NoRoute)?;
        let entry = &self.entries[*matched.value];
        let bit = MethodSet::bit(method);
        match entry
            .routes
            .iter()
            .find(|route| route.methods.contains(bit))
        {
            Some(route) => Ok(RouteMatch {
                route,
                params: matched.params,
                allow: &entry.allow,
            }),
            None => Err(GatewayError::MethodNotAllowed(entry.allow.clone())),
        }
    }
}

fn allow_header(routes: &[Route]) -> HeaderValue {
    let union = routes.iter().fold(MethodSet(0), |all, route| {
        MethodSet(all.0 | route.methods.0)
    });
    let names: Vec<&str> = SUPPORTED_METHODS
        .iter()
        .enumerate()
        .filter(|(index, _)| union.0 & (1 << index) != 0)
        .map(|(_, method)| method.as_str())
        .collect();
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A set of `SUPPORTED_METHODS`, one bit each. Any other method is in no set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodSet(u8);

impl MethodSet {
    const ALL: MethodSet = MethodSet((1 << SUPPORTED_METHODS.len()) - 1);

    pub(crate) fn is_all(self) -> bool {
        self == MethodSet::ALL
    }

    pub(crate) fn contains_method(self, method: &Method) -> bool {
        self.contains(MethodSet::bit(method))
    }

    fn from_config(methods: Option<&[Method]>) -> MethodSet {
        match methods {
            None => MethodSet::ALL,
            Some(methods) => MethodSet(methods.iter().fold(0, |set, m| set | MethodSet::bit(m))),
        }
    }

    fn bit(method: &Method) -> u8 {
        SUPPORTED_METHODS
            .iter()
            .position(|supported| supported == method)
            .map_or(0, |index| 1 << index)
    }

    fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}
