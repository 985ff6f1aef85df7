//! Upstream failures become 502/504 JSON, never a hang or a dropped connection.

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test]
async fn backend_down_is_502() {
    let closed = unused_addr().await;
    let gateway = start_gateway(BASE_CONFIG, closed).await;
    let auth = bearer(&token_for("alice"));
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"], "upstream_unavailable");
}

#[tokio::test]
async fn slow_backend_is_504_after_the_timeout() {
    let backend = Backend::start_with_delay(Duration::from_secs(5)).await;
    let config = BASE_CONFIG.replace(r#"timeout = "2s""#, r#"timeout = "300ms""#);
    let gateway = start_gateway(&config, backend.addr).await;
    let auth = bearer(&token_for("alice"));
    let started = Instant::now();
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 504);
    assert_eq!(response.json()["error"], "upstream_timeout");
    // Not a timing assertion on performance: only that the 5 s backend did not decide the answer.
    assert!(started.elapsed() < Duration::from_secs(4));
    // The request did reach the backend (it was authorized); the backend was just slow.
    assert_eq!(backend.only().header_values("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn gateway_recovers_when_the_backend_comes_back() {
    let closed = unused_addr().await;
    let gateway = start_gateway(BASE_CONFIG, closed).await;
    let auth = bearer(&token_for("alice"));
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 502);
    // Start a backend on that same port.
    let listener = tokio::net::TcpListener::bind(closed).await.unwrap();
    tokio::spawn(authgate::demo_backend::serve(listener));
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), serde_json::json!([]));
}
