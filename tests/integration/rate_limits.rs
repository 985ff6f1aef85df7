//! Rate limits: exact burst accounting, separate buckets, per-route overrides, the brute-force
//! guard, trusted-proxy keying, and bounded memory. Quotas are chosen so that no cell replenishes
//! during a test (1 per minute), which makes the counts exact without any timing assumption.

use std::net::{IpAddr, Ipv4Addr};

use crate::common::*;

fn config_with(rate_limit: &str, server: &str) -> String {
    let routes = &BASE_CONFIG[BASE_CONFIG.find("[[route]]").unwrap()..];
    let head = &BASE_CONFIG[..BASE_CONFIG.find("[[route]]").unwrap()];
    let head = head.replace(
        "[server]\nlisten = \"127.0.0.1:0\"",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}"),
    );
    format!("{head}\n[rate_limit]\n{rate_limit}\n{routes}")
}

async fn get(
    gateway: &GatewayHandle,
    path: &str,
    user: Option<&str>,
    extra: &[(&str, &str)],
) -> RawResponse {
    let auth = user.map(|user| bearer(&token_for(user)));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    request(gateway.addr, "GET", path, &headers, b"").await
}

/// Sends the same request `times` times, one after another, so the bucket counts are exact.
async fn get_repeatedly(
    gateway: &GatewayHandle,
    times: usize,
    path: &str,
    user: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    for _ in 0..times {
        responses.push(get(gateway, path, user, extra).await);
    }
    responses
}

fn statuses(responses: &[RawResponse]) -> Vec<u16> {
    responses.iter().map(|r| r.status).collect()
}

/// Status of an anonymous request to a protected route carrying this `Authorization` value, so
/// that the brute-force guard sees it (a token made with `token_for` would verify).
async fn status_with_authorization(gateway: &GatewayHandle, authorization: &str) -> u16 {
    get(
        gateway,
        "/api/alice/tasks",
        None,
        &[("Authorization", authorization)],
    )
    .await
    .status
}

/// A fresh backend and a gateway in front of it with this `[rate_limit]` body and `[server]` extra.
async fn start_limited(rate_limit: &str, server: &str) -> (Backend, GatewayHandle) {
    let backend = Backend::start().await;
    let gateway = start_gateway(&config_with(rate_limit, server), backend.addr).await;
    (backend, gateway)
}

#[tokio::test]
async fn burst_above_quota_gets_exactly_the_expected_429s() {
    let (backend, gateway) = start_limited("per_user = \"1/m\"\nburst = 5", "").await;
    let responses = get_repeatedly(&gateway, 8, "/api/alice/tasks", Some("alice"), &[]).await;
    assert_eq!(
        statuses(&responses),
        vec![200, 200, 200, 200, 200, 429, 429, 429]
    );
    for refused in &responses[5..] {
        assert_eq!(refused.json()["error"], "rate_limited");
        // One cell per 60 s: the next one is due in (60 s - the few ms this test took), rounded up.
        let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (58..=60).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        assert_eq!(refused.header("ratelimit-limit"), Some("5"));
        assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
        assert_eq!(
            refused.header("ratelimit-reset"),
            refused.header("retry-after")
        );
    }
    assert_eq!(
        backend.count(),
        5,
        "refused requests never reach the backend"
    );
}

#[tokio::test]
async fn users_do_not_share_a_bucket() {
    let (backend, gateway) = start_limited("per_user = \"1/m\"\nburst = 2", "").await;
    let alice = get_repeatedly(&gateway, 3, "/api/alice/tasks", Some("alice"), &[]).await;
    assert_eq!(statuses(&alice), vec![200, 200, 429]);
    let bob = get_repeatedly(&gateway, 2, "/api/bob/tasks", Some("bob"), &[]).await;
    assert_eq!(statuses(&bob), vec![200, 200]);
    let received = backend.received();
    let users: Vec<Vec<&str>> = received
        .iter()
        .map(|r| r.header_values("x-user-id"))
        .collect();
    assert_eq!(
        users,
        vec![vec!["alice"], vec!["alice"], vec!["bob"], vec!["bob"]]
    );
}

