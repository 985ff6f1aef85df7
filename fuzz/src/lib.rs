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
