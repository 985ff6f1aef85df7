//! Per-route policy on claims: requirements (`require`), the owner bypass (`owner_bypass`) and
//! claim headers (`claim_headers`). Compiled from config once; evaluated against verified claims.
//!
//! Conditions only ever look at the claims of a verified token: a claim a client merely sends (in a
//! header, or in a token whose signature fails) never reaches this module.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// What a claim must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `claim = value` (a string, number or boolean).
    Equals(Value),
    /// `claim = [a, b]`: equal to one of them, or, for an array claim, containing one of them.
    OneOf(Vec<Value>),
    /// `claim = "*"`: present and not null.
    Exists,
}

/// One condition on one claim, addressed by a dotted path (`org.role`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimCondition {
    pub path: Vec<String>,
    pub condition: Condition,
    /// The condition as written, for the 403 body: it names the rule, never the token's values.
    pub description: Arc<str>,
}

impl ClaimCondition {
    pub(crate) fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = lookup(claims, &self.path) else {
            return false;
        };
        match &self.condition {
            Condition::Exists => !value.is_null(),
            Condition::Equals(expected) => same(value, expected),
            Condition::OneOf(allowed) => match value {
                Value::Array(items) => items
                    .iter()
                    .any(|item| allowed.iter().any(|a| same(item, a))),
                single => allowed.iter().any(|a| same(single, a)),
            },
        }
    }
}

/// The first condition that does not hold, if any.
pub(crate) fn first_unmet<'c>(
    conditions: &'c [ClaimCondition],
    claims: &Map<String, Value>,
) -> Option<&'c ClaimCondition> {
    conditions.iter().find(|condition| !condition.holds(claims))
}

/// True when every condition holds (and there is at least one).
pub(crate) fn all_hold(conditions: &[ClaimCondition], claims: &Map<String, Value>) -> bool {
    !conditions.is_empty() && first_unmet(conditions, claims).is_none()
}

pub fn lookup<'v>(claims: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A header filled from a claim.
#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub name: HeaderName,
    pub path: Vec<String>,
}

impl ClaimHeader {
    /// The header value for these claims: strings as they are, numbers and booleans as JSON,
    /// arrays of those comma-joined. Anything else gives no header. So does a string (or array
    /// element) that a backend's header parser would not read back unchanged (see
    /// `identity_text::is_plain_claim_value`): it is omitted and logged, never sent trimmed or
    /// split differently from what the gateway checked.
    pub(crate) fn value(&self, claims: &Map<String, Value>) -> Option<HeaderValue> {
        let parts: Vec<String> = match lookup(claims, &self.path)? {
            Value::Array(items) => items.iter().map(scalar_text).collect::<Option<_>>()?,
            other => vec![scalar_text(other)?],
        };
        if !parts
            .iter()
            .all(|part| crate::core::identity_text::is_plain_claim_value(part))
        {
            tracing::warn!(
                header = %self.name,
                claim = %self.path.join("."),
                "claim header omitted: its value has surrounding or doubled spaces, a comma, a semicolon, or characters other than printable ASCII"
            );
            return None;
        }
        HeaderValue::from_str(&parts.join(",")).ok()
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(path: &str, condition: Condition) -> ClaimCondition {
        ClaimCondition {
            path: path.split('.').map(String::from).collect(),
            condition,
            description: path.into(),
        }
    }

    #[test]
    fn operators() {
        let claims = json!({"emailVerified": true, "role": "support", "roles": ["user", "admin"],
                            "org": {"tier": 2}, "email": "a@b.c", "gone": null});
        let claims = claims.as_object().unwrap();
        assert!(condition("emailVerified", Condition::Equals(json!(true))).holds(claims));
        assert!(!condition("emailVerified", Condition::Equals(json!("true"))).holds(claims));
        assert!(condition(
            "role",
            Condition::OneOf(vec![json!("admin"), json!("support")])
        )
        .holds(claims));
        assert!(condition("roles", Condition::OneOf(vec![json!("admin")])).holds(claims));
        assert!(!condition("roles", Condition::OneOf(vec![json!("root")])).holds(claims));
        assert!(condition("org.tier", Condition::Equals(json!(2.0))).holds(claims));
        assert!(condition("email", Condition::Exists).holds(claims));
        assert!(!condition("gone", Condition::Exists).holds(claims));
        assert!(!condition("missing.deep", Condition::Exists).holds(claims));
    }

    #[test]
    fn claim_header_values() {
        let claims = json!({"email": "a@b.c", "n": 3, "ok": false, "roles": ["a", "b"], "obj": {}, "evil": "x\r\ny",
                            "padded": " bob", "listed": "user,admin", "spaced_roles": ["a ", "b"], "name": "Ada Lovelace"});
        let claims = claims.as_object().unwrap();
        let header = |path: &str| {
            ClaimHeader {
                name: HeaderName::from_static("x-c"),
                path: vec![path.into()],
            }
            .value(claims)
        };
        assert_eq!(header("email").unwrap(), "a@b.c");
        assert_eq!(header("n").unwrap(), "3");
        assert_eq!(header("ok").unwrap(), "false");
        assert_eq!(header("roles").unwrap(), "a,b");
        assert!(header("obj").is_none());
        assert!(header("evil").is_none());
        assert!(header("padded").is_none());
        assert!(header("listed").is_none());
        assert!(header("spaced_roles").is_none());
        assert_eq!(header("name").unwrap(), "Ada Lovelace");
        assert!(header("missing").is_none());
    }
}
