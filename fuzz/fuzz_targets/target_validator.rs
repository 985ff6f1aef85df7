//! Request-target validation: `decode_path`, `validate_query`, `decode_query_component` on the
//! input as text, and `validate` on the input parsed as an `http::Uri` (the real entry point).
//! Accepted targets must be unambiguous (see `authgate_fuzz::check_accepted_path`).

#![no_main]

use authgate::target::{decode_path, decode_query_component, validate, validate_query};
use authgate_fuzz::{check_accepted_path, check_accepted_query, oracle_decode};
use http::{Uri, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;

    // The text as a path. `Uri::path()` never contains `?` or `#` (the URI parser ends the path
    // there), so the path invariants are checked on what comes before them.
    let path = text.split(['?', '#']).next().unwrap_or("");
    if let Ok(decoded) = decode_path(path) {
        check_accepted_path(path, &decoded);
    }
    let _ = decode_path(text);

    // The text as a query, and each of its components.
    let query = text.split_once('?').map_or(text, |(_, query)| query);
    let query_ok = validate_query(query).is_ok();
    if query_ok {
        check_accepted_query(query);
    }
    for component in query.split(['&', '=']) {
        let decoded = decode_query_component(component);
        if query_ok {
            let expected = oracle_decode(&component.replace('+', "%20"))
                .and_then(|bytes| String::from_utf8(bytes).ok());
            assert_eq!(decoded.as_deref(), expected.as_deref(), "{component:?}");
        }
    }

    // The bytes as a request-target, through the gateway's real entry point.
    if let Ok(uri) = Uri::try_from(data) {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            if let Ok(target) = validate(&uri, version) {
                if version == Version::HTTP_11 {
                    assert!(
                        uri.scheme().is_none() && uri.authority().is_none(),
                        "{uri:?}: not origin-form"
                    );
                }
                check_accepted_path(uri.path(), &target.path);
                assert_eq!(target.query, uri.query());
                if let Some(query) = target.query {
                    check_accepted_query(query);
                }
            }
        }
    }
});
