use http::header::{HeaderMap, AUTHORIZATION};

use super::TokenError;

/// Tokens above this size are refused before any parsing, so a client cannot make us base64-decode
/// and JSON-parse megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Base64url characters and `.`: the bytes of a compact JWS, as a table (one load per byte).
static TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        byte += 1;
    }
    table
};

/// Returns the bearer token from the single `Authorization` header.
///
/// Two `Authorization` headers are refused rather than picking one: a backend (or a Node server
/// joining duplicates with ", ") might read the other one. The scheme is case-insensitive
/// (RFC 9110 section 11.1); the token must be a compact JWS made of base64url characters and dots.
pub fn extract_bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    token_text(bearer_bytes(headers)?)
}

/// `extract_bearer` without the character check, which `token_text` does: the token cache
/// recognises a verified token by its bytes, and only an unknown one needs checking.
pub fn bearer_bytes(headers: &HeaderMap) -> Result<&[u8], TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(TokenError::Missing)?;
    if values.next().is_some() {
        return Err(TokenError::MultipleAuthorization);
    }
    let bytes = value.as_bytes();
    if bytes.len() > MAX_TOKEN_BYTES + "Bearer ".len() + 16 {
        return Err(TokenError::TooLarge);
    }
    let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space..]),
        None => (bytes, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(TokenError::NotBearer);
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    Ok(token)
}

/// The token as text, if every byte is a base64url character or a dot.
pub(crate) fn token_text(token: &[u8]) -> Result<&str, TokenError> {
    if !token.iter().all(|&b| TOKEN_BYTE[usize::from(b)]) {
        return Err(TokenError::Malformed);
    }
    // Every byte is ASCII, checked just above.
    std::str::from_utf8(token).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn extract(values: &[&str]) -> Result<String, TokenError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        extract_bearer(&headers).map(str::to_string)
    }

    #[test]
    fn scheme_and_shape() {
        assert_eq!(extract(&["Bearer a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(extract(&["bEaReR   a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(extract(&[]), Err(TokenError::Missing));
        assert_eq!(extract(&["Bearer"]), Err(TokenError::Missing));
        assert_eq!(extract(&["Basic dXNlcjpwYXNz"]), Err(TokenError::NotBearer));
        assert_eq!(extract(&["Bearera.b.c"]), Err(TokenError::NotBearer));
        assert_eq!(
            extract(&["Bearer a.b.c", "Bearer a.b.c"]),
            Err(TokenError::MultipleAuthorization)
        );
        assert_eq!(extract(&["Bearer a.b c"]), Err(TokenError::Malformed));
        assert_eq!(extract(&["Bearer a+b/c="]), Err(TokenError::Malformed));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(extract(&[&huge]), Err(TokenError::TooLarge));
    }
}
