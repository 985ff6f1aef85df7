//! The request pipeline, top to bottom, in one place:
//!
//! client -> target -> route -> limit / authenticate -> authorize -> rewrite -> forward -> respond.
//!
//! Each stage is one module with a narrow interface. A stage either hands the next one what it
//! needs or returns a `GatewayError`; `error.rs` alone turns that into a response. Nothing reaches
//! `forward` without passing every stage before it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::{AuthMethods, AuthMode, Config, ConfigError, LimitsConfig, UpstreamRef};
use crate::core::error::GatewayError;
use crate::core::metrics::Metrics;
use crate::core::token_error::TokenError;
use crate::proxy::body::{BodyScan, RequestBody};
use crate::proxy::jwks::RemoteJwks;
use crate::proxy::lifetime::BodyGuard;
use crate::proxy::session::SessionClient;
use crate::proxy::store::RedisStore;
use crate::proxy::stream::{self, UpstreamBody};
use crate::proxy::upstream::Upstream;
use crate::request::auth::{self, Authenticator, Identity, VerifyError};
use crate::request::authz::json_scan::JsonMethodScan;
use crate::request::authz::{self, Ownership};
use crate::request::cors::Cors;
use crate::request::forwarded::TrustedProxies;
use crate::request::headers::{ClientInfo, Forwarding, HeaderPolicy};
use crate::request::method_override::MethodGuard;
use crate::request::ratelimit::{RateLimits, SharedStore};
use crate::request::revocation::Revocations;
use crate::request::routes::RouteTable;
use crate::request::target;

/// What the gateway answers with: the backend's streamed body, or our own small JSON refusal.
pub(crate) type ResponseBody = Either<UpstreamBody, Full<Bytes>>;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything compiled from one config: the hot path only looks things up in here. A reload builds
/// a new `Gateway` and swaps it in; requests in flight keep the one they started with.
pub struct Gateway {
    routes: RouteTable,
    trusted_proxies: TrustedProxies,
    limits: RateLimits,
    authenticator: Authenticator,
    /// The remote JWKS sources the authenticator asks, for readiness and reuse across reloads.
    jwks: Vec<Arc<RemoteJwks>>,
    /// The shared store of `[store]`, for readiness and reuse across reloads.
    store: Option<Arc<RedisStore>>,
    /// `[auth.session]`: Better Auth session cookies, checked and cached; kept across reloads.
    sessions: Option<Arc<SessionClient>>,
    /// Revoked subjects and sessions (`POST /revoke`); kept across reloads.
    revocations: Arc<Revocations>,
    headers: HeaderPolicy,
    default_upstream: Option<Upstream>,
    named_upstreams: Vec<Upstream>,
    server_limits: LimitsConfig,
    access_log: bool,
    cors: Option<Cors>,
    max_token_lifetime: Duration,
    admin_token: Option<crate::config::Secret>,
    metrics: Arc<Metrics>,
}

/// What one request did, filled in by the stages as they run: the access log and the metrics
/// read it at the end.
#[derive(Default)]
struct Exchange {
    client_ip: Option<IpAddr>,
    /// Set only once the target passed validation: refused targets are never logged raw.
    path_validated: bool,
    route: Option<&'static str>,
    user: Option<Arc<Identity>>,
    upstream_time: Option<Duration>,
}

const NO_ROUTE: &str = "none";

/// A form body on a protected route is read whole to check its owner fields: at most this much
/// (413 above), as for `max_body_owner_bytes`' default.
const FORM_OWNER_MAX_BYTES: usize = 1 << 20;

impl Gateway {
    /// The authenticator, for readiness checks.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The remote JWKS sources (one per `jwks_url`).
    pub fn jwks_sources(&self) -> &[Arc<RemoteJwks>] {
        &self.jwks
    }

    /// Starts a lookup for each upstream whose host name has no known address yet (one runs at a
    /// time per name), and returns those upstreams (`host:port`): empty when every backend can be
    /// connected to. For readiness, and at start-up.
    pub fn start_resolving_upstreams(&self) -> Vec<String> {
        self.default_upstream
            .iter()
            .chain(&self.named_upstreams)
            .filter(|upstream| !upstream.address_known_or_look_up())
            .map(|upstream| upstream.authority().to_string())
            .collect()
    }

