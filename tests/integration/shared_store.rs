//! `[store]`: rate limits and the brute-force guard shared through a real `redis-server`, across
//! real gateway processes; and what happens when Redis is killed, restarted, slow, or reconfigured.
//! Quotas are per minute, so no cell replenishes during a test and the counts are exact.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::redis_server::RedisServer;

/// BASE_CONFIG with this `[rate_limit]` body and, when given, this `[store]` body.
fn config(rate_limit: &str, store: Option<&str>) -> String {
    let split = BASE_CONFIG.find("[[route]]").unwrap();
    let store = store.map_or(String::new(), |body| format!("[store]\n{body}\n"));
    format!(
        "{}\n[rate_limit]\n{rate_limit}\n\n{store}\n{}",
        &BASE_CONFIG[..split],
        &BASE_CONFIG[split..]
    )
}

fn store_table(redis: &RedisServer, extra: &str) -> String {
    format!(
        "redis_url = \"{}\"\nop_timeout = \"50ms\"\nbreaker_open = \"200ms\"\n{extra}",
        redis.url()
    )
}

/// A backend, and an in-process gateway in front of it sharing `redis` with this `[rate_limit]` body
/// and these extra `[store]` keys.
async fn start_shared(
    redis: &RedisServer,
    rate_limit: &str,
    store: &str,
) -> (Backend, GatewayHandle) {
    let backend = Backend::start().await;
    let gateway = start_gateway(
        &config(rate_limit, Some(&store_table(redis, store))),
        backend.addr,
    )
    .await;
    (backend, gateway)
}

async fn get_tasks(addr: SocketAddr, user: &str) -> RawResponse {
    request(
        addr,
        "GET",
        &format!("/api/{user}/tasks"),
        &[("Authorization", &bearer(&token_for(user)))],
        b"",
    )
    .await
}

fn metric(gateway: &GatewayHandle, line_start: &str) -> f64 {
    gateway
        .live
        .metrics()
        .render()
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn store_state(gateway: &GatewayHandle) -> &'static str {
    gateway.live.gateway().store().unwrap().state().name()
}

