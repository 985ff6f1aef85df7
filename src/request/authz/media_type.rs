//! What kind of body a request carries, read strictly: the one `Content-Type` a body check may
//! trust, and whether some backend would read the body as a form.

use crate::core::error::GatewayError;
use crate::request::names::is_tchar;

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
    // An empty `Content-Type` is none at all to Rack (`""` becomes `nil`), which then parses a
    // POST body as a form.
    let typed = headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .any(|value| !value.as_bytes().trim_ascii().is_empty());
    if !typed {
        return (method == http::Method::POST).then_some(FormBody::Untyped);
    }
    content_type_mentions(headers, b"form-urlencoded").then_some(FormBody::Declared)
}

/// Whether any `Content-Type` field contains `needle` (ASCII case-insensitive): the cue that a
/// backend may read the body as that kind, however the field is otherwise written.
pub fn content_type_mentions(headers: &http::HeaderMap, needle: &[u8]) -> bool {
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

/// The subtype (lower-case) of an `application/*` body whose type the gateway and the backend
/// cannot read differently: no `Content-Encoding` but `identity` (the backend would inflate
/// and parse other bytes than those checked), exactly one `Content-Type` (else 400), holding
/// one media type with well-formed parameters and a UTF-8 charset if any (else 415):
/// `application/x-www-form-urlencoded, application/a+json` is a form to a parser that stops at
/// the comma, and JSON to one that reads the end.
pub(crate) fn checked_media_type(headers: &http::HeaderMap) -> Result<String, GatewayError> {
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
pub(crate) fn application_subtype(content_type: Option<&http::HeaderValue>) -> Option<String> {
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
pub(crate) fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_tchar)
}

/// The type of a JSON body scanned as it streams for `_method` (`json_scan.rs`): the same rules
/// as for a body read whole, `application/json` or `application/*+json`, one `Content-Type`, a
/// UTF-8 charset if any, no `Content-Encoding` but `identity`. Otherwise a backend could inflate
/// or transcode the body (Express's body-parser does both) into a document the scan never saw.
pub fn check_scanned_json_type(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let subtype = checked_media_type(headers)?;
    if subtype == "json" || (subtype.len() > 5 && subtype.ends_with("+json")) {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}
