//! Method overrides: the method a lenient backend acts on may not be the one the gateway routed.
//!
//! Threat: Rails (`Rack::MethodOverride`), Laravel and Symfony, Express's `method-override` and
//! ASP.NET's `HttpMethodOverrideMiddleware` turn a POST into a DELETE (or anything else) when it
//! carries `X-HTTP-Method-Override` (also `X-HTTP-Method`, `X-Method-Override`) or a `_method`
//! query parameter or body field. A route that allows only GET and POST, or whose DELETE has
//! stricter rules on another route, would then be bypassed. So every override the gateway can
//! see must name a method the matched route allows (else 405 naming the override), and the
//! override headers are stripped unless the route opts in with `allow_method_override = true`.
//! A `_method` in a query or body cannot be removed without changing the bytes forwarded, so it
//! passes only when it names an allowed method. Names a lenient parser reads as `_method`
//! (`_METHOD`, `.method` in PHP) are refused (400), as for owner fields.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::core::error::GatewayError;
use crate::request::headers::normalized_eq;
use crate::request::routes::{MethodSet, Route};

/// The override headers, normalized (lower case, punctuation as `-`), with the refusal's message.
const OVERRIDE_HEADERS: [(&str, &str); 3] = [
    (
        "x-http-method-override",
        "X-HTTP-Method-Override names a method this route does not allow",
    ),
    (
        "x-http-method",
        "X-HTTP-Method names a method this route does not allow",
    ),
    (
        "x-method-override",
        "X-Method-Override names a method this route does not allow",
    ),
];

/// The query parameter and body field (Rails, Laravel, Symfony, Express).
pub(crate) const OVERRIDE_FIELD: &str = "_method";

/// Where an override was found, for the 405's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Query,
    Body,
}

/// The methods a matched route allows, for the request's checks. Borrows the route table's
/// `Allow` value: nothing is copied unless a refusal or a streamed body needs it.
#[derive(Debug, Clone, Copy)]
pub struct MethodGuard<'r> {
    allowed: MethodSet,
    allow: &'r HeaderValue,
    forward_headers: bool,
}

/// A `MethodGuard` that owns what it needs, for a body scanned as it streams.
#[derive(Debug, Clone)]
pub struct OwnedMethodGuard {
    allowed: MethodSet,
    allow: HeaderValue,
}

impl OwnedMethodGuard {
    pub fn guard(&self) -> MethodGuard<'_> {
        MethodGuard {
            allowed: self.allowed,
            allow: &self.allow,
            forward_headers: false,
        }
    }
}

