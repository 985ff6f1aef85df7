//! The decision-test case file (`authgate test`): TOML, read once into typed cases. A bad file
//! stops the run with its name, the line and what was wrong, as a bad config does.
//!
//! ```toml
//! [[case]]
//! name = "bob cannot read alice's tasks"
//! request = "GET /api/alice/tasks"          # METHOD and the raw request-target, sent as is
//! headers = ["X-User-Id: alice"]            # optional, in order, duplicates kept
//! body = '{"title": "x"}'                   # optional
//! caller = { user = "bob", claims = { role = "member" } }   # optional: no caller, no credential
//! expect = { status = 403, error = "forbidden" }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::core::jose::JwsAlgorithm;

/// One decision test.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The line of its `[[case]]` table.
    pub line: usize,
    pub method: String,
    /// The request-target exactly as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub caller: Caller,
    pub expect: Expect,
}

/// Who sends the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// No credential at all.
    Anonymous,
    User(CallerUser),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallerUser {
    pub id: String,
    /// Claims besides the user claim (bearer) or user fields (session).
    pub claims: Map<String, Value>,
    pub via: Via,
    /// A credential that is wrong on purpose.
    pub flaw: Option<Flaw>,
    /// The `iss` of the issuer to sign as, when the config has several.
    pub issuer: Option<String>,
    pub algorithm: Option<JwsAlgorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Session,
}

/// How a credential is wrong (`caller.token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    Expired,
    NotYetValid,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    /// `alg: none`.
    Unsigned,
    Malformed,
}

impl Flaw {
    const NAMES: [(&'static str, Flaw); 7] = [
        ("expired", Flaw::Expired),
        ("not_yet_valid", Flaw::NotYetValid),
        ("bad_signature", Flaw::BadSignature),
        ("wrong_issuer", Flaw::WrongIssuer),
        ("wrong_audience", Flaw::WrongAudience),
        ("unsigned", Flaw::Unsigned),
        ("malformed", Flaw::Malformed),
    ];

    fn from_name(name: &str) -> Option<Flaw> {
        Flaw::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, flaw)| *flaw)
    }

    pub fn name(self) -> &'static str {
        Flaw::NAMES
            .iter()
            .find(|(_, flaw)| *flaw == self)
            .map_or("?", |(name, _)| name)
    }

    /// Whether a session cookie can be wrong this way.
    pub fn applies_to_sessions(self) -> bool {
        matches!(self, Flaw::Expired | Flaw::BadSignature | Flaw::Malformed)
    }
}

/// What must happen.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub status: u16,
    /// The `error` code of the gateway's JSON refusal.
    pub error: Option<String>,
    /// Whether the request reaches the backend; by default when the status is 2xx.
    pub forwarded: bool,
    /// The request-target the backend receives.
    pub target: Option<String>,
    /// The identity header the backend receives.
    pub user_id: Option<String>,
    /// Headers the backend receives, with exactly these values.
    pub headers: Vec<(String, String)>,
    /// Headers the backend must not receive.
    pub absent_headers: Vec<String>,
}

/// A case file that cannot be used: where and why.
#[derive(Debug)]
pub struct CaseFileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for CaseFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(rename = "case", default)]
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    request: Spanned<String>,
    #[serde(default)]
    headers: Vec<Spanned<String>>,
    body: Option<String>,
    caller: Option<Spanned<RawCaller>>,
    expect: Spanned<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    user: Option<String>,
    #[serde(default)]
    claims: toml::Table,
    via: Option<String>,
    token: Option<String>,
    issuer: Option<String>,
    algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    status: u16,
    error: Option<String>,
    forwarded: Option<bool>,
    target: Option<String>,
    user_id: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_headers: Vec<String>,
}

/// The user a flawed credential names when the case gives none.
const DEFAULT_FLAWED_USER: &str = "test-user";

/// Reads a case file.
pub fn load(path: &std::path::Path) -> Result<Vec<Case>, CaseFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| CaseFileError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read the case file: {err}"),
    })?;
    parse(&text, &file)
}

