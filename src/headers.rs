//! Header hygiene between the client and the backend.
//!
//! Threat: the backend trusts `X-User-Id`. A client that can get any spelling of it through wins.
//! WSGI/CGI servers fold `_` into `-` (`X_User_Id` becomes `HTTP_X_USER_ID`), Node joins duplicate
//! headers with ", ", and `Connection: x-user-id` asks a proxy to drop the header we inserted. So:
//! every client header whose name, lower-cased with `_` read as `-`, matches an identity or
//! forwarding header is dropped; hop-by-hop headers and whatever `Connection` nominates are
//! dropped; a `Connection` that nominates a protected header is refused; and the trusted values are
//! inserted, never appended. Header names with `_` are dropped altogether (as nginx does by
//! default), since no spelling with `_` is needed by a well-behaved client and every one of them
//! is a chance for a backend to read a name differently.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TRAILER, VIA};
use http::Version;

use crate::config::AuthConfig;
use crate::error::GatewayError;

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones still seen in the wild).
/// `Trailer` is end to end: it declares the trailer fields, and is filtered like them instead.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Client-sent headers that claim to describe the original request or client. The backend (or a
/// framework in it) may believe them, so only the gateway sets them.
const FORWARDING: [&str; 12] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Per-connection facts the rewrite needs, computed once when the connection is accepted.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: std::net::SocketAddr,
    /// The peer address as a header value, for `X-Forwarded-For`; computed once per connection.
    pub forwarded_for: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
}

impl ClientInfo {
    pub fn new(peer: std::net::SocketAddr, tls: bool) -> ClientInfo {
        let forwarded_for = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientInfo {
            peer,
            forwarded_for,
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

/// What the rewrite inserts, decided by the earlier stages.
pub struct Forwarding<'a> {
    pub client: &'a ClientInfo,
    /// The X-Forwarded-For to send (the trusted-proxy rule decided it).
    pub forwarded_for: &'a HeaderValue,
    pub version: Version,
    pub authority: Option<&'a str>,
    pub identity: Option<&'a HeaderValue>,
    pub claim_headers: &'a [(HeaderName, HeaderValue)],
}

/// The compiled header policy: names normalized once at load time.
#[derive(Debug)]
pub struct HeaderPolicy {
    identity: HeaderName,
    /// Normalized names dropped from every client request (shared with request bodies, which
    /// apply it to trailers).
    dropped: TrailerPolicy,
    /// Normalized names a `Connection` header may not nominate.
    protected: Vec<Box<[u8]>>,
}

impl HeaderPolicy {
    /// `claim_headers` are the names every route may fill from claims: like the identity header,
    /// no client may send them, on any route.
    pub fn new<'a>(
        auth: &'a AuthConfig,
        claim_headers: impl Iterator<Item = &'a HeaderName>,
    ) -> HeaderPolicy {
        let identity_names: Vec<&str> = std::iter::once(auth.identity_header.as_str())
            .chain(auth.strip_headers.iter().map(HeaderName::as_str))
            .chain(claim_headers.map(HeaderName::as_str))
            .collect();
        let normalize_all = |names: &mut dyn Iterator<Item = &str>| {
            names
                .map(|name| normalize(name.as_bytes()).into_boxed_slice())
                .collect::<Vec<_>>()
        };
        let dropped = normalize_all(
            &mut HOP_BY_HOP
                .iter()
                .chain(FORWARDING.iter())
                .copied()
                .chain(std::iter::once("host"))
                .chain(identity_names.iter().copied()),
        );
        let protected = normalize_all(
            &mut std::iter::once("authorization").chain(identity_names.iter().copied()),
        );
        HeaderPolicy {
            identity: auth.identity_header.clone(),
            dropped: TrailerPolicy(dropped.into()),
            protected,
        }
    }

    /// Rewrites client request headers in place into what the backend may see.
    ///
    /// `forwarding.identity` is the verified user id, or `None` on a public route, which then
    /// forwards no identity at all. `authority` is the HTTP/2 `:authority`, used when there is no
    /// `Host`.
    pub fn rewrite_request(
        &self,
        headers: &mut HeaderMap,
        forwarding: &Forwarding<'_>,
    ) -> Result<(), GatewayError> {
        let mut hosts = headers.get_all(HOST).iter();
        let host = hosts.next().cloned();
        if hosts.next().is_some() {
            return Err(GatewayError::BadRequest("more than one Host header"));
        }
        // HTTP/2: a Host that names another authority than :authority (RFC 9113 8.3.1) would let
        // the backend and the gateway disagree on which site was asked for.
        if let (Version::HTTP_2, Some(host), Some(authority)) =
            (forwarding.version, &host, forwarding.authority)
        {
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) {
                return Err(GatewayError::BadRequest("Host conflicts with :authority"));
            }
        }
        let host = host.or_else(|| {
            forwarding
                .authority
                .and_then(|a| HeaderValue::from_str(a).ok())
        });
        let nominated = self.connection_nominated(headers)?;

        let original = std::mem::take(headers);
        headers.reserve(original.len() + 5);
        let mut keep = false;
        let mut current: Option<HeaderName> = None;
        for (name, value) in original {
            if let Some(name) = name {
                keep = !self.is_dropped(name.as_str().as_bytes(), &nominated);
                current = Some(name);
            }
            if let (true, Some(name)) = (keep, &current) {
                headers.append(name.clone(), value);
            }
        }

        headers.insert(X_FORWARDED_FOR.clone(), forwarding.forwarded_for.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), forwarding.client.proto.clone());
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        headers.append(VIA, via_value(forwarding.version));
        if let Some(identity) = forwarding.identity {
            headers.insert(self.identity.clone(), identity.clone());
        }
        for (name, value) in forwarding.claim_headers {
            headers.insert(name.clone(), value.clone());
        }
        // `Trailer` may only declare fields that would survive as headers.
        if let Some(declared) = headers.get(TRAILER).and_then(|v| v.to_str().ok()) {
            let kept: Vec<&str> = declared
                .split(',')
                .map(str::trim)
                .filter(|name| {
                    !name.is_empty() && !self.dropped.drops(name.to_ascii_lowercase().as_bytes())
                })
                .collect();
            match HeaderValue::from_str(&kept.join(", ")) {
                Ok(value) if !kept.is_empty() => {
                    headers.insert(TRAILER, value);
                }
                _ => {
                    headers.remove(TRAILER);
                }
            }
        }
        Ok(())
    }

    /// Removes hop-by-hop headers from an upstream response before it goes to the client.
    pub fn rewrite_response(&self, headers: &mut HeaderMap) {
        if let Some(connection) = headers.get(CONNECTION).cloned() {
            if let Ok(list) = connection.to_str() {
                for token in list.split(',') {
                    if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                        headers.remove(name);
                    }
                }
            }
        }
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }

    fn is_dropped(&self, name: &[u8], nominated: &[Vec<u8>]) -> bool {
        self.dropped.drops(name) || nominated.iter().any(|dropped| normalized_eq(name, dropped))
    }

    /// The same rule, for the trailers of the request body.
    pub fn trailer_policy(&self) -> TrailerPolicy {
        self.dropped.clone()
    }

    /// The normalized names that `Connection` nominates, refusing protected ones. Allocates only
    /// when a client nominates something other than `close` or `keep-alive`.
    fn connection_nominated(&self, headers: &HeaderMap) -> Result<Vec<Vec<u8>>, GatewayError> {
        let mut nominated = Vec::new();
        for value in headers.get_all(CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"keep-alive")
                {
                    continue;
                }
                let token = normalize(token);
                if self.protected.iter().any(|protected| **protected == *token) {
                    return Err(GatewayError::BadRequest(
                        "Connection nominates a protected header",
                    ));
                }
                nominated.push(token);
            }
        }
        Ok(nominated)
    }
}

