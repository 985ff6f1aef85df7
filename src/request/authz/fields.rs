//! Fields a backend merges into its parameters: the query, and form and untyped POST bodies.
//! Owner fields must name the caller; `_method` must name a method the route allows.

use super::media_type::{checked_media_type, FormBody};
use crate::core::error::GatewayError;
use crate::request::method_override::{MethodGuard, Place};
use crate::request::names::read_as;
use crate::request::target::decode_query_component;

/// The per-field rules of one request's query or form body: owner fields (when the owner rule
/// applies to the caller) and the `_method` override (when the route's methods must be kept).
#[derive(Clone, Copy)]
pub struct FieldRules<'a> {
    pub owner_names: &'a [Box<str>],
    pub user_id: &'a str,
    pub methods: Option<MethodGuard<'a>>,
}

impl<'a> FieldRules<'a> {
    /// Owner fields only, for the owner rule's own checks.
    pub fn owners_only(owner_names: &'a [Box<str>], user_id: &'a str) -> FieldRules<'a> {
        FieldRules {
            owner_names,
            user_id,
            methods: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
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
pub(crate) enum Source {
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
pub(crate) fn check_owner_query(
    query: &str,
    names: &[Box<str>],
    user_id: &str,
) -> Result<(), GatewayError> {
    check_query_fields(
        query,
        &FieldRules::owners_only(names, user_id),
        Source::Query,
    )
}

/// The field rules on a query: owner parameters and `_method` in one walk.
pub fn check_query(query: &str, rules: &FieldRules<'_>) -> Result<(), GatewayError> {
    check_query_fields(query, rules, Source::Query)
}

/// A `_method` query parameter must name a method the route allows (`src/request/method_override.rs`).
pub fn check_query_override(query: &str, guard: MethodGuard<'_>) -> Result<(), GatewayError> {
    let rules = FieldRules {
        owner_names: &[],
        user_id: "",
        methods: Some(guard),
    };
    check_query(query, &rules)
}

pub(crate) fn check_query_fields(
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

/// The owner query rule (`owner_query_params`) on a form body; `check_form_fields` with owner
/// fields only.
pub fn check_form_owner(
    kind: FormBody,
    headers: &http::HeaderMap,
    body: &[u8],
    names: &[Box<str>],
    user_id: &str,
) -> Result<(), GatewayError> {
    check_form_fields(
        kind,
        headers,
        body,
        &FieldRules::owners_only(names, user_id),
    )
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
        .filter(|form| crate::request::target::validate_query(form).is_ok())
        .ok_or(GatewayError::BadRequest("the form body is malformed"))?;
    check_query_fields(form, rules, Source::Form)
}

pub(crate) fn check_untyped_fields(
    body: &[u8],
    rules: &FieldRules<'_>,
) -> Result<(), GatewayError> {
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
pub(crate) fn lenient_decode(raw: &[u8]) -> Vec<u8> {
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
