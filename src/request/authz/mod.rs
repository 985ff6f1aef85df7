//! Authorization: may this authenticated user touch this resource?
//!
//! The owner rule compares the decoded path segment with the user id byte for byte: no case
//! folding, no Unicode normalization, no trimming. Anything else would let `Alice` or `alice%20`
//! reach a path the backend maps to `alice`, or the reverse.

mod fields;
mod json;
pub mod json_scan;
mod media_type;
pub mod multipart;

pub use crate::request::names::{fold_eq, read_as};
use fields::check_owner_query;
pub use fields::{
    check_form_fields, check_form_owner, check_query, check_query_override, FieldRules,
};
pub use json::{check_body_owner, check_json_fields};
pub use media_type::{check_scanned_json_type, content_type_mentions, form_body, FormBody};

use crate::core::error::GatewayError;
use crate::core::policy;
use crate::request::auth::Identity;
use crate::request::routes::RouteMatch;

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

#[cfg(test)]
mod tests {
    use super::fields::check_owner_query;
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
