//! Header hygiene between the client and the backend.
//!
//! Threat: the backend trusts `X-User-Id`. A client that can get any spelling of it through wins.
//! WSGI/CGI servers fold `_` into `-` (`X_User_Id` becomes `HTTP_X_USER_ID`), Node joins duplicate
//! headers with ", ", and `Connection: x-user-id` asks a proxy to drop the header we inserted. So:
//! every client header whose name, lower-cased with every character but a letter or digit read
//! as `-`, matches an identity or forwarding header is dropped (`X.User.Id`, `x_user-id`); hop-by-hop headers and whatever `Connection` nominates are
//! dropped; a `Connection` that nominates a protected header is refused; and the trusted values are
//! inserted, never appended. Header names with `_` are dropped altogether (as nginx does by
//! default), since no spelling with `_` is needed by a well-behaved client and every one of them
//! is a chance for a backend to read a name differently.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TRAILER, VIA};
use http::Version;

use crate::config::AuthConfig;
use crate::core::error::GatewayError;

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones still seen in the wild).
/// `Trailer` is end to end: it declares the trailer fields, and is filtered like them instead.
/// Fields RFC 9110 (6.5.1) keeps out of trailers: framing, routing, request modifiers,
/// authentication and content metadata (plus every `If-*`, checked by prefix).
const NOT_IN_TRAILERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "www-authenticate",
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "content-location",
    "transfer-encoding",
    "trailer",
    "host",
    "te",
    "expect",
    "max-forwards",
    "cache-control",
    "pragma",
    "range",
    "age",
    "date",
    "expires",
    "location",
    "retry-after",
    "vary",
    // Not framing, but read by gateways and frameworks as if sent in the header section.
    "x-request-id",
    "origin",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Names whose punctuation-folded look-alikes are refused (400): a PHP backend reads
/// `Content.Type` as `HTTP_CONTENT_TYPE`, which Symfony takes for the body's type when there is
/// no real one, so the gateway and the backend would read the body as different kinds.
const BODY_METADATA: [&str; 4] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
];

/// Refuses a header whose name folds (every character but a letter or digit read as `-`) to a
/// body metadata name without being that name (`Content.Type`, `content_length`). Runs before any
/// body decision.
pub fn refuse_body_metadata_lookalikes(headers: &HeaderMap) -> Result<(), GatewayError> {
    for name in headers.keys() {
        let name = name.as_str().as_bytes();
        if BODY_METADATA
            .iter()
            .any(|metadata| normalized_eq(name, metadata.as_bytes()) && name != metadata.as_bytes())
        {
            return Err(GatewayError::BadRequest(
                "a header name could be read as Content-Type, Content-Length, Content-Encoding or Transfer-Encoding",
            ));
        }
    }
    Ok(())
}

/// Names a client's `Connection` may not nominate (400): dropping them on the way would change
/// what the gateway checked (the credentials, the type and framing of a body it read for owner
/// fields) or lose what it added (the request id).
const PROTECTED_FROM_CONNECTION: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "x-request-id",
];

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

