//! The streaming multipart scanner (owner fields and `_method`). The first byte is the piece size
//! (1 to 64), the rest a `multipart/form-data` body with boundary `XyZ`, fed in pieces. Checked:
//! never panics; the same verdict fed whole and in pieces; the offset cleared to go never passes
//! what was fed and never moves back; and in an accepted body a lenient reading (split at every
//! `--XyZ`, headers up to the first blank line, the `name` parameter found case-insensitively
//! wherever it stands) finds no `user_id` naming anyone but alice and no `_method` naming a
//! method the route (GET, POST) refuses.

#![no_main]

use std::sync::OnceLock;

use authgate::method_override::OwnedMethodGuard;
use authgate::multipart::OwnerScan;
use authgate_fuzz::{check_accepted_field, get_post_guard};
use libfuzzer_sys::fuzz_target;

fn guard() -> &'static OwnedMethodGuard {
    static GUARD: OnceLock<OwnedMethodGuard> = OnceLock::new();
    GUARD.get_or_init(get_post_guard)
}

fn scan(body: &[u8], piece: usize) -> bool {
    let mut scanner =
        OwnerScan::new(b"XyZ", &["user_id".into()], "alice").with_method_guard(guard().clone());
    let mut fed = 0u64;
    let mut cleared = 0u64;
    for chunk in body.chunks(piece) {
        fed += chunk.len() as u64;
        match scanner.feed(chunk) {
            Ok(safe) => {
                assert!(safe <= fed, "cleared {safe} of {fed} bytes fed");
                assert!(safe >= cleared, "the cleared offset moved back");
                cleared = safe;
            }
            Err(_) => return false,
        }
    }
    scanner.finish().is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece % 64) + 1;
    let accepted = scan(body, piece);
    assert_eq!(
        accepted,
        scan(body, body.len().max(1)),
        "whole and in pieces disagree"
    );
    if !accepted {
        return;
    }
    let delimiter = b"--XyZ";
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(delimiter.len()).position(|w| w == delimiter) {
        parts.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
    }
    parts.push(rest);
    for part in parts.iter().skip(1) {
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(blank) = part.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let (head, content) = (&part[..blank], &part[blank + 4..]);
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let head = String::from_utf8_lossy(head).to_ascii_lowercase();
        for param in head.split([';', '\n']) {
            let param = param.trim();
            if let Some(name) = param.strip_prefix("name=") {
                let name = name.trim_matches('"');
                check_accepted_field(name.as_bytes(), content, "multipart");
            }
        }
    }
});
