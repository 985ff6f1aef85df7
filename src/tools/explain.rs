//! `authgate explain`: one request through a config, stage by stage. The answer itself comes from
//! the real pipeline (`tools::harness`, as `authgate test` runs it); the stages before it show why:
//! the target as the gateway reads it, every route and whether it matches, and the chosen route's
//! rules checked against the caller.

use std::fmt::Write as _;

use http::Method;
use serde_json::{Map, Value};

use crate::config::{AuthMode, Config};
use crate::core::error::GatewayError;
use crate::request::routes::RouteTable;
use crate::tools::cases::{Caller, CallerUser, Case, Expect, Via};
use crate::tools::harness::{Harness, Outcome};

/// What to explain.
pub struct Question {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub user: Option<String>,
    pub claims: Map<String, Value>,
    pub via: Via,
}

/// Runs the request and writes the explanation.
pub async fn explain(config: Config, question: Question) -> Result<String, String> {
    let mut out = String::new();
    let caller = match &question.user {
        None => Caller::Anonymous,
        Some(user) => Caller::User(CallerUser {
            id: user.clone(),
            claims: question.claims.clone(),
            via: question.via,
            flaw: None,
            issuer: None,
            algorithm: None,
        }),
    };
    let _ = writeln!(out, "request   {} {}", question.method, question.target);
    match &caller {
        Caller::Anonymous => {
            let _ = writeln!(out, "caller    none (no credential)");
        }
        Caller::User(user) => {
            let how = match user.via {
                Via::Bearer => "a bearer token from the test issuer",
                Via::Session => "a Better Auth session cookie from the test issuer",
            };
            let _ = writeln!(
                out,
                "caller    {} ({how}){}",
                user.id,
                if user.claims.is_empty() {
                    String::new()
                } else {
                    format!(", claims {}", Value::Object(user.claims.clone()))
                }
            );
        }
    }
    explain_routes(&config, &question, &caller, &mut out);

    let harness = Harness::start(config).await?;
    let case = Case {
        name: "explain".into(),
        line: 0,
        method: question.method.clone(),
        target: question.target.clone(),
        headers: question.headers.clone(),
        body: Vec::new(),
        caller,
        expect: Expect::default(),
    };
    let outcome = harness.run(&case).await?;
    answer(&outcome, &mut out);
    Ok(out)
}

