//! Why a bearer token gives no identity: every way authentication fails, with a static
//! description that is safe to send back (it never echoes the token).

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
    /// A claim the gateway relies on is present but unusable: 401 `invalid_claims`.
    #[error("{}", .0.description())]
    InvalidClaim(InvalidClaim),
    #[error("neither a bearer token nor a session cookie")]
    NoCredentials,
    #[error("more than one session cookie")]
    MultipleSessionCookies,
    #[error("the session cookie is malformed")]
    SessionMalformed,
    #[error("the session cookie signature is invalid")]
    SessionBadSignature,
    /// Better Auth no longer knows the session (signed out, expired, deleted): 401
    /// `session_expired`.
    #[error("the session has ended; sign in again")]
    SessionExpired,
    /// `POST /revoke` named the token's subject (issued before) or its session: 401 `revoked`.
    #[error("the token was revoked")]
    Revoked,
    /// This route does not take this kind of credential (`auth_methods`).
    #[error("this route does not accept this kind of credential")]
    MethodNotAccepted,
}

/// Which claim made a token unusable, for `TokenError::InvalidClaim`. The descriptions name the
/// claim and the rule, never the token's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidClaim {
    /// The user id would not reach the backend as compared (see `identity_text`).
    UserId,
    /// `exp` is not an integer number of seconds within 64 bits.
    Expiry,
    /// `iat` is not an integer number of seconds within 64 bits.
    IssuedAt,
    /// `nbf` is not an integer number of seconds within 64 bits.
    NotBefore,
    /// `exp - iat`, or `exp - now`, is longer than `auth.max_lifetime`.
    Lifetime,
}

impl InvalidClaim {
    pub(crate) fn description(self) -> &'static str {
        match self {
            InvalidClaim::UserId => {
                "the user id claim must be visible ASCII without spaces, commas or semicolons"
            }
            InvalidClaim::Expiry => "the exp claim must be an integer number of seconds",
            InvalidClaim::IssuedAt => "the iat claim must be an integer number of seconds",
            InvalidClaim::NotBefore => "the nbf claim must be an integer number of seconds",
            InvalidClaim::Lifetime => "the token lives longer than auth.max_lifetime allows",
        }
    }
}

impl From<InvalidClaim> for TokenError {
    fn from(claim: InvalidClaim) -> TokenError {
        TokenError::InvalidClaim(claim)
    }
}

impl TokenError {
    pub(crate) fn description(self) -> &'static str {
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
            TokenError::InvalidClaim(claim) => claim.description(),
            TokenError::NoCredentials => "neither a bearer token nor a session cookie",
            TokenError::MultipleSessionCookies => "more than one session cookie",
            TokenError::SessionMalformed => "the session cookie is malformed",
            TokenError::SessionBadSignature => "the session cookie signature is invalid",
            TokenError::SessionExpired => "the session has ended; sign in again",
            TokenError::Revoked => "the token was revoked",
            TokenError::MethodNotAccepted => "this route does not accept this kind of credential",
        }
    }
}
