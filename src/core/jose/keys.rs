//! Public keys from a JWKS (RFC 7517), parsed once into verifiers.
//!
//! A key is only ever used for the algorithms of its own type, decided here at load time from
//! `kty`, `crv` and (when present) `alg`: an Ed25519 key verifies EdDSA only, a P-256 key ES256
//! only, an RSA key RS*/PS* only. A JWKS never supplies HMAC secrets (`kty: oct` is refused), so a
//! public key can never be turned into an HS* secret. Malformed keys are skipped with a reason and
//! the good keys are kept.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;

use super::JwsAlgorithm;
use serde::Deserialize;

/// A verifier for one public key.
pub struct Key {
    pub kid: Option<String>,
    /// The algorithms this key may verify; never empty, never HS*.
    pub algorithms: Vec<JwsAlgorithm>,
    material: Material,
}

enum Material {
    Standard(DecodingKey),
    /// jsonwebtoken has no ES512; RustCrypto's p521 fills the gap behind the same interface.
    P521(p521::ecdsa::VerifyingKey),
}

impl Key {
    /// Verifies a JWS signature (base64url) over `message` with `algorithm`, which the caller has
    /// already checked is one of `self.algorithms`.
    pub fn verify(&self, algorithm: JwsAlgorithm, message: &[u8], signature_b64: &str) -> bool {
        match &self.material {
            Material::Standard(key) => match algorithm.primitive() {
                Some(primitive) => {
                    jsonwebtoken::crypto::verify(signature_b64, message, key, primitive)
                        .unwrap_or(false)
                }
                None => false,
            },
            Material::P521(key) => {
                use p521::ecdsa::signature::Verifier;
                let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature_b64) else {
                    return false;
                };
                // JWS ECDSA signatures are r || s, 66 bytes each for P-521 (RFC 7518 3.4).
                // from_slice refuses zero scalars, so r = s = 0 cannot verify.
                let Ok(signature) = p521::ecdsa::Signature::from_slice(&bytes) else {
                    return false;
                };
                key.verify(message, &signature).is_ok()
            }
        }
    }
}

/// The outcome of looking a key up for a token.
pub enum Lookup<'a> {
    Found(&'a Key),
    /// No key with this `kid` (or none at all) verifies this algorithm: maybe a rotation we have not
    /// seen yet.
    UnknownKid,
    /// The token has no `kid` and the set has several keys for its algorithm.
    KidRequired,
}

#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// Identifies the key material, so a refresh that changes nothing keeps the token cache.
    fingerprint: u64,
}

/// The JWK members we read. Unknown members are ignored (RFC 7517 section 4).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Err when the document itself is unusable; otherwise the usable keys
    /// and one message per skipped key.
    pub fn parse(json: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        let document: Jwks = serde_json::from_slice(json)
            .map_err(|err| format!("not a JWKS document ({{\"keys\": [...]}}): {err}"))?;
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        let mut hasher = DefaultHasher::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            let parsed = serde_json::from_value::<Jwk>(value.clone())
                .map_err(|err| err.to_string())
                .and_then(parse_key);
            match parsed {
                Ok(key) => {
                    value.to_string().hash(&mut hasher);
                    keys.push(key);
                }
                Err(why) => {
                    let kid = value.get("kid").and_then(|kid| kid.as_str()).unwrap_or("-");
                    problems.push(format!("key #{index} (kid {kid:?}): {why}"));
                }
            }
        }
        Ok((
            KeySet {
                keys,
                fingerprint: hasher.finish(),
            },
            problems,
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter_map(|key| key.kid.as_deref())
            .collect()
    }

    /// The key for a token's `kid` and algorithm. Without a `kid`, a key is chosen only when it is
    /// the only one that could verify the algorithm.
    pub(crate) fn find(&self, kid: Option<&str>, algorithm: JwsAlgorithm) -> Lookup<'_> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| key.algorithms.contains(&algorithm));
        match kid {
            Some(kid) => candidates
                .find(|key| key.kid.as_deref() == Some(kid))
                .map_or(Lookup::UnknownKid, Lookup::Found),
            None => match (candidates.next(), candidates.next(), self.keys.len()) {
                (Some(key), None, 1) => Lookup::Found(key),
                (None, _, _) => Lookup::UnknownKid,
                _ => Lookup::KidRequired,
            },
        }
    }
}

