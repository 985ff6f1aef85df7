//! Better Auth session cookies, without I/O: the cookie is found, URL-decoded and its signature
//! checked here, and Better Auth's answer about the session is turned into an identity here. The
//! call to Better Auth and the cache live in `proxy::session`.
//!
//! Better Auth (through better-call's `serializeSignedCookie`) sets
//! `{prefix}.session_token=encodeURIComponent(token + "." + base64(HMAC-SHA256(secret, token)))`,
//! with `__Secure-` before the name when its baseURL is https. The signature is standard base64
//! with padding (44 characters). A cookie whose signature does not verify under the secret was not
//! made by Better Auth: it is refused here, with no call.

use http::header::{HeaderMap, HeaderValue, COOKIE};
use ring::hmac;
use serde_json::{Map, Value};

use super::jwt::Identity;
use crate::core::token_error::{InvalidClaim, TokenError};

/// Session tokens Better Auth makes are 32 characters; anything much longer is not one.
const MAX_SESSION_TOKEN_BYTES: usize = 256;
/// A signed cookie value: the token, a dot, and 44 characters of signature, URL-encoded.
const MAX_COOKIE_VALUE_BYTES: usize = 3 * (MAX_SESSION_TOKEN_BYTES + 1 + 44);

/// Where Better Auth's cookies are, and the key that checks their signature.
pub struct SessionCookies {
    /// `{prefix}.session_token`
    name: String,
    /// `__Secure-{prefix}.session_token`
    secure_name: String,
    /// `{prefix}.`: every cookie Better Auth sets starts with it (or its `__Secure-` form).
    prefix: String,
    secure_prefix: String,
    key: hmac::Key,
}

/// A session token whose cookie signature verified: Better Auth made it (it may still have been
/// signed out or have expired; only Better Auth knows that).
#[derive(Debug, PartialEq, Eq)]
pub struct SignedSession {
    pub token: String,
}

impl SessionCookies {
    pub fn new(cookie_prefix: &str, secret: &[u8]) -> SessionCookies {
        SessionCookies {
            name: format!("{cookie_prefix}.session_token"),
            secure_name: format!("__Secure-{cookie_prefix}.session_token"),
            prefix: format!("{cookie_prefix}."),
            secure_prefix: format!("__Secure-{cookie_prefix}."),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Whether the request carries a session cookie at all (signed or not).
    pub fn present(&self, headers: &HeaderMap) -> bool {
        cookie_pairs(headers).any(|(name, _)| self.is_session_name(name))
    }

    fn is_session_name(&self, name: &[u8]) -> bool {
        name == self.name.as_bytes() || name == self.secure_name.as_bytes()
    }

    /// The session token of the one session cookie, its signature checked.
    ///
    /// Two session cookies (twice the same name, or both the plain and the `__Secure-` form) are
    /// refused rather than picking one: a sibling subdomain can plant a cookie next to the real
    /// one, and which of the two a backend or Better Auth reads is not ours to guess.
    pub fn signed_session(&self, headers: &HeaderMap) -> Result<SignedSession, TokenError> {
        let mut found = None;
        for (name, value) in cookie_pairs(headers) {
            if self.is_session_name(name) {
                if found.is_some() {
                    return Err(TokenError::MultipleSessionCookies);
                }
                found = Some(value);
            }
        }
        let value = found.ok_or(TokenError::Missing)?;
        if value.len() > MAX_COOKIE_VALUE_BYTES {
            return Err(TokenError::TooLarge);
        }
        let decoded = percent_decode(value).ok_or(TokenError::SessionMalformed)?;
        let dot = decoded
            .iter()
            .rposition(|&b| b == b'.')
            .ok_or(TokenError::SessionMalformed)?;
        let (token, signature) = (&decoded[..dot], &decoded[dot + 1..]);
        let token_ok = !token.is_empty()
            && token.len() <= MAX_SESSION_TOKEN_BYTES
            && token
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !token_ok || signature.len() != 44 {
            return Err(TokenError::SessionMalformed);
        }
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signature)
                .map_err(|_| TokenError::SessionMalformed)?;
        hmac::verify(&self.key, token, &signature).map_err(|_| TokenError::SessionBadSignature)?;
        // Alphanumeric, '-' and '_' only: checked above.
        let token = String::from_utf8(token.to_vec()).map_err(|_| TokenError::SessionMalformed)?;
        Ok(SignedSession { token })
    }

    /// The `Cookie` header Better Auth is sent: only the session cookie, as the client sent it.
    pub fn cookie_for_better_auth(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let (name, value) = cookie_pairs(headers).find(|(name, _)| self.is_session_name(name))?;
        let mut cookie = Vec::with_capacity(name.len() + 1 + value.len());
        cookie.extend_from_slice(name);
        cookie.push(b'=');
        cookie.extend_from_slice(value);
        HeaderValue::from_bytes(&cookie).ok()
    }

    /// Removes every Better Auth cookie (`{prefix}.*` and `__Secure-{prefix}.*`: the session
    /// token, the cached session data, ...) from the `Cookie` headers, keeping the others as sent.
    /// A header left empty is dropped.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let is_ours = |name: &[u8]| {
            name.starts_with(self.prefix.as_bytes())
                || name.starts_with(self.secure_prefix.as_bytes())
        };
        if !cookie_pairs(headers).any(|(name, _)| is_ours(name)) {
            return;
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|header| {
                let pairs: Vec<&[u8]> = header
                    .as_bytes()
                    .split(|&b| b == b';')
                    .map(<[u8]>::trim_ascii)
                    .filter(|pair| !pair.is_empty())
                    .filter(|pair| {
                        let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
                        !is_ours(name.trim_ascii())
                    })
                    .collect();
                (!pairs.is_empty())
                    .then(|| HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok())
                    .flatten()
            })
            .collect();
        headers.remove(COOKIE);
        for value in kept {
            headers.append(COOKIE, value);
        }
    }
}

