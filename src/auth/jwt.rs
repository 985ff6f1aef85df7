//! JWT (compact JWS) verification. This is the only code that decides whether a token is valid.
//!
//! We parse the JOSE header and the claims ourselves, with strict rules, and use jsonwebtoken only
//! for the signature primitive. That keeps every policy decision visible here:
//! - the algorithm comes from the header but must be on the configured allow-list, and the key is
//!   chosen by the algorithm's family (a secret never verifies RS/ES/EdDSA, and a public key never
//!   verifies HS*: the classic RS256-to-HS256 confusion cannot happen);
//! - `alg: none` is never on the list;
//! - key material in the token (`jwk`, `jku`, `x5u`, `x5c`) is never read;
//! - `crit` and `b64` are refused, since we implement no extensions (RFC 7515 section 4.1.11);
//! - duplicate JSON keys are an error, so two parsers cannot disagree about `sub` or `alg`;
//! - `exp` is required, `nbf` honoured, both with leeway; `iss`/`aud` checked when configured.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::TokenError;
use crate::config::AuthConfig;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    /// The user id, already a valid header value, ready to inject.
    pub header_value: HeaderValue,
    pub claims: Map<String, Value>,
}

/// Maps a JOSE `alg` name to an algorithm we can verify. `none` maps to nothing.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

pub struct Verifier {
    allowed: Vec<Algorithm>,
    hmac_key: Option<DecodingKey>,
    leeway_secs: u64,
    issuer: Option<Box<str>>,
    audience: Option<Box<str>>,
    user_claim: Box<str>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("allowed", &self.allowed)
            .field("has_hmac_key", &self.hmac_key.is_some())
            .finish_non_exhaustive()
    }
}

/// The JOSE header fields we read. Unknown fields (including `jwk`, `jku`, `x5u`, `x5c`) are
/// ignored; serde refuses a duplicated known field.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    b64: bool,
}

/// True when the field exists, whatever its value (even `null`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// A claims object whose top-level keys are unique.
struct StrictClaims(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;
        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = StrictClaims;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictClaims, A::Error> {
                let mut claims = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if claims.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate claim `{key}`")));
                    }
                    let value = access.next_value::<Value>()?;
                    claims.insert(key, value);
                }
                Ok(StrictClaims(claims))
            }
        }
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

impl Verifier {
    pub fn new(auth: &AuthConfig) -> Verifier {
        Verifier {
            allowed: auth.algorithms.clone(),
            hmac_key: auth
                .secret
                .as_ref()
                .map(|secret| DecodingKey::from_secret(&secret.0)),
            leeway_secs: auth.leeway.as_secs(),
            issuer: auth.issuer.as_deref().map(Into::into),
            audience: auth.audience.as_deref().map(Into::into),
            user_claim: auth.user_claim.as_str().into(),
        }
    }

    /// Verifies a compact JWS at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = decode_segment(header_b64)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if header.crit || header.b64 {
            return Err(TokenError::CriticalHeader);
        }
        let algorithm = parse_algorithm(&header.alg)
            .filter(|algorithm| self.allowed.contains(algorithm))
            .ok_or(TokenError::AlgorithmNotAllowed)?;
        let key = if is_hmac(algorithm) {
            self.hmac_key.as_ref()
        } else {
            None
        }
        .ok_or(TokenError::NoKey)?;
        // The signed message is the exact bytes `header.payload` as received.
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = &token.as_bytes()[..signed_len];
        let valid = jsonwebtoken::crypto::verify(signature_b64, message, key, algorithm)
            .map_err(|_| TokenError::BadSignature)?;
        if !valid {
            return Err(TokenError::BadSignature);
        }
        let claims_json = decode_segment(payload_b64)?;
        let StrictClaims(claims) =
            serde_json::from_slice(&claims_json).map_err(|_| TokenError::Malformed)?;
        self.check_claims(claims, now)
    }

    fn check_claims(
        &self,
        mut claims: Map<String, Value>,
        now: u64,
    ) -> Result<Identity, TokenError> {
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(TokenError::MissingExpiry)?;
        if exp.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(TokenError::Malformed)?;
            if now.saturating_add(self.leeway_secs) < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == &**issuer => {}
                _ => return Err(TokenError::WrongIssuer),
            }
        }
        if let Some(audience) = &self.audience {
            let accepted = match claims.get("aud") {
                Some(Value::String(aud)) => aud == &**audience,
                Some(Value::Array(auds)) => {
                    auds.iter().any(|aud| aud.as_str() == Some(&**audience))
                }
                _ => false,
            };
            if !accepted {
                return Err(TokenError::WrongAudience);
            }
        }
        let user_id = match claims.remove(&*self.user_claim) {
            Some(Value::String(user)) if !user.is_empty() => user,
            _ => return Err(TokenError::MissingUser),
        };
        // A user id must survive being a header value unchanged: visible ASCII or UTF-8, no
        // control characters (which would also let a token smuggle a header line).
        if user_id.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(TokenError::MissingUser);
        }
        let header_value = HeaderValue::from_str(&user_id).map_err(|_| TokenError::MissingUser)?;
        claims.insert(self.user_claim.to_string(), Value::String(user_id.clone()));
        Ok(Identity {
            user_id,
            header_value,
            claims,
        })
    }
}

