//! Authentication: the bearer token is taken from exactly one place and verified in exactly one
//! place. Everything that can fail here is a `TokenError`, which the pipeline answers with 401.

mod bearer;
mod cache;
pub(crate) use cache::TokenCache;
mod jwt;
mod session;

pub use crate::core::jose::{JwsAlgorithm, KeySet};
pub use crate::core::token_error::{InvalidClaim, TokenError};
pub use bearer::{bearer_bytes, extract_bearer, MAX_TOKEN_BYTES};
pub use jwt::{parse_algorithm, Authenticator, Identity, RemoteKeys, VerifyError};
pub use session::{
    session_identity, SessionAnswer, SessionAnswerError, SessionCookies, SignedSession,
};
