//! The request pipeline, top to bottom, in one place:
//!
//! target -> route -> authenticate -> authorize -> rewrite headers -> forward -> respond.
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
use crate::config::{AuthMode, Config, ConfigError};
use crate::error::GatewayError;
use crate::headers::{ClientInfo, HeaderPolicy};
use crate::routes::RouteTable;
use crate::target;
use crate::upstream::Upstream;

/// What the gateway answers with: the backend's streamed body, or our own small JSON refusal.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// Everything compiled from one config: the hot path only looks things up in here.
pub struct Gateway {
    routes: RouteTable,
    authenticator: Authenticator,
    headers: HeaderPolicy,
    upstream: Upstream,
}

impl Gateway {
    /// The authenticator, for readiness checks.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    pub fn new(config: &Config) -> Result<Gateway, ConfigError> {
        Ok(Gateway {
            routes: RouteTable::compile(&config.routes)?,
            authenticator: Authenticator::new(&config.auth),
            headers: HeaderPolicy::new(&config.auth),
            upstream: Upstream::new(&config.upstream),
        })
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let method = request.method().clone();
        match self.run(request, client).await {
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
        let identity: Option<Arc<Identity>> = {
            let target = target::validate(&parts.uri, parts.version)?;
            let matched = self.routes.lookup(&parts.method, &target.path)?;
            match matched.route.auth {
                AuthMode::Public => None,
                AuthMode::Required => {
                    let token =
                        auth::extract_bearer(&parts.headers).map_err(GatewayError::Unauthorized)?;
                    let identity = self.authenticator.verify(token, unix_now()).await.map_err(
                        |err| match err {
                            VerifyError::Invalid(err) => GatewayError::Unauthorized(err),
                            VerifyError::KeysUnavailable => GatewayError::KeysUnavailable,
                        },
                    )?;
                    authz::authorize(&matched, &identity, target.query)?;
                    Some(identity)
                }
            }
        };
        let authority = parts.uri.authority().cloned();
        self.headers.rewrite_request(
            &mut parts.headers,
            client,
            parts.version,
            authority.as_ref().map(|a| a.as_str()),
            identity.as_ref().map(|identity| &identity.header_value),
        )?;
        let mut response = self.upstream.forward(parts, body).await?;
        self.headers.rewrite_response(response.headers_mut());
        Ok(response)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