/// The names a client may not send, as headers or as trailers. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct TrailerPolicy(std::sync::Arc<[Box<[u8]>]>);

impl TrailerPolicy {
    /// True for names with `_`, and for names that normalize to a dropped one.
    pub fn drops(&self, name: &[u8]) -> bool {
        name.contains(&b'_') || self.0.iter().any(|dropped| normalized_eq(name, dropped))
    }

    /// Removes the dropped names from a trailer section.
    pub fn clean(&self, trailers: &mut HeaderMap) {
        let dropped: Vec<HeaderName> = trailers
            .keys()
            .filter(|name| self.drops(name.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in dropped {
            trailers.remove(name);
        }
    }
}

fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_2 => "2.0 authgate",
        Version::HTTP_10 => "1.0 authgate",
        _ => "1.1 authgate",
    })
}

/// Lower-case with `_` read as `-`: how a lenient backend may see a header name.
fn normalize(name: &[u8]) -> Vec<u8> {
    name.iter().map(|&b| normalize_byte(b)).collect()
}

fn normalize_byte(byte: u8) -> u8 {
    if byte == b'_' {
        b'-'
    } else {
        byte.to_ascii_lowercase()
    }
}

/// `normalize(name) == normalized`, without allocating.
fn normalized_eq(name: &[u8], normalized: &[u8]) -> bool {
    name.len() == normalized.len()
        && name
            .iter()
            .zip(normalized)
            .all(|(&a, &b)| normalize_byte(a) == b)
}