/// `name=value` pairs of every `Cookie` header (HTTP/2 sends one per cookie), names and values
/// trimmed of surrounding spaces as RFC 6265 section 5.4 reads them.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.get_all(COOKIE).iter().flat_map(|header| {
        header.as_bytes().split(|&b| b == b';').filter_map(|pair| {
            let pair = pair.trim_ascii();
            let equals = pair.iter().position(|&b| b == b'=')?;
            Some((pair[..equals].trim_ascii(), pair[equals + 1..].trim_ascii()))
        })
    })
}

/// Strict percent-decoding (what `decodeURIComponent` undoes): `%` must start two hex digits.
fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = (*bytes.next()? as char).to_digit(16)?;
            let low = (*bytes.next()? as char).to_digit(16)?;
            out.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            out.push(byte);
        }
    }
    Some(out)
}

/// A session Better Auth vouched for.
#[derive(Debug)]
pub struct SessionAnswer {
    pub identity: Identity,
    /// When the session ends (seconds since the epoch): the cache never outlives it.
    pub expires_at: u64,
}

/// Why Better Auth's answer gives no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAnswerError {
    /// `null`, or a session that has expired: the cookie is no longer good (401).
    Ended,
    /// Not what Better Auth answers: the gateway cannot tell (503), and says what was wrong.
    Unreadable(String),
    /// The user id cannot travel to the backend as compared (401 `invalid_claims`).
    UserId,
}