async fn wait_for_state(gateway: &GatewayHandle, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store_state(gateway) != state {
        assert!(
            Instant::now() < deadline,
            "the store did not turn {state}: {}",
            store_state(gateway)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway binary with `config` on a free port in front of `backend`.
struct Replica {
    addr: SocketAddr,
    child: Child,
}

impl Replica {
    fn start(config: &str, backend: SocketAddr, name: &str) -> Replica {
        let port = free_port();
        let path = std::env::temp_dir().join(format!(
            "authgate-store-{name}-{}-{port}.toml",
            std::process::id()
        ));
        std::fs::write(&path, on_port_before(config, port, backend)).unwrap();
        let log = std::fs::File::create(path.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["--config", path.to_str().unwrap()])
            .env("BETTER_AUTH_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until_listening(addr);
        Replica { addr, child }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn three_replicas_share_one_per_user_quota() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let config = config(
        "per_user = \"10/m\"\nrate_limit_headers = true",
        Some(&store_table(&redis, "")),
    );
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(&config, backend.addr, &format!("quota{i}")))
        .collect();
    let mut allowed = 0;
    let mut refused = Vec::new();
    for i in 0..30 {
        let response = get_tasks(replicas[i % 3].addr, "alice").await;
        match response.status {
            200 => allowed += 1,
            429 => refused.push(response),
            other => panic!(
                "request {i}: unexpected {other}: {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
    }
    assert_eq!(allowed, 10, "exactly the quota is allowed across the three");
    assert_eq!(refused.len(), 20);
    let received = backend.received();
    assert_eq!(received.len(), 10, "nothing refused reached the backend");
    assert!(received
        .iter()
        .all(|r| r.header_values("x-user-id") == ["alice"]));
    // 429s keep today's headers.
    let refusal = &refused[0];
    assert_eq!(refusal.json()["error"], "rate_limited");
    let retry_after: u64 = refusal.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry_after), "one cell is due in 6 s");
    assert_eq!(refusal.header("ratelimit-limit"), Some("10"));
    assert_eq!(refusal.header("ratelimit-remaining"), Some("0"));
    // Another user has a bucket of its own, on every replica.
    for replica in &replicas {
        assert_eq!(get_tasks(replica.addr, "bob").await.status, 200);
    }
    // Every key expires on its own: when its bucket is full again, rounded up to a whole second.
    let ttl: i64 = redis
        .command(&["PTTL", "authgate:user:*:alice"])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(
        ttl > 59_000 && ttl <= 61_000,
        "the bucket expires within a second of being full again: {ttl}"
    );
}

/// Concurrent requests on one replica are decided together (one script call per batch); a user
/// named several times in one batch is stepped once per request, in order.
#[tokio::test]
async fn concurrent_requests_on_one_replica_share_the_quota_exactly() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let config = config("per_user = \"20/m\"", Some(&store_table(&redis, "")));
    let replica = Replica::start(&config, backend.addr, "batch");
    let requests: Vec<_> = (0..60)
        .map(|_| tokio::spawn(get_tasks(replica.addr, "alice")))
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap().status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 40);
    assert_eq!(backend.count(), 20, "nothing refused reached the backend");
}

/// A bucket stepped many times within one second keeps its expiry (KEEPTTL); it still expires
/// within a second of being full again.
#[tokio::test]
async fn a_hot_bucket_keeps_a_bounded_expiry() {
    let redis = RedisServer::start();
    let (backend, gateway) = start_shared(&redis, "per_user = \"600/m\"", "").await;
    for _ in 0..5 {
        assert_eq!(get_tasks(gateway.addr, "alice").await.status, 200);
    }
    assert_eq!(backend.count(), 5);
    let key = "authgate:user:*:alice";
    let ttl: i64 = redis
        .command(&["PTTL", key])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    // Five cells of 100 ms are taken: full again in at most 500 ms, expiring within a second of it.
    assert!(ttl > 0 && ttl <= 1_500, "{ttl}");
    let tat: u64 = redis
        .command(&[
            "EVAL",
            "return tonumber(redis.call('GET', KEYS[1]))",
            "1",
            key,
        ])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(
        tat > 1_700_000_000_000_000,
        "the TAT is in microseconds of Redis time: {tat}"
    );
}

#[tokio::test]
async fn bad_tokens_over_three_replicas_share_the_brute_force_guard() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let config = config(
        "auth_failures = \"1/m\"\nauth_failures_burst = 6",
        Some(&store_table(&redis, "")),
    );
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(&config, backend.addr, &format!("guard{i}")))
        .collect();
    let mut statuses = Vec::new();
    for i in 0..15 {
        let forged = format!("{}x", token_for("alice"));
        let response = request(
            replicas[i % 3].addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &bearer(&forged))],
            b"",
        )
        .await;
        statuses.push(response.status);
    }
    assert_eq!(
        statuses[..6],
        [401; 6],
        "six failures in total, over three replicas"
    );
    assert_eq!(
        statuses[6..],
        [429; 9],
        "then every replica refuses: {statuses:?}"
    );
    // A valid token not seen before is not looked at either while the IP is blocked.
    for replica in &replicas {
        assert_eq!(get_tasks(replica.addr, "carol").await.status, 429);
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_key_over_its_limit_is_refused_without_asking_the_store_again() {
    let redis = RedisServer::start();
    let (backend, gateway) = start_shared(&redis, "per_user = \"3/m\"", "").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get_tasks(gateway.addr, "alice").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let asked = metric(
        &gateway,
        "authgate_store_operations_total{result=\"limited\"}",
    );
    assert_eq!(asked, 1.0);
    for _ in 0..50 {
        assert_eq!(get_tasks(gateway.addr, "alice").await.status, 429);
    }
    assert_eq!(
        metric(
            &gateway,
            "authgate_store_operations_total{result=\"limited\"}"
        ),
        1.0,
        "the flood cost the store nothing"
    );
    assert_eq!(
        metric(&gateway, "authgate_store_local_refusals_total"),
        50.0
    );
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn a_flushed_script_is_loaded_again() {
    let redis = RedisServer::start();
    let (_backend, gateway) = start_shared(&redis, "per_user = \"3/m\"", "").await;
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 200);
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]), "+OK");
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 200);
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 200);
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 429);
    assert_eq!(
        metric(
            &gateway,
            "authgate_store_operations_total{result=\"error\"}"
        ),
        0.0
    );
}

