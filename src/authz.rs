//! Authorization: may this authenticated user touch this resource?
//!
//! The owner rule compares the decoded path segment with the user id byte for byte: no case
//! folding, no Unicode normalization, no trimming. Anything else would let `Alice` or `alice%20`
//! reach a path the backend maps to `alice`, or the reverse.

use crate::auth::Identity;
use crate::error::GatewayError;
use crate::method_override::{MethodGuard, Place, OVERRIDE_FIELD};
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

/// The per-field rules of one request's query or form body: owner fields (when the owner rule
/// applies to the caller) and the `_method` override (when the route's methods must be kept).
#[derive(Clone, Copy)]
pub struct FieldRules<'a> {
    pub owner_names: &'a [Box<str>],
    pub user_id: &'a str,
    pub methods: Option<MethodGuard<'a>>,
}

impl FieldRules<'_> {
    pub fn is_empty(&self) -> bool {
        self.owner_names.is_empty() && self.methods.is_none()
    }

    /// One decoded field: an owner field must name the caller (403), a name a lenient parser
    /// reads as an owner field is refused (400), and `_method` must name an allowed method
    /// (405). `value` is `None` when it does not decode.
    fn check(&self, name: &str, value: Option<&[u8]>, source: Source) -> Result<(), GatewayError> {
        if self.owner_names.iter().any(|owner| **owner == *name) {
            if value != Some(self.user_id.as_bytes()) {
                return Err(GatewayError::OwnerMismatch(source.mismatch()));
            }
            return Ok(());
        }
        if self.owner_names.iter().any(|owner| read_as(name, owner)) {
            return Err(GatewayError::BadTarget(source.lookalike()));
        }
        if let Some(guard) = &self.methods {
            guard.check_field(name, value, source.place())?;
        }
        Ok(())
    }
}

/// Where a field comes from, for the refusal's message.
#[derive(Clone, Copy)]
enum Source {
    Query,
    Form,
    UntypedBody,
}

impl Source {
    fn mismatch(self) -> &'static str {
        match self {
            Source::Query | Source::Form => "an owner query parameter names another user",
            Source::UntypedBody => "an owner field in the body names another user",
        }
    }

    fn lookalike(self) -> &'static str {
        match self {
            Source::Query | Source::Form => {
                "a query parameter name could be read as an owner parameter"
            }
            Source::UntypedBody => "a body field name could be read as an owner parameter",
        }
    }

    fn place(self) -> Place {
        match self {
            Source::Query => Place::Query,
            Source::Form | Source::UntypedBody => Place::Body,
        }
    }
}

/// Every occurrence of an owner query parameter must name the caller. Checking every occurrence
/// matters: frameworks disagree on whether the first or the last duplicate wins. A name that a
/// lenient parser would read as an owner parameter but that is not spelled exactly like one
/// (`user_id[]`, `user.id`, `USER_ID`) is refused: reject, don't normalize.
fn check_owner_query(query: &str, names: &[Box<str>], user_id: &str) -> Result<(), GatewayError> {
    let rules = FieldRules {
        owner_names: names,
        user_id,
        methods: None,
    };
    check_query_fields(query, &rules, Source::Query)
}

/// A `_method` query parameter must name a method the route allows (`src/method_override.rs`).
pub fn check_query_override(query: &str, guard: MethodGuard<'_>) -> Result<(), GatewayError> {
    let rules = FieldRules {
        owner_names: &[],
        user_id: "",
        methods: Some(guard),
    };
    check_query_fields(query, &rules, Source::Query)
}