/// Turns the body of `GET /api/auth/get-session` into an identity. The claims are the user's
/// fields (as in a Better Auth JWT, whose default payload is the user), plus `sub` (the user id),
/// `sid` (the session id), `iat` and `exp` (the session's creation and end), and `session` (the
/// session's fields without its token), so routes' claim rules read the same in both modes.
pub fn session_identity(
    body: &[u8],
    user_claim: &str,
    now: u64,
) -> Result<SessionAnswer, SessionAnswerError> {
    let unreadable = |why: &str| SessionAnswerError::Unreadable(why.to_string());
    let answer: Value = serde_json::from_slice(body)
        .map_err(|err| SessionAnswerError::Unreadable(format!("not JSON: {err}")))?;
    let mut answer = match answer {
        Value::Null => return Err(SessionAnswerError::Ended),
        Value::Object(answer) => answer,
        _ => return Err(unreadable("neither null nor an object")),
    };
    let Some(Value::Object(mut session)) = answer.remove("session") else {
        return Err(unreadable("no `session` object"));
    };
    let Some(Value::Object(user)) = answer.remove("user") else {
        return Err(unreadable("no `user` object"));
    };
    let user_id = match user.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(unreadable("`user.id` is not a non-empty string")),
    };
    if session.get("userId").and_then(Value::as_str) != Some(user_id.as_str()) {
        return Err(unreadable("`session.userId` is not `user.id`"));
    }
    let session_id = match session.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(unreadable("`session.id` is not a non-empty string")),
    };
    let expires_at = session
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(parse_iso8601)
        .ok_or_else(|| unreadable("`session.expiresAt` is not an ISO 8601 UTC time"))?;
    if expires_at <= now {
        return Err(SessionAnswerError::Ended);
    }
    let created_at = session
        .get("createdAt")
        .and_then(Value::as_str)
        .and_then(parse_iso8601);
    // The token is the credential itself: it is neither kept nor shown to claim rules.
    session.remove("token");
    let mut claims: Map<String, Value> = user;
    claims.insert("sub".into(), Value::String(user_id.clone()));
    claims.insert("sid".into(), Value::String(session_id));
    claims.insert("exp".into(), Value::from(expires_at));
    if let Some(created_at) = created_at {
        claims.insert("iat".into(), Value::from(created_at));
    }
    claims.insert("session".into(), Value::Object(session));
    let user_id = match claims.get(user_claim) {
        Some(Value::String(user)) if !user.is_empty() => user.clone(),
        _ => {
            return Err(unreadable(
                "the configured user_claim is not a string in the user",
            ))
        }
    };
    if !crate::core::identity_text::is_plain_user_id(&user_id) {
        return Err(SessionAnswerError::UserId);
    }
    let header_value = HeaderValue::from_str(&user_id).map_err(|_| SessionAnswerError::UserId)?;
    Ok(SessionAnswer {
        identity: Identity {
            user_id,
            header_value,
            claims,
        },
        expires_at,
    })
}

impl From<SessionAnswerError> for Option<TokenError> {
    fn from(err: SessionAnswerError) -> Option<TokenError> {
        match err {
            SessionAnswerError::Ended => Some(TokenError::SessionExpired),
            SessionAnswerError::UserId => Some(InvalidClaim::UserId.into()),
            SessionAnswerError::Unreadable(_) => None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (what `Date.toJSON` writes) as seconds since the epoch, the
/// fraction dropped.
fn parse_iso8601(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || *bytes.last()? != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = bytes.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let fraction = &bytes[19..bytes.len() - 1];
    if !(fraction.is_empty()
        || (fraction[0] == b'.'
            && fraction.len() > 1
            && fraction[1..].iter().all(u8::is_ascii_digit)))
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || year < 1970
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), for years from 1970.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"better-auth-secret-0123456789abcdef";

    fn signed(token: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, token.as_bytes()));
        // encodeURIComponent of token.signature: '+', '/' and '=' are escaped.
        format!("{token}.{signature}")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        headers
    }

