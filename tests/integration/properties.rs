//! Property tests (proptest) for the pure, security-relevant parsers: the request-target decoder,
//! the owner rule (route table + authz) and bearer extraction. No sockets; each property runs at
//! most 2,000 cases so the whole file stays fast in a debug build.
//!
//! Regressions are not persisted to files (`failure_persistence: None`): a failure prints its
//! minimal input, which belongs in a named unit test next to the code it exercises.

use std::borrow::Cow;
use std::sync::OnceLock;

use authgate::auth::{extract_bearer, Identity, MAX_TOKEN_BYTES};
use authgate::authz::authorize;
use authgate::config::Config;
use authgate::routes::RouteTable;
use authgate::target::{decode_path, decode_query_component, validate, validate_query};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Unreserved characters (RFC 3986 section 2.3): never need escaping in a path segment.
const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// Characters that matter to a path parser: delimiters, dots, escapes, hex digits, look-alikes.
/// Raw `?` and `#` are not here: `Uri::path()` never contains them (the URI parser ends the path
/// there), so they are fed through `Uri` + `validate` in `validated_targets_are_unambiguous`.
const PATH_CHARS: &str = concat!(
    "///...%%\\;~-_+&=:@!$'()*, \"<>[]{}|^`",
    "abcefABEFgzZ012579\0\t\n\r\u{7f}\u{80}\u{85}\u{a0}\u{e9}",
    "\u{2028}\u{2215}\u{ff0e}\u{ff0f}\u{fe52}\u{feff}\u{1f600}",
);

/// Characters whose UTF-8 encoding is interesting once percent-encoded: C0/C1 controls, Unicode
/// line separators, full-width and small look-alikes of `.` and `/`, the BOM, an astral character.
const ENCODED_CHARS: &str = concat!(
    "./\\%;?#\0\n\u{7f}\u{80}\u{85}\u{9f}\u{a0}\u{e9}\u{2024}\u{2028}\u{2029}\u{2215}",
    "\u{ff0e}\u{ff0f}\u{fe52}\u{feff}\u{1f600}",
);

/// Any one character of `chars`.
fn one_of(chars: &'static str) -> impl Strategy<Value = char> + Clone {
    prop::sample::select(chars.chars().collect::<Vec<char>>())
}

fn percent_encode_bytes(bytes: &[u8], lower: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One piece of a raw path: a raw character, an escape of an arbitrary byte (upper or lower case
/// hex), an escaped interesting character (all its UTF-8 bytes), a malformed escape, or a dot run.
fn path_atom() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(UNRESERVED).prop_map(|b| (b as char).to_string()),
        4 => one_of(PATH_CHARS).prop_map(|c| c.to_string()),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(b, lower)| percent_encode_bytes(&[b], lower)),
        2 => (one_of(ENCODED_CHARS), any::<bool>()).prop_map(|(c, lower)| {
            percent_encode_bytes(c.to_string().as_bytes(), lower)
        }),
        1 => (any::<char>(), any::<bool>()).prop_map(|(c, lower)| {
            percent_encode_bytes(c.to_string().as_bytes(), lower)
        }),
        1 => prop::sample::select(&[
            "%", "%2", "%g0", "%0g", "%%", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "..", ".",
            "%252e", "%25", "%c0%ae", "%e0%80%ae", "%ed%a0%80", "%c2%85", "%C2%9F",
        ][..])
        .prop_map(str::to_string),
    ]
}

/// A raw request path: usually starting with `/` (so that some are accepted), sometimes not.
fn raw_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.95),
        prop::collection::vec(path_atom(), 0..24),
    )
        .prop_map(|(slash, atoms)| {
            let mut path = String::from(if slash { "/" } else { "" });
            path.extend(atoms);
            path
        })
}

/// A raw request-target: path atoms plus raw `?` and `#`, and sometimes a scheme or authority.
fn raw_target() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        8 => path_atom(),
        1 => prop::sample::select(&["?", "#", "?user_id=", "&", "="][..]).prop_map(str::to_string),
    ];
    (
        prop::sample::select(&["/", "/", "/", "/", "", "*", "http://h", "//h"][..]),
        prop::collection::vec(atom, 0..24),
    )
        .prop_map(|(start, atoms)| format!("{start}{}", atoms.concat()))
}