/// Parses case-file text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<Case>, CaseFileError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let error = |offset: usize, message: String| CaseFileError {
        file: file.to_string(),
        line: line_of(offset),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        error(offset, err.message().to_string())
    })?;
    if raw.cases.is_empty() {
        return Err(CaseFileError {
            file: file.to_string(),
            line: 0,
            message: "no [[case]] tables".into(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut cases = Vec::with_capacity(raw.cases.len());
    for spanned in raw.cases {
        let at = spanned.span().start;
        let raw = spanned.into_inner();
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(error(raw.name.span().start, "`name` is empty".into()));
        }
        if !seen.insert(name.clone()) {
            return Err(error(
                raw.name.span().start,
                format!("two cases are named {name:?}"),
            ));
        }
        let in_case = |offset: usize, message: String| error(offset, format!("{name}: {message}"));
        let (method, target) = request_line(raw.request.get_ref())
            .map_err(|why| in_case(raw.request.span().start, format!("`request`: {why}")))?;
        let mut headers = Vec::new();
        for header in &raw.headers {
            let parsed = header_line(header.get_ref())
                .map_err(|why| in_case(header.span().start, format!("`headers`: {why}")))?;
            headers.push(parsed);
        }
        let caller = match raw.caller {
            None => Caller::Anonymous,
            Some(caller) => {
                let offset = caller.span().start;
                self::caller(caller.into_inner())
                    .map_err(|why| in_case(offset, format!("`caller`: {why}")))?
            }
        };
        let expect_at = raw.expect.span().start;
        let expect = expect(raw.expect.into_inner())
            .map_err(|why| in_case(expect_at, format!("`expect`: {why}")))?;
        cases.push(Case {
            name,
            line: line_of(at),
            method,
            target,
            headers,
            body: raw.body.unwrap_or_default().into_bytes(),
            caller,
            expect,
        });
    }
    Ok(cases)
}

fn request_line(line: &str) -> Result<(String, String), String> {
    let (method, target) = line
        .split_once(' ')
        .ok_or("expected \"METHOD TARGET\", e.g. \"GET /api/alice/tasks\"")?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("{method:?} is not a method"));
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        return Err(format!(
            "the target {target:?} is empty or has whitespace or control characters (one line: METHOD TARGET)"
        ));
    }
    Ok((method.to_string(), target.to_string()))
}

fn header_line(line: &str) -> Result<(String, String), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} is not \"Name: value\""))?;
    if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("the value of {name} has a line break"));
    }
    Ok((name.to_string(), value.trim_start_matches(' ').to_string()))
}

fn caller(raw: RawCaller) -> Result<Caller, String> {
    let via = match raw.via.as_deref() {
        None | Some("bearer") => Via::Bearer,
        Some("session") => Via::Session,
        Some(other) => return Err(format!("via {other:?}: expected \"bearer\" or \"session\"")),
    };
    let flaw = match raw.token.as_deref() {
        None => None,
        Some(name) => Some(Flaw::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Flaw::NAMES.iter().map(|(name, _)| *name).collect();
            format!("token {name:?}: expected one of {}", known.join(", "))
        })?),
    };
    if let (Some(flaw), Via::Session) = (flaw, via) {
        if !flaw.applies_to_sessions() {
            return Err(format!(
                "token {:?} is about JWTs; a session cookie can be expired, bad_signature or malformed",
                flaw.name()
            ));
        }
    }
    let id = match (raw.user, flaw) {
        (Some(user), _) if !user.is_empty() => user,
        (Some(_), _) => return Err("user is empty".into()),
        (None, Some(_)) => DEFAULT_FLAWED_USER.to_string(),
        (None, None) => {
            return Err(
                "give a `user` (or a flawed `token`); leave `caller` out for no credential".into(),
            )
        }
    };
    let claims = match serde_json::to_value(&raw.claims) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err("claims must be a table of JSON-like values".into()),
    };
    let algorithm = match raw.algorithm.as_deref() {
        None => None,
        Some(name) => Some(
            JwsAlgorithm::from_name(name)
                .ok_or_else(|| format!("algorithm {name:?} is not a JWS algorithm"))?,
        ),
    };
    if via == Via::Session && (algorithm.is_some() || raw.issuer.is_some()) {
        return Err("issuer and algorithm are for bearer tokens".into());
    }
    Ok(Caller::User(CallerUser {
        id,
        claims,
        via,
        flaw,
        issuer: raw.issuer,
        algorithm,
    }))
}

