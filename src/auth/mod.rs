//! Authentication: the bearer token is taken from exactly one place and verified in exactly one
//! place. Everything that can fail here is a `TokenError`, which the pipeline answers with 401.

mod algorithm;
mod bearer;
mod cache;
mod jwks;
mod jwt;
mod keys;

pub use algorithm::JwsAlgorithm;
pub use bearer::{bearer_bytes, extract_bearer, MAX_TOKEN_BYTES};
pub use jwks::{RemoteJwks, MAX_JWKS_BYTES};
pub use jwt::{parse_algorithm, Authenticator, Identity, VerifyError};
pub use keys::KeySet;

/// Why a request carries no usable token. The descriptions are static so they can go into the
/// JSON body and the `WWW-Authenticate` header without echoing anything the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("more than one Authorization header")]
    MultipleAuthorization,
    #[error("the Authorization scheme is not Bearer")]
    NotBearer,
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("the token header has critical extensions")]
    CriticalHeader,
    #[error("no key can verify this token")]
    NoKey,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has no valid exp claim")]
    MissingExpiry,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token issuer is not accepted")]
    WrongIssuer,
    #[error("the token audience is not accepted")]
    WrongAudience,
    #[error("the token has no usable user id")]
    MissingUser,
}

impl TokenError {
    pub fn description(self) -> &'static str {
        match self {
            TokenError::Missing => "no bearer token",
            TokenError::MultipleAuthorization => "more than one Authorization header",
            TokenError::NotBearer => "the Authorization scheme is not Bearer",
            TokenError::TooLarge => "the token is larger than 8 KiB",
            TokenError::Malformed => "the token is malformed",
            TokenError::AlgorithmNotAllowed => "the token algorithm is not allowed",
            TokenError::CriticalHeader => "the token header has critical extensions",
            TokenError::NoKey => "no key can verify this token",
            TokenError::BadSignature => "the token signature is invalid",
            TokenError::MissingExpiry => "the token has no valid exp claim",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet",
            TokenError::WrongIssuer => "the token issuer is not accepted",
            TokenError::WrongAudience => "the token audience is not accepted",
            TokenError::MissingUser => "the token has no usable user id",
        }
    }
}