/// Paths built as `/seg/seg/...` from segments that are mostly acceptable, so that the accepted
/// branch of the properties is exercised often, with escapes and traps mixed in.
fn segmented_path() -> impl Strategy<Value = String> {
    let segment = prop::collection::vec(
        prop_oneof![
            24 => prop::sample::select(UNRESERVED).prop_map(|b| (b as char).to_string()),
            4 => (any::<u8>(), any::<bool>())
                .prop_map(|(b, lower)| percent_encode_bytes(&[b], lower)),
            2 => (any::<char>(), any::<bool>()).prop_map(|(c, lower)| {
                percent_encode_bytes(c.to_string().as_bytes(), lower)
            }),
            1 => (one_of(ENCODED_CHARS), any::<bool>()).prop_map(|(c, lower)| {
                percent_encode_bytes(c.to_string().as_bytes(), lower)
            }),
            1 => one_of(PATH_CHARS).prop_map(|c| c.to_string()),
        ],
        1..6,
    )
    .prop_map(|atoms| atoms.concat());
    prop::collection::vec(segment, 1..6).prop_map(|segments| format!("/{}", segments.join("/")))
}

/// Decodes `%XX` escapes; `None` on a malformed escape. An independent, obviously correct oracle.
fn oracle_decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Some(out)
}

/// Everything an accepted path must satisfy.
fn check_accepted_path(raw: &str, decoded: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        decoded.starts_with('/'),
        "{raw:?} -> {decoded:?}: no leading /"
    );
    prop_assert!(raw.is_ascii(), "{raw:?} accepted with raw non-ASCII bytes");
    if !raw.contains('%') {
        prop_assert_eq!(decoded, raw, "a path without escapes must decode to itself");
    }
    if decoded == "/" {
        prop_assert_eq!(raw, "/");
        return Ok(());
    }
    let raw_segments: Vec<&str> = raw[1..].split('/').collect();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    // An escape never adds a segment: decoding happens within segments.
    prop_assert_eq!(
        raw_segments.len(),
        segments.len(),
        "{:?} -> {:?}: the segment count changed (encoded /)",
        raw,
        decoded
    );
    for (raw_segment, segment) in raw_segments.iter().zip(&segments) {
        prop_assert!(!segment.is_empty(), "{raw:?} -> {decoded:?}: empty segment");
        prop_assert!(
            *segment != "." && *segment != "..",
            "{raw:?} -> {decoded:?}: dot segment {segment:?}"
        );
        for c in segment.chars() {
            prop_assert!(
                !matches!(c, '/' | '\\' | '\0' | ';' | '%' | '?' | '#') && !c.is_control(),
                "{raw:?} -> {decoded:?}: segment {segment:?} contains {c:?}"
            );
        }
        // Each segment is exactly its raw bytes decoded once.
        let expected = oracle_decode(raw_segment);
        prop_assert_eq!(
            expected.as_deref(),
            Some(segment.as_bytes()),
            "{:?}: segment {:?} decoded wrongly",
            raw,
            raw_segment
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request-target properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2000))]

    /// Whatever decode_path accepts is unambiguous: leading `/`, no empty or dot segment, no
    /// delimiter, escape or control character inside a decoded segment, valid UTF-8, and a path
    /// without escapes is returned unchanged.
    #[test]
    fn accepted_paths_are_unambiguous(raw in raw_path()) {
        if let Ok(decoded) = decode_path(&raw) {
            check_accepted_path(&raw, &decoded)?;
            if !raw.contains('%') {
                prop_assert!(matches!(decoded, Cow::Borrowed(_)));
            }
        }
    }

    /// Through the real entry point: a request-target that `http::Uri` parses and `validate`
    /// accepts (HTTP/1.1) is origin-form, its path satisfies the same invariants, and its query is
    /// the validated raw query.
    #[test]
    fn validated_targets_are_unambiguous(raw in raw_target()) {
        let Ok(uri) = raw.parse::<Uri>() else { return Ok(()) };
        for version in [Version::HTTP_11, Version::HTTP_2] {
            if let Ok(target) = validate(&uri, version) {
                if version == Version::HTTP_11 {
                    prop_assert!(uri.scheme().is_none() && uri.authority().is_none(), "{raw:?}");
                }
                check_accepted_path(uri.path(), &target.path)?;
                prop_assert_eq!(target.query, uri.query());
                if let Some(query) = target.query {
                    prop_assert!(validate_query(query).is_ok());
                    prop_assert!(!query.bytes().any(|b| b == b';' || !(0x20..0x7f).contains(&b)));
                }
            }
        }
    }

    /// The same, on paths shaped like real ones (mostly accepted).
    #[test]
    fn accepted_segmented_paths_are_unambiguous(raw in segmented_path()) {
        if let Ok(decoded) = decode_path(&raw) {
            check_accepted_path(&raw, &decoded)?;
        }
    }

    /// Query validation and component decoding never panic; an accepted query has only
    /// well-formed escapes, no `;`, no raw control character and no raw non-ASCII, and a
    /// component of it decodes to what an independent decoder says.
    #[test]
    fn query_validation_is_consistent(atoms in prop::collection::vec(path_atom(), 0..16)) {
        let query: String = atoms.concat();
        let accepted = validate_query(&query).is_ok();
        let decodable = oracle_decode(&query).is_some();
        let forbidden = query.bytes().any(|b| b == b';' || !(0x20..0x7f).contains(&b));
        prop_assert_eq!(accepted, decodable && !forbidden, "{:?}", query);
        for component in query.split(['&', '=']) {
            let decoded = decode_query_component(component);
            if accepted {
                let expected = oracle_decode(&component.replace('+', "%20"))
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                prop_assert_eq!(decoded.map(Cow::into_owned), expected, "{:?}", component);
            }
        }
    }

    /// Paths of safe segments are accepted unchanged, and any percent-encoding of any subset of
    /// their characters (upper or lower case hex) decodes back to the same path.
    #[test]
    fn safe_paths_round_trip(
        segments in prop::collection::vec(
            prop::collection::vec(prop::sample::select(UNRESERVED), 1..10)
                .prop_map(|bytes| String::from_utf8(bytes).unwrap())
                .prop_filter("dot segments are refused", |s| s != "." && s != ".."),
            1..8,
        ),
        mask in prop::collection::vec((any::<bool>(), any::<bool>()), 80),
    ) {
        let plain = format!("/{}", segments.join("/"));
        let decoded = decode_path(&plain);
        prop_assert_eq!(decoded.as_deref(), Ok(plain.as_str()));
        prop_assert!(matches!(decoded, Ok(Cow::Borrowed(_))));

        let mut encoded = String::from("/");
        let mut position = 0;
        for (index, segment) in segments.iter().enumerate() {
            if index > 0 {
                encoded.push('/');
            }
            for b in segment.bytes() {
                let (escape, lower) = mask[position % mask.len()];
                position += 1;
                if escape {
                    encoded.push_str(&percent_encode_bytes(&[b], lower));
                } else {
                    encoded.push(b as char);
                }
            }
        }
        let decoded = decode_path(&encoded);
        prop_assert_eq!(decoded.as_deref(), Ok(plain.as_str()), "{:?}", encoded);
    }
}

