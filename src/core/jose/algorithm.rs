//! The JWS algorithms we verify. Our own enum, because jsonwebtoken has no ES512 and aliasing it to
//! another variant would blur allow-lists.

use std::fmt;

use jsonwebtoken::Algorithm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl JwsAlgorithm {
    /// Maps a JOSE `alg` name; `none` and anything unknown map to nothing. Case-sensitive, as
    /// RFC 7515 requires.
    pub(crate) fn from_name(name: &str) -> Option<JwsAlgorithm> {
        use JwsAlgorithm::*;
        Some(match name {
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "ES512" => ES512,
            "EdDSA" => EdDSA,
            _ => return None,
        })
    }

    pub(crate) fn is_hmac(self) -> bool {
        matches!(
            self,
            JwsAlgorithm::HS256 | JwsAlgorithm::HS384 | JwsAlgorithm::HS512
        )
    }

    /// The shortest HMAC key RFC 7518 §3.2 allows: the hash output's size. `None` for
    /// signature algorithms.
    pub(crate) fn min_hmac_key_bytes(self) -> Option<usize> {
        match self {
            JwsAlgorithm::HS256 => Some(32),
            JwsAlgorithm::HS384 => Some(48),
            JwsAlgorithm::HS512 => Some(64),
            _ => None,
        }
    }

    /// The jsonwebtoken primitive, where it has one (everything but ES512).
    pub fn primitive(self) -> Option<Algorithm> {
        use JwsAlgorithm::*;
        Some(match self {
            HS256 => Algorithm::HS256,
            HS384 => Algorithm::HS384,
            HS512 => Algorithm::HS512,
            RS256 => Algorithm::RS256,
            RS384 => Algorithm::RS384,
            RS512 => Algorithm::RS512,
            PS256 => Algorithm::PS256,
            PS384 => Algorithm::PS384,
            PS512 => Algorithm::PS512,
            ES256 => Algorithm::ES256,
            ES384 => Algorithm::ES384,
            EdDSA => Algorithm::EdDSA,
            ES512 => return None,
        })
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