    #[test]
    fn a_signed_cookie_gives_its_token_and_a_forged_one_is_refused() {
        let cookies = SessionCookies::new("better-auth", SECRET);
        let good = format!(
            "theme=dark; better-auth.session_token={}",
            signed("AbCdEf0123456789AbCdEf0123456789")
        );
        assert_eq!(
            cookies.signed_session(&headers(&[&good])).unwrap().token,
            "AbCdEf0123456789AbCdEf0123456789"
        );
        let secure = format!("__Secure-better-auth.session_token={}", signed("tok"));
        assert_eq!(
            cookies.signed_session(&headers(&[&secure])).unwrap().token,
            "tok"
        );
        let other_key = SessionCookies::new("better-auth", b"another-secret-0123456789abcdef012");
        assert_eq!(
            other_key.signed_session(&headers(&[&good])),
            Err(TokenError::SessionBadSignature)
        );
        let tampered = good.replace("AbCdEf0123", "AbCdEf0124");
        assert_eq!(
            cookies.signed_session(&headers(&[&tampered])),
            Err(TokenError::SessionBadSignature)
        );
        for bad in [
            "better-auth.session_token=unsigned",
            "better-auth.session_token=tok.",
            "better-auth.session_token=tok.%ZZ",
            "better-auth.session_token=.AAAA",
        ] {
            assert_eq!(
                cookies.signed_session(&headers(&[bad])),
                Err(TokenError::SessionMalformed),
                "{bad}"
            );
        }
        assert_eq!(
            cookies.signed_session(&headers(&["theme=dark"])),
            Err(TokenError::Missing)
        );
        let twice = [good.as_str(), secure.as_str()];
        assert_eq!(
            cookies.signed_session(&headers(&twice)),
            Err(TokenError::MultipleSessionCookies)
        );
        let prefixed = SessionCookies::new("myapp", SECRET);
        assert_eq!(
            prefixed.signed_session(&headers(&[&good])),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn strip_removes_every_better_auth_cookie_and_keeps_the_rest() {
        let cookies = SessionCookies::new("better-auth", SECRET);
        let mut map = headers(&[
            "theme=dark; better-auth.session_token=a.b; better-auth.session_data=xyz",
            "__Secure-better-auth.session_token=c.d",
            "lang=en",
        ]);
        cookies.strip(&mut map);
        let left: Vec<&str> = map
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["theme=dark", "lang=en"]);
        let mut untouched = headers(&["better-authx=1; a=b"]);
        cookies.strip(&mut untouched);
        assert_eq!(untouched.get(COOKIE).unwrap(), "better-authx=1; a=b");
    }

    #[test]
    fn better_auths_answer_becomes_an_identity() {
        let body = br#"{"session":{"id":"s1","token":"secret-token","userId":"u1","expiresAt":"2030-01-01T00:00:00.000Z","createdAt":"2026-12-05T08:00:00.000Z"},"user":{"id":"u1","email":"a@example.com","role":"admin"}}"#;
        let answer = session_identity(body, "sub", 1_800_000_000).unwrap();
        assert_eq!(answer.identity.user_id, "u1");
        assert_eq!(answer.expires_at, 1_893_456_000);
        let claims = &answer.identity.claims;
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["sid"], "s1");
        assert_eq!(claims["iat"], 1_796_457_600u64);
        assert!(
            claims["session"].get("token").is_none(),
            "the token is never kept"
        );
        assert_eq!(
            session_identity(b"null", "sub", 0).unwrap_err(),
            SessionAnswerError::Ended
        );
        assert_eq!(
            session_identity(body, "sub", 1_893_456_000).unwrap_err(),
            SessionAnswerError::Ended
        );
        assert!(matches!(
            session_identity(b"{}", "sub", 0),
            Err(SessionAnswerError::Unreadable(_))
        ));
        assert!(matches!(
            session_identity(b"<html>", "sub", 0),
            Err(SessionAnswerError::Unreadable(_))
        ));
        let mismatched = br#"{"session":{"id":"s1","userId":"u2","expiresAt":"2030-01-01T00:00:00.000Z"},"user":{"id":"u1"}}"#;
        assert!(matches!(
            session_identity(mismatched, "sub", 0),
            Err(SessionAnswerError::Unreadable(_))
        ));
        let spaced = br#"{"session":{"id":"s1","userId":" u1","expiresAt":"2030-01-01T00:00:00Z"},"user":{"id":" u1"}}"#;
        assert_eq!(
            session_identity(spaced, "sub", 0).unwrap_err(),
            SessionAnswerError::UserId
        );
    }

    #[test]
    fn iso8601_times() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2000-03-01T00:00:00.5Z"), Some(951_868_800));
        assert_eq!(
            parse_iso8601("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096)
        );
        for bad in [
            "2024-02-29 12:34:56Z",
            "2024-02-29T12:34:56",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56.Z",
            "x",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