    /// The shared store, when `[store]` is set.
    pub fn store(&self) -> Option<&Arc<RedisStore>> {
        self.store.as_ref()
    }

    /// The revocations every authenticated request is checked against.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The longest a token may live (`auth.max_lifetime`): how long a revocation is kept.
    pub fn max_token_lifetime(&self) -> Duration {
        self.max_token_lifetime
    }

    /// The token `POST /revoke` requires (`[admin] token_env`).
    pub fn admin_token(&self) -> Option<&crate::config::Secret> {
        self.admin_token.as_ref()
    }

    /// Connection-level limits, for the server.
    pub(crate) fn server_limits(&self) -> &LimitsConfig {
        &self.server_limits
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn new(config: &Config) -> Result<Gateway, ConfigError> {
        Gateway::with_metrics(config, Metrics::new(), None)
    }

    /// Builds a gateway that reports into `metrics`. With `previous`, remote JWKS sources whose
    /// settings did not change are carried over, keys and all, so a reload never answers 503; so
    /// is the shared store, connection and all.
    pub(crate) fn with_metrics(
        config: &Config,
        metrics: Arc<Metrics>,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, ConfigError> {
        let (authenticator, jwks) = crate::proxy::jwks::authenticator(
            &config.auth,
            &metrics,
            previous.map_or(&[], |gateway| &gateway.jwks),
        );
        let sessions = match &config.auth.session {
            None => None,
            Some(settings) => match previous.and_then(|gateway| gateway.sessions.as_ref()) {
                Some(kept) if kept.same_settings(settings, &config.auth.user_claim) => {
                    Some(kept.clone())
                }
                _ => Some(Arc::new(
                    SessionClient::new(settings, &config.auth.user_claim, metrics.clone())
                        .map_err(|why| crate::config::ConfigError {
                            file: String::new(),
                            line: 0,
                            key: "auth.session.base_url".into(),
                            message: why,
                        })?,
                )),
            },
        };
        let revocations = previous.map_or_else(
            || Arc::new(Revocations::default()),
            |gateway| gateway.revocations.clone(),
        );
        let store = match &config.store {
            None => None,
            Some(settings) => match previous.and_then(|gateway| gateway.store.as_ref()) {
                Some(kept) if kept.settings() == settings => Some(kept.clone()),
                _ => {
                    let store = RedisStore::new(settings, metrics.clone()).map_err(|why| {
                        crate::config::ConfigError {
                            file: String::new(),
                            line: 0,
                            key: "store.redis_url".into(),
                            message: why,
                        }
                    })?;
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        runtime.spawn(crate::proxy::revocation_sync::follow(
                            Arc::downgrade(&store),
                            revocations.clone(),
                            metrics.clone(),
                        ));
                    }
                    Some(store)
                }
            },
        };
        let shared = match (&store, &config.store) {
            (Some(store), Some(settings)) => Some(SharedStore {
                store: store.clone(),
                on_error: settings.on_error,
                metrics: metrics.clone(),
            }),
            _ => None,
        };
        Ok(Gateway {
            routes: RouteTable::compile(&config.routes)?,
            trusted_proxies: TrustedProxies::new(config.server.trusted_proxies.clone()),
            limits: RateLimits::with_store(&config.rate_limit, &config.routes, shared),
            authenticator,
            jwks,
            store,
            sessions,
            revocations,
            max_token_lifetime: config.auth.max_lifetime,
            admin_token: config.admin_token.clone(),
            headers: HeaderPolicy::new(
                &config.auth,
                config
                    .routes
                    .iter()
                    .flat_map(|route| route.claim_headers.iter().map(|h| &h.name)),
            ),
            default_upstream: config
                .upstream
                .as_ref()
                .map(|upstream| Upstream::new(upstream, &metrics)),
            named_upstreams: config
                .named_upstreams
                .iter()
                .map(|(_, upstream)| Upstream::new(upstream, &metrics))
                .collect(),
            server_limits: config.limits,
            access_log: config.log.access,
            cors: config.cors.as_ref().map(Cors::new),
            metrics,
        })
    }

    pub(crate) async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: &ClientInfo,
        body_guard: Option<BodyGuard>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let uri = request.uri().clone();
        let request_id = self.request_id(request.headers(), client);
        let origin = self
            .cors
            .as_ref()
            .and_then(|cors| cors.allowed_origin(request.headers()));
        request
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        let mut exchange = Exchange::default();
        let outcome = tokio::time::timeout(
            self.server_limits.request_timeout,
            self.run(request, client, body_guard, &mut exchange),
        )
        .await
        .unwrap_or(Err(GatewayError::RequestTimeout));
        let (mut response, reason) = match outcome {
            Ok(response) => (response, None),
            Err(err) => {
                let reason = err.code();
                self.metrics.record_refusal(reason);
                (err.into_response().map(Either::Right), Some(reason))
            }
        };
        // Marked never to be indexed: over HTTP/2 an id that is new on every response would fill
        // the connection's HPACK table, push out the fields that do repeat (server, date,
        // content-type), and make the encoder compare each new id with every one stored.
        let mut response_id = request_id.clone();
        response_id.set_sensitive(true);
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), response_id);
        if let Some(cors) = &self.cors {
            cors.label(origin, response.headers_mut());
        }
        let took = started.elapsed();
        let route = exchange.route.unwrap_or(NO_ROUTE);
        self.metrics
            .record_request(route, &method, response.status().as_u16(), took);
        if self.access_log {
            let client_ip = exchange.client_ip.unwrap_or(client.peer.ip());
            let path = if exchange.path_validated {
                uri.path()
            } else {
                "-"
            };
            let user = exchange
                .user
                .as_ref()
                .map_or("-", |user| user.user_id.as_str());
            if crate::core::access_log::is_started() {
                crate::core::access_log::record(&crate::core::access_log::AccessRecord {
                    request_id: request_id.to_str().unwrap_or("-"),
                    client_ip,
                    method: method.as_str(),
                    path,
                    route,
                    status: response.status().as_u16(),
                    reason: reason.unwrap_or("-"),
                    user,
                    upstream: exchange.upstream_time,
                    total: took,
                });
            } else {
                // Human-readable logs (`format = "pretty"`) and the in-process tests.
                tracing::info!(
                    target: "authgate::access",
                    request_id = request_id.to_str().unwrap_or("-"),
                    client_ip = %client_ip,
                    method = %method,
                    path,
                    route,
                    status = response.status().as_u16(),
                    reason = reason.unwrap_or("-"),
                    user,
                    upstream_ms = %crate::core::access_log::Millis(exchange.upstream_time),
                    total_ms = %crate::core::access_log::Millis(Some(took)),
                    "request"
                );
            }
        }
        response
    }

    /// Keeps a well-formed `X-Request-Id` from a trusted proxy; otherwise makes a new one, so a
    /// client cannot choose the id that ties log lines together.
    fn request_id(&self, headers: &HeaderMap, client: &ClientInfo) -> HeaderValue {
        if self.trusted_proxies.is_trusted(client.peer.ip()) {
            let mut ids = headers.get_all(&X_REQUEST_ID).iter();
            if let (Some(id), None) = (ids.next(), ids.next()) {
                let bytes = id.as_bytes();
                let well_formed = !bytes.is_empty()
                    && bytes.len() <= 128
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if well_formed {
                    return id.clone();
                }
            }
        }
        new_request_id()
    }

    async fn run(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        body_guard: Option<BodyGuard>,
        exchange: &mut Exchange,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (mut parts, body) = request.into_parts();
        if parts.method == http::Method::CONNECT {
            return Err(GatewayError::BadRequest(
                "CONNECT is not supported, including WebSocket over HTTP/2 (RFC 8441); use HTTP/1.1",
            ));
        }
        let max_body = self.server_limits.max_body_bytes;
        if http_body::Body::size_hint(&body).lower() > max_body {
            return Err(GatewayError::PayloadTooLarge);
        }
        let address =
            self.trusted_proxies
                .client(client.peer.ip(), &client.forwarded_for, &parts.headers);
        exchange.client_ip = Some(address.ip);
        let ((route, identity, ownership, allowance), methods) = {
            let target = target::validate(&parts.uri, parts.version)?;
            exchange.path_validated = true;
            // A CORS preflight: the route must take the method it asks about; answered here,
            // never forwarded (src/request/cors.rs).
            if let Some(cors) = &self.cors {
                if let Some(requested) = Cors::preflight(&parts.method, &parts.headers) {
                    let requested = requested?;
                    let matched = self.routes.lookup(&requested, &target.path)?;
                    exchange.route = Some(matched.route.label);
                    cors.allowed_origin(&parts.headers)
                        .ok_or(GatewayError::OriginNotAllowed)?;
                    self.limits
                        .check_ip(matched.route.index, address.ip)
                        .await?;
                    return Ok(cors.preflight_response(&requested).map(Either::Right));
                }
            }
            let matched = self.routes.lookup(&parts.method, &target.path)?;
            let route = matched.route;
            exchange.route = Some(route.label);
            // Method overrides may only name what this route allows (src/request/method_override.rs);
            // the headers are stripped here unless the route opts in.
            let methods = MethodGuard::new(route, matched.allow);
            methods.check_headers(&mut parts.headers)?;
            crate::request::headers::refuse_body_metadata_lookalikes(&parts.headers)?;
            if stream::is_websocket_upgrade(&parts.headers) {
                if route.websocket.is_none() {
                    return Err(GatewayError::BadRequest(
                        "this route does not accept WebSocket upgrades",
                    ));
                }
                parts.extensions.insert(stream::WebSocketRequested);
            }
            let presented = parts.headers.contains_key(http::header::AUTHORIZATION)
                || self
                    .sessions
                    .as_ref()
                    .is_some_and(|sessions| sessions.cookies().present(&parts.headers));
            let identity = match route.auth {
                AuthMode::Public => None,
                // Optional: no credentials at all means anonymous; any credentials must be valid.
                AuthMode::Optional if !presented => None,
                AuthMode::Required | AuthMode::Optional => {
                    self.limits.auth_guard(address.ip)?;
                    let (identity, credential) = self
                        .authenticate(&parts.headers, address.ip, route.auth_methods)
                        .await?;
                    exchange.user = Some(identity.clone());
                    // A cookie rides along on any site's request: an unsafe one must prove it
                    // comes from this site (src/request/csrf.rs).
                    if credential == Credential::Session {
                        crate::request::csrf::check(
                            &parts.method,
                            &parts.headers,
                            parts.uri.authority().map(http::uri::Authority::as_str),
                            client.proto.to_str().unwrap_or("http"),
                            self.trusted_proxies.is_trusted(client.peer.ip()),
                            self.cors.as_ref(),
                        )?;
                    }
                    Some(identity)
                }
            };
            let decided = match identity {
                None => (
                    route,
                    None,
                    Ownership::Enforced,
                    self.limits.check_ip(route.index, address.ip).await?,
                ),
                Some(identity) => {
                    let allowance = self
                        .limits
                        .check_user(route.index, &identity.user_id)
                        .await?;
                    // The query is checked below, in one walk with the `_method` rule.
                    let ownership = authz::authorize(&matched, &identity, None)?;
                    (route, Some(identity), ownership, allowance)
                }
            };
            if let Some(query) = target.query {
                let (owner_names, user_id): (&[Box<str>], &str) = match (&decided.1, decided.2) {
                    (Some(identity), Ownership::Enforced) => {
                        (&route.owner_query_params, &identity.user_id)
                    }
                    _ => (&[], ""),
                };
                authz::check_query(
                    query,
                    &authz::FieldRules {
                        owner_names,
                        user_id,
                        methods: Some(methods),
                    },
                )?;
            }
            (decided, methods)
        };
        // Fields in the body: owner fields (when the owner rule applies to this caller) and, on a
        // POST to a route that refuses some method, the `_method` override. A body that some
        // backend reads as fields is read (bounded) or scanned as it streams, checked, and
        // forwarded byte for byte.
        let has_body = !http_body::Body::is_end_stream(&body);
        let owner_names: &[Box<str>] = match (&identity, ownership) {
            (Some(_), Ownership::Enforced) => &route.owner_query_params,
            _ => &[],
        };
        let fields = authz::FieldRules {
            owner_names,
            user_id: identity.as_ref().map_or("", |identity| &identity.user_id),
            methods: methods.watches_body(&parts.method).then_some(methods),
        };
        let scan_fields = has_body && !fields.is_empty();
        // Which of two Content-Types a backend takes is anyone's guess (joined, first, last).
        if scan_fields
            && parts
                .headers
                .get_all(http::header::CONTENT_TYPE)
                .iter()
                .nth(1)
                .is_some()
        {
            return Err(GatewayError::BadRequest(
                "more than one Content-Type header",
            ));
        }
        let form = scan_fields
            .then(|| authz::form_body(&parts.method, &parts.headers))
            .flatten();
        let multipart = match form {
            None if scan_fields => crate::request::authz::multipart::boundary(&parts.headers)?,
            _ => None,
        };
        let json_owner = match (&route.body_owner, &identity, ownership) {
            (Some(owner), Some(_), Ownership::Enforced) if has_body => Some(owner),
            _ => None,
        };
        let json_override = fields.methods.is_some()
            && has_body
            && form.is_none()
            && multipart.is_none()
            && authz::content_type_mentions(&parts.headers, b"json");
        let body = if let Some(owner) = json_owner {
            let limit = owner.max_bytes.min(max_body as usize);
            let bytes = crate::proxy::body::read_to_limit(body, limit, body_guard)
                .await
                .map_err(|err| match err {
                    GatewayError::PayloadTooLarge if limit < max_body as usize => {
                        GatewayError::CheckedBodyTooLarge(
                            "a JSON body whose owner fields this route checks is read whole, up \
                             to the route's body_owner max_bytes; this one is larger",
                        )
                    }
                    other => other,
                })?;
            authz::check_json_fields(
                &parts.headers,
                &bytes,
                &owner.fields,
                fields.user_id,
                fields.methods,
            )?;
            RequestBody::buffered(bytes)
        } else if let Some(kind) = form {
            // A form body: many frameworks read its fields as query parameters. An untyped POST
            // is read (as Rack would) only when it is small and its length declared; a streamed
            // or large one must say what it is.
            if kind == authz::FormBody::Untyped && !declared_at_most(&body, FORM_OWNER_MAX_BYTES) {
                return Err(GatewayError::UnsupportedMediaType);
            }
            let limit = FORM_OWNER_MAX_BYTES.min(max_body as usize);
            let bytes = crate::proxy::body::read_to_limit(body, limit, body_guard)
                .await
                .map_err(|err| match err {
                    GatewayError::PayloadTooLarge if limit < max_body as usize => {
                        GatewayError::CheckedBodyTooLarge(
                            "a form body on a route that checks its fields is read whole, up to \
                             1 MiB (the form-scan limit, below max_body_bytes); this one is \
                             larger: send it as multipart/form-data, which is checked as it \
                             streams",
                        )
                    }
                    other => other,
                })?;
            authz::check_form_fields(kind, &parts.headers, &bytes, &fields)?;
            RequestBody::buffered(bytes)
        } else if let Some(boundary) = multipart {
            // A multipart body: its fields too; scanned as it streams (uploads can be large).
            let mut scan = crate::request::authz::multipart::OwnerScan::new(
                &boundary,
                owner_names,
                fields.user_id,
            );
            if let Some(methods) = fields.methods {
                scan = scan.with_method_guard(methods.to_owned_guard());
            }
            RequestBody::limited(body, max_body, self.headers.trailer_policy(), body_guard)
                .with_owner_scan(BodyScan::Multipart(scan))
        } else if let (true, Some(methods)) = (json_override, fields.methods) {
            // Laravel reads a JSON body's `_method`: scanned as it streams (src/request/authz/json_scan.rs).
            authz::check_scanned_json_type(&parts.headers)?;
            let scan = JsonMethodScan::new(methods.to_owned_guard());
            RequestBody::limited(body, max_body, self.headers.trailer_policy(), body_guard)
                .with_owner_scan(BodyScan::Json(scan))
        } else {
            RequestBody::limited(body, max_body, self.headers.trailer_policy(), body_guard)
        };
        let claim_headers: Vec<(HeaderName, HeaderValue)> = match &identity {
            Some(identity) if !route.claim_headers.is_empty() => route
                .claim_headers
                .iter()
                .filter_map(|header| Some((header.name.clone(), header.value(&identity.claims)?)))
                .collect(),
            _ => Vec::new(),
        };
        // Better Auth's cookies are the credential itself: the backend gets the identity instead.
        if let (Some(sessions), false) = (&self.sessions, route.forward_session_cookie) {
            sessions.cookies().strip(&mut parts.headers);
        }
        let authority = parts.uri.authority().cloned();
        self.headers.rewrite_request(
            &mut parts.headers,
            &Forwarding {
                client,
                forwarded_for: &address.forwarded_for,
                version: parts.version,
                authority: authority.as_ref().map(|a| a.as_str()),
                identity: identity.as_ref().map(|identity| &identity.header_value),
                claim_headers: &claim_headers,
            },
        )?;
        if let Some(prefix) = &route.strip_prefix {
            parts.uri = strip_prefix(&parts.uri, prefix.segments)?;
        }
        // A WebSocket handshake: the upgrade headers go back in after the hop-by-hop strip, and the
        // client's half of the upgrade is kept for the splice (it must not travel upstream).
        let websocket = match route.websocket {
            Some(limits)
                if parts.version == http::Version::HTTP_11
                    && stream::is_websocket_upgrade_requested(&parts.extensions) =>
            {
                stream::request_upgrade_headers(&mut parts.headers);
                parts
                    .extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(|client| (client, limits))
            }
            _ => None,
        };
        let upstream = match route.upstream {
            UpstreamRef::Default => self.default_upstream.as_ref(),
            UpstreamRef::Named(index) => self.named_upstreams.get(index),
        }
        .ok_or(GatewayError::UpstreamUnavailable)?;
        let sent = Instant::now();
        let forwarded = upstream.forward(parts, body, sent).await;
        let upstream_time = sent.elapsed();
        exchange.upstream_time = Some(upstream_time);
        let mut response = forwarded.inspect_err(|err| {
            self.metrics
                .upstream_errors
                .get_or_create(&crate::core::metrics::ReasonLabels { reason: err.code() })
                .inc();
        })?;
        self.metrics
            .upstream_duration
            .observe(upstream_time.as_secs_f64());
        if let (Some((client, limits)), http::StatusCode::SWITCHING_PROTOCOLS) =
            (websocket, response.status())
        {
            // Splice only once the backend agreed; any other answer is passed back as it is.
            let backend = hyper::upgrade::on(&mut response);
            let expires_in = identity
                .as_ref()
                .and_then(|identity| identity.claims.get("exp"))
                .and_then(serde_json::Value::as_u64)
                .map(|exp| Duration::from_secs(exp.saturating_sub(unix_now())));
            stream::splice(client, backend, limits, expires_in);
            if self.cors.is_some() {
                Cors::strip_backend_labels(response.headers_mut());
            }
            // The connection now carries the WebSocket: it never returns to the pool.
            return Ok(
                response.map(|source| Either::Left(UpstreamBody::new(source.detached(), None)))
            );
        }
        self.headers.rewrite_response(response.headers_mut());
        if self.cors.is_some() {
            Cors::strip_backend_labels(response.headers_mut());
        }
        if let (true, Some(allowance)) = (self.limits.headers, allowance) {
            allowance.write_headers(response.headers_mut());
        }
        Ok(response.map(|source| Either::Left(UpstreamBody::new(source, route.stream_timeout))))
    }

    /// The caller's identity, from its bearer token or its Better Auth session cookie (whichever
    /// the route accepts; a bearer token first), checked against the revocations. A token
    /// verified before is taken from the cache; any other is looked at only after the shared
    /// brute-force guard lets its IP through, and a failure counts against that IP.
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        ip: IpAddr,
        accepted: AuthMethods,
    ) -> Result<(Arc<Identity>, Credential), GatewayError> {
        let now = unix_now();
        let bearer = headers.contains_key(http::header::AUTHORIZATION);
        let sessions = self.sessions.as_ref().filter(|_| accepted.session);
        let outcome = match (bearer, sessions) {
            (true, _) if accepted.bearer => self
                .authenticate_bearer(headers, ip, now)
                .await
                .map(|identity| (identity, Credential::Bearer)),
            (_, Some(sessions)) if sessions.cookies().present(headers) => {
                if let Some(identity) = sessions.cached(headers, now) {
                    return self.checked_revocation(identity, Credential::Session);
                }
                self.limits.shared_auth_guard(ip).await?;
                sessions
                    .authenticate(headers, now)
                    .await
                    .map(|identity| (identity, Credential::Session))
            }
            (true, _) => Err(GatewayError::Unauthorized(TokenError::MethodNotAccepted)),
            (false, Some(_)) if !accepted.bearer => {
                Err(GatewayError::Unauthorized(TokenError::Missing))
            }
            (false, Some(_)) => Err(GatewayError::Unauthorized(TokenError::NoCredentials)),
            (false, None) => Err(GatewayError::Unauthorized(TokenError::Missing)),
        };
        let outcome = outcome
            .and_then(|(identity, credential)| self.checked_revocation(identity, credential));
        if let Err(GatewayError::Unauthorized(_)) = &outcome {
            self.limits.record_auth_failure(ip).await?;
        }
        outcome
    }

    fn checked_revocation(
        &self,
        identity: Arc<Identity>,
        credential: Credential,
    ) -> Result<(Arc<Identity>, Credential), GatewayError> {
        self.revocations.check(&identity).map_err(|revoked| {
            self.metrics
                .revocations
                .get_or_create(&crate::core::metrics::ResultLabels { result: "refused" })
                .inc();
            GatewayError::Unauthorized(revoked)
        })?;
        Ok((identity, credential))
    }

    async fn authenticate_bearer(
        &self,
        headers: &http::HeaderMap,
        ip: IpAddr,
        now: u64,
    ) -> Result<Arc<Identity>, GatewayError> {
        let token = auth::bearer_bytes(headers).map_err(GatewayError::Unauthorized)?;
        if let Some(identity) = self.authenticator.cached(token, now) {
            return Ok(identity);
        }
        self.limits.shared_auth_guard(ip).await?;
        self.authenticator
            .verify_bearer(token, now)
            .await
            .map_err(|err| match err {
                VerifyError::Invalid(err) => GatewayError::Unauthorized(err),
                VerifyError::KeysUnavailable => GatewayError::KeysUnavailable,
            })
    }
}

