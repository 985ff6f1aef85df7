//! Authorization: may this authenticated user touch this resource?
//!
//! The owner rule compares the decoded path segment with the user id byte for byte: no case
//! folding, no Unicode normalization, no trimming. Anything else would let `Alice` or `alice%20`
//! reach a path the backend maps to `alice`, or the reverse.

use crate::auth::Identity;
use crate::error::GatewayError;
use crate::policy;
use crate::routes::RouteMatch;
use crate::target::decode_query_component;

/// Whether the owner checks (path, query, body) apply to this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Enforced,
    /// `owner_bypass` matched: the user may act on other users' resources.
    Bypassed,
}

/// Claim requirements first (403 naming the unmet rule), then the owner rule unless the route's
/// `owner_bypass` conditions all hold for this user's verified claims.
pub fn authorize(
    matched: &RouteMatch<'_, '_>,
    identity: &Identity,
    query: Option<&str>,
) -> Result<Ownership, GatewayError> {
    let route = matched.route;
    if let Some(unmet) = policy::first_unmet(&route.require, &identity.claims) {
        return Err(GatewayError::ClaimRequirement(unmet.description.clone()));
    }
    if policy::all_hold(&route.owner_bypass, &identity.claims) {
        let owner = route
            .owner
            .as_deref()
            .and_then(|param| matched.param(param))
            .unwrap_or("-");
        tracing::info!(acting_user = %identity.user_id, path_owner = %owner, route = %route.pattern, "owner rule bypassed");
        return Ok(Ownership::Bypassed);
    }
    if let Some(owner_param) = &route.owner {
        let owner = matched
            .param(owner_param)
            .ok_or(GatewayError::OwnerMismatch(
                "the owner path parameter is missing",
            ))?;
        if owner.as_bytes() != identity.user_id.as_bytes() {
            return Err(GatewayError::OwnerMismatch(
                "this resource belongs to another user",
            ));
        }
    }
    if let Some(query) = query {
        check_owner_query(query, &route.owner_query_params, &identity.user_id)?;
    }
    Ok(Ownership::Enforced)
}

/// Every occurrence of an owner query parameter must name the caller. Checking every occurrence
/// matters: frameworks disagree on whether the first or the last duplicate wins. A name that a
/// lenient parser would read as an owner parameter but that is not spelled exactly like one
/// (`user_id[]`, `user.id`, `USER_ID`) is refused: reject, don't normalize.
fn check_owner_query(query: &str, names: &[Box<str>], user_id: &str) -> Result<(), GatewayError> {
    if names.is_empty() {
        return Ok(());
    }
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = decode_query_component(name) else {
            return Err(GatewayError::BadTarget(
                "query is not valid UTF-8 after decoding",
            ));
        };
        if !names.iter().any(|owner| **owner == *name) {
            if names.iter().any(|owner| read_as(&name, owner)) {
                return Err(GatewayError::BadTarget(
                    "a query parameter name could be read as an owner parameter",
                ));
            }
            continue;
        }
        match decode_query_component(value) {
            Some(value) if value.as_bytes() == user_id.as_bytes() => {}
            _ => {
                return Err(GatewayError::OwnerMismatch(
                    "an owner query parameter names another user",
                ))
            }
        }
    }
    Ok(())
}

/// Whether some backend's query parser may take the (decoded) parameter `name` for `owner`:
/// - `qs` (Express) and Rack (Rails) read `owner[]`, `owner[0]`, `[owner]`, `]owner`, `owner]`
///   as `owner`: brackets around the first bracket-free run are dropped;
/// - PHP drops leading spaces, turns `.`, ` ` and a `[` left unclosed into `_`;
/// - Spring's data binder takes `!owner` as a default for `owner`, and ASP.NET falls back from
///   `prefix.owner` to `owner`;
/// - some frameworks match names without case;
/// - PHP ends a name at a NUL (`user_id%00x` is `user_id`).
pub(crate) fn read_as(name: &str, owner: &str) -> bool {
    let name = name.split('\0').next().unwrap_or(name);
    let name = name.trim_start_matches([' ', '!']);
    let same = |candidate: &str| {
        candidate.len() == owner.len()
            && candidate
                .bytes()
                .zip(owner.bytes())
                .all(|(a, b)| fold_name_byte(a) == fold_name_byte(b))
    };
    let bracket_free = name
        .trim_start_matches(['[', ']'])
        .split(['[', ']'])
        .next()
        .unwrap_or("");
    let after_last_dot = name.rsplit('.').next().unwrap_or(name);
    same(name)
        || same(bracket_free)
        || same(after_last_dot)
        || (name.contains('[') && same(&name.replacen('[', "_", 1)))
}