fn explain_routes(config: &Config, question: &Question, caller: &Caller, out: &mut String) {
    let uri = match question.target.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(err) => {
            let _ = writeln!(out, "target    not a request-target: {err}");
            return;
        }
    };
    let target = match crate::request::target::validate(&uri, http::Version::HTTP_11) {
        Ok(target) => target,
        Err(err) => {
            let _ = writeln!(
                out,
                "target    refused before routing: {} {} ({})",
                err.status().as_u16(),
                err.code(),
                err
            );
            return;
        }
    };
    let _ = writeln!(
        out,
        "target    path {:?} (decoded once), query {}",
        target.path,
        target
            .query
            .map_or("none".to_string(), |query| format!("{query:?}"))
    );
    let Ok(method) = question.method.parse::<Method>() else {
        let _ = writeln!(out, "method    {:?} is not a method", question.method);
        return;
    };
    let chosen = RouteTable::compile(&config.routes).ok().and_then(|table| {
        table
            .lookup(&method, &target.path)
            .ok()
            .map(|matched| matched.route.index)
    });
    let _ = writeln!(
        out,
        "routes    (the most specific pattern wins; order does not matter)"
    );
    for (index, route) in config.routes.iter().enumerate() {
        let methods = route
            .methods
            .as_ref()
            .map_or("any method".to_string(), |methods| {
                methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        let verdict = match RouteTable::compile(std::slice::from_ref(route)) {
            Err(err) => format!("cannot be compiled alone: {err}"),
            Ok(table) => match table.lookup(&method, &target.path) {
                Ok(matched) if chosen == Some(index) => {
                    let params: Vec<String> = matched
                        .params
                        .iter()
                        .map(|(name, value)| format!("{name} = {value:?}"))
                        .collect();
                    format!(
                        "CHOSEN{}",
                        if params.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", params.join(", "))
                        }
                    )
                }
                Ok(_) => "matches, but a more specific pattern wins".to_string(),
                Err(GatewayError::MethodNotAllowed(_)) => {
                    format!("path matches, {method} is not allowed")
                }
                Err(_) => "path does not match".to_string(),
            },
        };
        let _ = writeln!(
            out,
            "  {} {:<32} [{methods}] {verdict}",
            if chosen == Some(index) { "->" } else { "  " },
            route.path
        );
    }
    let Some(index) = chosen else {
        let _ = writeln!(
            out,
            "          no route takes {method} {}: default deny",
            target.path
        );
        return;
    };
    let route = &config.routes[index];
    let _ = writeln!(
        out,
        "rules     of {} ({}:{})",
        route.path, route.location.file, route.location.line
    );
    let auth = match route.auth {
        AuthMode::Public => "public: no credential needed, none forwarded",
        AuthMode::Optional => "optional: a valid credential forwards its identity",
        AuthMode::Required => "required",
    };
    let _ = writeln!(
        out,
        "  auth      {auth}; accepts {}",
        match (route.auth_methods.bearer, route.auth_methods.session) {
            (true, true) => "a bearer token or a session cookie",
            (true, false) => "a bearer token only",
            (false, true) => "a session cookie only",
            (false, false) => "nothing",
        }
    );
    let claims = match caller {
        Caller::Anonymous => None,
        Caller::User(user) => {
            let mut claims = user.claims.clone();
            claims.insert(
                config.auth.user_claim.clone(),
                Value::from(user.id.as_str()),
            );
            Some((user.id.as_str(), claims))
        }
    };
    if let Some(owner) = &route.owner {
        let value = RouteTable::compile(std::slice::from_ref(route))
            .ok()
            .and_then(|table| {
                table
                    .lookup(&method, &target.path)
                    .ok()
                    .and_then(|matched| matched.param(owner).map(str::to_string))
            });
        let verdict = match (&claims, &value) {
            (Some((user, _)), Some(value)) if value == user => "holds".to_string(),
            (Some((user, _)), Some(value)) => format!("fails: {value:?} is not {user:?}"),
            (None, _) => "needs a caller".to_string(),
            (_, None) => "the parameter is missing".to_string(),
        };
        let _ = writeln!(
            out,
            "  owner     {{{owner}}} must equal the caller's id: {verdict}"
        );
        for bypass in &route.owner_bypass {
            let holds = claims
                .as_ref()
                .is_some_and(|(_, claims)| bypass.holds(claims));
            let _ = writeln!(
                out,
                "  bypass    {}: {}",
                bypass.description,
                if holds {
                    "holds (owner rule lifted)"
                } else {
                    "does not hold"
                }
            );
        }
    }
    for condition in &route.require {
        let holds = claims
            .as_ref()
            .is_some_and(|(_, claims)| condition.holds(claims));
        let _ = writeln!(
            out,
            "  require   {}: {}",
            condition.description,
            if holds { "holds" } else { "does not hold" }
        );
    }
    for header in &route.claim_headers {
        let _ = writeln!(
            out,
            "  header    {} from claim {}",
            header.name,
            header.path.join(".")
        );
    }
}

fn answer(outcome: &Outcome, out: &mut String) {
    match (&outcome.received, &outcome.error) {
        (Some(received), _) => {
            let _ = writeln!(out, "answer    forwarded; the backend receives:");
            let _ = writeln!(out, "          {} {}", received.method, received.target);
            for (name, value) in &received.headers {
                let _ = writeln!(out, "          {name}: {value}");
            }
        }
        (None, Some((code, message))) => {
            let _ = writeln!(
                out,
                "answer    {} {code}: {message}\n          the backend receives nothing",
                outcome.status
            );
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "answer    {} from the gateway itself; the backend receives nothing",
                outcome.status
            );
        }
    }
}