/// Sends `count` requests for distinct users, `concurrency` at a time, and returns each status
/// with how long it took.
async fn load(addr: SocketAddr, count: usize, concurrency: usize) -> Vec<(u16, Duration)> {
    let mut results = Vec::new();
    for wave in 0..count.div_ceil(concurrency) {
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let user = format!("user{}", wave * concurrency + i);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let status = get_tasks(addr, &user).await.status;
                    (status, started.elapsed())
                })
            })
            .collect();
        for task in tasks {
            results.push(task.await.unwrap());
        }
    }
    results
}

#[tokio::test]
async fn redis_killed_mid_run_with_local_policy_gives_no_5xx_and_no_slow_answers() {
    let mut redis = RedisServer::start();
    let (_backend, gateway) =
        start_shared(&redis, "per_user = \"3/m\"", "on_error = \"local\"").await;
    wait_for_state(&gateway, "up").await;
    let addr = gateway.addr;
    let running = tokio::spawn(async move { load(addr, 400, 8).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    let results = running.await.unwrap();
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "no 5xx, and each distinct user is within its quota: {:?}",
        results
            .iter()
            .filter(|(s, _)| *s != 200)
            .collect::<Vec<_>>()
    );
    // op_timeout is 50 ms; a generous margin for a loaded machine. A request that waited on a
    // dead store (the client's own retry/backoff runs for seconds) would be far slower.
    let slow = results
        .iter()
        .filter(|(_, took)| *took > Duration::from_millis(500))
        .count();
    assert!(slow <= 2, "{slow} of {} answers were slow", results.len());
    assert!(metric(&gateway, "authgate_store_fallbacks_total{policy=\"local\"}") > 0.0);
    assert_eq!(metric(&gateway, "authgate_store_up"), 0.0);
    // The in-process limiter decides meanwhile: the quota still holds for one user.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get_tasks(gateway.addr, "dora").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let skipped = metric(
        &gateway,
        "authgate_store_operations_total{result=\"circuit_open\"}",
    );
    assert!(
        skipped > 0.0,
        "the breaker opened and requests skipped the store"
    );
}

#[tokio::test]
async fn redis_killed_with_deny_policy_answers_503_with_retry_after() {
    let mut redis = RedisServer::start();
    let (backend, gateway) =
        start_shared(&redis, "per_user = \"3/m\"", "on_error = \"deny\"").await;
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 200);
    redis.kill();
    for _ in 0..10 {
        let response = get_tasks(gateway.addr, "bob").await;
        assert_eq!(
            response.status,
            503,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json()["error"], "store_unavailable");
        let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
        assert!(retry_after >= 1);
    }
    assert_eq!(backend.count(), 1, "nothing uncounted reached the backend");
    assert_eq!(
        metric(&gateway, "authgate_store_fallbacks_total{policy=\"deny\"}"),
        10.0
    );
}

#[tokio::test]
async fn redis_killed_with_allow_policy_lets_requests_through_and_counts_them() {
    let mut redis = RedisServer::start();
    let (backend, gateway) =
        start_shared(&redis, "per_user = \"3/m\"", "on_error = \"allow\"").await;
    redis.kill();
    let authorization = bearer(&token_for("alice"));
    for _ in 0..10 {
        let response = request(
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &authorization)],
            b"",
        )
        .await;
        assert_eq!(response.status, 200);
    }
    assert_eq!(backend.count(), 10);
    assert!(backend
        .received()
        .iter()
        .all(|r| r.header_values("x-user-id") == ["alice"]));
    // Ten quota decisions, and one look at the shared brute-force guard before the token (not
    // yet verified by this replica) was verified.
    assert_eq!(
        metric(&gateway, "authgate_store_fallbacks_total{policy=\"allow\"}"),
        11.0
    );
}