fn check_query_fields(
    query: &str,
    rules: &FieldRules<'_>,
    source: Source,
) -> Result<(), GatewayError> {
    if rules.is_empty() {
        return Ok(());
    }
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = decode_query_component(name) else {
            return Err(GatewayError::BadTarget(
                "query is not valid UTF-8 after decoding",
            ));
        };
        let value = decode_query_component(value);
        rules.check(&name, value.as_deref().map(str::as_bytes), source)?;
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
        let php = |c: char| if matches!(c, '.' | ' ') { '_' } else { c };
        fold_eq_by(candidate, owner, php)
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

/// Whether two names are equal under Unicode simple case folding: how Go's `encoding/json` binds
/// a JSON key to a struct field (`USER_ID`, `uſer_id` with U+017F and `\u212Aey` with the Kelvin
/// sign all bind to `user_id`/`key`), and how ASP.NET Core and other case-insensitive binders
/// read names. Each character is folded to the lower case of its upper case when both are single
/// characters (`ſ` -> `S` -> `s`, `K` -> `k`, `ς` -> `Σ` -> `σ`), which puts every character of a
/// simple case-folding orbit on one representative. It may equate a few more names than Go does
/// (`ı` and `i`); for an owner field that errs on the safe side.
pub fn fold_eq(a: &str, b: &str) -> bool {
    fold_eq_by(a, b, |c| c)
}

fn fold_eq_by(a: &str, b: &str, also: impl Fn(char) -> char) -> bool {
    let fold = |c: char| fold_char(also(c));
    if a.is_ascii() && b.is_ascii() {
        // The common case, without Unicode tables. `also` only ever maps ASCII to ASCII.
        return a.len() == b.len() && a.chars().zip(b.chars()).all(|(x, y)| fold(x) == fold(y));
    }
    a.chars().map(fold).eq(b.chars().map(fold))
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut upper = c.to_uppercase();
    let (Some(upper), None) = (upper.next(), upper.next()) else {
        return c;
    };
    let mut lower = upper.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(lower), None) => lower,
        _ => upper,
    }
}

/// `body_owner_fields`: the content type must be JSON (415 otherwise) and every top-level
/// occurrence of an owner field must be a string equal to the user id, byte for byte. Checking every
/// occurrence matters: with `{"user_id":"alice","user_id":"bob"}` most JSON parsers keep the last.
/// A key counts as an owner field when it equals one under Unicode simple case folding
/// (`fold_eq`): Go and ASP.NET bind `USER_ID` and `uſer_id` to `user_id`, last match winning.
/// Nested values are not looked at. Invalid JSON is 400 rather than passed on for a lenient parser.
pub fn check_body_owner(
    headers: &http::HeaderMap,
    body: &[u8],
    fields: &[String],
    user_id: &str,
) -> Result<(), GatewayError> {
    check_json_fields(headers, body, fields, user_id, None)
}