fn expect(raw: RawExpect) -> Result<Expect, String> {
    if !(100..=599).contains(&raw.status) {
        return Err(format!("status {} is not an HTTP status", raw.status));
    }
    let forwarded = raw.forwarded.unwrap_or((200..300).contains(&raw.status));
    let backend_checks = raw.target.is_some()
        || raw.user_id.is_some()
        || !raw.headers.is_empty()
        || !raw.absent_headers.is_empty();
    if backend_checks && !forwarded {
        return Err(
            "target, user_id, headers and absent_headers describe what the backend receives: they need a forwarded request (a 2xx status, or forwarded = true)"
                .into(),
        );
    }
    if raw.error.is_some() && forwarded {
        return Err(
            "error is the code of the gateway's own refusal; a forwarded request has none".into(),
        );
    }
    Ok(Expect {
        status: raw.status,
        error: raw.error,
        forwarded,
        target: raw.target,
        user_id: raw.user_id,
        headers: raw.headers.into_iter().collect(),
        absent_headers: raw.absent_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_file_becomes_typed_cases() {
        let cases = parse(
            r#"
[[case]]
name = "ok"
request = "POST /api/alice/tasks?x=1"
headers = ["Content-Type: application/json", "X-User-Id: bob"]
body = '{"a": 1}'
caller = { user = "alice", claims = { role = "admin" } }
expect = { status = 201, target = "/api/alice/tasks?x=1", user_id = "alice" }

[[case]]
name = "expired"
request = "GET /api/alice/tasks"
caller = { token = "expired" }
expect = { status = 401, error = "token_expired" }
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].line, 2);
        assert_eq!(cases[0].method, "POST");
        assert_eq!(cases[0].headers[1], ("X-User-Id".into(), "bob".into()));
        assert!(cases[0].expect.forwarded);
        let Caller::User(user) = &cases[1].caller else {
            panic!("a caller")
        };
        assert_eq!(user.flaw, Some(Flaw::Expired));
        assert_eq!(user.id, DEFAULT_FLAWED_USER);
        assert!(!cases[1].expect.forwarded);
        assert_eq!(cases[1].line, 10);
    }

    #[test]
    fn a_bad_case_names_its_line_and_what_is_wrong() {
        for (text, line, wanted) in [
            ("[[case]]\nname = \"a\"\nrequest = \"GET\"\nexpect = { status = 200 }\n", 3, "METHOD TARGET"),
            ("[[case]]\nname = \"a\"\nrequest = \"GET /x\"\nexpect = { status = 200 }\ncolour = 1\n", 5, "colour"),
            ("[[case]]\nname = \"a\"\nrequest = \"GET /x\"\ncaller = { via = \"carrier pigeon\", user = \"u\" }\nexpect = { status = 200 }\n", 4, "via"),
            ("[[case]]\nname = \"a\"\nrequest = \"GET /x\"\nexpect = { status = 403, user_id = \"u\" }\n", 4, "forwarded"),
            ("[[case]]\nname = \"a\"\nrequest = \"GET /x\"\ncaller = { token = \"stale\" }\nexpect = { status = 401 }\n", 4, "expired"),
            ("[[case]]\nname = \"a\"\nrequest = \"GET /x\"\nexpect = { status = 200 }\n[[case]]\nname = \"a\"\nrequest = \"GET /y\"\nexpect = { status = 200 }\n", 6, "two cases"),
            ("", 0, "no [[case]]"),
        ] {
            let error = parse(text, "t.toml").unwrap_err();
            assert_eq!(error.line, line, "{error}");
            assert!(error.to_string().contains(wanted), "{error}");
        }
    }
}
