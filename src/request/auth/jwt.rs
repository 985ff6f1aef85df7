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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::DecodingKey;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::cache::TokenCache;
use crate::config::{AuthConfig, IssuerConfig};
use crate::core::jose::{JwsAlgorithm, KeySet, Lookup};
use crate::core::token_error::{InvalidClaim, TokenError};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    /// The user id, already a valid header value, ready to inject.
    pub header_value: HeaderValue,
    pub claims: Map<String, Value>,
}

/// Why verification produced no identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The token is bad: 401.
    Invalid(TokenError),
    /// No key set has ever been obtained for the issuer: 503, the client should retry.
    KeysUnavailable,
}

impl From<TokenError> for VerifyError {
    fn from(err: TokenError) -> VerifyError {
        VerifyError::Invalid(err)
    }
}

/// Maps a JOSE `alg` name to an algorithm we can verify. `none` maps to nothing.
pub fn parse_algorithm(name: &str) -> Option<JwsAlgorithm> {
    JwsAlgorithm::from_name(name)
}

/// A key set fetched from elsewhere (an issuer's `jwks_url`). Fetching is I/O and lives above
/// this layer (`proxy::jwks::RemoteJwks`); verification only asks for the current set, or for one
/// throttled refetch when a `kid` is unknown.
pub trait RemoteKeys: Send + Sync {
    /// The current key set, if one was ever obtained.
    fn keys(&self) -> Option<Arc<KeySet>>;
    /// Refetches at most once per cooldown (shared by concurrent callers); the set afterwards.
    fn refetch_throttled(&self) -> Pin<Box<dyn Future<Output = Option<Arc<KeySet>>> + Send + '_>>;
    /// Grows whenever the key set changes (cached verifications made before are then stale).
    fn generation(&self) -> u64;
}

/// One trusted issuer and its keys.
struct Issuer {
    name: Option<Box<str>>,
    audience: Option<Box<str>>,
    allowed: Vec<JwsAlgorithm>,
    leeway_secs: u64,
    hmac: Option<DecodingKey>,
    file_keys: Option<KeySet>,
    remote: Option<Arc<dyn RemoteKeys>>,
}

/// Verifies tokens for every configured issuer. Build it inside a tokio runtime when a `jwks_url`
/// is configured: that starts the background refresh, which ends once the source is unused.
pub struct Authenticator {
    issuers: Vec<Issuer>,
    cache: TokenCache,
    user_claim: Box<str>,
    /// `auth.max_lifetime` in seconds: the longest a token may live (`exp - iat`, `exp - now`).
    max_lifetime_secs: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers.len())
            .finish_non_exhaustive()
    }
}

/// A JSON object whose top-level keys are unique and whose every value is valid JSON (strings are
/// valid UTF-8, no lone surrogates). Used for the JOSE header and the claims alike: a member we do
/// not read is still checked, so two parsers can never disagree about the token (found by fuzzing:
/// skipping unknown header members let invalid UTF-8 and duplicates through).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut claims = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if claims.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate member `{key}`")));
                    }
                    let value = access.next_value::<Value>()?;
                    claims.insert(key, value);
                }
                Ok(StrictObject(claims))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A compact JWS split and parsed, not yet verified.
struct UnverifiedToken<'t> {
    algorithm: JwsAlgorithm,
    kid: Option<String>,
    /// `header.payload`, the exact signed bytes.
    signing_input: &'t [u8],
    signature: &'t str,
    claims: Map<String, Value>,
}

impl<'t> UnverifiedToken<'t> {
    fn parse(token: &'t str) -> Result<UnverifiedToken<'t>, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = decode_segment(header_b64)?;
        let StrictObject(mut header) =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        // We implement no JWS extensions (RFC 7515 4.1.11), whatever the member's value.
        if header.contains_key("crit") || header.contains_key("b64") {
            return Err(TokenError::CriticalHeader);
        }
        let algorithm = match header.get("alg") {
            Some(Value::String(name)) => {
                JwsAlgorithm::from_name(name).ok_or(TokenError::AlgorithmNotAllowed)?
            }
            _ => return Err(TokenError::Malformed),
        };
        // Key material in the header (jwk, jku, x5u, x5c) is never read: only `kid`, as a name.
        let kid = match header.remove("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(TokenError::Malformed),
        };
        let claims_json = decode_segment(payload_b64)?;
        let StrictObject(claims) =
            serde_json::from_slice(&claims_json).map_err(|_| TokenError::Malformed)?;
        Ok(UnverifiedToken {
            algorithm,
            kid,
            signing_input: &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()],
            signature,
            claims,
        })
    }
}

