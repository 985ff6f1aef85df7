//! Better Auth JWT-plugin tokens: asymmetric algorithms, keys from a JWKS served on loopback,
//! rotation, outages, throttling, several issuers, and the classic key-confusion attacks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::*;
use crate::keys::*;

const BASE_URL: &str = "http://127.0.0.1:3000";

struct Document {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    cache_control: Option<String>,
}

/// A JWKS endpoint on loopback that counts how often it is fetched.
#[derive(Clone)]
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<Document>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(jwks: Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        JwksServer::serve(listener, jwks)
    }

    fn serve(listener: TcpListener, jwks: Value) -> JwksServer {
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            document: Arc::new(Mutex::new(Document {
                status: 200,
                content_type: "application/json".into(),
                body: jwks.to_string().into_bytes(),
                cache_control: None,
            })),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let state = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let state = state.clone();
                        async move {
                            state.fetches.fetch_add(1, Ordering::SeqCst);
                            let document = state.document.lock().unwrap();
                            let mut response =
                                Response::new(Full::new(Bytes::from(document.body.clone())));
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(document.status).unwrap();
                            response
                                .headers_mut()
                                .insert("content-type", document.content_type.parse().unwrap());
                            if let Some(cache_control) = &document.cache_control {
                                response
                                    .headers_mut()
                                    .insert("cache-control", cache_control.parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("http://{}/api/auth/jwks", self.addr)
    }

    fn set_jwks(&self, jwks: Value) {
        self.set_raw(200, "application/json", jwks.to_string().into_bytes());
    }

    fn set_raw(&self, status: u16, content_type: &str, body: Vec<u8>) {
        let mut document = self.document.lock().unwrap();
        document.status = status;
        document.content_type = content_type.into();
        document.body = body;
    }

    fn set_cache_control(&self, value: &str) {
        self.document.lock().unwrap().cache_control = Some(value.into());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn routes() -> &'static str {
    &BASE_CONFIG[BASE_CONFIG.find("[[route]]").unwrap()..]
}

/// The config from the README section "In front of a Better Auth app", with test timings.
fn better_auth_config(jwks_url: &str, algorithms: &[&str], extra: &str) -> String {
    format!(
        r#"
[upstream]
url = "http://127.0.0.1:1"
[auth]
jwks_url = "{jwks_url}"
issuer = "{BASE_URL}"
audience = "{BASE_URL}"
algorithms = {algorithms:?}
{extra}
{routes}"#,
        routes = routes()
    )
}

/// A JWKS server publishing `document`, a backend, and a gateway using the Better Auth config.
async fn start_better_auth(
    document: Value,
    algorithms: &[&str],
    extra: &str,
) -> (JwksServer, Backend, GatewayHandle) {
    let server = JwksServer::start(document).await;
    let backend = Backend::start().await;
    let gateway = start_gateway(
        &better_auth_config(&server.url(), algorithms, extra),
        backend.addr,
    )
    .await;
    (server, backend, gateway)
}

/// Takes an address rather than a handle so that spawned tasks can use it.
async fn get_tasks_at(addr: SocketAddr, token: &str) -> RawResponse {
    request(
        addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &bearer(token))],
        b"",
    )
    .await
}

async fn get_tasks(gateway: &GatewayHandle, token: &str) -> RawResponse {
    get_tasks_at(gateway.addr, token).await
}

/// A token for alice from the Better Auth app at `BASE_URL`.
fn alice_token(key: &TestKey) -> String {
    key.token(&better_auth_claims("alice", BASE_URL))
}

async fn wait_for_first_fetch(gateway: &GatewayHandle) {
    eventually("first fetch", || async {
        gateway.gateway.authenticator().keys_ready()
    })
    .await;
}

/// The gateway's only remote JWKS source (each test here configures one).
fn remote_source(gateway: &GatewayHandle) -> Arc<authgate::proxy::jwks::RemoteJwks> {
    gateway.gateway.jwks_sources()[0].clone()
}

fn failed_fetches(remote: &authgate::proxy::jwks::RemoteJwks) -> u64 {
    remote.fetches_failed.load(Ordering::Relaxed)
}

/// Polls until `check` passes or 10 s elapse. Not a timing assertion: it only bounds a wait.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn tamper(token: &str) -> String {
    // Swap the payload for one naming bob, keeping alice's signature.
    let parts: Vec<&str> = token.split('.').collect();
    let claims = json!({"sub": "bob", "iss": BASE_URL, "aud": BASE_URL, "exp": now() + 900});
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}

