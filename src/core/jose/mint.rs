//! Minting HS* tokens for local testing (`authgate token`, `authgate demo`). The gateway itself
//! never mints tokens on the request path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// Signs `{"sub": sub, "iat": now, "exp": now + ttl, ...extra}` with an HMAC secret.
pub fn mint_hmac(
    secret: &[u8],
    algorithm: Algorithm,
    user_claim: &str,
    sub: &str,
    ttl: Duration,
    extra: Map<String, Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let mut claims = extra;
    claims.insert(user_claim.to_string(), Value::from(sub));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Signs `{user_claim: sub, ...claims}` with an HMAC secret: the caller gives every time claim.
pub fn mint_hmac_claims(
    secret: &[u8],
    algorithm: Algorithm,
    user_claim: &str,
    sub: &str,
    claims: Map<String, Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut claims = claims;
    claims.insert(user_claim.to_string(), Value::from(sub));
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}