// ---------------------------------------------------------------------------------------------
// Owner rule
// ---------------------------------------------------------------------------------------------

const OWNER_CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:1"

[auth]
algorithms = ["HS256"]
secret_env = "PROPERTY_SECRET"

[[route]]
path = "/api/{user_id}/tasks"
owner = "user_id"
"#;

fn owner_table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let secret = "s".repeat(32);
        let config = Config::parse(OWNER_CONFIG, "properties.toml", &|name| {
            (name == "PROPERTY_SECRET").then(|| secret.clone())
        })
        .unwrap_or_else(|err| panic!("{err}"));
        RouteTable::compile(&config.routes).unwrap_or_else(|err| panic!("{err}"))
    })
}

/// User ids: ASCII (a verified identity must be a valid header value), with case variants and
/// look-alike characters of each other.
const USER_CHARS: &str = "aAlLIi1oO0eE.-_~ +@";

/// Owner segment characters: the user id alphabet plus non-ASCII look-alikes (Cyrillic a, e, o,
/// Latin é, dotless i, full-width a, a combining acute accent, a zero-width space, NBSP).
const SEGMENT_CHARS: &str = concat!(
    "aAlLIi1oO0eE.-_~ +@",
    "\u{430}\u{435}\u{43e}\u{e9}\u{131}\u{ff41}\u{301}\u{200b}\u{a0}",
);

fn identity(user_id: &str) -> Identity {
    Identity {
        user_id: user_id.to_string(),
        header_value: HeaderValue::from_str(user_id).expect("ASCII user id"),
        claims: serde_json::Map::new(),
    }
}

/// Encodes a decoded segment for a request path: non-unreserved bytes always escaped, unreserved
/// ones escaped when the mask says so.
fn encode_segment(segment: &str, mask: &[bool]) -> String {
    let mut out = String::new();
    for (index, b) in segment.bytes().enumerate() {
        if UNRESERVED.contains(&b) && !mask[index % mask.len()] {
            out.push(b as char);
        } else {
            out.push_str(&percent_encode_bytes(&[b], index % 2 == 0));
        }
    }
    out
}