impl<'r> MethodGuard<'r> {
    pub fn new(route: &Route, allow: &'r HeaderValue) -> MethodGuard<'r> {
        MethodGuard {
            allowed: route.methods(),
            allow,
            forward_headers: route.allow_method_override,
        }
    }

    pub fn to_owned_guard(&self) -> OwnedMethodGuard {
        OwnedMethodGuard {
            allowed: self.allowed,
            allow: self.allow.clone(),
        }
    }

    /// Whether this request's body must be looked into for `_method`: every framework above
    /// honours a body override only on a POST, and only a route that refuses some method can be
    /// bypassed by one.
    pub(crate) fn watches_body(&self, method: &Method) -> bool {
        method == Method::POST && !self.allowed.is_all()
    }

    /// Checks the override headers (any method: stricter than the frameworks, and cheap), and
    /// strips them unless the route opts in. Each comma-separated element counts: Express takes
    /// the first, other code the last.
    pub(crate) fn check_headers(&self, headers: &mut HeaderMap) -> Result<(), GatewayError> {
        let mut found: Vec<HeaderName> = Vec::new();
        for (name, value) in headers.iter() {
            let Some((_, shown)) = OVERRIDE_HEADERS.iter().find(|(normalized, _)| {
                normalized_eq(name.as_str().as_bytes(), normalized.as_bytes())
            }) else {
                continue;
            };
            for element in value.as_bytes().split(|&b| b == b',') {
                if !self.allows(element) {
                    return Err(self.refusal(shown));
                }
            }
            if !found.contains(name) {
                found.push(name.clone());
            }
        }
        if !self.forward_headers {
            for name in found {
                headers.remove(name);
            }
        }
        Ok(())
    }

    /// Checks one field of a query or body: `_method` must name an allowed method, and a name
    /// a lenient parser reads as `_method` is refused. Other names pass.
    pub(crate) fn check_field(
        &self,
        name: &str,
        value: Option<&[u8]>,
        place: Place,
    ) -> Result<(), GatewayError> {
        if name == OVERRIDE_FIELD {
            return match value {
                Some(value) if self.allows(value) => Ok(()),
                _ => Err(self.refusal(match place {
                    Place::Query => {
                        "the _method query parameter names a method this route does not allow"
                    }
                    Place::Body => {
                        "the _method body field names a method this route does not allow"
                    }
                })),
            };
        }
        if crate::request::names::read_as(name, OVERRIDE_FIELD) {
            return Err(GatewayError::BadTarget(
                "a field name could be read as the _method override",
            ));
        }
        Ok(())
    }

    /// Whether an override value names a method this route allows. Frameworks upper-case it and
    /// trim it; so does this. An empty value overrides nothing.
    pub(crate) fn allows(&self, value: &[u8]) -> bool {
        let value = value.trim_ascii();
        if value.is_empty() {
            return true;
        }
        let Ok(method) = Method::from_bytes(&value.to_ascii_uppercase()) else {
            return false;
        };
        self.allowed.contains_method(&method)
    }

    fn refusal(&self, message: &'static str) -> GatewayError {
        GatewayError::MethodOverride {
            message,
            allow: self.allow.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` with the guard of a route `/x` taking `methods`.
    fn with_guard(methods: &str, opt_in: bool, check: impl FnOnce(MethodGuard<'_>)) {
        let toml = format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\nsecret_env = \"S\"\n\
             [[route]]\npath = \"/x\"\nmethods = {methods}\nallow_method_override = {opt_in}\n"
        );
        let config = crate::config::Config::parse(&toml, "t.toml", &|_| {
            Some("0123456789abcdef0123456789abcdef".into())
        })
        .expect("valid config");
        let table =
            crate::request::routes::RouteTable::compile(&config.routes).expect("routes compile");
        let matched = table.lookup(&Method::GET, "/x").expect("route");
        check(MethodGuard::new(matched.route, matched.allow));
    }

    const GET_POST: &str = "[\"GET\", \"POST\"]";

    #[test]
    fn override_values() {
        with_guard(GET_POST, false, |guard| {
            for allowed in [&b"GET"[..], b"post", b" Post ", b""] {
                assert!(guard.allows(allowed), "{allowed:?}");
            }
            for refused in [
                &b"DELETE"[..],
                b"delete",
                b"PUT",
                b"TRACE",
                b"G ET",
                b"\xff",
            ] {
                assert!(!guard.allows(refused), "{refused:?}");
            }
            assert!(guard.watches_body(&Method::POST));
            assert!(!guard.watches_body(&Method::PUT));
        });
        with_guard(
            "[\"GET\", \"HEAD\", \"POST\", \"PUT\", \"DELETE\", \"PATCH\", \"OPTIONS\"]",
            false,
            |guard| assert!(!guard.watches_body(&Method::POST)),
        );
    }

    #[test]
    fn headers_are_checked_by_normalized_name_and_stripped() {
        with_guard(GET_POST, false, |guard| {
            for name in [
                "x-http-method-override",
                "x.http.method",
                "X-Method-Override",
                "x-http-method-override",
            ] {
                let mut headers = HeaderMap::new();
                headers.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("get, delete"),
                );
                assert!(
                    matches!(
                        guard.check_headers(&mut headers),
                        Err(GatewayError::MethodOverride { .. })
                    ),
                    "{name}"
                );
            }
            let mut headers = HeaderMap::new();
            headers.insert("x-http-method", HeaderValue::from_static("GET"));
            headers.insert("x-other", HeaderValue::from_static("DELETE"));
            guard.check_headers(&mut headers).unwrap();
            assert!(!headers.contains_key("x-http-method"));
            assert!(headers.contains_key("x-other"));
        });
        with_guard(GET_POST, true, |opted_in| {
            let mut headers = HeaderMap::new();
            headers.insert("x-http-method", HeaderValue::from_static("GET"));
            opted_in.check_headers(&mut headers).unwrap();
            assert!(headers.contains_key("x-http-method"));
            headers.insert("x-http-method", HeaderValue::from_static("DELETE"));
            assert!(opted_in.check_headers(&mut headers).is_err());
        });
    }

    #[test]
    fn fields() {
        with_guard(GET_POST, false, |guard| {
            assert!(guard
                .check_field("_method", Some(b"GET"), Place::Query)
                .is_ok());
            assert!(guard
                .check_field("title", Some(b"DELETE"), Place::Body)
                .is_ok());
            assert!(matches!(
                guard.check_field("_method", Some(b"DELETE"), Place::Body),
                Err(GatewayError::MethodOverride { .. })
            ));
            assert!(guard.check_field("_method", None, Place::Body).is_err());
            for lookalike in ["_METHOD", ".method", "_method[]", "[_method]"] {
                assert!(
                    matches!(
                        guard.check_field(lookalike, Some(b"DELETE"), Place::Query),
                        Err(GatewayError::BadTarget(_))
                    ),
                    "{lookalike}"
                );
            }
        });
    }
}