fn fold_name_byte(byte: u8) -> u8 {
    match byte {
        b'.' | b' ' => b'_',
        other => other.to_ascii_lowercase(),
    }
}

/// `body_owner_fields`: the content type must be JSON (415 otherwise) and every top-level
/// occurrence of an owner field must be a string equal to the user id, byte for byte. Checking every
/// occurrence matters: with `{"user_id":"alice","user_id":"bob"}` most JSON parsers keep the last.
/// Nested values are not looked at. Invalid JSON is 400 rather than passed on for a lenient parser.
pub fn check_body_owner(
    headers: &http::HeaderMap,
    body: &[u8],
    fields: &[String],
    user_id: &str,
) -> Result<(), GatewayError> {
    let subtype = checked_media_type(headers)?;
    if subtype != "json" && !(subtype.len() > 5 && subtype.ends_with("+json")) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let verdict =
        serde::Deserializer::deserialize_any(&mut deserializer, OwnerFields { fields, user_id })
            .map_err(|_| GatewayError::BadRequest("the request body is not valid JSON"))?;
    deserializer
        .end()
        .map_err(|_| GatewayError::BadRequest("the request body is not valid JSON"))?;
    if verdict {
        Ok(())
    } else {
        Err(GatewayError::OwnerMismatch(
            "an owner field in the body names another user",
        ))
    }
}

/// How a request body may be read as a form by some backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormBody {
    /// Some `Content-Type` mentions `form-urlencoded`.
    Declared,
    /// A POST with no `Content-Type`: Rack (Rails) parses it as a form.
    Untyped,
}

/// Whether a request body may be read as a form. PHP's `$_REQUEST`, Rails' `params`, Flask's
/// `request.values` and Spring's `@RequestParam` read form fields and query parameters as one,
/// so such a body gets the owner query rule too.
pub fn form_body(method: &http::Method, headers: &http::HeaderMap) -> Option<FormBody> {
    if !headers.contains_key(http::header::CONTENT_TYPE) {
        return (method == http::Method::POST).then_some(FormBody::Untyped);
    }
    content_type_mentions(headers, b"form-urlencoded").then_some(FormBody::Declared)
}

/// Whether any `Content-Type` field contains `needle` (ASCII case-insensitive): the cue that a
/// backend may read the body as that kind, however the field is otherwise written.
pub(crate) fn content_type_mentions(headers: &http::HeaderMap, needle: &[u8]) -> bool {
    headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .any(|value| {
            value
                .as_bytes()
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle))
        })
}

/// The owner query rule (`owner_query_params`) on a form body. A declared one must be one
/// unambiguous `application/x-www-form-urlencoded` (else 415) with the syntax of a query (else
/// 400). An untyped one may be anything (a JSON or binary body sent without its type), so it is
/// read as leniently as Rack reads it: split on `&` and `;`, escapes decoded where well formed.
/// Either way every owner field must name the user (else 403; look-alike names 400).
pub fn check_form_owner(
    kind: FormBody,
    headers: &http::HeaderMap,
    body: &[u8],
    names: &[Box<str>],
    user_id: &str,
) -> Result<(), GatewayError> {
    if kind == FormBody::Untyped {
        return check_untyped_owner(body, names, user_id);
    }
    if !checked_media_type(headers)?.eq_ignore_ascii_case("x-www-form-urlencoded") {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let form = std::str::from_utf8(body)
        .ok()
        .filter(|form| crate::target::validate_query(form).is_ok())
        .ok_or(GatewayError::BadRequest("the form body is malformed"))?;
    check_owner_query(form, names, user_id)
}

fn check_untyped_owner(body: &[u8], names: &[Box<str>], user_id: &str) -> Result<(), GatewayError> {
    for pair in body.split(|&b| b == b'&' || b == b';') {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(equals) => (&pair[..equals], &pair[equals + 1..]),
            None => (pair, &[][..]),
        };
        let name = lenient_decode(name);
        let name = String::from_utf8_lossy(&name);
        if !names.iter().any(|owner| **owner == *name) {
            if names.iter().any(|owner| read_as(&name, owner)) {
                return Err(GatewayError::BadTarget(
                    "a body field name could be read as an owner parameter",
                ));
            }
            continue;
        }
        if lenient_decode(value) != user_id.as_bytes() {
            return Err(GatewayError::OwnerMismatch(
                "an owner field in the body names another user",
            ));
        }
    }
    Ok(())
}