impl Authenticator {
    /// An authenticator with no remote key sources: HMAC secrets and `jwks_file` keys only. An
    /// issuer with a `jwks_url` then verifies nothing; the gateway builds its authenticator with
    /// `proxy::jwks::authenticator`, which fetches them.
    pub fn new(auth: &AuthConfig) -> Authenticator {
        Authenticator::with_sources(auth, |_| None)
    }

    /// Builds the authenticator for a config, `remote` giving each issuer its remote key source
    /// (for a `jwks_url`).
    pub(crate) fn with_sources(
        auth: &AuthConfig,
        mut remote: impl FnMut(&IssuerConfig) -> Option<Arc<dyn RemoteKeys>>,
    ) -> Authenticator {
        let issuers = auth
            .issuers
            .iter()
            .map(|config| {
                let issuer = Issuer::new(config, remote(config));
                let algorithms = config
                    .algorithms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let jwks_file_keys = issuer.file_keys.as_ref().map_or(0, KeySet::len);
                match &config.jwks_url {
                    Some(url) => tracing::info!(
                        source = %config.label,
                        issuer = config.issuer.as_deref().unwrap_or("(any)"),
                        algorithms,
                        hmac_secret = config.secret.is_some(),
                        jwks_file_keys,
                        jwks_url = %url,
                        jwks_keys_now = issuer.remote.as_ref().and_then(|r| r.keys()).map_or(0, |k| k.len()),
                        "key sources configured; the jwks_url is fetched in the background"
                    ),
                    None => tracing::info!(
                        source = %config.label,
                        issuer = config.issuer.as_deref().unwrap_or("(any)"),
                        algorithms,
                        hmac_secret = config.secret.is_some(),
                        jwks_file_keys,
                        "key sources configured"
                    ),
                }
                issuer
            })
            .collect();
        Authenticator {
            issuers,
            cache: TokenCache::new(auth.token_cache_size),
            user_claim: auth.user_claim.as_str().into(),
            max_lifetime_secs: auth.max_lifetime.as_secs(),
        }
    }

    /// Moves whenever any key set changes: the sum of the sources' own counters, each of which
    /// only grows.
    fn generation(&self) -> u64 {
        self.remote_sources()
            .map(|remote| remote.generation())
            .sum()
    }

    /// The remote key sources.
    fn remote_sources(&self) -> impl Iterator<Item = &Arc<dyn RemoteKeys>> {
        self.issuers
            .iter()
            .filter_map(|issuer| issuer.remote.as_ref())
    }

    /// True when every configured key source can verify something now.
    pub fn keys_ready(&self) -> bool {
        self.remote_sources().all(|remote| remote.keys().is_some())
    }

    /// Verifies a compact JWS at time `now` (seconds since the epoch).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<Identity>, VerifyError> {
        self.verify_bearer(token.as_bytes(), now).await
    }

    /// The identity of a token this authenticator verified before and still holds, without
    /// looking at the token itself.
    pub(crate) fn cached(&self, raw: &[u8], now: u64) -> Option<Arc<Identity>> {
        self.cache.get(raw, now, self.generation())
    }

    /// `verify` for the raw bytes of a bearer token: a cached token is recognised before its
    /// characters are checked (only verified tokens are cached); any other is checked first.
    pub(crate) async fn verify_bearer(
        &self,
        raw: &[u8],
        now: u64,
    ) -> Result<Arc<Identity>, VerifyError> {
        let generation = self.generation();
        if let Some(identity) = self.cache.get(raw, now, generation) {
            return Ok(identity);
        }
        let token = super::bearer::token_text(raw)?;
        let token_parts = UnverifiedToken::parse(token)?;
        let issuer = self.select_issuer(&token_parts.claims)?;
        if !issuer.allowed.contains(&token_parts.algorithm) {
            return Err(TokenError::AlgorithmNotAllowed.into());
        }
        issuer.verify_signature(&token_parts).await?;
        let (identity, expires_at) = issuer.check_claims(
            token_parts.claims,
            now,
            &self.user_claim,
            self.max_lifetime_secs,
        )?;
        let identity = Arc::new(identity);
        // Recorded under the generation read before verifying: if keys changed meanwhile, the
        // entry is already stale and will not be served.
        self.cache
            .insert(raw, identity.clone(), expires_at, generation);
        Ok(identity)
    }

    /// The token's `iss` (read before the signature is checked, only to choose whose keys to
    /// check it with) selects the issuer. A single issuer without a configured name takes all.
    fn select_issuer(&self, claims: &Map<String, Value>) -> Result<&Issuer, TokenError> {
        let iss = claims.get("iss").and_then(Value::as_str);
        if let [only] = self.issuers.as_slice() {
            return match &only.name {
                Some(name) if iss != Some(&**name) => Err(TokenError::WrongIssuer),
                _ => Ok(only),
            };
        }
        self.issuers
            .iter()
            .find(|issuer| issuer.name.as_deref() == iss && iss.is_some())
            .ok_or(TokenError::WrongIssuer)
    }
}

