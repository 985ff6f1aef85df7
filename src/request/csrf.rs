//! Cross-site request forgery, for requests a session cookie authenticates.
//!
//! A browser attaches the cookie to a request any site makes, so a cookie-authenticated request
//! that changes something (POST, PUT, PATCH, DELETE) must show where it comes from: its `Origin`
//! must be the gateway's own origin (the scheme it was reached over and its `Host`) or one
//! `[cors]` lists by name. Without an `Origin`, `Sec-Fetch-Site: same-origin` is accepted (both are
//! set by the browser; a page cannot forge them). Anything else is 403 `csrf`. A bearer token is
//! not attached by the browser on its own, so bearer requests are exempt.

use http::header::{HeaderMap, HOST, ORIGIN};
use http::Method;

use crate::core::error::GatewayError;
use crate::request::cors::Cors;

static SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

/// Whether `method` may change state, and so needs a same-origin proof when a cookie
/// authenticates it.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks a cookie-authenticated request. `scheme` is how the client reached the gateway
/// (`http` or `https`); behind a TLS-terminating proxy in `trusted_proxies` an `https` origin is
/// taken for the same host too. `authority` is the URI's authority (HTTP/2) when there is one.
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    authority: Option<&str>,
    scheme: &str,
    behind_trusted_proxy: bool,
    cors: Option<&Cors>,
) -> Result<(), GatewayError> {
    if !is_unsafe(method) {
        return Ok(());
    }
    let mut origins = headers.get_all(ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (Some(origin), None) => origin.as_bytes(),
        (Some(_), Some(_)) => return Err(GatewayError::Csrf),
        (None, _) => {
            let mut sites = headers.get_all(&SEC_FETCH_SITE).iter();
            return match (sites.next(), sites.next()) {
                (Some(site), None) if site.as_bytes() == b"same-origin" => Ok(()),
                _ => Err(GatewayError::Csrf),
            };
        }
    };
    if cors.is_some_and(|cors| cors.lists_origin(origin)) {
        return Ok(());
    }
    let host = match authority {
        Some(authority) => authority.as_bytes(),
        None => {
            let mut hosts = headers.get_all(HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(host), None) => host.as_bytes(),
                _ => return Err(GatewayError::Csrf),
            }
        }
    };
    let same = |scheme: &str| same_origin(origin, scheme, host);
    if same(scheme) || (behind_trusted_proxy && scheme == "http" && same("https")) {
        Ok(())
    } else {
        Err(GatewayError::Csrf)
    }
}

/// Whether `origin` (`scheme://host[:port]`) is `scheme` with `host` (a Host value), ports
/// compared with the scheme's default filled in, names without regard to case.
fn same_origin(origin: &[u8], scheme: &str, host: &[u8]) -> bool {
    let Some(rest) = origin
        .strip_prefix(scheme.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"://"))
    else {
        return false;
    };
    let default_port: &[u8] = if scheme == "https" { b"443" } else { b"80" };
    let split = |authority: &[u8]| -> (Vec<u8>, Vec<u8>) {
        // An IPv6 literal keeps its colons inside brackets.
        let colon = match authority.iter().rposition(|&b| b == b':') {
            Some(at) if !authority[at..].contains(&b']') => Some(at),
            _ => None,
        };
        match colon {
            Some(at) => (
                authority[..at].to_ascii_lowercase(),
                authority[at + 1..].to_vec(),
            ),
            None => (authority.to_ascii_lowercase(), default_port.to_vec()),
        }
    };
    !rest.is_empty() && !rest.contains(&b'/') && split(rest) == split(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn verdict(method: Method, pairs: &[(&str, &str)], scheme: &str, trusted: bool) -> bool {
        check(&method, &headers(pairs), None, scheme, trusted, None).is_ok()
    }

    #[test]
    fn unsafe_cookie_requests_need_a_same_origin_proof() {
        let host = ("host", "app.example.com");
        assert!(
            verdict(Method::GET, &[host], "https", false),
            "safe methods are exempt"
        );
        assert!(
            !verdict(Method::POST, &[host], "https", false),
            "no Origin, no Sec-Fetch-Site"
        );
        assert!(verdict(
            Method::POST,
            &[host, ("origin", "https://app.example.com")],
            "https",
            false
        ));
        assert!(verdict(
            Method::DELETE,
            &[
                ("host", "app.example.com:443"),
                ("origin", "https://APP.example.com")
            ],
            "https",
            false
        ));
        assert!(!verdict(
            Method::POST,
            &[host, ("origin", "https://evil.example")],
            "https",
            false
        ));
        assert!(!verdict(
            Method::POST,
            &[host, ("origin", "http://app.example.com")],
            "https",
            false
        ));
        assert!(!verdict(
            Method::POST,
            &[host, ("origin", "null")],
            "https",
            false
        ));
        assert!(!verdict(
            Method::PUT,
            &[host, ("origin", "https://app.example.com.evil.example")],
            "https",
            false
        ));
        assert!(!verdict(
            Method::POST,
            &[
                host,
                ("origin", "https://app.example.com"),
                ("origin", "https://app.example.com")
            ],
            "https",
            false
        ));
        assert!(verdict(
            Method::PATCH,
            &[host, ("sec-fetch-site", "same-origin")],
            "https",
            false
        ));
        assert!(!verdict(
            Method::PATCH,
            &[host, ("sec-fetch-site", "same-site")],
            "https",
            false
        ));
        assert!(!verdict(
            Method::PATCH,
            &[host, ("sec-fetch-site", "cross-site")],
            "https",
            false
        ));
        // TLS ended at a trusted proxy: the gateway was reached over http.
        assert!(verdict(
            Method::POST,
            &[host, ("origin", "https://app.example.com")],
            "http",
            true
        ));
        assert!(!verdict(
            Method::POST,
            &[host, ("origin", "https://app.example.com")],
            "http",
            false
        ));
        assert!(verdict(
            Method::POST,
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ],
            "http",
            false
        ));
        assert!(!verdict(
            Method::POST,
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8081")
            ],
            "http",
            false
        ));
    }
}