#[tokio::test]
async fn per_route_overrides_have_their_own_buckets() {
    let backend = Backend::start().await;
    let config = config_with("per_user = \"1/m\"\nburst = 3", "").replace(
        "path = \"/api/{user_id}/tasks/{*rest}\"\nowner = \"user_id\"",
        "path = \"/api/{user_id}/tasks/{*rest}\"\nowner = \"user_id\"\nrate_limit = { per_user = \"1/m\", burst = 1 }",
    );
    let gateway = start_gateway(&config, backend.addr).await;
    assert_eq!(
        get(&gateway, "/api/alice/tasks/1", Some("alice"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gateway, "/api/alice/tasks/2", Some("alice"), &[])
            .await
            .status,
        429
    );
    // The global bucket is untouched by the route's.
    let global = get_repeatedly(&gateway, 4, "/api/alice/tasks", Some("alice"), &[]).await;
    assert_eq!(statuses(&global), vec![200, 200, 200, 429]);
    assert_eq!(backend.count(), 4);
}

#[tokio::test]
async fn anonymous_requests_count_per_ip() {
    let (_backend, gateway) = start_limited("per_ip = \"1/m\"\nper_ip_burst = 2", "").await;
    let anonymous = get_repeatedly(&gateway, 3, "/health", None, &[]).await;
    assert_eq!(statuses(&anonymous), vec![200, 200, 429]);
    // Authenticated users are not limited by the IP quota.
    assert_eq!(
        get(&gateway, "/api/alice/tasks", Some("alice"), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn allowed_responses_carry_ratelimit_headers_when_asked() {
    let (_backend, gateway) = start_limited(
        "per_user = \"1/m\"\nburst = 3\nrate_limit_headers = true",
        "",
    )
    .await;
    let first = get(&gateway, "/api/alice/tasks", Some("alice"), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-limit"), Some("3"));
    assert_eq!(first.header("ratelimit-remaining"), Some("2"));
    let reset: u64 = first.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!((59..=60).contains(&reset), "{reset}");
    let second = get(&gateway, "/api/alice/tasks", Some("alice"), &[]).await;
    assert_eq!(second.header("ratelimit-remaining"), Some("1"));
}

#[tokio::test]
async fn auth_failure_guard_trips_before_verification() {
    let (backend, gateway) =
        start_limited("auth_failures = \"1/m\"\nauth_failures_burst = 3", "").await;
    for _ in 0..3 {
        assert_eq!(
            status_with_authorization(&gateway, "Bearer not.a.token").await,
            401
        );
    }
    // Now even a valid token is refused before it is looked at.
    let blocked = get(&gateway, "/api/alice/tasks", Some("alice"), &[]).await;
    assert_eq!(blocked.status, 429);
    assert_eq!(blocked.json()["error"], "rate_limited");
    let retry_after: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    // Public routes are not behind the guard.
    assert_eq!(get(&gateway, "/health", None, &[]).await.status, 200);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn auth_failure_guard_fires_even_when_keys_are_unavailable() {
    // The JWKS endpoint is down: a well-formed EdDSA token would get 503. After the failures, the
    // guard answers 429 first, which shows it runs before any key lookup.
    let dead = unused_addr().await;
    let config = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\njwks_url = \"http://{dead}/jwks\"\nalgorithms = [\"EdDSA\"]\njwks_timeout = \"200ms\"\n[rate_limit]\nauth_failures = \"1/m\"\nauth_failures_burst = 2\n{}",
        &BASE_CONFIG[BASE_CONFIG.find("[[route]]").unwrap()..]
    );
    let backend = Backend::start().await;
    let gateway = start_gateway(&config, backend.addr).await;
    let key = crate::keys::TestKey::generate("EdDSA", "k1");
    let token = key.token(&serde_json::json!({"sub": "alice", "exp": now() + 900}));
    let auth = bearer(&token);
    assert_eq!(status_with_authorization(&gateway, &auth).await, 503);
    for _ in 0..2 {
        assert_eq!(
            status_with_authorization(&gateway, "Bearer x.y.z").await,
            401
        );
    }
    assert_eq!(status_with_authorization(&gateway, &auth).await, 429);
    assert_eq!(backend.count(), 0);
}

/// One request per client IP, then refused: the second request shows whose bucket it hit.
const ONE_PER_IP: &str = "per_ip = \"1/m\"\nper_ip_burst = 1";

/// Statuses of anonymous `/health` requests sent in order, each claiming one of `clients` in
/// X-Forwarded-For.
async fn health_statuses_forwarded_for(gateway: &GatewayHandle, clients: &[&str]) -> Vec<u16> {
    let mut seen = Vec::new();
    for client in clients {
        seen.push(
            get(gateway, "/health", None, &[("X-Forwarded-For", client)])
                .await
                .status,
        );
    }
    seen
}

#[tokio::test]
async fn trusted_proxies_decide_the_client_ip() {
    // Trusted: the X-Forwarded-For entry is the client, so two clients have two buckets.
    let (backend, trusted) =
        start_limited(ONE_PER_IP, "trusted_proxies = [\"127.0.0.1/32\"]").await;
    assert_eq!(
        health_statuses_forwarded_for(&trusted, &["203.0.113.1", "203.0.113.1", "203.0.113.2"])
            .await,
        vec![200, 429, 200]
    );
    let chains: Vec<Vec<String>> = backend
        .received()
        .iter()
        .map(|r| {
            r.header_values("x-forwarded-for")
                .into_iter()
                .map(String::from)
                .collect()
        })
        .collect();
    assert_eq!(
        chains,
        vec![
            vec!["203.0.113.1, 127.0.0.1"],
            vec!["203.0.113.2, 127.0.0.1"]
        ]
    );

    // Untrusted: the header is ignored and replaced, so both "clients" share the peer's bucket.
    let (backend, untrusted) = start_limited(ONE_PER_IP, "").await;
    assert_eq!(
        health_statuses_forwarded_for(&untrusted, &["203.0.113.1", "203.0.113.2"]).await,
        vec![200, 429]
    );
    assert_eq!(
        backend.only().header_values("x-forwarded-for"),
        vec!["127.0.0.1"]
    );
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_million_idle_keys_are_released() {
    let config = parse_config(&config_with("per_ip = \"1000/s\"\nper_ip_burst = 1", ""));
    let limits = authgate::ratelimit::RateLimits::new(&config.rate_limit, &config.routes);
    let before = rss_kib();
    for i in 0..1_000_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert!(limits.check_ip(0, ip).await.is_ok());
    }
    assert_eq!(limits.tracked_keys(), 1_000_000);
    let full = rss_kib();
    // Each bucket is full again after one replenish interval (1 ms); then the keys are idle.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    limits.cleanup();
    assert_eq!(limits.tracked_keys(), 0);
    let after = rss_kib();
    // Reported, not asserted: the allocator decides when pages go back to the OS.
    println!(
        "rate limiter RSS KiB: before {before:?}, with 1M keys {full:?}, after cleanup {after:?}"
    );
}