impl Issuer {
    fn new(config: &IssuerConfig, remote: Option<Arc<dyn RemoteKeys>>) -> Issuer {
        let file_keys = config.jwks_file.as_ref().and_then(|file| {
            // Validated at config load; a file that changed since is re-checked here.
            match KeySet::parse(&file.json) {
                Ok((set, _)) => {
                    tracing::info!(source = %config.label, file = %file.path, keys = set.len(), kids = %set.kids().join(","), "JWKS file loaded");
                    Some(set)
                }
                Err(why) => {
                    tracing::error!(source = %config.label, file = %file.path, "JWKS file unusable: {why}");
                    None
                }
            }
        });
        Issuer {
            name: config.issuer.as_deref().map(Into::into),
            audience: config.audience.as_deref().map(Into::into),
            allowed: config.algorithms.clone(),
            leeway_secs: config.leeway.as_secs(),
            hmac: config
                .secret
                .as_ref()
                .map(|secret| DecodingKey::from_secret(&secret.0)),
            file_keys,
            remote,
        }
    }

    /// The key is chosen by the algorithm's family: HS* only ever uses the secret, everything else
    /// only ever uses a JWKS key listed for exactly that algorithm.
    async fn verify_signature(&self, token: &UnverifiedToken<'_>) -> Result<(), VerifyError> {
        let algorithm = token.algorithm;
        if algorithm.is_hmac() {
            let (Some(key), Some(primitive)) = (&self.hmac, algorithm.primitive()) else {
                return Err(TokenError::NoKey.into());
            };
            let valid =
                jsonwebtoken::crypto::verify(token.signature, token.signing_input, key, primitive)
                    .unwrap_or(false);
            return if valid {
                Ok(())
            } else {
                Err(TokenError::BadSignature.into())
            };
        }
        let kid = token.kid.as_deref();
        let check = |set: &KeySet| match set.find(kid, algorithm) {
            Lookup::Found(key) => Some(
                if key.verify(algorithm, token.signing_input, token.signature) {
                    Ok(())
                } else {
                    Err(VerifyError::Invalid(TokenError::BadSignature))
                },
            ),
            Lookup::KidRequired => Some(Err(VerifyError::Invalid(TokenError::NoKey))),
            Lookup::UnknownKid => None,
        };
        if let Some(outcome) = self.file_keys.as_ref().and_then(check) {
            return outcome;
        }
        let Some(remote) = &self.remote else {
            return Err(TokenError::NoKey.into());
        };
        let current = match remote.keys() {
            Some(set) => set,
            // Boxed, here and below: a fetch is rare, and its state would otherwise be part of
            // every request's future, which hyper moves into place per request.
            None => Box::pin(remote.refetch_throttled())
                .await
                .ok_or(VerifyError::KeysUnavailable)?,
        };
        if let Some(outcome) = check(&current) {
            return outcome;
        }
        // An unknown kid may be a rotation we have not seen: one (throttled, shared) refetch.
        let refreshed = Box::pin(remote.refetch_throttled())
            .await
            .ok_or(VerifyError::KeysUnavailable)?;
        check(&refreshed).unwrap_or(Err(VerifyError::Invalid(TokenError::NoKey)))
    }