fn parse_key(jwk: Jwk) -> Result<Key, String> {
    if let Some(key_use) = &jwk.key_use {
        if key_use != "sig" {
            return Err(format!("`use` is {key_use:?}, not \"sig\""));
        }
    }
    if jwk.d.is_some() {
        return Err("it contains private key material (`d`); refusing to use a leaked key".into());
    }
    let field = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .ok_or_else(|| format!("missing `{name}`"))
            .and_then(|text| {
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| format!("`{name}` is not base64url"))
            })
    };
    let (algorithms, material): (Vec<JwsAlgorithm>, Material) =
        match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                let x = field(&jwk.x, "x")?;
                if x.len() != 32 {
                    return Err("Ed25519 `x` must be 32 bytes".into());
                }
                (
                    vec![JwsAlgorithm::EdDSA],
                    Material::Standard(DecodingKey::from_ed_der(&x)),
                )
            }
            ("OKP", crv) => return Err(format!("unsupported OKP curve {crv:?}")),
            ("EC", Some(crv @ ("P-256" | "P-384" | "P-521"))) => {
                let x = field(&jwk.x, "x")?;
                let y = field(&jwk.y, "y")?;
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                match crv {
                    "P-256" => {
                        p256::PublicKey::from_sec1_bytes(&point)
                            .map_err(|_| "not a point on P-256".to_string())?;
                        (
                            vec![JwsAlgorithm::ES256],
                            Material::Standard(DecodingKey::from_ec_der(&point)),
                        )
                    }
                    "P-384" => {
                        p384::PublicKey::from_sec1_bytes(&point)
                            .map_err(|_| "not a point on P-384".to_string())?;
                        (
                            vec![JwsAlgorithm::ES384],
                            Material::Standard(DecodingKey::from_ec_der(&point)),
                        )
                    }
                    _ => {
                        let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                            .map_err(|_| "not a point on P-521".to_string())?;
                        (vec![JwsAlgorithm::ES512], Material::P521(key))
                    }
                }
            }
            ("EC", crv) => return Err(format!("unsupported EC curve {crv:?}")),
            ("RSA", _) => {
                let n = field(&jwk.n, "n")?;
                field(&jwk.e, "e")?;
                let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
                if bits < 2048 {
                    return Err(format!(
                        "RSA modulus of about {bits} bits; at least 2048 required"
                    ));
                }
                let key = DecodingKey::from_rsa_components(
                    jwk.n.as_deref().unwrap_or_default(),
                    jwk.e.as_deref().unwrap_or_default(),
                )
                .map_err(|err| format!("bad RSA key: {err}"))?;
                (
                    vec![
                        JwsAlgorithm::RS256,
                        JwsAlgorithm::RS384,
                        JwsAlgorithm::RS512,
                        JwsAlgorithm::PS256,
                        JwsAlgorithm::PS384,
                        JwsAlgorithm::PS512,
                    ],
                    Material::Standard(key),
                )
            }
            ("oct", _) => {
                return Err("symmetric keys are never taken from a JWKS; use secret_env".into())
            }
            (kty, _) => return Err(format!("unsupported key type {kty:?}")),
        };
    let algorithms = match &jwk.alg {
        None => algorithms,
        Some(name) => {
            let algorithm = JwsAlgorithm::from_name(name)
                .ok_or_else(|| format!("unsupported `alg` {name:?}"))?;
            if !algorithms.contains(&algorithm) {
                return Err(format!("`alg` {name:?} does not fit the key type"));
            }
            vec![algorithm]
        }
    };
    Ok(Key {
        kid: jwk.kid,
        algorithms,
        material,
    })
}
