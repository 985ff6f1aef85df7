//! Default deny, methods, precedence.

use crate::common::*;

#[tokio::test]
async fn unmatched_routes_get_404_and_are_not_forwarded() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    for path in [
        "/",
        "/api",
        "/api/alice",
        "/api/alice/notes",
        "/healthz",
        "/health/x",
        "/Health",
    ] {
        let response = request(gateway.addr, "GET", path, &[("Authorization", &auth)], b"").await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["error"], "no_route");
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn wrong_method_gets_405_with_allow() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    for method in ["DELETE", "PUT", "PATCH"] {
        let response = request(
            gateway.addr,
            method,
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, POST"));
        assert_eq!(response.json()["error"], "method_not_allowed");
    }
    // Methods we never proxy.
    let response = request(
        gateway.addr,
        "TRACE",
        "/api/alice/tasks/1",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(backend.count(), 0);
}

const OVERLAP_CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:1"
[auth]
secret_env = "BETTER_AUTH_SECRET"

[[route]]
path = "/docs/{*rest}"
auth = "public"
methods = ["GET"]

[[route]]
path = "/docs/{*rest}"
methods = ["POST", "DELETE"]

[[route]]
path = "/docs/private/{page}"

[[route]]
path = "/u/{user_id}/files/{file}"
owner = "user_id"

[[route]]
path = "/u/{user_id}/files/public"
auth = "public"
"#;

#[tokio::test]
async fn static_segments_beat_parameters_and_methods_select_between_alternatives() {
    let backend = Backend::start().await;
    let gateway = start_gateway(OVERLAP_CONFIG, backend.addr).await;
    // public GET on the catch-all
    let response = request(gateway.addr, "GET", "/docs/intro/start", &[], b"").await;
    assert_eq!(response.status, 200);
    // POST on the same pattern needs a token
    let response = request(gateway.addr, "POST", "/docs/intro/start", &[], b"").await;
    assert_eq!(response.status, 401);
    // the static `private` segment wins over the public catch-all, and requires auth
    let response = request(gateway.addr, "GET", "/docs/private/plan", &[], b"").await;
    assert_eq!(response.status, 401);
    // the static `public` segment wins over {file}: public, no owner rule
    let response = request(gateway.addr, "GET", "/u/bob/files/public", &[], b"").await;
    assert_eq!(response.status, 200);
    let response = request(
        gateway.addr,
        "GET",
        "/u/bob/files/secret",
        &[("Authorization", &bearer(&token_for("alice")))],
        b"",
    )
    .await;
    assert_eq!(response.status, 403);
    let targets: Vec<String> = backend.received().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, vec!["/docs/intro/start", "/u/bob/files/public"]);
}