    /// Returns the identity and the second from which the token is expired.
    ///
    /// Time claims must be integer NumericDates within 64 bits, and a token may not live longer
    /// than `max_lifetime_secs`, counted both from its `iat` and from now: a leaked key or a
    /// misconfigured issuer could otherwise mint tokens that never expire (`exp: 1e300`).
    fn check_claims(
        &self,
        mut claims: Map<String, Value>,
        now: u64,
        user_claim: &str,
        max_lifetime_secs: u64,
    ) -> Result<(Identity, u64), TokenError> {
        let exp = match claims.get("exp") {
            None => return Err(TokenError::MissingExpiry),
            Some(exp) => numeric_date(exp).ok_or(InvalidClaim::Expiry)?,
        };
        if exp.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        let issued_at = match claims.get("iat") {
            None => None,
            Some(iat) => Some(numeric_date(iat).ok_or(InvalidClaim::IssuedAt)?),
        };
        let lifetime_from_now = exp.saturating_sub(now.saturating_add(self.leeway_secs));
        let lifetime = issued_at.map_or(0, |iat| exp.saturating_sub(iat));
        if lifetime > max_lifetime_secs || lifetime_from_now > max_lifetime_secs {
            return Err(InvalidClaim::Lifetime.into());
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(InvalidClaim::NotBefore)?;
            if now.saturating_add(self.leeway_secs) < nbf {
                return Err(TokenError::NotYetValid);
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
        let user_id = match claims.remove(user_claim) {
            Some(Value::String(user)) if !user.is_empty() => user,
            _ => return Err(TokenError::MissingUser),
        };
        // The user id is compared (owner rule) and then sent as a header: it must be read back by
        // the backend byte for byte (no surrounding whitespace, no list or parameter separators).
        if !crate::core::identity_text::is_plain_user_id(&user_id) {
            return Err(InvalidClaim::UserId.into());
        }
        let header_value = HeaderValue::from_str(&user_id).map_err(|_| InvalidClaim::UserId)?;
        claims.insert(user_claim.to_string(), Value::String(user_id.clone()));
        Ok((
            Identity {
                user_id,
                header_value,
                claims,
            },
            exp,
        ))
    }
}

/// base64url without padding, canonical (no trailing bits), as RFC 7515 requires.
fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// A NumericDate (RFC 7519 section 2) as authgate accepts it: a JSON number holding a
/// non-negative integer that fits in 64 bits (`1700000000` or `1700000000.0`). Strings are refused
/// (the jsonwebtoken < 10.3 advisory was about accepting string-typed `exp`/`nbf`), and so are
/// fractions, negatives and huge floats such as `1e300`, which would otherwise saturate into
/// "never expires".
fn numeric_date(value: &Value) -> Option<u64> {
    let Value::Number(number) = value else {
        return None;
    };
    if let Some(seconds) = number.as_u64() {
        return Some(seconds);
    }
    let seconds = number.as_f64()?;
    // 2^64 is exactly representable; every integral f64 below it converts without loss.
    let integral = seconds.is_finite() && seconds.fract() == 0.0;
    (integral && (0.0..18_446_744_073_709_551_616.0).contains(&seconds)).then_some(seconds as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &str = "unit-test-secret-0123456789abcdef";

    fn authenticator() -> Authenticator {
        let toml = r#"
            [upstream]
            url = "http://127.0.0.1:1"
            [auth]
            secret_env = "S"
        "#;
        let config = Config::parse(toml, "t.toml", &|_| Some(SECRET.to_string())).unwrap();
        Authenticator::new(&config.auth)
    }

    fn sign(header: &str, claims: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{message}.{signature}")
    }

    fn verify(token: &str) -> Result<Arc<Identity>, TokenError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(authenticator().verify(token, NOW))
            .map_err(|err| match err {
                VerifyError::Invalid(err) => err,
                VerifyError::KeysUnavailable => panic!("no remote keys here"),
            })
    }

    #[test]
    fn accepts_a_good_token() {
        let token = sign(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"alice","exp":1700000100}"#,
        );
        assert_eq!(verify(&token).unwrap().user_id, "alice");
    }

    #[test]
    fn refuses_duplicate_keys_and_extensions() {
        let dup_sub = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"alice","sub":"bob","exp":1700000100}"#,
        );
        assert_eq!(verify(&dup_sub).unwrap_err(), TokenError::Malformed);
        let dup_alg = sign(
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"sub":"a","exp":1700000100}"#,
        );
        assert_eq!(verify(&dup_alg).unwrap_err(), TokenError::Malformed);
        let crit_null = sign(
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"sub":"a","exp":1700000100}"#,
        );
        assert_eq!(verify(&crit_null).unwrap_err(), TokenError::CriticalHeader);
        let b64 = sign(
            r#"{"alg":"HS256","b64":false}"#,
            r#"{"sub":"a","exp":1700000100}"#,
        );
        assert_eq!(verify(&b64).unwrap_err(), TokenError::CriticalHeader);
    }

    /// Found by the jwt_parsing fuzz target: unknown header members were skipped unchecked.
    #[test]
    fn header_members_are_strict_json_too() {
        let claims = r#"{"sub":"a","exp":1700000100}"#;
        let sign_raw = |header: &[u8]| {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &key,
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap();
            format!("{message}.{signature}")
        };
        for header in [
            &b"{\"alg\":\"HS256\",\"x\":\"\x9b\"}"[..],
            br#"{"alg":"HS256","x":"\udc00"}"#,
            br#"{"alg":"HS256","x":1,"x":2}"#,
            br#"{"alg":"HS256","kid":7}"#,
            br#"{"alg":256}"#,
        ] {
            assert_eq!(
                verify(&sign_raw(header)).unwrap_err(),
                TokenError::Malformed,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        assert!(verify(&sign_raw(
            br#"{"alg":"HS256","typ":"JWT","kid":"k","x5u":"http://x"}"#
        ))
        .is_ok());
    }

    #[test]
    fn time_claims_with_leeway() {
        let token = |claims: &str| sign(r#"{"alg":"HS256"}"#, claims);
        assert!(verify(&token(r#"{"sub":"a","exp":1699999980}"#)).is_ok());
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":1699999970}"#)).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":"1800000000"}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::Expiry)
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a"}"#)).unwrap_err(),
            TokenError::MissingExpiry
        );
        assert!(verify(&token(r#"{"sub":"a","exp":1700000100,"nbf":1700000020}"#)).is_ok());
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":1700000100,"nbf":1700000031}"#)).unwrap_err(),
            TokenError::NotYetValid
        );
        assert_eq!(
            verify(&token(r#"{"sub":"","exp":1700000100}"#)).unwrap_err(),
            TokenError::MissingUser
        );
        assert_eq!(
            verify(&token(r#"{"sub":7,"exp":1700000100}"#)).unwrap_err(),
            TokenError::MissingUser
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a\r\nx-user-id: bob","exp":1700000100}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::UserId)
        );
    }

    /// A user id that a backend's header parser would read differently (trimmed, split at a
    /// comma or semicolon) is refused, not forwarded.
    #[test]
    fn user_ids_must_survive_a_header_parser() {
        let token = |sub: &str| {
            sign(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"sub":{},"exp":1700000100}}"#, serde_json::json!(sub)),
            )
        };
        for sub in [
            " bob",
            "bob ",
            "\tbob",
            "bob\t",
            "b ob",
            "alice,bob",
            "bob;x",
            "bøb",
            "bob\u{a0}",
        ] {
            assert_eq!(
                verify(&token(sub)).unwrap_err(),
                TokenError::InvalidClaim(InvalidClaim::UserId),
                "{sub:?}"
            );
        }
        assert_eq!(verify(&token("u_1-a.b@c")).unwrap().user_id, "u_1-a.b@c");
    }

    /// `exp` and `iat` must be integer NumericDates within 64 bits, and a token may not live
    /// longer than `auth.max_lifetime` (24 h by default), counted from `iat` and from now.
    #[test]
    fn time_claims_are_integers_and_lifetimes_are_bounded() {
        let token = |claims: &str| sign(r#"{"alg":"HS256"}"#, claims);
        for exp in [
            "1e300",
            "1700000100.5",
            "-1",
            "18446744073709551616",
            "true",
            "null",
        ] {
            assert_eq!(
                verify(&token(&format!(r#"{{"sub":"a","exp":{exp}}}"#))).unwrap_err(),
                TokenError::InvalidClaim(InvalidClaim::Expiry),
                "exp {exp}"
            );
        }
        assert!(verify(&token(r#"{"sub":"a","exp":1700000100.0}"#)).is_ok());
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":1700000100,"iat":"1700000000"}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::IssuedAt)
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":1700000100,"nbf":1.5}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::NotBefore)
        );
        // 24 h from iat is the most; a day and a second is too long, from iat or from now.
        assert!(verify(&token(r#"{"sub":"a","iat":1699999000,"exp":1700085400}"#)).is_ok());
        assert_eq!(
            verify(&token(r#"{"sub":"a","iat":1699999000,"exp":1700085401}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::Lifetime)
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":1700086500}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::Lifetime)
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a","iat":1700090000,"exp":1700090100}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::Lifetime)
        );
        assert_eq!(
            verify(&token(r#"{"sub":"a","exp":18446744073709551615}"#)).unwrap_err(),
            TokenError::InvalidClaim(InvalidClaim::Lifetime)
        );
    }
}
