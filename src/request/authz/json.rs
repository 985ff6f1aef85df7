//! Owner fields (`body_owner_fields`) and `_method` at the top level of a JSON body, read whole.

use super::media_type::checked_media_type;
use crate::core::error::GatewayError;
use crate::request::method_override::{MethodGuard, Place, OVERRIDE_FIELD};
use crate::request::names::fold_eq;

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

/// Walks the top level of a JSON document: `Ok` when every owner field names the user and every
/// `_method` (when watched) names an allowed method.
pub(crate) struct JsonFields<'a> {
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