/// `check_body_owner`, and with `methods` the `_method` override too: Laravel reads a JSON body's
/// top-level `_method` as it reads a form's, so one folding to it must be a string naming a
/// method the route allows (else 405).
pub fn check_json_fields(
    headers: &http::HeaderMap,
    body: &[u8],
    fields: &[String],
    user_id: &str,
    methods: Option<MethodGuard<'_>>,
) -> Result<(), GatewayError> {
    let subtype = checked_media_type(headers)?;
    if subtype != "json" && !(subtype.len() > 5 && subtype.ends_with("+json")) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let verdict = serde::Deserializer::deserialize_any(
        &mut deserializer,
        JsonFields {
            fields,
            user_id,
            methods,
        },
    )
    .map_err(|_| GatewayError::BadRequest("the request body is not valid JSON"))?;
    deserializer
        .end()
        .map_err(|_| GatewayError::BadRequest("the request body is not valid JSON"))?;
    verdict
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

/// The owner query rule (`owner_query_params`) on a form body; `check_form_fields` with owner
/// fields only.
pub fn check_form_owner(
    kind: FormBody,
    headers: &http::HeaderMap,
    body: &[u8],
    names: &[Box<str>],
    user_id: &str,
) -> Result<(), GatewayError> {
    let rules = FieldRules {
        owner_names: names,
        user_id,
        methods: None,
    };
    check_form_fields(kind, headers, body, &rules)
}

/// The field rules on a form body. A declared one must be one unambiguous
/// `application/x-www-form-urlencoded` (else 415) with the syntax of a query (else 400). An
/// untyped one may be anything (a JSON or binary body sent without its type), so it is read as
/// leniently as Rack reads it: split on `&` and `;`, escapes decoded where well formed. Either
/// way every owner field must name the user (else 403; look-alike names 400), and `_method`
/// must name an allowed method (else 405).
pub fn check_form_fields(
    kind: FormBody,
    headers: &http::HeaderMap,
    body: &[u8],
    rules: &FieldRules<'_>,
) -> Result<(), GatewayError> {
    if kind == FormBody::Untyped {
        return check_untyped_fields(body, rules);
    }
    if !checked_media_type(headers)?.eq_ignore_ascii_case("x-www-form-urlencoded") {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let form = std::str::from_utf8(body)
        .ok()
        .filter(|form| crate::target::validate_query(form).is_ok())
        .ok_or(GatewayError::BadRequest("the form body is malformed"))?;
    check_query_fields(form, rules, Source::Form)
}

fn check_untyped_fields(body: &[u8], rules: &FieldRules<'_>) -> Result<(), GatewayError> {
    for pair in body.split(|&b| b == b'&' || b == b';') {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(equals) => (&pair[..equals], &pair[equals + 1..]),
            None => (pair, &[][..]),
        };
        let name = lenient_decode(name);
        let name = String::from_utf8_lossy(&name);
        rules.check(&name, Some(&lenient_decode(value)), Source::UntypedBody)?;
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

/// Walks the top level of a JSON document: `Ok` when every owner field names the user and every
/// `_method` (when watched) names an allowed method.
struct JsonFields<'a> {
    fields: &'a [String],
    user_id: &'a str,
    methods: Option<MethodGuard<'a>>,
}

impl<'de> serde::de::Visitor<'de> for JsonFields<'_> {
    type Value = Result<(), GatewayError>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The whole document is read (and must be valid) before a verdict is given.
        let mut verdict = Ok(());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.fields.iter().any(|field| fold_eq(field, &key)) {
                let value = map.next_value::<serde_json::Value>()?;
                if value.as_str().map(str::as_bytes) != Some(self.user_id.as_bytes()) {
                    verdict = verdict.and(Err(GatewayError::OwnerMismatch(
                        "an owner field in the body names another user",
                    )));
                }
            } else if let (Some(guard), true) = (self.methods, fold_eq(&key, OVERRIDE_FIELD)) {
                let value = map.next_value::<serde_json::Value>()?;
                let named = value.as_str().map(str::as_bytes);
                verdict = verdict.and(guard.check_field(OVERRIDE_FIELD, named, Place::Body));
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(verdict)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Ok(()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
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
    fn simple_case_folding() {
        assert!(fold_eq("user_id", "USER_ID"));
        assert!(fold_eq("user_id", "uſer_id"));
        assert!(fold_eq("key", "\u{212a}ey"));
        assert!(fold_eq("σς", "ΣΣ"));
        assert!(!fold_eq("user_id", "user-id"));
        assert!(!fold_eq("user_id", "user_i"));
        assert!(!fold_eq("straße", "STRASSE"));
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
        // Go's encoding/json and ASP.NET bind keys case-insensitively (Unicode simple folding).
        for body in [
            r#"{"user_id":"alice","USER_ID":"bob"}"#,
            r#"{"user_id":"alice","uſer_id":"bob"}"#,
            r#"{"user_id":"alice","u\u017fer_id":"bob"}"#,
            r#"{"USERID":"bob"}"#,
            r#"{"UserId":"bob","user_id":"alice"}"#,
        ] {
            assert!(
                matches!(
                    check("application/json", body),
                    Err(GatewayError::OwnerMismatch(_))
                ),
                "{body}"
            );
        }
        assert!(check(
            "application/json",
            r#"{"USER_ID":"alice","uſer_id":"alice"}"#
        )
        .is_ok());
        assert!(check("application/json", r#"{"user-id":"bob","user_idx":"bob"}"#).is_ok());
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
