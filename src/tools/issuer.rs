//! The test issuer: the key material `authgate test` and `authgate explain` put in place of a
//! config's own, so decisions can be tested offline.
//!
//! It replaces every HS* secret with a fresh random one, every JWKS source (`jwks_url`,
//! `jwks_file`) with a key set of its own for the configured algorithms, and Better Auth's secret,
//! then mints credentials with them: tokens with the issuer's `iss` and `aud`, and signed session
//! cookies whose sessions `tools::harness` answers for Better Auth. Signatures are not what these
//! tests test; the decisions are. Only the two tool commands call this: the serving path
//! (`authgate run`) never builds one, so no request can reach a key minted here.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::{json, Map, Value};

use crate::config::{Config, JwksFile, Secret};
use crate::core::jose::JwsAlgorithm;
use crate::tools::cases::{CallerUser, Flaw};

/// A 2048-bit RSA key (PKCS#1) made for `authgate test` only (RS* and PS* tokens): ring cannot generate
/// RSA keys, and generating one per run would cost seconds. It is public by being in this
/// repository, which is fine: a gateway only ever trusts it inside `authgate test`, where it
/// replaces the config's own keys.
const TEST_RSA_KEY_PEM: &str = include_str!("test_rsa_key.pem");
/// Its modulus, base64url.
const TEST_RSA_MODULUS: &str = include_str!("test_rsa_modulus.txt");

/// What `iss` a token claims when it must be wrong.
const WRONG_ISSUER: &str = "https://wrong-issuer.authgate.invalid";
const WRONG_AUDIENCE: &str = "https://wrong-audience.authgate.invalid";

struct SigningKey {
    algorithm: JwsAlgorithm,
    kid: String,
    key: EncodingKey,
}

struct TestIssuerEntry {
    iss: Option<String>,
    aud: Option<String>,
    algorithms: Vec<JwsAlgorithm>,
    hmac: Option<Vec<u8>>,
    keys: Vec<SigningKey>,
}

pub struct TestIssuer {
    issuers: Vec<TestIssuerEntry>,
    user_claim: String,
    /// Better Auth's secret and cookie prefix, when `[auth.session]` is configured.
    session: Option<(Vec<u8>, String)>,
    next_session: AtomicU64,
}

/// A credential to send: one header.
pub struct Credential {
    pub header: &'static str,
    pub value: String,
    /// For a session cookie: the session token and what Better Auth answers for it.
    pub session: Option<(String, Value)>,
}