#[tokio::test]
async fn limits_are_shared_again_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let backend = Backend::start().await;
    let config = config("per_user = \"4/m\"", Some(&store_table(&redis, "")));
    let first = start_gateway(&config, backend.addr).await;
    let second = start_gateway(&config, backend.addr).await;
    wait_for_state(&first, "up").await;
    redis.kill();
    for i in 0..6 {
        // Trips the breakers while Redis is gone (distinct users: the local limiter decides).
        assert_eq!(get_tasks(first.addr, &format!("eve{i}")).await.status, 200);
        assert_eq!(get_tasks(second.addr, &format!("eve{i}")).await.status, 200);
    }
    wait_for_state(&first, "circuit_open").await;
    redis.restart();
    wait_for_state(&first, "up").await;
    wait_for_state(&second, "up").await;
    let mut allowed = 0;
    for i in 0..10 {
        let gateway = if i % 2 == 0 { &first } else { &second };
        if get_tasks(gateway.addr, "frank").await.status == 200 {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 4,
        "one quota over both gateways again, without restarting them"
    );
}

#[tokio::test]
async fn a_slow_redis_takes_the_timeout_path() {
    let redis = RedisServer::start();
    let (_backend, gateway) = start_shared(&redis, "per_user = \"3/m\"", "").await;
    wait_for_state(&gateway, "up").await;
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        crate::redis_server::command_on(port, None, &["DEBUG", "SLEEP", "1"]).unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let response = get_tasks(gateway.addr, "alice").await;
    let took = started.elapsed();
    assert_eq!(response.status, 200, "decided locally");
    assert!(
        took < Duration::from_millis(600),
        "waited for the store past op_timeout: {took:?}"
    );
    assert!(
        metric(
            &gateway,
            "authgate_store_operations_total{result=\"timeout\"}"
        ) >= 1.0,
        "{}",
        gateway.live.metrics().render()
    );
    assert_eq!(sleeper.join().unwrap(), "+OK");
}

#[tokio::test]
async fn store_added_changed_and_removed_by_reload_and_a_bad_store_keeps_the_old() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let shared = config("per_user = \"2/m\"", Some(&store_table(&redis, "")));
    let local = config("per_user = \"2/m\"", None);
    let path =
        std::env::temp_dir().join(format!("authgate-store-reload-{}.toml", std::process::id()));
    let on_backend = |text: &str| on_port_before(text, 0, backend.addr);
    std::fs::write(&path, on_backend(&local)).unwrap();
    let gateway = start_gateway(&on_backend(&local), backend.addr).await;
    let peer = start_gateway(&on_backend(&shared), backend.addr).await;
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string());

    // In process: the peer's count is not this gateway's.
    assert_eq!(get_tasks(peer.addr, "ann").await.status, 200);
    assert_eq!(get_tasks(peer.addr, "ann").await.status, 200);
    assert_eq!(get_tasks(gateway.addr, "ann").await.status, 200);

    // Added: shared with the peer, which used up ann's quota.
    std::fs::write(&path, on_backend(&shared)).unwrap();
    gateway.live.reload_with(&path, &env).unwrap();
    assert_eq!(get_tasks(gateway.addr, "ann").await.status, 429);

    // Changed (another key prefix): fresh buckets in the same Redis.
    let prefixed = config(
        "per_user = \"2/m\"",
        Some(&store_table(&redis, "key_prefix = \"other\"")),
    );
    std::fs::write(&path, on_backend(&prefixed)).unwrap();
    gateway.live.reload_with(&path, &env).unwrap();
    assert_eq!(get_tasks(gateway.addr, "ann").await.status, 200);
    assert!(redis.keys("other:") >= 1);

    // A bad [store] is refused with its key, and the running config stays.
    let bad = config(
        "per_user = \"2/m\"",
        Some(&store_table(&redis, "on_error = \"sometimes\"")),
    );
    std::fs::write(&path, on_backend(&bad)).unwrap();
    let err = gateway.live.reload_with(&path, &env).unwrap_err();
    assert_eq!(err.key, "store.on_error");
    assert_eq!(get_tasks(gateway.addr, "ann").await.status, 200);
    assert_eq!(get_tasks(gateway.addr, "ann").await.status, 429);

    // Removed: in process again, with buckets of its own.
    std::fs::write(&path, on_backend(&local)).unwrap();
    gateway.live.reload_with(&path, &env).unwrap();
    assert!(gateway.live.gateway().store().is_none());
    assert_eq!(get_tasks(gateway.addr, "ann").await.status, 200);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_password_from_the_environment_authenticates() {
    let redis = RedisServer::start_with_password(Some("s3cret-redis-pass"));
    let backend = Backend::start().await;
    let toml = config(
        "per_user = \"1/m\"",
        Some(&store_table(&redis, "password_env = \"REDIS_PASSWORD\"")),
    );
    let parsed = parse_config_with(&toml, &|name| match name {
        "BETTER_AUTH_SECRET" => Some(SECRET.to_string()),
        "REDIS_PASSWORD" => Some("s3cret-redis-pass".to_string()),
        _ => None,
    });
    let gateway = start_gateway_with(parsed, backend.addr).await;
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 200);
    assert_eq!(get_tasks(gateway.addr, "alice").await.status, 429);
    assert_eq!(
        metric(
            &gateway,
            "authgate_store_operations_total{result=\"limited\"}"
        ),
        1.0,
        "decided by the store, authenticated"
    );
}