/// `+` as a space and well-formed `%XX` escapes decoded; anything else kept as it is.
fn lenient_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < raw.len() {
        match raw[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < raw.len() => match (hex(raw[index + 1]), hex(raw[index + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    index += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        index += 1;
    }
    out
}

/// The subtype (lower-case) of an `application/*` body whose type the gateway and the backend
/// cannot read differently: no `Content-Encoding` but `identity` (the backend would inflate
/// and parse other bytes than those checked), exactly one `Content-Type` (else 400), holding
/// one media type with well-formed parameters and a UTF-8 charset if any (else 415):
/// `application/x-www-form-urlencoded, application/a+json` is a form to a parser that stops at
/// the comma, and JSON to one that reads the end.
fn checked_media_type(headers: &http::HeaderMap) -> Result<String, GatewayError> {
    if headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let mut content_types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let content_type = content_types.next();
    if content_types.next().is_some() {
        return Err(GatewayError::BadRequest(
            "more than one Content-Type header",
        ));
    }
    application_subtype(content_type).ok_or(GatewayError::UnsupportedMediaType)
}

/// `application/subtype *( OWS ";" OWS name=value )` (RFC 9110 8.3.1) with a charset (if any) of
/// UTF-8: the subtype, lower-case. Anything else, commas and stray whitespace included, is `None`.
fn application_subtype(content_type: Option<&http::HeaderValue>) -> Option<String> {
    let text = content_type?.to_str().ok()?;
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim_matches([' ', '\t']);
    let (kind, subtype) = media.split_once('/')?;
    if !is_token(kind) || !is_token(subtype) || !kind.eq_ignore_ascii_case("application") {
        return None;
    }
    let parameters_ok = parts.all(|param| {
        let Some((name, value)) = param.trim_matches([' ', '\t']).split_once('=') else {
            return false;
        };
        let value = match value.strip_prefix('"') {
            Some(quoted) => match quoted.strip_suffix('"') {
                Some(inner) if !inner.contains(['"', '\\']) => inner,
                _ => return false,
            },
            None if is_token(value) => value,
            None => return false,
        };
        is_token(name)
            && (!name.eq_ignore_ascii_case("charset") || value.eq_ignore_ascii_case("utf-8"))
    });
    parameters_ok.then(|| subtype.to_ascii_lowercase())
}

/// An RFC 9110 token: one or more tchars.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_tchar)
}

/// An RFC 9110 tchar.
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Walks the top level of a JSON document; `true` when every owner field names the user.
struct OwnerFields<'a> {
    fields: &'a [String],
    user_id: &'a str,
}

impl<'de> serde::de::Visitor<'de> for OwnerFields<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut all_match = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.fields.iter().any(|field| *field == *key) {
                let value = map.next_value::<serde_json::Value>()?;
                if value.as_str().map(str::as_bytes) != Some(self.user_id.as_bytes()) {
                    all_match = false;
                }
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(all_match)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(true)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content_type: &str, body: &str) -> Result<(), GatewayError> {
        check_with(&[content_type], body)
    }

    fn check_with(content_types: &[&str], body: &str) -> Result<(), GatewayError> {
        let mut headers = http::HeaderMap::new();
        for value in content_types {
            headers.append(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        check_body_owner(
            &headers,
            body.as_bytes(),
            &["user_id".into(), "userId".into()],
            "alice",
        )
    }

    /// A body that is JSON without an owner field and a form naming bob: only the declared type
    /// decides which the backend sees, so the type must be unambiguous.
    #[test]
    fn ambiguous_content_types_are_not_json() {
        let body = r#"{"a":"&user_id=bob&"}"#;
        for content_type in [
            "application/x-www-form-urlencoded, application/a+json",
            "application/x-www-form-urlencoded application/a+json",
            "application/json, text/plain",
            "application/ json",
            "application /json",
            "application/+json",
            "application/json; charset",
            "application/json; charset=\"utf-8",
            "application/json; a=b c",
            "application/json;;",
        ] {
            assert!(
                matches!(
                    check(content_type, body),
                    Err(GatewayError::UnsupportedMediaType)
                ),
                "{content_type}"
            );
        }
        assert!(matches!(
            check_with(
                &["application/json", "application/x-www-form-urlencoded"],
                body
            ),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(check("Application/JSON ; charset=\"utf-8\"", body).is_ok());
        let mut gzip = http::HeaderMap::new();
        gzip.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        gzip.insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("br"),
        );
        assert!(matches!(
            check_body_owner(&gzip, b"{}", &["user_id".into()], "alice"),
            Err(GatewayError::UnsupportedMediaType)
        ));
        assert!(check_with(&[], body).is_err());
    }

    #[test]
    fn parameter_names_a_lenient_parser_reads_as_the_owner_are_refused() {
        let names: Vec<Box<str>> = vec!["user_id".into()];
        let refused = |query: &str| {
            matches!(
                check_owner_query(query, &names, "alice"),
                Err(GatewayError::BadTarget(_))
            )
        };
        for query in [
            "user_id[]=bob",
            "user_id[0]=bob",
            "user_id%5B%5D=bob",
            "user_id=alice&user_id[]=bob",
            "user_id[]=alice",
            "user.id=bob",
            "user+id=bob",
            "user%20id=bob",
            "USER_ID=bob",
            "User_Id=alice",
            "+user_id=bob",
            "user[id=bob",
            "user_id[x][y]=bob",
            "[user_id]=bob",
            "]user_id=bob",
            "user_id]=bob",
            "[]user_id[]=bob",
            "!user_id=bob",
            "filter.user_id=bob",
            "a.b.USER_ID=bob",
        ] {
            assert!(refused(query), "{query}");
        }
        for query in [
            "user_idx=bob",
            "xuser_id=bob",
            "user=bob",
            "title=user_id",
            "a[user_id]=bob",
        ] {
            assert!(check_owner_query(query, &names, "alice").is_ok(), "{query}");
        }
        assert!(check_owner_query("user_id=alice&title=x", &names, "alice").is_ok());
        assert!(matches!(
            check_owner_query("user_id=bob", &names, "alice"),
            Err(GatewayError::OwnerMismatch(_))
        ));
    }

    #[test]
    fn body_owner_rules() {
        assert!(check("application/json", r#"{"user_id":"alice","title":"x"}"#).is_ok());
        assert!(check("application/json; charset=UTF-8", r#"{"userId":"alice"}"#).is_ok());
        assert!(check("application/vnd.api+json", r#"{"title":"no owner field"}"#).is_ok());
        assert!(check("application/json", r#"{"nested":{"user_id":"bob"}}"#).is_ok());
        assert!(matches!(
            check("application/json", r#"{"user_id":"bob"}"#),
            Err(GatewayError::OwnerMismatch(_))
        ));
        assert!(matches!(
            check("application/json", r#"{"user_id":"alice","user_id":"bob"}"#),
            Err(GatewayError::OwnerMismatch(_))
        ));
        assert!(matches!(
            check("application/json", r#"{"user_id":7}"#),
            Err(GatewayError::OwnerMismatch(_))
        ));
        assert!(matches!(
            check("application/json", r#"{"user_id":"alice"} trailing"#),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            check("text/plain", r#"{"user_id":"alice"}"#),
            Err(GatewayError::UnsupportedMediaType)
        ));
        assert!(matches!(
            check("application/x-www-form-urlencoded", "user_id=bob"),
            Err(GatewayError::UnsupportedMediaType)
        ));
        assert!(matches!(
            check("application/json; charset=latin1", "{}"),
            Err(GatewayError::UnsupportedMediaType)
        ));
    }
}
