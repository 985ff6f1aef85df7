//! The request pipeline, top to bottom, in one place:
//!
//! client -> target -> route -> limit / authenticate -> authorize -> rewrite -> forward -> respond.
//!
//! Each stage is one module with a narrow interface. A stage either hands the next one what it
//! needs or returns a `GatewayError`; `error.rs` alone turns that into a response. Nothing reaches
//! `forward` without passing every stage before it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use std::sync::Arc;

use crate::auth::{self, Authenticator, Identity, VerifyError};
use crate::authz;
use crate::body::RequestBody;
use crate::config::{AuthMode, Config, ConfigError, LimitsConfig};
use crate::error::GatewayError;
use crate::forwarded::TrustedProxies;
use crate::headers::{ClientInfo, HeaderPolicy};
use crate::ratelimit::RateLimits;
use crate::routes::RouteTable;
use crate::target;
use crate::upstream::Upstream;

/// What the gateway answers with: the backend's streamed body, or our own small JSON refusal.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// Everything compiled from one config: the hot path only looks things up in here.
pub struct Gateway {
    routes: RouteTable,
    trusted_proxies: TrustedProxies,
    limits: RateLimits,
    authenticator: Authenticator,
    headers: HeaderPolicy,
    upstream: Upstream,
    server_limits: LimitsConfig,
}

impl Gateway {
    /// The authenticator, for readiness checks.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Connection-level limits, for the server.
    pub fn server_limits(&self) -> &LimitsConfig {
        &self.server_limits
    }

    /// The rate limiters, for metrics and memory checks.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    pub fn new(config: &Config) -> Result<Gateway, ConfigError> {
        Ok(Gateway {
            routes: RouteTable::compile(&config.routes)?,
            trusted_proxies: TrustedProxies::new(config.server.trusted_proxies.clone()),
            limits: RateLimits::new(&config.rate_limit, &config.routes),
            authenticator: Authenticator::new(&config.auth),
            headers: HeaderPolicy::new(&config.auth),
            upstream: Upstream::new(&config.upstream),
            server_limits: config.limits,
        })
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let method = request.method().clone();
        let outcome = tokio::time::timeout(
            self.server_limits.request_timeout,
            self.run(request, client),
        )
        .await
        .unwrap_or(Err(GatewayError::RequestTimeout));
        match outcome {
            Ok(response) => response.map(Either::Left),
            Err(err) => {
                tracing::debug!(%method, peer = %client.peer, reason = err.code(), "refused: {err}");
                err.into_response().map(Either::Right)
            }
        }
    }

    async fn run(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
    ) -> Result<Response<Incoming>, GatewayError> {
        let (mut parts, body) = request.into_parts();
        let max_body = self.server_limits.max_body_bytes;
        if http_body::Body::size_hint(&body).lower() > max_body {
            return Err(GatewayError::PayloadTooLarge);
        }
        let address =
            self.trusted_proxies
                .client(client.peer.ip(), &client.forwarded_for, &parts.headers);
        let (identity, allowance) = {
            let target = target::validate(&parts.uri, parts.version)?;
            let matched = self.routes.lookup(&parts.method, &target.path)?;
            let route = matched.route;
            match route.auth {
                AuthMode::Public => (None, self.limits.check_ip(route.index, address.ip)?),
                AuthMode::Required => {
                    self.limits.auth_guard(address.ip)?;
                    let identity = self.authenticate(&parts.headers).await.inspect_err(|err| {
                        if matches!(err, GatewayError::Unauthorized(_)) {
                            self.limits.record_auth_failure(address.ip);
                        }
                    })?;
                    let allowance = self.limits.check_user(route.index, &identity.user_id)?;
                    authz::authorize(&matched, &identity, target.query)?;
                    (Some(identity), allowance)
                }
            }
        };
        let authority = parts.uri.authority().cloned();
        self.headers.rewrite_request(
            &mut parts.headers,
            client,
            &address.forwarded_for,
            parts.version,
            authority.as_ref().map(|a| a.as_str()),
            identity.as_ref().map(|identity| &identity.header_value),
        )?;
        let body = RequestBody::limited(body, max_body);
        let mut response = self.upstream.forward(parts, body).await?;
        self.headers.rewrite_response(response.headers_mut());
        if let (true, Some(allowance)) = (self.limits.headers, allowance) {
            allowance.write_headers(response.headers_mut());
        }
        Ok(response)
    }

    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Identity>, GatewayError> {
        let token = auth::extract_bearer(headers).map_err(GatewayError::Unauthorized)?;
        self.authenticator
            .verify(token, unix_now())
            .await
            .map_err(|err| match err {
                VerifyError::Invalid(err) => GatewayError::Unauthorized(err),
                VerifyError::KeysUnavailable => GatewayError::KeysUnavailable,
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
