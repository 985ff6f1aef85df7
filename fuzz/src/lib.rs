//! Invariants shared by the fuzz targets: the same properties that
//! `tests/integration/properties.rs` checks with proptest, written as plain assertions so that a
//! violation is a libFuzzer crash with the input saved under `fuzz/artifacts/`.

use authgate::auth::MAX_TOKEN_BYTES;

/// Decodes `%XX` escapes, or `None` on a malformed escape: an independent, obviously correct
/// oracle to compare the gateway's decoders with.
pub fn oracle_decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let pair = bytes.get(index + 1..index + 3)?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(pair).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Some(out)
}

/// `raw` is a path (as `Uri::path()` returns it, so without `?` or `#`) that `decode_path`
/// accepted, and `decoded` what it returned. Panics when the result is ambiguous.
pub fn check_accepted_path(raw: &str, decoded: &str) {
    assert!(
        decoded.starts_with('/'),
        "{raw:?} -> {decoded:?}: no leading /"
    );
    assert!(raw.is_ascii(), "{raw:?} accepted with raw non-ASCII bytes");
    if !raw.contains('%') {
        assert_eq!(decoded, raw, "a path without escapes must decode to itself");
    }
    if decoded == "/" {
        assert_eq!(raw, "/", "only `/` decodes to `/`");
        return;
    }
    let raw_segments: Vec<&str> = raw[1..].split('/').collect();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    assert_eq!(
        raw_segments.len(),
        segments.len(),
        "{raw:?} -> {decoded:?}: the segment count changed (encoded /)"
    );
    for (raw_segment, segment) in raw_segments.iter().zip(&segments) {
        assert!(!segment.is_empty(), "{raw:?} -> {decoded:?}: empty segment");
        assert!(
            *segment != "." && *segment != "..",
            "{raw:?} -> {decoded:?}: dot segment {segment:?}"
        );
        for c in segment.chars() {
            assert!(
                !matches!(c, '/' | '\\' | '\0' | ';' | '%' | '?' | '#') && !c.is_control(),
                "{raw:?} -> {decoded:?}: segment {segment:?} contains {c:?}"
            );
        }
        assert_eq!(
            oracle_decode(raw_segment).as_deref(),
            Some(segment.as_bytes()),
            "{raw:?}: segment {raw_segment:?} decoded wrongly"
        );
    }
}

/// A query that `validate_query` accepted: well-formed escapes, no `;`, no control character, no
/// raw non-ASCII byte.
pub fn check_accepted_query(query: &str) {
    assert!(
        oracle_decode(query).is_some(),
        "{query:?} accepted with a malformed escape"
    );
    assert!(
        !query
            .bytes()
            .any(|b| b == b';' || !(0x20..0x7f).contains(&b)),
        "{query:?} accepted with `;`, a control character or raw non-ASCII"
    );
}

/// A token that `extract_bearer` returned.
pub fn check_bearer_token(token: &str) {
    assert!(!token.is_empty(), "empty token returned");
    assert!(
        token.len() <= MAX_TOKEN_BYTES,
        "token of {} bytes returned",
        token.len()
    );
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        "token {token:?} has characters outside [A-Za-z0-9._-]"
    );
}

/// The method guard of a route that takes GET and POST only, as the pipeline builds it: what the
/// body and query field targets check `_method` against.
pub fn get_post_guard() -> authgate::method_override::OwnedMethodGuard {
    use authgate::routes::RouteTable;
    let toml = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\nsecret_env = \"S\"\n\
                [[route]]\npath = \"/x\"\nmethods = [\"GET\", \"POST\"]\n";
    let config = authgate::config::Config::parse(toml, "fuzz.toml", &|_| {
        Some("fuzz-secret-fuzz-secret-fuzz-sec".to_string())
    })
    .expect("the fuzz route config is valid");
    let table = RouteTable::compile(&config.routes).expect("the fuzz routes compile");
    let matched = table
        .lookup(&http::Method::POST, "/x")
        .expect("the fuzz route matches");
    authgate::method_override::MethodGuard::new(matched.route, matched.allow).to_owned_guard()
}

/// How some lenient parser may read a decoded field name, as an over-simple model of PHP, qs
/// and Rack written independently of the gateway: cut at NUL (PHP), leading spaces dropped
/// (PHP), then leading brackets (qs, Rack), then cut at the next bracket, `.` and space read as
/// `_` (PHP), case ignored (ASP.NET).
pub fn lenient_name(name: &[u8]) -> Vec<u8> {
    let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
    let name = &name[name.iter().take_while(|&&b| b == b' ').count()..];
    let name = &name[name.iter().take_while(|&&b| b == b'[' || b == b']').count()..];
    name.iter()
        .take_while(|&&b| b != b'[' && b != b']')
        .map(|&b| match b {
            b'.' | b' ' => b'_',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// An accepted field (name and value as a lenient parser decoded them) may not name another user
/// under `user_id`, nor a method other than GET or POST under `_method`.
pub fn check_accepted_field(name: &[u8], value: &[u8], context: &str) {
    let read = lenient_name(name);
    if read == b"user_id" {
        assert_eq!(
            value,
            b"alice",
            "{context}: accepted a field {:?} naming {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        );
    }
    if read == b"_method" {
        let method = value.trim_ascii().to_ascii_uppercase();
        assert!(
            method.is_empty() || method == b"GET" || method == b"POST",
            "{context}: accepted an override {:?} = {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        );
    }
}

/// `+` as a space and every well-formed `%XX` decoded; anything else kept: the most a lenient
/// form parser decodes.
pub fn lenient_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < raw.len() {
        match raw[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < raw.len()
                && raw[index + 1].is_ascii_hexdigit()
                && raw[index + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&raw[index + 1..index + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                index += 2;
            }
            other => out.push(other),
        }
        index += 1;
    }
    out
}
