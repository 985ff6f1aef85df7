//! Query and form field rules (owner fields and `_method`): the first byte picks the reading
//! (0 query, 1 declared `application/x-www-form-urlencoded` body, 2 untyped POST body), the rest
//! is the query or body. Whatever the gateway accepts, a lenient parser (`lenient_name`, `+` and
//! `%XX` decoded, `&` and for untyped bodies `;` as separators) finds no `user_id` naming anyone
//! but alice and no `_method` naming a method the route (GET, POST) refuses. Never panics.

#![no_main]

use std::sync::OnceLock;

use authgate::authz::{check_form_fields, check_query_override, FieldRules, FormBody};
use authgate::method_override::OwnedMethodGuard;
use authgate_fuzz::{check_accepted_field, get_post_guard, lenient_decode};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn guard() -> &'static OwnedMethodGuard {
    static GUARD: OnceLock<OwnedMethodGuard> = OnceLock::new();
    GUARD.get_or_init(get_post_guard)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let owner_names: Vec<Box<str>> = vec!["user_id".into()];
    let rules = FieldRules {
        owner_names: &owner_names,
        user_id: "alice",
        methods: Some(guard().guard()),
    };
    let (accepted, separators): (bool, &[u8]) = match mode % 3 {
        0 => {
            // As a query: the target validator runs first in the pipeline.
            let Ok(query) = std::str::from_utf8(input) else {
                return;
            };
            if authgate::target::validate_query(query).is_err() {
                return;
            }
            let owner_ok = authgate::authz::check_form_owner(
                FormBody::Declared,
                &form_headers(),
                input,
                &owner_names,
                "alice",
            )
            .is_ok();
            (
                owner_ok && check_query_override(query, guard().guard()).is_ok(),
                b"&",
            )
        }
        1 => (
            check_form_fields(FormBody::Declared, &form_headers(), input, &rules).is_ok(),
            b"&",
        ),
        _ => (
            check_form_fields(FormBody::Untyped, &HeaderMap::new(), input, &rules).is_ok(),
            b"&;",
        ),
    };
    if !accepted {
        return;
    }
    for pair in input.split(|b| separators.contains(b)) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        check_accepted_field(&lenient_decode(name), &lenient_decode(value), "form");
    }
});

fn form_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers
}
