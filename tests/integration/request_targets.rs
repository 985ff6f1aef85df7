//! Malicious request-targets, sent as raw bytes over TCP: each is refused with a 4xx and none
//! reaches the backend. The token is alice's, so a gateway that normalized `/api/alice/../bob`
//! into `/api/bob` or read `%2f` as a separator would be caught by the owner rule only by luck;
//! we require the refusal to happen for the right reason where it is ours to give.

use crate::common::*;

/// (request line target, expected status). 400 is ours (or hyper's, for targets it cannot parse);
/// 403/404 are listed where the path is unambiguous but not alice's or not routed.
const TARGETS: &[(&str, u16)] = &[
    // dot segments, raw and encoded
    ("/api/alice/../bob/tasks", 400),
    ("/api/alice/./tasks", 400),
    ("/api/bob/tasks/..", 400),
    ("/api/alice/%2e%2e/bob/tasks", 400),
    ("/api/alice/%2E%2E/bob/tasks", 400),
    ("/api/alice/.%2e/bob/tasks", 400),
    ("/api/alice/%2e./bob/tasks", 400),
    ("/api/alice/%2e/tasks", 400),
    ("/api/alice/tasks/%2e%2e/%2e%2e/bob/tasks", 400),
    // encoded slashes and backslashes
    ("/api/alice%2f..%2fbob/tasks", 400),
    ("/api/alice%2Fbob/tasks", 400),
    ("/api/alice/tasks%2f..%2f..%2fbob%2ftasks", 400),
    ("/api/alice/%5c..%5cbob/tasks", 400),
    ("/api/alice%5Cbob/tasks", 400),
    ("/api/alice\\..\\bob/tasks", 400),
    ("/api/alice/tasks\\1", 400),
    // NUL and control characters
    ("/api/alice/tasks%00", 400),
    ("/api/alice%00/tasks", 400),
    ("/api/alice/%0d%0aX-User-Id:bob", 400),
    ("/api/alice/tasks%09", 400),
    ("/api/alice/%7f", 400),
    // overlong and invalid UTF-8
    ("/api/alice/%c0%ae%c0%ae/bob/tasks", 400),
    ("/api/alice/%c0%af", 400),
    ("/api/%e0%80%ae%e0%80%ae/bob/tasks", 400),
    ("/api/ali%ffce/tasks", 400),
    ("/api/alice/%ed%a0%80", 400),
    // ;parameters (Tomcat strips them)
    ("/api/alice;x=1/tasks", 400),
    ("/api/alice/tasks;jsessionid=1", 400),
    ("/api/alice/..;/bob/tasks", 400),
    ("/api/bob;alice/tasks", 400),
    ("/api/alice%3bx/tasks", 400),
    // double encoding
    ("/api/alice/%252e%252e/bob/tasks", 400),
    ("/api/alice%252fbob/tasks", 400),
    ("/api/%2561lice/tasks", 400),
    // malformed escapes and encoded delimiters
    ("/api/alice/tasks%", 400),
    ("/api/alice/tasks%2", 400),
    ("/api/alice/tasks%zz", 400),
    ("/api/alice/tasks%23frag", 400),
    ("/api/alice/tasks%3fuser_id=bob", 400),
    // empty segments
    ("//api/alice/tasks", 400),
    ("/api//alice/tasks", 400),
    ("/api/alice//tasks", 400),
    ("/api/alice/tasks/", 400),
    ("/api/bob/tasks//", 400),
    // absolute-form and asterisk-form
    ("http://127.0.0.1/api/alice/tasks", 400),
    ("http://evil.test/api/bob/tasks", 400),
    ("https://gateway.test/api/alice/tasks", 400),
    ("*", 400),
    // query tricks
    ("/api/alice/tasks?x=1;user_id=bob", 400),
    ("/api/alice/tasks?user_id=%zz", 400),
    ("/api/alice/tasks?user_id=bob", 403),
    // raw non-ASCII
    ("/api/alic\u{e9}/tasks", 400),
    // unambiguous, but not alice's, or not routed (case-sensitive)
    ("/api/bob/tasks", 403),
    ("/api/Alice/tasks", 403),
    ("/API/alice/tasks", 404),
    ("/api/alice/Tasks", 404),
    ("/api/alice", 404),
    ("/admin", 404),
];

#[tokio::test]
async fn malicious_targets_are_refused_and_never_forwarded() {
    assert!(TARGETS.len() >= 40);
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let mut failures = Vec::new();
    for (target, expected) in TARGETS {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
        let response = send_raw(gateway.addr, raw.as_bytes()).await;
        if response.status != *expected {
            failures.push(format!(
                "{target:?}: expected {expected}, got {} {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
    assert_eq!(backend.count(), 0, "forwarded: {:#?}", backend.received());
}

#[tokio::test]
async fn refusals_name_the_rule_that_fired() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    for (target, message) in [
        ("/api/alice/../bob/tasks", "dot segment in path"),
        ("/api/alice%2fbob/tasks", "encoded slash in path"),
        ("/api/alice;x/tasks", "semicolon in path"),
        ("/api//alice/tasks", "empty path segment"),
        (
            "/api/%2561/tasks",
            "encoded percent sign in path (double encoding)",
        ),
        (
            "/api/a%c0%ae/tasks",
            "path is not valid UTF-8 after decoding",
        ),
    ] {
        let response = request(
            gateway.addr,
            "GET",
            target,
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(response.status, 400, "{target}");
        assert_eq!(
            response.json(),
            serde_json::json!({"error": "bad_target", "message": message})
        );
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn other_request_forms_are_refused() {
    let (backend, gateway) = setup().await;
    for raw in [
        "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n",
        "GET /api/alice/tasks HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    ] {
        let response = send_raw(gateway.addr, raw.as_bytes()).await;
        assert!((400..500).contains(&response.status), "{raw:?}: {}", response.status);
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn accepted_targets_are_forwarded_byte_for_byte() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let target = "/api/alice/tasks/caf%C3%A9/%7Enote?sort=asc&q=a%20b";
    let response = request(
        gateway.addr,
        "GET",
        target,
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.only().target, target);
}
