//! Request-target validation: the first stage of the pipeline.
//!
//! Threat: path-based authorization is bypassed whenever the gateway and the backend read the same
//! path differently (Envoy CVE-2019-9901, Istio CVE-2021-31920, Traefik CVE-2025-47952, ...). The
//! backend behind us percent-decodes, may treat `\` as `/`, strips `;params` and resolves dot
//! segments. So we never normalize: anything two reasonable parsers could read differently is
//! refused with 400, and what passes is forwarded byte for byte. Matching happens on the decoded
//! segments, which are exactly the segments the backend will see.

use std::borrow::Cow;

use http::{Uri, Version};

use crate::core::error::GatewayError;

/// A validated request-target.
#[derive(Debug)]
pub struct Target<'a> {
    /// The path, percent-decoded once, for route matching. Borrowed when it had no escapes.
    pub path: Cow<'a, str>,
    /// The raw query (without `?`), validated; `None` when absent.
    pub query: Option<&'a str>,
}

pub fn validate(uri: &Uri, version: Version) -> Result<Target<'_>, GatewayError> {
    // HTTP/1.x: only origin-form (`/path?query`). Absolute-form carries its own authority that a
    // backend may prefer over Host; authority-form (CONNECT) and `*` (OPTIONS) have no path to
    // authorize. HTTP/2 always has :scheme and :authority, and :path is checked below.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(GatewayError::BadTarget(
            "only origin-form request-targets are accepted",
        ));
    }
    let path = decode_path(uri.path()).map_err(GatewayError::BadTarget)?;
    let query = match uri.query() {
        None => None,
        Some(query) => {
            validate_query(query).map_err(GatewayError::BadTarget)?;
            Some(query)
        }
    };
    Ok(Target { path, query })
}

/// Validates a raw path and returns it percent-decoded. See the module comment for why each
/// refusal exists; each error string names the rule that fired.
pub fn decode_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("the request-target must be an absolute path");
    }
    if bytes.len() == 1 {
        return Ok(Cow::Borrowed(path));
    }
    let has_escapes = bytes.contains(&b'%');
    let mut decoded: Vec<u8> = if has_escapes {
        Vec::with_capacity(bytes.len())
    } else {
        Vec::new()
    };
    // Split on bytes: `str::split` with a char pattern goes through the generic searcher, which
    // cost more than the rest of the checks together on a typical path.
    for raw in bytes[1..].split(|&byte| byte == b'/') {
        if raw.is_empty() {
            return Err("empty path segment");
        }
        let segment_start = decoded.len() + 1;
        if has_escapes {
            decoded.push(b'/');
        }
        let mut index = 0;
        while index < raw.len() {
            let byte = match raw[index] {
                b'%' => {
                    let value = hex_pair(raw.get(index + 1..index + 3))
                        .ok_or("malformed percent-encoding")?;
                    index += 2;
                    check_decoded_byte(value)?;
                    value
                }
                b'\\' => return Err("backslash in path"),
                // Never in a parsed Uri's path, but decode_path is public: refuse, don't trust.
                b'?' | b'#' => return Err("delimiter in path"),
                b';' => return Err("semicolon in path"),
                0x00..=0x1f | 0x7f => return Err("control character in path"),
                0x80..=0xff => return Err("raw non-ASCII byte in path"),
                other => other,
            };
            if has_escapes {
                decoded.push(byte);
            }
            index += 1;
        }
        let decoded_segment = if has_escapes {
            &decoded[segment_start..]
        } else {
            raw
        };
        if decoded_segment == b"." || decoded_segment == b".." {
            return Err("dot segment in path");
        }
    }
    if !has_escapes {
        return Ok(Cow::Borrowed(path));
    }
    // Overlong encodings (`%c0%ae`), lone surrogates and stray continuation bytes all fail here.
    let decoded =
        String::from_utf8(decoded).map_err(|_| "path is not valid UTF-8 after decoding")?;
    // C1 controls (U+0080..U+009F) arrive as two-byte sequences the byte checks above cannot see;
    // some parsers treat U+0085 (NEL) as a line break.
    if decoded.chars().any(char::is_control) {
        return Err("encoded control character in path");
    }
    Ok(Cow::Owned(decoded))
}

/// An escape may not produce a byte that changes how the path splits or ends, nor a second round
/// of escaping (`%25`), nor a control character.
fn check_decoded_byte(value: u8) -> Result<(), &'static str> {
    match value {
        b'/' => Err("encoded slash in path"),
        b'\\' => Err("encoded backslash in path"),
        b'%' => Err("encoded percent sign in path (double encoding)"),
        b'#' | b'?' | b';' => Err("encoded delimiter in path"),
        0x00 => Err("encoded NUL in path"),
        0x01..=0x1f | 0x7f => Err("encoded control character in path"),
        _ => Ok(()),
    }
}

/// The query is not matched on, but owner parameters are read from it, and a backend may split it
/// on `;` (old Python `parse_qs`), so escapes must be well formed and `;` is refused.
pub fn validate_query(query: &str) -> Result<(), &'static str> {
    let raw = query.as_bytes();
    let mut index = 0;
    while index < raw.len() {
        match raw[index] {
            b'%' => {
                hex_pair(raw.get(index + 1..index + 3))
                    .ok_or("malformed percent-encoding in query")?;
                index += 2;
            }
            b';' => return Err("semicolon in query"),
            0x00..=0x1f | 0x7f => return Err("control character in query"),
            0x80..=0xff => return Err("raw non-ASCII byte in query"),
            _ => {}
        }
        index += 1;
    }
    Ok(())
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one `application/x-www-form-urlencoded` component (`+` is a space), for reading
/// owner parameters out of a query that `validate_query` already accepted. `None` when the result
/// is not UTF-8.
pub fn decode_query_component(component: &str) -> Option<Cow<'_, str>> {
    if !component.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(component));
    }
    let raw = component.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < raw.len() {
        match raw[index] {
            b'%' => {
                out.push(hex_pair(raw.get(index + 1..index + 3))?);
                index += 2;
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_decodes_escaped_paths() {
        assert_eq!(decode_path("/").unwrap(), "/");
        assert_eq!(decode_path("/api/alice/tasks").unwrap(), "/api/alice/tasks");
        assert_eq!(
            decode_path("/api/al%69ce/tasks").unwrap(),
            "/api/alice/tasks"
        );
        assert_eq!(decode_path("/a/%C3%A9t%C3%A9").unwrap(), "/a/été");
        assert_eq!(decode_path("/a/...").unwrap(), "/a/...");
        assert!(matches!(decode_path("/api/x").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn refuses_every_ambiguous_form() {
        for path in [
            "",
            "*",
            "api",
            "//",
            "/a//b",
            "/a/",
            "/./a",
            "/a/..",
            "/a/%2e",
            "/a/%2E%2e",
            "/a/.%2e",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a;b",
            "/a%3bb",
            "/a%00",
            "/a%25",
            "/a%252e",
            "/a%",
            "/a%2",
            "/a%zz",
            "/a%c0%ae",
            "/a%ff",
            "/a%0a",
            "/a%7f",
            "/a%23",
            "/a%3f",
        ] {
            assert!(decode_path(path).is_err(), "{path:?} should be refused");
        }
    }

    #[test]
    fn query_rules() {
        assert!(validate_query("user_id=alice&x=%20").is_ok());
        assert!(validate_query("a=1;user_id=bob").is_err());
        assert!(validate_query("a=%2").is_err());
        assert_eq!(decode_query_component("us%65r+x").unwrap(), "user x");
        assert!(decode_query_component("%ff").is_none());
    }
}