/// Which credential authenticated a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    Bearer,
    Session,
}

/// Whether a request body declares its length and it is at most `limit`: only such a body is
/// read whole where the gateway would otherwise stream it.
fn declared_at_most(body: &Incoming, limit: usize) -> bool {
    http_body::Body::size_hint(body)
        .exact()
        .is_some_and(|length| length <= limit as u64)
}

/// Removes the first `segments` path segments of the raw target (keeping the query), for
/// `strip_prefix`. The segments are the ones the route matched literally, so no decoding is needed.
fn strip_prefix(uri: &http::Uri, segments: usize) -> Result<http::Uri, GatewayError> {
    let path = uri.path();
    let mut rest = path;
    for _ in 0..segments {
        rest = rest
            .strip_prefix('/')
            .map(|tail| tail.find('/').map_or("", |slash| &tail[slash..]))
            .unwrap_or("");
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let rebuilt = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    };
    rebuilt
        .parse()
        .map_err(|_| GatewayError::BadTarget("the target cannot be rewritten"))
}

/// A fresh request id: a random per-process prefix and a counter. Unique, cheap, and not a secret.
fn new_request_id() -> HeaderValue {
    // `<16 hex: random per thread>-<12 hex: per-thread sequence>`: unique without a shared
    // counter (which two workers would bounce between their caches on every request).
    thread_local! {
        static SEQUENCE: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((thread_prefix(), 0));
    }
    let (prefix, sequence) = SEQUENCE.with(|cell| {
        let (prefix, sequence) = cell.get();
        cell.set((prefix, sequence.wrapping_add(1)));
        (prefix, sequence)
    });
    let mut id = [b'-'; 29];
    hex_into(&mut id[..16], prefix);
    hex_into(&mut id[17..], sequence);
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&id))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn thread_prefix() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: fall back to something that still differs between threads and runs.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        bytes[..4].copy_from_slice(&nanos.to_le_bytes());
    }
    u64::from_le_bytes(bytes)
}

/// Writes the low `out.len()` hex digits of `value`, most significant first.
fn hex_into(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_well_formed_and_distinct() {
        let first = new_request_id();
        let second = new_request_id();
        assert_ne!(first, second);
        for id in [&first, &second] {
            let text = id.to_str().unwrap();
            assert_eq!(text.len(), 29, "{text}");
            assert_eq!(text.as_bytes()[16], b'-', "{text}");
            assert!(text
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 16 || b.is_ascii_hexdigit()));
        }
        let (a, b) = (first.to_str().unwrap(), second.to_str().unwrap());
        assert_eq!(a[..16], b[..16], "same thread, same prefix");
        let sequence = |id: &str| u64::from_str_radix(&id[17..], 16).unwrap();
        assert_eq!(sequence(b), sequence(a) + 1);
    }
}
