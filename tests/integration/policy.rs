//! Route policy: claim requirements, owner bypass, owner fields in JSON bodies, claim headers,
//! optional authentication, and two upstreams with a prefix strip.

use serde_json::{json, Value};

use crate::common::*;

fn token_with(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(now() + 3600);
    sign_hs256(r#"{"alg":"HS256"}"#, &claims.to_string(), SECRET.as_bytes())
}

fn policy_config(default: std::net::SocketAddr, notes: std::net::SocketAddr) -> String {
    format!(
        r#"
[upstream]
url = "http://{default}"
[upstreams.notes]
url = "http://{notes}"
[auth]
secret_env = "BETTER_AUTH_SECRET"
[rate_limit]
auth_failures = "off"

[[route]]
path = "/admin/{{*rest}}"
require = {{ role = ["admin", "support"] }}

[[route]]
path = "/verified/{{*rest}}"
require = {{ emailVerified = true }}

[[route]]
path = "/with-email/{{*rest}}"
require = {{ email = "*" }}

[[route]]
path = "/org/{{*rest}}"
require = {{ "org.tier" = 2, org = {{ name = "acme" }} }}

[[route]]
path = "/api/{{user_id}}/tasks"
owner = "user_id"
owner_bypass = {{ role = ["admin"] }}
body_owner_fields = ["user_id", "userId"]
max_body_owner_bytes = 256
claim_headers = {{ "X-User-Email" = "email", "X-User-Role" = "role", "X-User-Groups" = "groups", "X-User-Tier" = "org.tier" }}

[[route]]
path = "/feed"
auth = "optional"

[[route]]
path = "/notes-api/{{*rest}}"
upstream = "notes"
strip_prefix = "/notes-api"
"#
    )
}

async fn setup_policy() -> (Backend, Backend, GatewayHandle) {
    let default = Backend::start().await;
    let notes = Backend::start().await;
    let gateway = start_gateway(&policy_config(default.addr, notes.addr), default.addr).await;
    (default, notes, gateway)
}

async fn get_as(gateway: &GatewayHandle, path: &str, token: &str) -> RawResponse {
    request(
        gateway.addr,
        "GET",
        path,
        &[("Authorization", &bearer(token))],
        b"",
    )
    .await
}

#[tokio::test]
async fn each_operator_allows_and_denies() {
    let (backend, _, gateway) = setup_policy().await;
    let cases = [
        (
            "/admin/panel",
            json!({"sub": "alice", "role": "support"}),
            200,
        ),
        (
            "/admin/panel",
            json!({"sub": "alice", "role": "viewer"}),
            403,
        ),
        ("/admin/panel", json!({"sub": "alice"}), 403),
        (
            "/verified/x",
            json!({"sub": "alice", "emailVerified": true}),
            200,
        ),
        (
            "/verified/x",
            json!({"sub": "alice", "emailVerified": "true"}),
            403,
        ),
        (
            "/verified/x",
            json!({"sub": "alice", "emailVerified": false}),
            403,
        ),
        (
            "/with-email/x",
            json!({"sub": "alice", "email": "a@example.com"}),
            200,
        ),
        ("/with-email/x", json!({"sub": "alice", "email": null}), 403),
        (
            "/org/x",
            json!({"sub": "alice", "org": {"tier": 2, "name": "acme"}}),
            200,
        ),
        (
            "/org/x",
            json!({"sub": "alice", "org": {"tier": 3, "name": "acme"}}),
            403,
        ),
        (
            "/org/x",
            json!({"sub": "alice", "org": {"tier": 2, "name": "other"}}),
            403,
        ),
        (
            "/org/x",
            json!({"sub": "alice", "org.tier": 2, "org": {"name": "acme"}}),
            403,
        ),
    ];
    let mut allowed = 0;
    for (path, claims, expected) in cases {
        let response = get_as(&gateway, path, &token_with(claims.clone())).await;
        assert_eq!(response.status, expected, "{path} {claims}");
        if expected == 403 {
            let body = response.json();
            assert_eq!(body["error"], "claim_requirement");
            let message = body["message"].as_str().unwrap();
            assert!(message.starts_with("claim `"), "{message}");
            // The rule is named; the token's own values are never echoed.
            for echoed in ["viewer", "other", "\"true\"", "3"] {
                assert!(!message.contains(echoed), "{message} echoes {echoed}");
            }
        } else {
            allowed += 1;
        }
    }
    assert_eq!(backend.count(), allowed);
    let viewer = get_as(
        &gateway,
        "/admin/panel",
        &token_with(json!({"sub": "alice", "role": "viewer"})),
    )
    .await;
    assert_eq!(
        viewer.json()["message"],
        "claim `role` must be one of [\"admin\",\"support\"]"
    );
}

#[tokio::test]
async fn admins_bypass_the_owner_rule_and_forged_roles_do_not() {
    let (backend, _, gateway) = setup_policy().await;
    let admin = token_with(json!({"sub": "alice", "role": "admin"}));
    let response = get_as(&gateway, "/api/bob/tasks", &admin).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        backend.only().header_values("x-user-id"),
        vec!["alice"],
        "the acting user, not the path owner"
    );

    // A regular user: the owner rule holds.
    let user = token_with(json!({"sub": "carol", "role": "user"}));
    assert_eq!(get_as(&gateway, "/api/bob/tasks", &user).await.status, 403);
    // The same user's token with `role: admin` pasted into the payload: the signature fails.
    let parts: Vec<&str> = user.split('.').collect();
    let forged_claims = json!({"sub": "carol", "role": "admin", "exp": now() + 3600});
    use base64::Engine;
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
        parts[2]
    );
    assert_eq!(
        get_as(&gateway, "/api/bob/tasks", &forged).await.status,
        401
    );
    // And an unsigned one.
    let unsigned = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        parts[1]
    );
    assert_eq!(
        get_as(&gateway, "/api/bob/tasks", &unsigned).await.status,
        401
    );
    // A role claim sent as a header is not a claim.
    let response = request(
        gateway.addr,
        "GET",
        "/api/bob/tasks",
        &[("Authorization", &bearer(&user)), ("X-User-Role", "admin")],
        b"",
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn owner_fields_in_json_bodies() {
    let (backend, _, gateway) = setup_policy().await;
    let auth = bearer(&token_with(json!({"sub": "alice"})));
    let post = |body: &'static [u8], content_type: &'static str| {
        post_tasks(gateway.addr, &auth, content_type, body)
    };
    let exact = br#"{"title":"x",  "user_id":"alice" ,"userId":"alice"}"#;
    assert_eq!(post(exact, "application/json").await.status, 200);
    assert_eq!(backend.only().body, exact, "forwarded byte for byte");

    let cases: [(&[u8], &str, u16); 8] = [
        (br#"{"user_id":"bob"}"#, "application/json", 403),
        (
            br#"{"userId":"bob","user_id":"alice"}"#,
            "application/json",
            403,
        ),
        (
            br#"{"user_id":"alice","user_id":"bob"}"#,
            "application/json",
            403,
        ),
        (br#"{"user_id":["alice"]}"#, "application/json", 403),
        (br#"{"task":{"user_id":"bob"}}"#, "application/json", 200),
        (br#"{"user_id":"bob"}"#, "text/plain", 415),
        (b"user_id=bob", "application/x-www-form-urlencoded", 415),
        (br#"{"user_id":"alice",}"#, "application/json", 400),
    ];
    for (body, content_type, expected) in cases {
        let response = post(body, content_type).await;
        assert_eq!(
            response.status,
            expected,
            "{} as {content_type}",
            String::from_utf8_lossy(body)
        );
    }
    let large = format!(r#"{{"user_id":"alice","pad":"{}"}}"#, "x".repeat(300));
    let response = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        large.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 413);
    // Only the allowed ones reached the backend: the exact body above and the nested one.
    let bodies: Vec<Vec<u8>> = backend.received().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        vec![exact.to_vec(), br#"{"task":{"user_id":"bob"}}"#.to_vec()]
    );
    // GET without a body is not affected.
    assert_eq!(
        request(
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            b""
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn claim_headers_are_injected_and_client_copies_stripped_everywhere() {
    let (backend, _, gateway) = setup_policy().await;
    let token = token_with(
        json!({"sub": "alice", "email": "alice@example.com", "role": "admin", "groups": ["a", "b"], "org": {"tier": 2}}),
    );
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[
            ("Authorization", &bearer(&token)),
            ("X-User-Email", "evil@example.com"),
            ("x_user_email", "evil@example.com"),
            ("X-User-Groups", "root"),
        ],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert_eq!(
        received.headers_normalized("x-user-email"),
        vec![("x-user-email", "alice@example.com")]
    );
    assert_eq!(received.header_values("x-user-role"), vec!["admin"]);
    assert_eq!(received.header_values("x-user-groups"), vec!["a,b"]);
    assert_eq!(received.header_values("x-user-tier"), vec!["2"]);

    // On a route without claim headers, and a public-ish one: client copies are still stripped.
    let response = request(
        gateway.addr,
        "GET",
        "/feed",
        &[
            ("X-User-Email", "evil@example.com"),
            ("X-User-Role", "admin"),
        ],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.received().pop().unwrap();
    assert!(received.headers_normalized("x-user-email").is_empty());
    assert!(received.headers_normalized("x-user-role").is_empty());
}

#[tokio::test]
async fn optional_authentication_covers_all_three_cases() {
    let (backend, _, gateway) = setup_policy().await;
    // No token: forwarded without identity.
    assert_eq!(
        request(gateway.addr, "GET", "/feed", &[("X-User-Id", "bob")], b"")
            .await
            .status,
        200
    );
    // A valid token: forwarded with its identity.
    assert_eq!(
        get_as(&gateway, "/feed", &token_for("alice")).await.status,
        200
    );
    // An invalid token: still 401.
    let response = get_as(&gateway, "/feed", "not.a.token").await;
    assert_eq!(response.status, 401);
    let response = request(
        gateway.addr,
        "GET",
        "/feed",
        &[("Authorization", "Basic YTpi")],
        b"",
    )
    .await;
    assert_eq!(response.status, 401);
    let identities: Vec<Vec<String>> = backend
        .received()
        .iter()
        .map(|r| {
            r.header_values("x-user-id")
                .into_iter()
                .map(String::from)
                .collect()
        })
        .collect();
    assert_eq!(identities, vec![vec![], vec!["alice".to_string()]]);
}

#[tokio::test]
async fn two_upstreams_with_a_prefix_strip() {
    let (default, notes, gateway) = setup_policy().await;
    let token = token_for("alice");
    assert_eq!(
        get_as(&gateway, "/notes-api/list/today?sort=new", &token)
            .await
            .status,
        200
    );
    assert_eq!(
        get_as(&gateway, "/notes-api/a%20b", &token).await.status,
        200
    );
    assert_eq!(
        get_as(&gateway, "/api/alice/tasks", &token).await.status,
        200
    );
    let notes_targets: Vec<String> = notes.received().into_iter().map(|r| r.target).collect();
    assert_eq!(notes_targets, vec!["/list/today?sort=new", "/a%20b"]);
    assert_eq!(default.only().target, "/api/alice/tasks");
    assert_eq!(
        notes.received()[0].header_values("x-user-id"),
        vec!["alice"]
    );
}

#[test]
fn policy_config_errors() {
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string());
    let base = policy_config(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let cases = [
        (
            "upstream = \"notes\"",
            "upstream = \"nope\"",
            "no [upstreams.nope] table",
        ),
        (
            "strip_prefix = \"/notes-api\"",
            "strip_prefix = \"/other\"",
            "whole literal leading segments",
        ),
        (
            "require = { emailVerified = true }",
            "require = { emailVerified = {} }",
            "an empty table",
        ),
        (
            "require = { email = \"*\" }",
            "require = { email = [] }",
            "a list must hold",
        ),
        (
            "max_body_owner_bytes = 256",
            "max_body_owner_bytes = 0",
            "between 1 and",
        ),
        (
            "\"X-User-Tier\" = \"org.tier\"",
            "\"Authorization\" = \"org.tier\"",
            "reserved",
        ),
        (
            "path = \"/feed\"\nauth = \"optional\"",
            "path = \"/feed/{u}\"\nauth = \"optional\"\nowner = \"u\"",
            "needs auth = \"required\"",
        ),
    ];
    for (from, to, message) in cases {
        let toml = base.replacen(from, to, 1);
        assert_ne!(toml, base, "{from} not found");
        let error = authgate::config::Config::parse(&toml, "p.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(message) && error.starts_with("p.toml:"),
            "{to}: {error}"
        );
    }
    let no_default = base.replacen("[upstream]\nurl = \"http://127.0.0.1:1\"\n", "", 1);
    let error = authgate::config::Config::parse(&no_default, "p.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no default [upstream]"), "{error}");
}

/// A body that is JSON without an owner field but a form naming bob (`{"a":"&user_id=bob&"}`)
/// is only safe if the backend agrees it is JSON: a Content-Type list, a second Content-Type, or a
/// `Connection` that would drop the checked one are refused, and nothing reaches the backend.
#[tokio::test]
async fn an_owner_checked_body_must_have_one_unambiguous_json_type() {
    let (backend, _, gateway) = setup_policy().await;
    let auth = bearer(&token_with(json!({"sub": "alice"})));
    let body = br#"{"a":"&user_id=bob&"}"#;
    let form_or_json = "application/x-www-form-urlencoded, application/a+json";
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 4] = [
        (
            &[("Content-Type", form_or_json)],
            415,
            "unsupported_media_type",
        ),
        (
            &[(
                "Content-Type",
                "application/x-www-form-urlencoded application/a+json",
            )],
            415,
            "unsupported_media_type",
        ),
        (
            &[
                ("Content-Type", "application/json"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            400,
            "bad_request",
        ),
        (
            &[
                ("Content-Type", "application/json"),
                ("Connection", "content-type"),
            ],
            400,
            "bad_request",
        ),
    ];
    for (headers, status, code) in cases {
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let response = request(gateway.addr, "POST", "/api/alice/tasks", &all, body).await;
        assert_eq!(response.status, status, "{headers:?}");
        assert_eq!(response.json()["error"], code, "{headers:?}");
    }
    assert_eq!(backend.count(), 0);
    let response = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        body,
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert_eq!(received.body, body);
    assert_eq!(
        received.header_values("content-type"),
        ["application/json; charset=utf-8"]
    );
}
