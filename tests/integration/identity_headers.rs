//! Client-supplied identity is never forwarded: only the gateway's one trusted X-User-Id arrives.

use crate::common::*;

const PATH: &str = "/api/alice/tasks";

async fn forwarded_with(extra: &[(&str, &str)]) -> Received {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let response = request(gateway.addr, "GET", PATH, &headers, b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    backend.only()
}

fn assert_only_trusted_identity(received: &Received) {
    assert_eq!(
        received.headers_normalized("x-user-id"),
        vec![("x-user-id", "alice")]
    );
}

#[tokio::test]
async fn spoofed_x_user_id_is_replaced() {
    let received = forwarded_with(&[("X-User-Id", "bob")]).await;
    assert_only_trusted_identity(&received);
}

#[tokio::test]
async fn underscore_and_case_variants_are_dropped() {
    let received = forwarded_with(&[
        ("x_user_id", "bob"),
        ("X_USER_ID", "bob"),
        ("X-USER-ID", "bob"),
        ("x-user_id", "bob"),
        ("X-User-Email", "bob@example.com"),
        ("x_user_email", "bob@example.com"),
        ("X-User-Role", "admin"),
    ])
    .await;
    assert_only_trusted_identity(&received);
    assert!(received.headers_normalized("x-user-email").is_empty());
    assert!(received.headers_normalized("x-user-role").is_empty());
    assert!(
        received.headers.iter().all(|(name, _)| !name.contains('_')),
        "{:?}",
        received.headers
    );
}

#[tokio::test]
async fn duplicated_identity_headers_are_dropped() {
    let received = forwarded_with(&[
        ("X-User-Id", "bob"),
        ("X-User-Id", "carol"),
        ("x-user-id", "alice"),
    ])
    .await;
    assert_only_trusted_identity(&received);
}

#[tokio::test]
async fn connection_nominating_identity_or_authorization_is_refused() {
    for nominated in [
        "X-User-Id",
        "x_user_id",
        "close, X-User-Id",
        "Authorization",
        "keep-alive, authorization",
        "X-User-Role",
    ] {
        let (backend, gateway) = setup().await;
        let auth = bearer(&token_for("alice"));
        // Our builder already sends `Connection: close`; a second Connection header is the attack.
        let response = request(
            gateway.addr,
            "GET",
            PATH,
            &[("Authorization", &auth), ("Connection", nominated)],
            b"",
        )
        .await;
        assert_eq!(response.status, 400, "Connection: {nominated}");
        assert_eq!(response.json()["error"], "bad_request");
        assert_eq!(backend.count(), 0);
    }
}

#[tokio::test]
async fn connection_nominated_headers_and_hop_by_hop_are_dropped() {
    let received = forwarded_with(&[
        ("Connection", "X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-Kept", "yes"),
    ])
    .await;
    for name in [
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            received.header_values(name).is_empty(),
            "{name} was forwarded"
        );
    }
    assert_eq!(received.header_values("x-kept"), vec!["yes"]);
    assert_only_trusted_identity(&received);
}

#[tokio::test]
async fn forwarding_headers_are_set_by_the_gateway() {
    let received = forwarded_with(&[
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Original-URL", "/api/bob/tasks"),
        ("X-Rewrite-URL", "/api/bob/tasks"),
        ("X-Forwarded-Uri", "/api/bob/tasks"),
        ("X-Forwarded-Prefix", "/admin"),
        ("x_forwarded_for", "6.6.6.6"),
    ])
    .await;
    assert_eq!(
        received.headers_normalized("x-forwarded-for"),
        vec![("x-forwarded-for", "127.0.0.1")]
    );
    assert_eq!(received.header_values("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        received.header_values("x-forwarded-host"),
        vec!["gateway.test"]
    );
    for name in [
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-uri",
        "x-forwarded-prefix",
    ] {
        assert!(
            received.headers_normalized(name).is_empty(),
            "{name} was forwarded"
        );
    }
    assert_eq!(received.header_values("via"), vec!["1.1 authgate"]);
    assert_only_trusted_identity(&received);
}

#[tokio::test]
async fn public_routes_forward_no_identity() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let response = request(
        gateway.addr,
        "GET",
        "/health",
        &[
            ("Authorization", &auth),
            ("X-User-Id", "bob"),
            ("x_user_id", "bob"),
        ],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert!(
        received.headers_normalized("x-user-id").is_empty(),
        "{:?}",
        received.headers
    );
}

#[tokio::test]
async fn request_body_is_forwarded_unchanged() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let body = br#"{"title":"write tests","user_id":"alice"}"#;
    let response = request(
        gateway.addr,
        "POST",
        PATH,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert_eq!(received.method, "POST");
    assert_eq!(received.body, body);
    assert_eq!(
        received.header_values("content-type"),
        vec!["application/json"]
    );
}
