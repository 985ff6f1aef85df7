//! Token verification (`Authenticator::verify`) and JWKS parsing (`KeySet::parse`).
//!
//! The first input byte picks a mode; the rest is the payload:
//! - 0, 1: the payload (lossy UTF-8) is the token, verified by the plain or the strict
//!   authenticator; the payload is also parsed as a JWKS document;
//! - 2, 3: structured: the payload is `header JSON 0xFF claims JSON` (no 0xFF: the claims, under a
//!   default HS256 header); both are base64url-encoded and signed with the configured HS256 secret,
//!   so the input gets past the signature check into header and claims validation.
//!
//! Verification must never panic, and an accepted token must have given a usable identity.

#![no_main]

use std::fmt;
use std::sync::{Arc, OnceLock};

use authgate::auth::{Authenticator, Identity, KeySet};
use authgate::config::Config;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// 32 bytes, as the config requires of an HMAC secret.
const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-sec";
/// The verification time: 2025-06-15T15:06:40Z.
const NOW: u64 = 1_750_000_000;
const LEEWAY: u64 = 30;
const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "authgate";

const PLAIN_CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:1"

[auth]
algorithms = ["HS256"]
secret_env = "FUZZ_SECRET"
leeway = "30s"

[[route]]
path = "/api/{user_id}/tasks"
owner = "user_id"
"#;

const STRICT_CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:1"

[auth]
algorithms = ["HS256", "HS512"]
secret_env = "FUZZ_SECRET"
leeway = "30s"
issuer = "https://auth.example"
audience = "authgate"
user_claim = "uid"
token_cache_size = 0

[[route]]
path = "/api/{user_id}/tasks"
owner = "user_id"
"#;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    plain: Authenticator,
    strict: Authenticator,
    signing_key: EncodingKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let env = |name: &str| (name == "FUZZ_SECRET").then(|| SECRET.to_string());
        let build = |source: &str| {
            let config = Config::parse(source, "fuzz.toml", &env)
                .unwrap_or_else(|err| panic!("fuzz config invalid: {err}"));
            let _guard = runtime.enter();
            Authenticator::new(&config.auth)
        };
        let plain = build(PLAIN_CONFIG);
        let strict = build(STRICT_CONFIG);
        Fixture {
            runtime,
            plain,
            strict,
            signing_key: EncodingKey::from_secret(SECRET.as_bytes()),
        }
    })
}

/// What the token's claims JSON must have said, checked independently of the gateway's parser.
fn check_identity(identity: &Identity, user_claim: &str, strict: bool, claims_json: Option<&[u8]>) {
    let user = identity.user_id.as_str();
    assert!(!user.is_empty(), "empty user id accepted");
    assert!(
        !user.bytes().any(|b| b < 0x20 || b == 0x7f),
        "user id {user:?} has a control character"
    );
    assert_eq!(identity.header_value.as_bytes(), user.as_bytes());
    assert_eq!(
        identity.claims.get(user_claim).and_then(Value::as_str),
        Some(user)
    );
    let Some(json) = claims_json else { return };
    // serde_json keeps the last of duplicate keys; the gateway refuses duplicates, so whatever it
    // accepted has one value per key and both readings agree.
    let claims: Value = serde_json::from_slice(json).expect("accepted claims are JSON");
    let MemberNames(mut names) = serde_json::from_slice(json).expect("claims are an object");
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "claims with duplicate members accepted");
    assert_eq!(claims.get(user_claim).and_then(Value::as_str), Some(user));
    let exp = claims.get("exp").expect("accepted without exp");
    let exp = exp
        .as_u64()
        .or_else(|| {
            exp.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.max(0.0) as u64)
        })
        .expect("accepted with a non-numeric exp");
    assert!(
        exp.saturating_add(LEEWAY) > NOW,
        "expired token accepted (exp {exp})"
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf
            .as_u64()
            .or_else(|| {
                nbf.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.max(0.0) as u64)
            })
            .expect("accepted with a non-numeric nbf");
        assert!(NOW + LEEWAY >= nbf, "token accepted before nbf {nbf}");
    }
    if strict {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == AUDIENCE,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(AUDIENCE)),
            _ => false,
        };
        assert!(aud_ok, "wrong audience accepted");
    }
}

/// Known findings, named in `AUTHGATE_FUZZ_KNOWN` (comma-separated), are not asserted, so that a
/// long run can look for new problems while a reported one is being fixed. Empty by default: every
/// invariant is checked.
fn known(finding: &str) -> bool {
    static KNOWN: OnceLock<Vec<String>> = OnceLock::new();
    KNOWN
        .get_or_init(|| {
            std::env::var("AUTHGATE_FUZZ_KNOWN")
                .unwrap_or_default()
                .split(',')
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
                .collect()
        })
        .iter()
        .any(|id| id == finding)
}

/// The top-level member names of a JSON object, in order, duplicates kept.
struct MemberNames(Vec<String>);

impl<'de> Deserialize<'de> for MemberNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = MemberNames;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MemberNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    names.push(name);
                }
                Ok(MemberNames(names))
            }
        }
        deserializer.deserialize_map(Names)
    }
}

/// RFC 7515: the JOSE header of an accepted token is a UTF-8 JSON object (RFC 8259: no lone
/// surrogates), with `alg` HS256 here, no `crit` or `b64`, and (README) no duplicate member.
fn check_header(header: &[u8]) {
    match serde_json::from_slice::<Value>(header) {
        Ok(value) => {
            assert_eq!(value.get("alg").and_then(Value::as_str), Some("HS256"));
            assert!(value.get("crit").is_none() && value.get("b64").is_none());
        }
        Err(err) if known("header-json") => {
            let _ = err;
            return;
        }
        Err(err) => panic!(
            "a token whose JOSE header is not valid JSON was accepted: {err}; header {:?}",
            String::from_utf8_lossy(header)
        ),
    }
    let MemberNames(names) = serde_json::from_slice(header).expect("an object, checked above");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert!(
        sorted.len() == names.len() || known("header-duplicates"),
        "a token whose JOSE header has duplicate members was accepted: {names:?}"
    );
}

fn verify(fixture: &Fixture, strict: bool, token: &str) -> Option<Arc<Identity>> {
    let authenticator = if strict {
        &fixture.strict
    } else {
        &fixture.plain
    };
    fixture
        .runtime
        .block_on(authenticator.verify(token, NOW))
        .ok()
}

fn check_keyset(json: &[u8]) {
    if let Ok((set, problems)) = KeySet::parse(json) {
        assert!(set.kids().len() <= set.len());
        // Each key of the document is either usable or reported, never silently dropped.
        if let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(json) {
            if let Some(Value::Array(keys)) = document.get("keys") {
                assert_eq!(set.len() + problems.len(), keys.len());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let strict = mode & 1 == 1;
    let user_claim = if strict { "uid" } else { "sub" };
    if mode & 2 == 0 {
        let token = String::from_utf8_lossy(payload);
        if let Some(identity) = verify(fixture, strict, &token) {
            assert_eq!(token.split('.').count(), 3, "{token:?} accepted");
            check_identity(&identity, user_claim, strict, None);
        }
        check_keyset(payload);
        return;
    }

    let (header, claims) = match payload.iter().position(|&b| b == 0xff) {
        Some(split) => (&payload[..split], &payload[split + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], payload),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &fixture.signing_key,
        Algorithm::HS256,
    )
    .expect("HMAC signing cannot fail");
    let token = format!("{signing_input}.{signature}");
    if let Some(identity) = verify(fixture, strict, &token) {
        check_header(header);
        check_identity(&identity, user_claim, strict, Some(claims));
    }
});