#[tokio::test]
async fn every_algorithm_accepts_valid_and_refuses_tampered_tokens() {
    let keys: Vec<TestKey> = ALL_ALGORITHMS
        .iter()
        .map(|alg| TestKey::generate(alg, &format!("kid-{alg}")))
        .collect();
    let (_server, backend, gateway) =
        start_better_auth(jwks(&keys.iter().collect::<Vec<_>>()), &ALL_ALGORITHMS, "").await;
    for key in &keys {
        let token = alice_token(key);
        let response = get_tasks(&gateway, &token).await;
        assert_eq!(
            response.status,
            200,
            "{}: {:?}",
            key.alg,
            String::from_utf8_lossy(&response.body)
        );
        let tampered = get_tasks(&gateway, &tamper(&token)).await;
        assert_eq!(tampered.status, 401, "{} tampered", key.alg);
        assert_eq!(tampered.json()["error"], "invalid_token");
    }
    let received = backend.received();
    assert_eq!(
        received.len(),
        ALL_ALGORITHMS.len(),
        "only the valid tokens reach the backend"
    );
    for request in received {
        assert_eq!(request.header_values("x-user-id"), vec!["alice"]);
    }
}

#[tokio::test]
async fn a_key_only_verifies_its_own_algorithm() {
    // An Ed25519 key and a P-256 key; tokens claiming the other algorithm with the same kid fail.
    let ed = TestKey::generate("EdDSA", "k1");
    let (_server, backend, gateway) =
        start_better_auth(jwks(&[&ed]), &["EdDSA", "ES256"], "").await;
    let p256 = TestKey::generate("ES256", "k1");
    let token = alice_token(&p256);
    assert_eq!(get_tasks(&gateway, &token).await.status, 401);
    // An EdDSA signature presented as ES256 under the Ed25519 key's kid.
    let forged = ed.sign(
        &json!({"alg": "ES256", "kid": "k1"}),
        &better_auth_claims("alice", BASE_URL),
    );
    assert_eq!(get_tasks(&gateway, &forged).await.status, 401);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn rotation_new_kid_after_one_refetch_removed_key_after_refresh() {
    let old = TestKey::generate("EdDSA", "old");
    let new = TestKey::generate("EdDSA", "new");
    let (server, _backend, gateway) = start_better_auth(
        jwks(&[&old]),
        &["EdDSA"],
        "jwks_refresh = \"2s\"\njwks_cooldown = \"300ms\"",
    )
    .await;
    let old_token = alice_token(&old);
    assert_eq!(get_tasks(&gateway, &old_token).await.status, 200);

    // The auth server rotates: the new key appears, the old stays for a grace period.
    server.set_jwks(jwks(&[&new, &old]));
    tokio::time::sleep(Duration::from_millis(350)).await; // past the cooldown
    let before = server.fetches();
    let new_token = alice_token(&new);
    assert_eq!(get_tasks(&gateway, &new_token).await.status, 200);
    assert_eq!(
        server.fetches(),
        before + 1,
        "exactly one refetch for the unknown kid"
    );

    // The old key is removed; after the next refresh its (cached) token is refused.
    server.set_jwks(jwks(&[&new]));
    let fetched = server.fetches();
    eventually("a scheduled refresh", || async {
        server.fetches() > fetched
    })
    .await;
    eventually("the removed key to be refused", || async {
        get_tasks(&gateway, &old_token).await.status == 401
    })
    .await;
    assert_eq!(get_tasks(&gateway, &new_token).await.status, 200);
}

#[tokio::test]
async fn auth_server_down_at_start_answers_503_then_recovers() {
    let key = TestKey::generate("EdDSA", "k1");
    let reserved = unused_addr().await;
    let url = format!("http://{reserved}/api/auth/jwks");
    let backend = Backend::start().await;
    let config = better_auth_config(
        &url,
        &["EdDSA"],
        "jwks_cooldown = \"200ms\"\njwks_timeout = \"1s\"",
    );
    let gateway = start_gateway(&config, backend.addr).await;
    assert!(!gateway.gateway.authenticator().keys_ready());
    let token = alice_token(&key);
    let response = get_tasks(&gateway, &token).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("5"));
    assert_eq!(response.json()["error"], "keys_unavailable");
    // Public routes keep working while the auth server is down.
    assert_eq!(
        request(gateway.addr, "GET", "/health", &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(backend.count(), 1);

    // The auth server comes up on that address.
    let listener = TcpListener::bind(reserved).await.unwrap();
    let _server = JwksServer::serve(listener, jwks(&[&key]));
    eventually("recovery", || async {
        get_tasks(&gateway, &token).await.status == 200
    })
    .await;
    assert!(gateway.gateway.authenticator().keys_ready());
    assert_eq!(
        backend
            .received()
            .last()
            .unwrap()
            .header_values("x-user-id"),
        vec!["alice"]
    );
}

#[tokio::test]
async fn auth_server_failing_later_keeps_cached_keys() {
    let key = TestKey::generate("ES256", "k1");
    let (server, _backend, gateway) = start_better_auth(
        jwks(&[&key]),
        &["ES256"],
        "jwks_refresh = \"1s\"\njwks_cooldown = \"200ms\"",
    )
    .await;
    wait_for_first_fetch(&gateway).await;
    server.set_raw(500, "text/plain", b"down".to_vec());
    let fetched = server.fetches();
    eventually("a failed refresh", || async { server.fetches() > fetched }).await;
    // A fresh token (not in the verified-token cache) still verifies with the last good set.
    let token = alice_token(&key);
    assert_eq!(get_tasks(&gateway, &token).await.status, 200);
    assert!(failed_fetches(&remote_source(&gateway)) >= 1);
}

#[tokio::test]
async fn unknown_kid_flood_makes_at_most_one_fetch_per_cooldown() {
    let key = TestKey::generate("EdDSA", "real");
    // Default cooldown (30 s): the whole flood fits in one cooldown window. The brute-force guard
    // is off here so that every request reaches key lookup (it has its own tests).
    let (server, backend, gateway) = start_better_auth(
        jwks(&[&key]),
        &["EdDSA"],
        "[rate_limit]\nauth_failures = \"off\"",
    )
    .await;
    wait_for_first_fetch(&gateway).await;
    let initial = server.fetches();
    let attacker = TestKey::generate("EdDSA", "unused");
    let mut refused = 0;
    for batch in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let forged = attacker.with_kid(&format!("made-up-{batch}-{i}"));
            let token = alice_token(&forged);
            let addr = gateway.addr;
            tasks.push(tokio::spawn(async move {
                get_tasks_at(addr, &token).await.status
            }));
        }
        for task in tasks {
            if task.await.unwrap() == 401 {
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 1000);
    assert!(
        server.fetches() - initial <= 1,
        "{} fetches for 1000 unknown kids",
        server.fetches() - initial
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn rs256_to_hs256_confusion_is_refused() {
    let rsa = TestKey::generate("RS256", "rsa");
    let server = JwksServer::start(jwks(&[&rsa])).await;
    let backend = Backend::start().await;
    let pem = rsa.rsa_public_pem();
    let claims = better_auth_claims("alice", BASE_URL);
    let forged = sign_hs256(
        &json!({"alg": "HS256", "kid": "rsa"}).to_string(),
        &claims.to_string(),
        pem.as_bytes(),
    );
    // RS256 only, and RS256 with HS256 also allowed (with its own secret): refused both times.
    for (algorithms, extra) in [
        (vec!["RS256"], ""),
        (
            vec!["RS256", "HS256"],
            "secret_env = \"BETTER_AUTH_SECRET\"",
        ),
    ] {
        let gateway = start_gateway(
            &better_auth_config(&server.url(), &algorithms, extra),
            backend.addr,
        )
        .await;
        assert_eq!(get_tasks(&gateway, &rsa.token(&claims)).await.status, 200);
        let response = get_tasks(&gateway, &forged).await;
        assert_eq!(response.status, 401, "{algorithms:?}");
    }
    assert_eq!(backend.count(), 2, "only the genuine RS256 tokens");
}

#[tokio::test]
async fn embedded_key_material_in_the_token_is_ignored() {
    let genuine = TestKey::generate("EdDSA", "k1");
    let (_server, backend, gateway) = start_better_auth(jwks(&[&genuine]), &["EdDSA"], "").await;
    let attacker = TestKey::generate("EdDSA", "k1");
    let claims = better_auth_claims("alice", BASE_URL);
    for header in [
        json!({"alg": "EdDSA", "kid": "k1", "jwk": attacker.jwk()}),
        json!({"alg": "EdDSA", "jwk": attacker.jwk()}),
        json!({"alg": "EdDSA", "kid": "k1", "jku": "http://127.0.0.1:9/jwks", "x5u": "http://127.0.0.1:9/x"}),
    ] {
        let token = attacker.sign(&header, &claims);
        assert_eq!(get_tasks(&gateway, &token).await.status, 401, "{header}");
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn ecdsa_zero_signatures_are_refused() {
    let p256 = TestKey::generate("ES256", "p256");
    let p521 = TestKey::generate("ES512", "p521");
    let (_server, backend, gateway) =
        start_better_auth(jwks(&[&p256, &p521]), &["ES256", "ES512"], "").await;
    let claims = better_auth_claims("alice", BASE_URL);
    for (key, length) in [(&p256, 64), (&p521, 132)] {
        let header = json!({"alg": key.alg, "kid": key.kid});
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let token = format!("{message}.{}", b64(&vec![0u8; length]));
        assert_eq!(
            get_tasks(&gateway, &token).await.status,
            401,
            "{} r = s = 0",
            key.alg
        );
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_refused() {
    let key = TestKey::generate("EdDSA", "k1");
    let (_server, backend, gateway) = start_better_auth(jwks(&[&key]), &["EdDSA"], "").await;
    let mut claims = better_auth_claims("alice", BASE_URL);
    claims["iss"] = json!("http://evil.test");
    assert_eq!(
        get_tasks(&gateway, &key.token(&claims)).await.json()["error"],
        "invalid_token"
    );
    let mut claims = better_auth_claims("alice", BASE_URL);
    claims["aud"] = json!("http://other-app.test");
    assert_eq!(get_tasks(&gateway, &key.token(&claims)).await.status, 401);
    let mut claims = better_auth_claims("alice", BASE_URL);
    claims["aud"] = json!(["http://other-app.test", BASE_URL]);
    assert_eq!(
        get_tasks(&gateway, &key.token(&claims)).await.status,
        200,
        "aud array containing ours"
    );
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn several_issuers_and_kid_collisions_do_not_cross() {
    let a = TestKey::generate("EdDSA", "shared-kid");
    let b = TestKey::generate("ES256", "shared-kid");
    let server_a = JwksServer::start(jwks(&[&a])).await;
    let server_b = JwksServer::start(jwks(&[&b])).await;
    let backend = Backend::start().await;
    let config = format!(
        r#"
[upstream]
url = "http://127.0.0.1:1"
[[auth.issuer]]
issuer = "http://a.test"
audience = "http://a.test"
jwks_url = "{}"
algorithms = ["EdDSA", "ES256"]
[[auth.issuer]]
issuer = "http://b.test"
jwks_url = "{}"
algorithms = ["EdDSA", "ES256"]
[[auth.issuer]]
issuer = "http://hs.test"
secret_env = "BETTER_AUTH_SECRET"
{routes}"#,
        server_a.url(),
        server_b.url(),
        routes = routes()
    );
    let gateway = start_gateway(&config, backend.addr).await;
    let a_token = a.token(&better_auth_claims("alice", "http://a.test"));
    assert_eq!(get_tasks(&gateway, &a_token).await.status, 200);
    let b_token = b.token(&json!({"sub": "alice", "iss": "http://b.test", "exp": now() + 900}));
    assert_eq!(get_tasks(&gateway, &b_token).await.status, 200);
    let hs_token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &json!({"sub": "alice", "iss": "http://hs.test", "exp": now() + 900}).to_string(),
        SECRET.as_bytes(),
    );
    assert_eq!(get_tasks(&gateway, &hs_token).await.status, 200);
    // a's key under b's name (same kid): b's set has no EdDSA key with that kid.
    let crossed = a.token(&json!({"sub": "alice", "iss": "http://b.test", "exp": now() + 900}));
    assert_eq!(get_tasks(&gateway, &crossed).await.status, 401);
    // No iss, or an unknown one: no issuer accepts it.
    let no_iss = a.token(&json!({"sub": "alice", "exp": now() + 900}));
    assert_eq!(get_tasks(&gateway, &no_iss).await.status, 401);
    // The HS issuer's secret never verifies for an asymmetric issuer.
    let hs_for_a = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &better_auth_claims("alice", "http://a.test").to_string(),
        SECRET.as_bytes(),
    );
    assert_eq!(get_tasks(&gateway, &hs_for_a).await.status, 401);
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn malformed_jwks_responses_are_survived() {
    let key = TestKey::generate("EdDSA", "k1");
    let (server, _backend, gateway) =
        start_better_auth(jwks(&[&key]), &["EdDSA"], "jwks_cooldown = \"100ms\"").await;
    wait_for_first_fetch(&gateway).await;
    let remote = remote_source(&gateway);
    let huge = format!(
        "{{\"keys\":[],\"pad\":\"{}\"}}",
        "x".repeat(authgate::proxy::jwks::MAX_JWKS_BYTES)
    );
    let bad_documents: [(u16, &str, Vec<u8>); 5] = [
        (200, "application/json", b"<html>not json</html>".to_vec()),
        (200, "application/json", huge.into_bytes()),
        (200, "text/html", jwks(&[&key]).to_string().into_bytes()),
        (
            200,
            "application/json",
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"!!"}]}"#.to_vec(),
        ),
        (404, "application/json", b"{}".to_vec()),
    ];
    for (status, content_type, body) in bad_documents {
        server.set_raw(status, content_type, body);
        let failed = failed_fetches(&remote);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // An unknown kid forces a refetch of the bad document; it is refused and logged...
        let unknown = key.with_kid("unknown");
        assert_eq!(
            get_tasks(&gateway, &alice_token(&unknown)).await.status,
            401
        );
        assert!(
            failed_fetches(&remote) > failed,
            "{content_type} {status}: the bad document was not fetched"
        );
        // ...and the last good set keeps working, for a token never seen before.
        let mut claims = better_auth_claims("alice", BASE_URL);
        claims["jti"] = json!(format!("{status}-{content_type}"));
        assert_eq!(
            get_tasks(&gateway, &key.token(&claims)).await.status,
            200,
            "{content_type} {status}"
        );
    }
}

#[tokio::test]
async fn a_malformed_key_does_not_spoil_the_good_ones() {
    let good = TestKey::generate("EdDSA", "good");
    let mut document = jwks(&[&good]);
    document["keys"].as_array_mut().unwrap().extend([
        json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"}),
        json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32]), "kid": "off-curve"}),
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "symmetric"}),
        json!({"kty": "RSA", "n": b64(&[0xff; 64]), "e": "AQAB", "kid": "tiny-rsa"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": good.jwk()["x"], "d": "c2VjcmV0", "kid": "private"}),
        json!("not even an object"),
    ]);
    let (_server, _backend, gateway) =
        start_better_auth(document, &["EdDSA", "ES256", "RS256"], "").await;
    assert_eq!(get_tasks(&gateway, &alice_token(&good)).await.status, 200);
    // A token naming the private-key entry's kid is refused even though its x is the good key's.
    let private_kid = good.with_kid("private");
    assert_eq!(
        get_tasks(&gateway, &alice_token(&private_kid)).await.status,
        401
    );
}

#[tokio::test]
async fn kid_is_required_when_the_set_has_several_keys() {
    let one = TestKey::generate("EdDSA", "one");
    let two = TestKey::generate("EdDSA", "two");
    let claims = better_auth_claims("alice", BASE_URL);
    let no_kid = one.sign(&json!({"alg": "EdDSA"}), &claims);
    let backend = Backend::start().await;

    let single = JwksServer::start(jwks(&[&one])).await;
    let gateway = start_gateway(
        &better_auth_config(&single.url(), &["EdDSA"], ""),
        backend.addr,
    )
    .await;
    assert_eq!(
        get_tasks(&gateway, &no_kid).await.status,
        200,
        "a single key needs no kid"
    );

    let several = JwksServer::start(jwks(&[&one, &two])).await;
    let gateway = start_gateway(
        &better_auth_config(&several.url(), &["EdDSA"], ""),
        backend.addr,
    )
    .await;
    assert_eq!(get_tasks(&gateway, &no_kid).await.status, 401);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn jwks_file_source() {
    let key = TestKey::generate("ES384", "file-key");
    let dir = std::env::temp_dir().join(format!("authgate-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    std::fs::write(&path, jwks(&[&key]).to_string()).unwrap();
    let config = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\njwks_file = \"{}\"\nalgorithms = [\"ES384\"]\n{}",
        path.display(),
        routes()
    );
    let backend = Backend::start().await;
    let gateway = start_gateway(&config, backend.addr).await;
    assert!(gateway.gateway.authenticator().keys_ready());
    let token = key.token(&json!({"sub": "alice", "exp": now() + 900}));
    assert_eq!(get_tasks(&gateway, &token).await.status, 200);
    assert_eq!(backend.only().header_values("x-user-id"), vec!["alice"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let key = TestKey::generate("EdDSA", "k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    server.set_cache_control("public, max-age=1");
    let backend = Backend::start().await;
    // The configured refresh is an hour; the server asks for 1 s, which is above the cooldown.
    let config = better_auth_config(
        &server.url(),
        &["EdDSA"],
        "jwks_refresh = \"1h\"\njwks_cooldown = \"500ms\"",
    );
    let _gateway = start_gateway(&config, backend.addr).await;
    eventually("the first fetch", || async { server.fetches() >= 1 }).await;
    eventually(
        "refetches at the server's max-age, not the hour",
        || async { server.fetches() >= 3 },
    )
    .await;
}

#[tokio::test]
async fn a_hanging_auth_server_times_out_instead_of_hanging_requests() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let backend = Backend::start().await;
    let config = better_auth_config(
        &format!("http://{addr}/jwks"),
        &["EdDSA"],
        "jwks_timeout = \"300ms\"",
    );
    let gateway = start_gateway(&config, backend.addr).await;
    let token = alice_token(&TestKey::generate("EdDSA", "k1"));
    let started = std::time::Instant::now();
    let response = get_tasks(&gateway, &token).await;
    assert_eq!(response.status, 503);
    // Bounded by the fetch timeout, not by the auth server: not a performance assertion.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(failed_fetches(&remote_source(&gateway)) >= 1);
    assert_eq!(backend.count(), 0);
}