fn random_bytes(count: usize) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; count];
    getrandom::fill(&mut bytes).map_err(|err| format!("no randomness: {err}"))?;
    Ok(bytes)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TestIssuer {
    /// Puts test keys in place of `config`'s and returns the issuer that holds them.
    pub fn install(config: &mut Config) -> Result<TestIssuer, String> {
        let rng = SystemRandom::new();
        let mut issuers = Vec::new();
        for issuer in &mut config.auth.issuers {
            let hmac = match issuer.secret {
                Some(_) => {
                    let secret = random_bytes(64)?;
                    issuer.secret = Some(Secret(secret.clone()));
                    Some(secret)
                }
                None => None,
            };
            let mut keys = Vec::new();
            if issuer.jwks_url.is_some() || issuer.jwks_file.is_some() {
                let mut jwks = Vec::new();
                for algorithm in &issuer.algorithms {
                    if algorithm.is_hmac() {
                        continue;
                    }
                    let kid = format!("authgate-test-{algorithm}");
                    let Some((key, jwk)) = signing_key(*algorithm, &kid, &rng)? else {
                        continue;
                    };
                    jwks.push(jwk);
                    keys.push(SigningKey {
                        algorithm: *algorithm,
                        kid,
                        key,
                    });
                }
                issuer.jwks_url = None;
                issuer.jwks_file = Some(JwksFile {
                    path: "(authgate test keys)".into(),
                    json: json!({ "keys": jwks }).to_string().into_bytes(),
                });
            }
            issuers.push(TestIssuerEntry {
                iss: issuer.issuer.clone(),
                aud: issuer.audience.clone(),
                algorithms: issuer.algorithms.clone(),
                hmac,
                keys,
            });
        }
        let session = match &mut config.auth.session {
            Some(session) => {
                let secret = random_bytes(32)?;
                session.secret = Secret(secret.clone());
                Some((secret, session.cookie_prefix.clone()))
            }
            None => None,
        };
        Ok(TestIssuer {
            issuers,
            user_claim: config.auth.user_claim.clone(),
            session,
            next_session: AtomicU64::new(1),
        })
    }

    /// The credential for `caller`.
    pub fn credential(&self, caller: &CallerUser, now: u64) -> Result<Credential, String> {
        match caller.via {
            crate::tools::cases::Via::Bearer => Ok(Credential {
                header: "Authorization",
                value: format!("Bearer {}", self.token(caller, now)?),
                session: None,
            }),
            crate::tools::cases::Via::Session => self.session_cookie(caller, now),
        }
    }

    fn token(&self, caller: &CallerUser, now: u64) -> Result<String, String> {
        if caller.flaw == Some(Flaw::Malformed) {
            return Ok("not-a-jwt".into());
        }
        let issuer = match &caller.issuer {
            None => self.issuers.first().ok_or(
                "the config verifies no bearer tokens (no issuer; sessions only): use via = \"session\"",
            )?,
            Some(iss) => self
                .issuers
                .iter()
                .find(|issuer| issuer.iss.as_deref() == Some(iss.as_str()))
                .ok_or_else(|| format!("no issuer in the config has issuer = {iss:?}"))?,
        };
        let algorithm = match caller.algorithm {
            Some(algorithm) if issuer.algorithms.contains(&algorithm) => algorithm,
            Some(algorithm) => {
                return Err(format!(
                    "{algorithm} is not in the issuer's algorithms; a token signed so is refused without a test"
                ))
            }
            None => *issuer
                .algorithms
                .iter()
                .find(|algorithm| {
                    algorithm.is_hmac() || issuer.keys.iter().any(|key| key.algorithm == **algorithm)
                })
                .ok_or("the test issuer cannot sign with any of the issuer's algorithms (ES512 only)")?,
        };
        let mut claims = Map::new();
        for (name, value) in &caller.claims {
            claims.insert(name.clone(), value.clone());
        }
        claims.insert(self.user_claim.clone(), Value::from(caller.id.as_str()));
        claims
            .entry("iat")
            .or_insert_with(|| Value::from(now.saturating_sub(5)));
        claims
            .entry("exp")
            .or_insert_with(|| Value::from(now + 600));
        if let Some(iss) = &issuer.iss {
            claims
                .entry("iss")
                .or_insert_with(|| Value::from(iss.as_str()));
        }
        if let Some(aud) = &issuer.aud {
            claims
                .entry("aud")
                .or_insert_with(|| Value::from(aud.as_str()));
        }
        match caller.flaw {
            Some(Flaw::Expired) => {
                claims.insert("iat".into(), Value::from(now.saturating_sub(7200)));
                claims.insert("exp".into(), Value::from(now.saturating_sub(3600)));
            }
            Some(Flaw::NotYetValid) => {
                claims.insert("nbf".into(), Value::from(now + 3600));
            }
            Some(Flaw::WrongIssuer) => {
                claims.insert("iss".into(), Value::from(WRONG_ISSUER));
            }
            Some(Flaw::WrongAudience) => {
                claims.insert("aud".into(), Value::from(WRONG_AUDIENCE));
            }
            _ => {}
        }
        if caller.flaw == Some(Flaw::Unsigned) {
            let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = b64url(Value::Object(claims).to_string().as_bytes());
            return Ok(format!("{header}.{payload}."));
        }
        let primitive = algorithm
            .primitive()
            .ok_or_else(|| format!("the test issuer cannot sign {algorithm}"))?;
        let mut header = Header::new(primitive);
        let key = if algorithm.is_hmac() {
            EncodingKey::from_secret(issuer.hmac.as_deref().ok_or("no HMAC secret")?)
        } else {
            let key = issuer
                .keys
                .iter()
                .find(|key| key.algorithm == algorithm)
                .ok_or_else(|| format!("the test issuer has no {algorithm} key"))?;
            header.kid = Some(key.kid.clone());
            key.key.clone()
        };
        let token = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|err| format!("cannot sign a {algorithm} test token: {err}"))?;
        if caller.flaw == Some(Flaw::BadSignature) {
            return Ok(spoil_signature(&token));
        }
        Ok(token)
    }

    fn session_cookie(&self, caller: &CallerUser, now: u64) -> Result<Credential, String> {
        let (secret, prefix) = self
            .session
            .as_ref()
            .ok_or("via = \"session\" needs [auth.session] in the config")?;
        let number = self.next_session.fetch_add(1, Ordering::Relaxed);
        let token = format!(
            "authgate-test-session-{number}-{}",
            b64url(&random_bytes(12)?)
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let signature = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, token.as_bytes()));
        let signed = match caller.flaw {
            Some(Flaw::Malformed) => token.clone(),
            Some(Flaw::BadSignature) => format!("{token}.{}", spoil_signature(&signature)),
            _ => format!("{token}.{signature}"),
        };
        // encodeURIComponent, as Better Auth writes it.
        let encoded = signed
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let answer = match caller.flaw {
            Some(Flaw::Expired) => Value::Null,
            _ => session_answer(caller, &token, number, now),
        };
        Ok(Credential {
            header: "Cookie",
            value: format!("{prefix}.session_token={encoded}"),
            session: Some((token, answer)),
        })
    }
}