#[tokio::test]
async fn readyz_reports_the_store_and_turns_unready_only_under_deny() {
    let mut redis = RedisServer::start();
    let backend = Backend::start().await;
    let local = start_gateway(
        &config("per_user = \"3/m\"", Some(&store_table(&redis, ""))),
        backend.addr,
    )
    .await;
    let deny = start_gateway(
        &config(
            "per_user = \"3/m\"",
            Some(&store_table(&redis, "on_error = \"deny\"")),
        ),
        backend.addr,
    )
    .await;
    wait_for_state(&local, "up").await;
    wait_for_state(&deny, "up").await;
    let local_admin = start_admin(&local).await;
    let deny_admin = start_admin(&deny).await;
    let ready = admin_get(local_admin, "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["store"]["state"], "up");
    redis.kill();
    for _ in 0..6 {
        let _ = get_tasks(local.addr, "alice").await;
        let _ = get_tasks(deny.addr, "alice").await;
    }
    wait_for_state(&local, "circuit_open").await;
    wait_for_state(&deny, "circuit_open").await;
    let ready = admin_get(local_admin, "/readyz").await;
    assert_eq!(ready.status, 200, "local keeps serving: still ready");
    assert_eq!(ready.json()["store"]["state"], "circuit_open");
    assert_eq!(ready.json()["store"]["on_error"], "local");
    let unready = admin_get(deny_admin, "/readyz").await;
    assert_eq!(unready.status, 503);
    assert_eq!(unready.json()["store"]["on_error"], "deny");
    redis.restart();
    wait_for_state(&deny, "up").await;
    assert_eq!(admin_get(deny_admin, "/readyz").await.status, 200);
}

async fn start_admin(gateway: &GatewayHandle) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(authgate::admin::serve(
        listener,
        gateway.live.clone(),
        std::future::pending(),
    ));
    addr
}

async fn admin_get(addr: SocketAddr, path: &str) -> RawResponse {
    request(addr, "GET", path, &[], b"").await
}

