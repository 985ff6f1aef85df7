//! CORS (`[cors]`): the gateway, not the backend, answers browsers' preflight requests and labels
//! responses for the origins it allows.
//!
//! Without it, a single-page app on another origin cannot use the API through the gateway: the
//! browser's preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, never with
//! credentials) would get 401 on every protected route. Passing preflights to the backend
//! unauthenticated would break "nothing reaches the backend without passing every stage", so a
//! preflight is answered here, after the target and route checks (404, 405 and 400 as for the
//! real request), and never forwarded.
//!
//! Every other response, refusals included, gets `Access-Control-Allow-Origin` for an allowed
//! origin (so the app can read a 401 and send its user to log in), and loses whatever
//! `Access-Control-*` fields the backend set: one policy, in one place. CORS is not access
//! control: a request from an origin that is not allowed is still served, only without the
//! labels, and the browser keeps the answer from the page. Bearer tokens are not sent by
//! browsers on their own, so there is no cross-site request forgery to stop here.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::config::CorsConfig;
use crate::core::error::GatewayError;

/// `[cors]` compiled: exact origins and ready-made header values.
pub struct Cors {
    /// `None`: any origin (`*`, no credentials).
    origins: Option<Vec<Box<[u8]>>>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

static ANY: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN_NAME: HeaderValue = HeaderValue::from_static("origin");

impl Cors {
    pub fn new(config: &CorsConfig) -> Cors {
        let list = |names: &[HeaderName]| {
            if names.is_empty() {
                return None;
            }
            let joined: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
            HeaderValue::from_str(&joined.join(", ")).ok()
        };
        Cors {
            origins: config.allow_origins.as_ref().map(|origins| {
                origins
                    .iter()
                    .map(|origin| origin.as_bytes().into())
                    .collect()
            }),
            allow_headers: list(&config.allow_headers),
            expose_headers: list(&config.expose_headers),
            max_age: HeaderValue::from(config.max_age.as_secs()),
            credentials: config.allow_credentials,
        }
    }

    /// The request's origin when it is one this policy allows: exactly one `Origin` field,
    /// matched byte for byte against the configured ones (browsers send them lower-case).
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut values = headers.get_all(ORIGIN).iter();
        let (Some(origin), None) = (values.next(), values.next()) else {
            return None;
        };
        match &self.origins {
            None => Some(ANY.clone()),
            Some(origins) => origins
                .iter()
                .any(|allowed| **allowed == *origin.as_bytes())
                .then(|| origin.clone()),
        }
    }

    /// Whether `origin` is one of the listed `allow_origins` (byte for byte). `"*"` lists none:
    /// it lets any site read answers, and must not let any site act with a user's cookie.
    pub fn lists_origin(&self, origin: &[u8]) -> bool {
        self.origins
            .as_ref()
            .is_some_and(|origins| origins.iter().any(|allowed| **allowed == *origin))
    }

    /// The method a CORS preflight asks about, when `method` and `headers` make one: `OPTIONS`
    /// with an `Origin` and an `Access-Control-Request-Method`. A requested method that is not a
    /// method token is a bad request.
    pub(crate) fn preflight(
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Result<Method, GatewayError>> {
        if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
            return None;
        }
        let requested = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        Some(
            Method::from_bytes(requested.as_bytes()).map_err(|_| {
                GatewayError::BadRequest("Access-Control-Request-Method is not a method")
            }),
        )
    }

    /// 204 for an allowed origin's preflight of `method` on a route that takes it (`label` adds
    /// the origin).
    pub(crate) fn preflight_response(&self, method: &Method) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        if let Ok(method) = HeaderValue::from_str(method.as_str()) {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, method);
        }
        if let Some(allow) = &self.allow_headers {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }

    /// Drops every `Access-Control-*` field a backend response carries: the labels are ours.
    pub(crate) fn strip_backend_labels(headers: &mut HeaderMap) {
        let from_backend: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in from_backend {
            headers.remove(name);
        }
    }

    /// Labels a response for `origin` (from `allowed_origin`; `None` when there was no allowed
    /// one): every answer, forwarded, refused or a preflight's, gets this once.
    pub(crate) fn label(&self, origin: Option<HeaderValue>, headers: &mut HeaderMap) {
        let origin = match (&self.origins, origin) {
            // Any origin: the same label on every answer, so a shared cache may hand any of them
            // to any page.
            (None, _) => ANY.clone(),
            // The answer depends on Origin: a shared cache must not give one origin's to another.
            (Some(_), origin) => {
                headers.append(VARY, ORIGIN_NAME.clone());
                match origin {
                    Some(origin) => origin,
                    None => return,
                }
            }
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(origins: Option<&[&str]>, credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            allow_origins: origins.map(|list| list.iter().map(|o| o.to_string()).collect()),
            allow_headers: vec![http::header::AUTHORIZATION, http::header::CONTENT_TYPE],
            expose_headers: vec![HeaderName::from_static("x-request-id")],
            max_age: Duration::from_secs(600),
            allow_credentials: credentials,
        })
    }

    fn with_origins(origins: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for origin in origins {
            headers.append(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn origins_match_exactly_and_only_alone() {
        let cors = policy(Some(&["https://app.example.com"]), false);
        let allowed = |origins: &[&str]| cors.allowed_origin(&with_origins(origins));
        assert_eq!(
            allowed(&["https://app.example.com"]).unwrap(),
            "https://app.example.com"
        );
        for refused in [
            &["https://APP.example.com"][..],
            &["https://app.example.com.evil.test"],
            &["https://app.example.co"],
            &["http://app.example.com"],
            &["https://app.example.com:443"],
            &["null"],
            &[],
            &["https://app.example.com", "https://app.example.com"],
        ] {
            assert!(allowed(refused).is_none(), "{refused:?}");
        }
        let any = policy(None, false);
        assert_eq!(
            any.allowed_origin(&with_origins(&["https://x.test"]))
                .unwrap(),
            "*"
        );
    }

    #[test]
    fn labels_replace_the_backends_and_vary_on_origin() {
        let cors = policy(Some(&["https://app.example.com"]), true);
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("DELETE"),
        );
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        Cors::strip_backend_labels(&mut headers);
        cors.label(
            Some(HeaderValue::from_static("https://app.example.com")),
            &mut headers,
        );
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
        let vary: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "origin"]);

        let mut unlabelled = HeaderMap::new();
        unlabelled.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        Cors::strip_backend_labels(&mut unlabelled);
        cors.label(None, &mut unlabelled);
        assert!(!unlabelled.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn preflights_are_options_with_origin_and_a_requested_method() {
        let mut headers = with_origins(&["https://app.example.com"]);
        assert!(Cors::preflight(&Method::OPTIONS, &headers).is_none());
        headers.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert_eq!(
            Cors::preflight(&Method::OPTIONS, &headers)
                .unwrap()
                .unwrap(),
            Method::POST
        );
        assert!(Cors::preflight(&Method::GET, &headers).is_none());
        headers.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PO ST"),
        );
        assert!(Cors::preflight(&Method::OPTIONS, &headers)
            .unwrap()
            .is_err());
    }
}