/// What Better Auth's get-session answers for a live session of `caller`: the user (id, and the
/// case's claims as user fields) and the session.
fn session_answer(caller: &CallerUser, token: &str, number: u64, now: u64) -> Value {
    let mut user = Map::new();
    user.insert("id".into(), Value::from(caller.id.as_str()));
    user.insert("name".into(), Value::from(caller.id.as_str()));
    user.insert(
        "email".into(),
        Value::from(format!("{}@example.test", caller.id)),
    );
    user.insert("emailVerified".into(), Value::from(true));
    user.insert("createdAt".into(), Value::from(iso8601(now - 86_400)));
    user.insert("updatedAt".into(), Value::from(iso8601(now - 86_400)));
    for (name, value) in &caller.claims {
        user.insert(name.clone(), value.clone());
    }
    json!({
        "session": {
            "id": format!("test-session-{number}"),
            "token": token,
            "userId": caller.id,
            "expiresAt": iso8601(now + 3600),
            "createdAt": iso8601(now.saturating_sub(5)),
            "updatedAt": iso8601(now.saturating_sub(5)),
        },
        "user": user,
    })
}

/// A signature that no longer matches: its first character changed.
fn spoil_signature(token: &str) -> String {
    let (head, signature) = token.rsplit_once('.').unwrap_or(("", token));
    let mut spoiled: Vec<u8> = signature.bytes().collect();
    if let Some(first) = spoiled.first_mut() {
        *first = if *first == b'A' { b'B' } else { b'A' };
    }
    let spoiled = String::from_utf8_lossy(&spoiled).into_owned();
    if head.is_empty() {
        spoiled
    } else {
        format!("{head}.{spoiled}")
    }
}

/// A signing key for `algorithm` and its public JWK; `None` for what the test issuer cannot sign
/// (ES512: jsonwebtoken has no P-521).
fn signing_key(
    algorithm: JwsAlgorithm,
    kid: &str,
    rng: &SystemRandom,
) -> Result<Option<(EncodingKey, Value)>, String> {
    let failed = |what: &str| format!("cannot make a test {algorithm} key: {what}");
    let alg = algorithm.to_string();
    Ok(Some(match algorithm {
        JwsAlgorithm::EdDSA => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| failed("ring"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| failed("ring"))?;
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(pair.public_key().as_ref()), "kid": kid, "alg": alg, "use": "sig"});
            (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk)
        }
        JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => {
            let (signing, crv, half) = if algorithm == JwsAlgorithm::ES256 {
                (
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    "P-256",
                    32,
                )
            } else {
                (
                    &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    "P-384",
                    48,
                )
            };
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, rng).map_err(|_| failed("ring"))?;
            let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), rng)
                .map_err(|_| failed("ring"))?;
            // An uncompressed point: 0x04, x, y.
            let point = pair.public_key().as_ref();
            let (x, y) = point[1..].split_at(half);
            let jwk = json!({"kty": "EC", "crv": crv, "x": b64url(x), "y": b64url(y), "kid": kid, "alg": alg, "use": "sig"});
            (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
        }
        JwsAlgorithm::RS256
        | JwsAlgorithm::RS384
        | JwsAlgorithm::RS512
        | JwsAlgorithm::PS256
        | JwsAlgorithm::PS384
        | JwsAlgorithm::PS512 => {
            let base64_body: String = TEST_RSA_KEY_PEM
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(base64_body)
                .map_err(|err| failed(&err.to_string()))?;
            let key = EncodingKey::from_rsa_der(&der);
            let jwk = json!({"kty": "RSA", "n": TEST_RSA_MODULUS.trim(), "e": "AQAB", "kid": kid, "alg": alg, "use": "sig"});
            (key, jwk)
        }
        _ => return Ok(None),
    }))
}

/// `2026-12-05T08:00:00.000Z` for a unix time (UTC, as Better Auth writes dates).
fn iso8601(unix: u64) -> String {
    let mut text = Vec::with_capacity(24);
    crate::core::access_log::write_date_time(&mut text, unix);
    text.extend_from_slice(b".000Z");
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_better_auth_writes_them() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_796_457_600), "2026-12-05T08:00:00.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
    }
}
