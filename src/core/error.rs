//! The one error type of the request pipeline, and the one place that turns it into an HTTP response.
//!
//! Every refusal is a small JSON body `{"error": "<code>", "message": "<text>"}`. Messages are static
//! strings chosen here, never echoes of request or token contents, so a refusal cannot reflect
//! attacker-controlled bytes back to the client or into a browser.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::core::token_error::TokenError;

/// Why a request was refused. Each variant maps to exactly one status code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request-target is ambiguous or not origin-form; we refuse rather than normalize.
    #[error("bad request target: {0}")]
    BadTarget(&'static str),
    /// The request is malformed in a way that is not about the target (headers, Host, Connection).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No route matches: default deny.
    #[error("no route matches")]
    NoRoute,
    /// A route matches the path but not the method.
    #[error("method not allowed")]
    MethodNotAllowed(HeaderValue),
    /// A method override (header, `_method` parameter or field) names a method the route does
    /// not allow; the message names the override.
    #[error("method override not allowed: {message}")]
    MethodOverride {
        message: &'static str,
        allow: HeaderValue,
    },
    /// No usable bearer token (missing, malformed, or failed verification).
    #[error("unauthorized: {0}")]
    Unauthorized(TokenError),
    /// A claim requirement of the route does not hold; carries the rule as configured (never the
    /// token's values).
    #[error("claim requirement not met: {0}")]
    ClaimRequirement(std::sync::Arc<str>),
    /// A request body the gateway must read for owner fields whose type it cannot pin down: not
    /// JSON on a `body_owner_fields` route, an ambiguous form, or a large untyped POST.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A CORS preflight from an origin `[cors]` does not allow.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The path or an owner query parameter names another user (the owner rule).
    #[error("owner mismatch: {0}")]
    OwnerMismatch(&'static str),
    /// Over a rate limit (or the auth-failure guard): 429 with Retry-After and RateLimit-*.
    #[error("rate limited")]
    RateLimited { limit: u32, retry_after: u64 },
    /// No key set was ever obtained from a JWKS, so no token can be checked yet. Not the client's
    /// fault: 503 with Retry-After, rather than a 401 that would log users out.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    /// The shared store (Redis) did not answer and `[store] on_error = "deny"`: 503 with
    /// Retry-After, since nothing can be counted.
    #[error("rate-limit store unavailable")]
    StoreUnavailable { retry_after: u64 },
    /// Better Auth did not answer about a session (down, slow, or an unreadable answer): 503 with
    /// Retry-After. A session cookie is never taken on trust.
    #[error("session check unavailable")]
    SessionUnavailable { retry_after: u64 },
    /// A cookie-authenticated unsafe request from another origin (or from no stated origin).
    #[error("cross-site request refused")]
    Csrf,
    /// The upstream refused, reset, or spoke garbage.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The request body went past `max_body_bytes`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// A body read whole to check its fields went past the smaller limit for that; the message
    /// names which limit.
    #[error("request body too large to check")]
    CheckedBodyTooLarge(&'static str),
    /// The whole exchange up to the response head took longer than `request_timeout`.
    #[error("request timed out")]
    RequestTimeout,
    /// The upstream did not answer within the configured timeout.
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl GatewayError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadTarget(_) | GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) | GatewayError::MethodOverride { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::OwnerMismatch(_)
            | GatewayError::ClaimRequirement(_)
            | GatewayError::OriginNotAllowed
            | GatewayError::Csrf => StatusCode::FORBIDDEN,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::KeysUnavailable
            | GatewayError::StoreUnavailable { .. }
            | GatewayError::SessionUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout | GatewayError::RequestTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::PayloadTooLarge | GatewayError::CheckedBodyTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
        }
    }

    /// Short machine-readable code: the `error` field of the body, and the refusal reason in logs.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            GatewayError::BadTarget(_) => "bad_target",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::MethodOverride { .. } => "method_override_not_allowed",
            GatewayError::Unauthorized(TokenError::Missing | TokenError::NoCredentials) => {
                "no_token"
            }
            GatewayError::Unauthorized(TokenError::SessionExpired) => "session_expired",
            GatewayError::Unauthorized(TokenError::Revoked) => "revoked",
            GatewayError::Unauthorized(TokenError::Expired) => "expired",
            GatewayError::Unauthorized(TokenError::InvalidClaim(_)) => "invalid_claims",
            GatewayError::Unauthorized(_) => "invalid_token",
            GatewayError::OwnerMismatch(_) => "owner_mismatch",
            GatewayError::ClaimRequirement(_) => "claim_requirement",
            GatewayError::OriginNotAllowed => "origin_not_allowed",
            GatewayError::UnsupportedMediaType => "unsupported_media_type",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::KeysUnavailable => "keys_unavailable",
            GatewayError::StoreUnavailable { .. } => "store_unavailable",
            GatewayError::SessionUnavailable { .. } => "session_unavailable",
            GatewayError::Csrf => "csrf",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::PayloadTooLarge | GatewayError::CheckedBodyTooLarge(_) => {
                "body_too_large"
            }
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            GatewayError::BadTarget(why) | GatewayError::BadRequest(why) => why,
            GatewayError::NoRoute => "no route matches this path",
            GatewayError::MethodNotAllowed(_) => "method not allowed on this route",
            GatewayError::MethodOverride { message, .. } => message,
            GatewayError::Unauthorized(err) => err.description(),
            GatewayError::OwnerMismatch(why) => why,
            GatewayError::ClaimRequirement(rule) => rule,
            GatewayError::OriginNotAllowed => {
                "this origin may not make cross-origin requests to this API"
            }
            GatewayError::UnsupportedMediaType => {
                "the request body's Content-Type is missing, ambiguous or not accepted here"
            }
            GatewayError::RateLimited { .. } => {
                "too many requests; retry after the time in Retry-After"
            }
            GatewayError::KeysUnavailable => {
                "the signing keys are not available yet; retry shortly"
            }
            GatewayError::StoreUnavailable { .. } => {
                "the rate-limit store is unavailable; retry after the time in Retry-After"
            }
            GatewayError::SessionUnavailable { .. } => {
                "the session could not be checked; retry after the time in Retry-After"
            }
            GatewayError::Csrf => {
                "a request authenticated by cookie must come from this site: its Origin is not \
                 this gateway's origin nor one [cors] allows"
            }
            GatewayError::UpstreamUnavailable => "the upstream service is unavailable",
            GatewayError::UpstreamTimeout => "the upstream service did not answer in time",
            GatewayError::RequestTimeout => "the request took longer than the gateway allows",
            GatewayError::PayloadTooLarge => "the request body is larger than the gateway allows",
            GatewayError::CheckedBodyTooLarge(message) => message,
        }
    }

    /// Renders the refusal. This is the only place a refusal becomes bytes on the wire.
    pub(crate) fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = json_body(self.code(), self.message());
        let mut response = Response::new(B::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            GatewayError::MethodNotAllowed(allow) | GatewayError::MethodOverride { allow, .. } => {
                headers.insert(ALLOW, allow);
            }
            GatewayError::KeysUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            GatewayError::StoreUnavailable { retry_after }
            | GatewayError::SessionUnavailable { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
            }
            GatewayError::RateLimited { limit, retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
                crate::core::allowance::Allowance {
                    limit,
                    remaining: 0,
                    reset: retry_after,
                }
                .write_headers(headers);
            }
            GatewayError::Unauthorized(TokenError::Missing | TokenError::NoCredentials) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate\""),
                );
            }
            GatewayError::Unauthorized(err) => {
                // RFC 6750 section 3: a token was presented but is bad. The description is one of
                // our static strings, so it is always a valid quoted-string.
                let value = format!(
                    "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\"{}\"",
                    err.description()
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// `{"error": code, "message": message}`; both are static ASCII chosen by us, escaped anyway.
pub(crate) fn json_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({ "error": code, "message": message });
    Bytes::from(body.to_string())
}
