//! Authorization: may this authenticated user touch this resource?
//!
//! The owner rule compares the decoded path segment with the user id byte for byte: no case
//! folding, no Unicode normalization, no trimming. Anything else would let `Alice` or `alice%20`
//! reach a path the backend maps to `alice`, or the reverse.

use crate::auth::Identity;
use crate::error::GatewayError;
use crate::routes::RouteMatch;
use crate::target::decode_query_component;

pub fn authorize(
    matched: &RouteMatch<'_, '_>,
    identity: &Identity,
    query: Option<&str>,
) -> Result<(), GatewayError> {
    let route = matched.route;
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
    Ok(())
}

/// Every occurrence of an owner query parameter must name the caller. Checking every occurrence
/// matters: frameworks disagree on whether the first or the last duplicate wins.
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