#[test]
fn store_config_errors_name_the_key() {
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string());
    let cases = [
        (
            "redis_url = \"http://127.0.0.1:6379\"",
            "store.redis_url",
            "not a Redis URL",
        ),
        (
            "redis_url = \"redis://:hunter2@127.0.0.1:6379\"",
            "store.redis_url",
            "password_env",
        ),
        (
            "redis_url = \"redis://127.0.0.1:6379\"\npassword_env = \"NOT_SET_ANYWHERE\"",
            "store.password_env",
            "NOT_SET_ANYWHERE",
        ),
        (
            "redis_url = \"redis://127.0.0.1:6379\"\non_error = \"maybe\"",
            "store.on_error",
            "\"local\", \"allow\" or \"deny\"",
        ),
        (
            "redis_url = \"redis://127.0.0.1:6379\"\nop_timeout = \"10s\"",
            "store.op_timeout",
            "at most 5s",
        ),
        (
            "redis_url = \"redis://127.0.0.1:6379\"\nca_file = \"ca.pem\"",
            "store.ca_file",
            "rediss://",
        ),
        (
            "redis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"a b\"",
            "store.key_prefix",
            "letters",
        ),
    ];
    for (store, key, message) in cases {
        let toml = config("per_user = \"1/m\"", Some(store));
        let err = authgate::config::Config::parse(&toml, "gateway.toml", &env).unwrap_err();
        assert_eq!(err.key, key, "{store}: {err}");
        assert!(err.message.contains(message), "{store}: {err}");
        assert!(err.line > 0, "{err}");
    }
}

#[tokio::test]
async fn rediss_verifies_the_server_against_ca_file() {
    let ca = crate::tls::Ca::new("authgate redis test CA");
    let dir = crate::tls::TempDir::new("rediss");
    let (cert, key) = dir.write_leaf("redis", &ca.leaf("localhost", &["localhost"]));
    let ca_file = dir.write("ca.pem", &ca.pem);
    let stranger = dir.write("stranger.pem", &crate::tls::Ca::new("someone else").pem);
    let redis = RedisServer::start_tls(&cert, &key);
    let store = |ca: &std::path::Path| {
        format!(
            "redis_url = \"rediss://localhost:{}/0\"\nca_file = \"{}\"\nop_timeout = \"1s\"",
            redis.port,
            ca.display()
        )
    };
    let backend = Backend::start().await;
    let trusted = start_gateway(
        &config("per_user = \"2/m\"", Some(&store(&ca_file))),
        backend.addr,
    )
    .await;
    let statuses = [
        get_tasks(trusted.addr, "alice").await.status,
        get_tasks(trusted.addr, "alice").await.status,
        get_tasks(trusted.addr, "alice").await.status,
    ];
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(
        metric(
            &trusted,
            "authgate_store_operations_total{result=\"limited\"}"
        ),
        1.0,
        "decided by Redis over TLS"
    );
    // A server certificate from a CA the gateway does not trust: no answer is taken from it.
    let untrusting = start_gateway(
        &config("per_user = \"2/m\"", Some(&store(&stranger))),
        backend.addr,
    )
    .await;
    assert_eq!(get_tasks(untrusting.addr, "bob").await.status, 200);
    assert_eq!(
        metric(
            &untrusting,
            "authgate_store_operations_total{result=\"allowed\"}"
        ),
        0.0
    );
    assert!(
        metric(
            &untrusting,
            "authgate_store_fallbacks_total{policy=\"local\"}"
        ) >= 1.0
    );
}

