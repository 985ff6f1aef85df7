//! JSON owner fields and `_method`. The first byte: bit 0 picks the check (0: a
//! `body_owner_fields = ["user_id"]` route, whole body; 1: the streaming `_method` scan), bits 1-6
//! the piece size for the scan; the rest is the body. Checked: never panics; in an accepted
//! document (when it is valid JSON) no top-level key that is `user_id` under Unicode lower-casing
//! names anyone but alice, and no such `_method` names a method the route (GET, POST) refuses;
//! and on valid JSON the streaming scan and the whole-body check give the same verdict.

#![no_main]

use std::sync::OnceLock;

use authgate::authz::check_json_fields;
use authgate::json_scan::JsonMethodScan;
use authgate::method_override::OwnedMethodGuard;
use authgate_fuzz::get_post_guard;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn guard() -> &'static OwnedMethodGuard {
    static GUARD: OnceLock<OwnedMethodGuard> = OnceLock::new();
    GUARD.get_or_init(get_post_guard)
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

fn streamed(body: &[u8], piece: usize) -> bool {
    let mut scan = JsonMethodScan::new(guard().clone());
    let mut cleared = 0;
    for chunk in body.chunks(piece) {
        match scan.feed(chunk) {
            Ok(safe) => {
                assert!(safe >= cleared, "the cleared offset moved back");
                cleared = safe;
            }
            Err(_) => return false,
        }
    }
    scan.finish().is_ok()
}

/// Every top-level member, in order, duplicates included.
fn members(body: &[u8]) -> Option<Vec<(String, serde_json::Value)>> {
    struct Members(Vec<(String, serde_json::Value)>);
    impl<'de> serde::Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Members, A::Error> {
                    let mut all = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        all.push(entry);
                    }
                    Ok(Members(all))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_slice::<Members>(body).ok().map(|m| m.0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let valid = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let accepted = if mode & 1 == 0 {
        check_json_fields(
            &json_headers(),
            body,
            &["user_id".to_string()],
            "alice",
            Some(guard().guard()),
        )
        .is_ok()
    } else {
        let piece = usize::from((mode >> 1) % 64) + 1;
        let streamed = streamed(body, piece);
        assert_eq!(
            streamed,
            self::streamed(body, body.len().max(1)),
            "whole and pieces disagree"
        );
        if valid {
            let whole = check_json_fields(&json_headers(), body, &[], "", Some(guard().guard()));
            assert_eq!(
                streamed,
                whole.is_ok(),
                "stream scan and whole check disagree: {whole:?}"
            );
        }
        streamed
    };
    if !accepted {
        return;
    }
    for (key, value) in members(body).unwrap_or_default() {
        let key = key.to_lowercase();
        if key == "user_id" && mode & 1 == 0 {
            assert_eq!(value.as_str(), Some("alice"), "accepted user_id {value}");
        }
        if key == "_method" {
            let method = value.as_str().map(|m| m.trim().to_ascii_uppercase());
            assert!(
                matches!(method.as_deref(), Some("" | "GET" | "POST")),
                "accepted _method {value}"
            );
        }
    }
});