/// `HOP_BY_HOP`, parsed once.
static HOP_BY_HOP_NAMES: [HeaderName; HOP_BY_HOP.len()] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHORIZATION,
    http::header::PROXY_AUTHENTICATE,
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
            &mut PROTECTED_FROM_CONNECTION
                .iter()
                .copied()
                .chain(identity_names.iter().copied()),
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

        // In place: a client's headers rarely include more than `Host` to drop, so collect the
        // doomed names (allocating only if there are any) instead of rebuilding the map.
        headers.remove(HOST);
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            if self.is_dropped(name.as_str().as_bytes(), &nominated) {
                doomed.push(name.clone());
            }
        }
        for name in &doomed {
            headers.remove(name);
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
                    !name.is_empty()
                        && !self
                            .dropped
                            .drops_trailer(name.to_ascii_lowercase().as_bytes())
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
    pub(crate) fn rewrite_response(&self, headers: &mut HeaderMap) {
        // One pass over the (few) response names against the parsed constants; only what is
        // there gets removed, and nothing is parsed unless `Connection` nominates a name.
        let mut present = 0u16;
        for name in headers.keys() {
            if let Some(index) = HOP_BY_HOP_NAMES.iter().position(|hop| hop == name) {
                present |= 1 << index;
            }
        }
        if present == 0 {
            return;
        }
        if let Some(connection) = headers.get(CONNECTION).cloned() {
            for token in connection.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive")
                {
                    continue; // not a header name, or removed below anyway
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    headers.remove(name);
                }
            }
        }
        for (index, name) in HOP_BY_HOP_NAMES.iter().enumerate() {
            if present & (1 << index) != 0 {
                headers.remove(name);
            }
        }
    }

    fn is_dropped(&self, name: &[u8], nominated: &[Vec<u8>]) -> bool {
        self.dropped.drops(name) || nominated.iter().any(|dropped| normalized_eq(name, dropped))
    }

    /// The same rule, for the trailers of the request body.
    pub(crate) fn trailer_policy(&self) -> TrailerPolicy {
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
pub(crate) struct TrailerPolicy(std::sync::Arc<[Box<[u8]>]>);

impl TrailerPolicy {
    /// True for names with `_`, and for names that normalize to a dropped one.
    pub(crate) fn drops(&self, name: &[u8]) -> bool {
        name.contains(&b'_') || self.0.iter().any(|dropped| normalized_eq(name, dropped))
    }

    /// Whether a trailer field of this name is dropped: the names dropped from headers, and what
    /// RFC 9110 (6.5.1) keeps out of trailers, since a backend that merges trailers into headers
    /// would otherwise get a second Authorization, Content-Type or Content-Length.
    pub(crate) fn drops_trailer(&self, name: &[u8]) -> bool {
        self.drops(name)
            || name.len() >= 3 && name[..3].eq_ignore_ascii_case(b"if-")
            || NOT_IN_TRAILERS
                .iter()
                .any(|forbidden| normalized_eq(name, forbidden.as_bytes()))
    }

    /// Removes the dropped names from a trailer section.
    pub(crate) fn clean(&self, trailers: &mut HeaderMap) {
        let dropped: Vec<HeaderName> = trailers
            .keys()
            .filter(|name| self.drops_trailer(name.as_str().as_bytes()))
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

/// Lower-case with every character but a letter or digit read as `-`: how a lenient backend may
/// see a header name. WSGI/CGI fold `-` and `_` together, PHP's SAPI turns `.`, space and `[`
/// into `_` when it builds `$_SERVER` (`X.User.Id` arrives as `HTTP_X_USER_ID`), and other
/// servers fold other punctuation; reading all of it as one character covers every such folding
/// at once, instead of listing the ones seen so far.
fn normalize(name: &[u8]) -> Vec<u8> {
    name.iter().map(|&b| normalize_byte(b)).collect()
}

fn normalize_byte(byte: u8) -> u8 {
    if byte.is_ascii_alphanumeric() {
        byte.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// `normalize(name) == normalized`, without allocating.
pub(crate) fn normalized_eq(name: &[u8], normalized: &[u8]) -> bool {
    name.len() == normalized.len()
        && name
            .iter()
            .zip(normalized)
            .all(|(&a, &b)| normalize_byte(a) == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_hop_by_hop_names_are_the_listed_ones() {
        let parsed: Vec<&str> = HOP_BY_HOP_NAMES.iter().map(HeaderName::as_str).collect();
        assert_eq!(parsed, HOP_BY_HOP);
    }

    #[test]
    fn response_rewrite_removes_hop_by_hop_and_nominated_names_only() {
        let policy_headers = [
            ("content-type", "application/json"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ];
        let mut headers = HeaderMap::new();
        for (name, value) in policy_headers {
            headers.append(name, HeaderValue::from_static(value));
        }
        let config = crate::config::Config::parse(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\nalgorithms = [\"HS256\"]\n\
             secret_env = \"S\"\n[[route]]\npath = \"/\"\nauth = \"public\"\n",
            "test.toml",
            &|_| Some("0123456789abcdef0123456789abcdef".to_string()),
        )
        .expect("valid test config");
        HeaderPolicy::new(&config.auth, std::iter::empty()).rewrite_response(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }
}