/// A revocation made on one replica's admin listener holds on every replica sharing the store
/// within a second, including one started after it.
#[tokio::test]
async fn revocations_reach_every_replica_through_the_store() {
    let redis = RedisServer::start();
    let (backend, first) = start_shared(&redis, "per_user = \"1000/m\"", "").await;
    let second = start_gateway(
        &config("per_user = \"1000/m\"", Some(&store_table(&redis, ""))),
        backend.addr,
    )
    .await;
    let token = token_for("alice");
    for gateway in [&first, &second] {
        let response = request(
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &bearer(&token))],
            b"",
        )
        .await;
        assert_eq!(response.status, 200);
    }
    for gateway in [&first, &second] {
        wait_until_subscribed(gateway).await;
    }
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(authgate::admin::serve(
        admin,
        first.live.clone(),
        std::future::pending(),
    ));
    let before = now() + 1;
    let revoked = request(
        admin_addr,
        "POST",
        "/revoke",
        &[],
        format!(r#"{{"sub": "alice", "before": {before}}}"#).as_bytes(),
    )
    .await;
    assert_eq!(
        revoked.status,
        200,
        "{}",
        String::from_utf8_lossy(&revoked.body)
    );
    assert_eq!(revoked.json()["scope"], "shared");
    // The same token, issued before the cut, on every replica.
    let auth = bearer(&token);
    let refused = |addr| {
        let auth = auth.clone();
        async move {
            request(
                addr,
                "GET",
                "/api/alice/tasks",
                &[("Authorization", &auth)],
                b"",
            )
            .await
        }
    };
    assert_eq!(
        refused(first.addr).await.status,
        401,
        "at once where it was made"
    );
    let started = Instant::now();
    loop {
        let response = refused(second.addr).await;
        if response.status == 401 {
            assert_eq!(response.json()["error"], "revoked");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the other replica still lets the token through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It came as a message (the set is read again only every 30 s while subscribed).
    let learned = |gateway, path: &str| {
        metric(
            gateway,
            &format!("authgate_revocations_total{{result=\"{path}\"}}"),
        )
    };
    assert_eq!(learned(&second, "pubsub"), 1.0);
    assert_eq!(learned(&second, "resync"), 0.0);
    let late = start_gateway(
        &config("per_user = \"1000/m\"", Some(&store_table(&redis, ""))),
        backend.addr,
    )
    .await;
    let started = Instant::now();
    while refused(late.addr).await.status != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a replica started later learns it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until it arrived the other replicas forwarded; from then on nothing reaches the backend.
    let forwarded = backend.count();
    for gateway in [&first, &second, &late] {
        assert_eq!(refused(gateway.addr).await.status, 401);
    }
    assert_eq!(backend.count(), forwarded);
    assert_eq!(
        get_tasks(second.addr, "bob").await.status,
        200,
        "only alice is revoked"
    );
    assert_eq!(backend.count(), forwarded + 1);
    // The late replica read the set, which already held it.
    assert_eq!(learned(&late, "resync"), 1.0);
}

async fn wait_until_subscribed(gateway: &GatewayHandle) {
    let started = Instant::now();
    while metric(gateway, "authgate_revocations_subscribed") != 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replica never subscribed to the revocations channel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pub/sub delivers at most once: a replica whose subscription is cut subscribes again and reads
/// the whole set, so a revocation it was never sent still arrives within a second.
#[tokio::test]
async fn a_replica_that_lost_its_subscription_reads_what_it_missed() {
    let redis = RedisServer::start();
    let (_backend, gateway) = start_shared(&redis, "per_user = \"1000/m\"", "").await;
    let token = token_for("alice");
    let get = || async {
        request(
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &bearer(&token))],
            b"",
        )
        .await
    };
    assert_eq!(get().await.status, 200);
    wait_until_subscribed(&gateway).await;
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, ":1", "one subscription: {killed}");
    // Written as another replica would, but with no message: only a read of the set finds it.
    let expires_at = (now() + 3600).to_string();
    let member = format!("sub\talice\t{}", now() + 1);
    redis.command(&["ZADD", "authgate:revocations", &expires_at, &member]);
    redis.command(&["INCR", "authgate:revocations:version"]);
    let started = Instant::now();
    loop {
        let response = get().await;
        if response.status == 401 {
            assert_eq!(response.json()["error"], "revoked");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&gateway, "authgate_revocations_total{result=\"resync\"}"),
        1.0
    );
    wait_until_subscribed(&gateway).await;
}

/// Each serving thread opens its store connection as it starts, not with its first decision
/// (which would have to connect within `op_timeout` or fall back to `on_error`): with two workers,
/// Redis sees the background probe's connection and one per worker before any request.
#[tokio::test]
async fn workers_connect_to_the_store_before_their_first_request() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let config = config("per_user = \"1000/m\"", Some(&store_table(&redis, ""))).replacen(
        "[server]",
        "[server]\nworkers = 2",
        1,
    );
    assert!(config.contains("workers = 2"));
    let _replica = Replica::start(&config, backend.addr, "warm");
    let started = Instant::now();
    loop {
        let clients = redis.command(&["CLIENT", "LIST", "TYPE", "normal"]);
        // The command's own connection is one of them.
        let gateway_clients = clients.lines().count().saturating_sub(1);
        if gateway_clients >= 3 {
            assert_eq!(gateway_clients, 3, "{clients}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "connections before any request: {gateway_clients}\n{clients}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.count(), 0);
}
