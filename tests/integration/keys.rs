//! Test key material, generated fresh per run (no keys are committed), signing with the RustCrypto
//! primitives directly so tests can build tokens no well-behaved library would.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Material {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

/// A private key, the algorithm it signs with, and its `kid`.
#[derive(Clone)]
pub struct TestKey {
    pub alg: &'static str,
    pub kid: String,
    material: Arc<Material>,
}

/// RSA key generation is the slow part; one 2048-bit key serves every RS/PS test.
fn shared_rsa() -> rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap())
        .clone()
}

pub const ALL_ALGORITHMS: [&str; 10] = [
    "EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
];

impl TestKey {
    pub fn generate(alg: &'static str, kid: &str) -> TestKey {
        let material = match alg {
            "EdDSA" => Material::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            "ES256" => Material::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            "ES384" => Material::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
            "ES512" => Material::P521(p521::ecdsa::SigningKey::random(&mut OsRng)),
            _ => Material::Rsa(shared_rsa()),
        };
        TestKey {
            alg,
            kid: kid.to_string(),
            material: Arc::new(material),
        }
    }

    /// The same key under another `kid`.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            ..self.clone()
        }
    }

    /// The public JWK, shaped like Better Auth's (no `use`), with `alg` and `kid`.
    pub fn jwk(&self) -> Value {
        let mut jwk = match &*self.material {
            Material::Ed25519(key) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())})
            }
            Material::P256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
            }
            Material::P384(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-384", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
            }
            Material::P521(key) => {
                let point = p521::ecdsa::VerifyingKey::from(key).to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-521", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
            }
            Material::Rsa(key) => json!({
                "kty": "RSA",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            }),
        };
        jwk["alg"] = json!(self.alg);
        jwk["kid"] = json!(self.kid);
        jwk
    }

    /// The public key as PKCS#1 PEM (RSA only): the bytes an RS256->HS256 confusion attack uses.
    pub fn rsa_public_pem(&self) -> String {
        use rsa::pkcs1::EncodeRsaPublicKey;
        match &*self.material {
            Material::Rsa(key) => key
                .to_public_key()
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap(),
            _ => panic!("not an RSA key"),
        }
    }

    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        match (&*self.material, self.alg) {
            (Material::Ed25519(key), _) => key.sign(message).to_bytes().to_vec(),
            (Material::P256(key), _) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            (Material::P384(key), _) => {
                let signature: p384::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            (Material::P521(key), _) => {
                let signature: p521::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            (Material::Rsa(key), alg) => {
                let key = key.clone();
                match alg {
                    "RS256" => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
                        .sign(message)
                        .to_vec(),
                    "RS384" => rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(key)
                        .sign(message)
                        .to_vec(),
                    "RS512" => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key)
                        .sign(message)
                        .to_vec(),
                    "PS256" => rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(key)
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec(),
                    "PS384" => rsa::pss::BlindedSigningKey::<sha2::Sha384>::new(key)
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec(),
                    "PS512" => rsa::pss::BlindedSigningKey::<sha2::Sha512>::new(key)
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec(),
                    other => panic!("no RSA algorithm {other}"),
                }
            }
        }
    }

    /// Signs arbitrary header and claims objects.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.sign_bytes(message.as_bytes());
        format!("{message}.{}", b64(&signature))
    }

    /// A token with the usual header (`alg`, `kid`, `typ`).
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

/// Better Auth's claim shape: `sub`, `iss` = `aud` = base URL, 15-minute expiry, no `nbf`.
pub fn better_auth_claims(sub: &str, base_url: &str) -> Value {
    let now = crate::common::now();
    json!({"sub": sub, "iss": base_url, "aud": base_url, "iat": now, "exp": now + 900})
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>()})
}