/// base64url without padding, canonical (no trailing bits), as RFC 7515 requires.
fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// A NumericDate (RFC 7519 section 2): a JSON number of seconds. Strings are refused (the
/// jsonwebtoken < 10.3 advisory was about accepting string-typed `exp`/`nbf`).
fn numeric_date(value: &Value) -> Option<u64> {
    let Value::Number(number) = value else {
        return None;
    };
    if let Some(seconds) = number.as_u64() {
        return Some(seconds);
    }
    let seconds = number.as_f64()?;
    if !seconds.is_finite() {
        return None;
    }
    // Negative dates are far in the past; fractions round down.
    Some(seconds.max(0.0).floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"unit-test-secret-0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::new(&AuthConfig {
            algorithms: vec![Algorithm::HS256],
            secret: Some(Secret(SECRET.to_vec())),
            secret_env: None,
            user_claim: "sub".into(),
            identity_header: http::HeaderName::from_static("x-user-id"),
            leeway: Duration::from_secs(30),
            issuer: None,
            audience: None,
            strip_headers: vec![],
            owner_query_params: vec![],
        })
    }

    fn sign(header: &str, claims: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    #[test]
    fn accepts_a_good_token() {
        let token = sign(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"alice","exp":1700000100}"#,
        );
        let identity = verifier().verify(&token, NOW).unwrap();
        assert_eq!(identity.user_id, "alice");
    }

    #[test]
    fn refuses_duplicate_keys_and_extensions() {
        let dup_sub = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"alice","sub":"bob","exp":1700000100}"#,
        );
        assert_eq!(
            verifier().verify(&dup_sub, NOW).unwrap_err(),
            TokenError::Malformed
        );
        let dup_alg = sign(
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"sub":"a","exp":1700000100}"#,
        );
        assert_eq!(
            verifier().verify(&dup_alg, NOW).unwrap_err(),
            TokenError::Malformed
        );
        let crit_null = sign(
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"sub":"a","exp":1700000100}"#,
        );
        assert_eq!(
            verifier().verify(&crit_null, NOW).unwrap_err(),
            TokenError::CriticalHeader
        );
        let b64 = sign(
            r#"{"alg":"HS256","b64":false}"#,
            r#"{"sub":"a","exp":1700000100}"#,
        );
        assert_eq!(
            verifier().verify(&b64, NOW).unwrap_err(),
            TokenError::CriticalHeader
        );
    }

    #[test]
    fn time_claims_with_leeway() {
        let v = verifier();
        let token = |claims: &str| sign(r#"{"alg":"HS256"}"#, claims);
        assert!(v
            .verify(&token(r#"{"sub":"a","exp":1699999980}"#), NOW)
            .is_ok());
        assert_eq!(
            v.verify(&token(r#"{"sub":"a","exp":1699999970}"#), NOW)
                .unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            v.verify(&token(r#"{"sub":"a","exp":"1800000000"}"#), NOW)
                .unwrap_err(),
            TokenError::MissingExpiry
        );
        assert_eq!(
            v.verify(&token(r#"{"sub":"a"}"#), NOW).unwrap_err(),
            TokenError::MissingExpiry
        );
        assert!(v
            .verify(
                &token(r#"{"sub":"a","exp":1700000100,"nbf":1700000020}"#),
                NOW
            )
            .is_ok());
        assert_eq!(
            v.verify(
                &token(r#"{"sub":"a","exp":1700000100,"nbf":1700000031}"#),
                NOW
            )
            .unwrap_err(),
            TokenError::NotYetValid
        );
        assert_eq!(
            v.verify(&token(r#"{"sub":"","exp":1700000100}"#), NOW)
                .unwrap_err(),
            TokenError::MissingUser
        );
        assert_eq!(
            v.verify(&token(r#"{"sub":7,"exp":1700000100}"#), NOW)
                .unwrap_err(),
            TokenError::MissingUser
        );
        assert_eq!(
            v.verify(
                &token(r#"{"sub":"a\r\nx-user-id: bob","exp":1700000100}"#),
                NOW
            )
            .unwrap_err(),
            TokenError::MissingUser
        );
    }
}