/// Pairs (segment, user id): equal, differing in one character's case or look-alike, or unrelated.
fn owner_pair() -> impl Strategy<Value = (String, String)> {
    let user = prop::collection::vec(one_of(USER_CHARS), 1..8)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    let segment = prop::collection::vec(one_of(SEGMENT_CHARS), 1..8)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    prop_oneof![
        user.clone().prop_map(|u| (u.clone(), u)),
        (
            user.clone(),
            any::<prop::sample::Index>(),
            one_of(SEGMENT_CHARS)
        )
            .prop_map(|(u, at, c)| {
                let mut chars: Vec<char> = u.chars().collect();
                let at = at.index(chars.len());
                chars[at] = c;
                (chars.into_iter().collect(), u)
            }),
        (user.clone(), one_of(SEGMENT_CHARS)).prop_map(|(u, c)| (format!("{u}{c}"), u)),
        (user.clone(), any::<prop::sample::Index>()).prop_map(|(u, at)| {
            let mut chars: Vec<char> = u.chars().collect();
            let at = at.index(chars.len());
            chars[at] = if chars[at].is_ascii_lowercase() {
                chars[at].to_ascii_uppercase()
            } else {
                chars[at].to_ascii_lowercase()
            };
            (chars.into_iter().collect(), u)
        }),
        (segment, user),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// `/api/{segment}/tasks` is authorized for a user exactly when the decoded segment equals the
    /// user id byte for byte, however the segment was percent-encoded.
    #[test]
    fn owner_rule_is_byte_equality(
        (segment, user_id) in owner_pair(),
        mask in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let raw = format!("/api/{}/tasks", encode_segment(&segment, &mask));
        let decoded = match decode_path(&raw) {
            Ok(decoded) => decoded,
            Err(why) => {
                // Only a dot segment may be refused: every other byte was escaped legally.
                prop_assert!(segment == "." || segment == "..", "{raw:?} refused: {why}");
                return Ok(());
            }
        };
        let matched = owner_table()
            .lookup(&Method::GET, &decoded)
            .unwrap_or_else(|err| panic!("{raw:?} matched no route: {err:?}"));
        prop_assert_eq!(matched.param("user_id"), Some(segment.as_str()));
        let identity = identity(&user_id);
        let allowed = authorize(&matched, &identity, None).is_ok();
        prop_assert_eq!(
            allowed,
            segment == user_id,
            "path {:?} (segment {:?}) for user {:?}",
            raw,
            segment,
            user_id
        );

        // Every `user_id` query parameter must name the caller too, however it is encoded (`+`
        // or `%20` for a space) and wherever it appears among duplicates.
        let own_path = format!("/api/{}/tasks", encode_segment(&user_id, &mask));
        let Ok(own_decoded) = decode_path(&own_path) else {
            prop_assert!(user_id == "." || user_id == "..", "{own_path:?} refused");
            return Ok(());
        };
        let own = owner_table()
            .lookup(&Method::GET, &own_decoded)
            .unwrap_or_else(|err| panic!("{own_path:?} matched no route: {err:?}"));
        prop_assert!(authorize(&own, &identity, None).is_ok());
        let mut value = encode_segment(&segment, &mask);
        if mask[0] {
            value = value.replace("%20", "+");
        }
        let own_value = encode_segment(&user_id, &mask);
        for query in [
            format!("user_id={value}"),
            format!("user_id={own_value}&user_id={value}"),
            format!("user_id={value}&x=1&user_id={own_value}"),
            format!("x=%2F&user_id={value}"),
        ] {
            prop_assert!(validate_query(&query).is_ok(), "{query:?}");
            let allowed = authorize(&own, &identity, Some(&query)).is_ok();
            prop_assert_eq!(
                allowed,
                segment == user_id,
                "query {:?} for user {:?}",
                query,
                user_id
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bearer extraction
// ---------------------------------------------------------------------------------------------

const TOKEN_CHARS: &[u8] = b"ABCXYZabcxyz0189-_.";

/// Header values: `Bearer` in any case or a look-alike scheme, separators of spaces and tabs, token
/// characters mixed with everything a header value can carry, sometimes around the 8 KiB limit.
fn authorization_value() -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop_oneof![
        4 => prop::sample::select(&["Bearer", "bearer", "BEARER", "bEaReR"][..]),
        1 => prop::sample::select(&["Basic", "Bearer,", "Bearer:", "Bearerx", "", "Bear\u{e9}r", "Token"][..]),
    ]
    .prop_map(|s| s.as_bytes().to_vec());
    let separator = prop_oneof![
        6 => Just(vec![b' ']),
        2 => prop::collection::vec(prop::sample::select(&[b' ', b' ', b'\t'][..]), 0..4),
    ];
    let token_byte = prop_oneof![
        200 => prop::sample::select(TOKEN_CHARS),
        2 => prop::sample::select(&b" \t+/=,;\"\\%\x7f\x80\xff"[..]),
        1 => any::<u8>(),
    ];
    let token = prop_oneof![
        8 => prop::collection::vec(token_byte.clone(), 0..64),
        1 => (prop::sample::select(TOKEN_CHARS), MAX_TOKEN_BYTES - 2..MAX_TOKEN_BYTES + 24)
            .prop_map(|(b, n)| vec![b; n]),
        1 => (prop::collection::vec(token_byte, 0..4), MAX_TOKEN_BYTES - 8..MAX_TOKEN_BYTES + 8)
            .prop_map(|(tail, n)| {
                let mut v = vec![b'a'; n];
                v.extend(tail);
                v
            }),
    ];
    let trailer = prop::collection::vec(prop::sample::select(&[b' ', b'\t', b'a', b','][..]), 0..3);
    prop_oneof![
        8 => (scheme, separator, token, trailer).prop_map(|(s, sep, t, tr)| {
            let mut v = s;
            v.extend(sep);
            v.extend(t);
            v.extend(tr);
            v
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// extract_bearer never panics, and whatever it returns is a non-empty token of base64url
    /// characters and dots, at most 8 KiB, taken from the one Authorization header whose scheme is
    /// `Bearer` (any case).
    #[test]
    fn bearer_tokens_are_well_formed(
        first in authorization_value(),
        second in prop::option::weighted(0.2, authorization_value()),
    ) {
        let mut headers = HeaderMap::new();
        let mut values = Vec::new();
        for bytes in std::iter::once(first).chain(second) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.append(AUTHORIZATION, value);
                values.push(bytes);
            }
        }
        let result = extract_bearer(&headers);
        if let Ok(token) = result {
            prop_assert_eq!(values.len(), 1, "a token was taken from {} headers", values.len());
            prop_assert!(!token.is_empty());
            prop_assert!(token.len() <= MAX_TOKEN_BYTES, "token of {} bytes", token.len());
            prop_assert!(
                token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
                "token {:?}",
                token
            );
            let value = &values[0];
            let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
            prop_assert!(value[..scheme_end].eq_ignore_ascii_case(b"bearer"));
            let rest = String::from_utf8_lossy(&value[scheme_end..]);
            prop_assert_eq!(rest.trim_matches([' ', '\t']), token);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Owner fields in form and untyped POST bodies
// ---------------------------------------------------------------------------------------------

/// Pieces of a form body: ordinary pairs, owner pairs (alice's, bob's, look-alike names), and
/// bytes that break form syntax, so that the lenient (untyped) reading meets all of them.
fn form_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z]{1,6}=[a-z0-9]{0,6}".prop_map(String::into_bytes),
        2 => Just(b"user_id=alice".to_vec()),
        1 => Just(b"user_id=bob".to_vec()),
        1 => prop::sample::select(&[
            "user_id[]=x", "[user_id]=x", "user.id=x", "USER_ID=x", "user+id=x", "!user_id=x",
            "user_id%00=x", "user%5Fid=bob", "user_id=al%69ce", "user_id=alice%0A",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// The untyped (Rack-like) reading never panics, and its verdict follows the pairs: any
    /// pair naming bob, or a look-alike name, refuses the body; a body of ordinary pairs and
    /// alice's is let through. Separators are `&` or `;`.
    #[test]
    fn untyped_bodies_are_refused_exactly_when_a_pair_says_so(
        pieces in prop::collection::vec(form_piece(), 0..8),
        semicolons in any::<bool>(),
    ) {
        use authgate::authz::{check_form_owner, FormBody};
        let separator = if semicolons { b";" } else { b"&" };
        let body = pieces.join(&separator[..]);
        let names: Vec<Box<str>> = vec!["user_id".into()];
        let verdict = check_form_owner(FormBody::Untyped, &HeaderMap::new(), &body, &names, "alice");
        let plain = |piece: &Vec<u8>| {
            piece.is_empty()
                || piece == b"user_id=alice"
                || piece == b"user_id=al%69ce"
                || (piece.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'=')
                    && !piece.starts_with(b"user_id="))
        };
        if pieces.iter().all(plain) {
            prop_assert!(verdict.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(&body), verdict);
        }
        let naming_bob = |piece: &Vec<u8>| {
            piece == b"user_id=bob" || piece == b"user%5Fid=bob" || piece == b"user_id=alice%0A"
        };
        if pieces.iter().any(naming_bob) {
            prop_assert!(verdict.is_err(), "{:?} let through", String::from_utf8_lossy(&body));
        }
    }
}
