//! Bearer extraction: the input as one `Authorization` header, and split in two as two headers.
//! Whatever `extract_bearer` returns must be a non-empty token of `[A-Za-z0-9._-]`, at most 8 KiB,
//! from a single header whose scheme is `Bearer`.

#![no_main]

use authgate::auth::extract_bearer;
use authgate_fuzz::check_bearer_token;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn check(values: &[&[u8]]) {
    let mut headers = HeaderMap::new();
    let mut kept = Vec::new();
    for bytes in values {
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            headers.append(AUTHORIZATION, value);
            kept.push(*bytes);
        }
    }
    if let Ok(token) = extract_bearer(&headers) {
        check_bearer_token(token);
        assert_eq!(
            kept.len(),
            1,
            "a token was taken from {} headers",
            kept.len()
        );
        let value = kept[0];
        let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
        assert!(
            value[..scheme_end].eq_ignore_ascii_case(b"bearer"),
            "token taken from a non-Bearer value {value:?}"
        );
        assert_eq!(
            value[scheme_end..].trim_ascii(),
            token.as_bytes(),
            "the token is not the rest of the value"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(&[data]);
    // Two headers: split at the first NUL (which no header value can contain), or in the middle.
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => data.split_at(data.len() / 2),
    };
    check(&[first, second]);
});
