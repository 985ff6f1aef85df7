//! Better Auth sessions through the gateway, against a real Better Auth server (the `better-auth`
//! npm package, tests/better-auth/server.mjs): sign up, the real cookie, forged cookies, the
//! session cache, sign-out, the sign-out hook revoking a JWT by `sid`, Better Auth down, CSRF, and
//! what the backend receives. Also `POST /revoke` on the admin listener.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// `npm ci` once per test run when tests/better-auth has no node_modules (CI runs it first).
fn ensure_installed() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/better-auth");
    if !std::path::Path::new(dir)
        .join("node_modules/better-auth")
        .exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .expect("npm is needed for the Better Auth tests");
        assert!(status.success(), "npm ci in tests/better-auth failed");
    }
    *installed = true;
}

/// A real Better Auth server on a free loopback port.
pub struct BetterAuth {
    pub addr: SocketAddr,
    child: Child,
}

impl BetterAuth {
    /// With `revoke`: the session delete hook POSTs `{"sid"}` there with the admin token.
    pub fn start(revoke: Option<SocketAddr>) -> BetterAuth {
        ensure_installed();
        let port = free_port();
        let mut command = Command::new("node");
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/better-auth/server.mjs"
            ))
            .env("PORT", port.to_string())
            .env("BETTER_AUTH_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(admin) = revoke {
            command
                .env("REVOKE_URL", format!("http://{admin}/revoke"))
                .env("REVOKE_TOKEN", ADMIN_TOKEN);
        }
        let child = command
            .spawn()
            .expect("node is needed for the Better Auth tests");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until_listening(addr);
        BetterAuth { addr, child }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signs a new user up (which signs them in): the `name=value` of the session cookie, and
    /// the user id.
    pub async fn sign_up(&self, email: &str) -> (String, String) {
        let body =
            serde_json::json!({"email": email, "password": "correct-horse-1", "name": "Test"});
        let response = request(
            self.addr,
            "POST",
            "/api/auth/sign-up/email",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let cookie = response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.split(';').next().unwrap().to_string())
            .find(|pair| pair.starts_with("better-auth.session_token="))
            .expect("a session cookie");
        let user = response.json()["user"]["id"].as_str().unwrap().to_string();
        (cookie, user)
    }

    pub async fn sign_out(&self, cookie: &str) {
        let origin = self.base_url();
        let response = request(
            self.addr,
            "POST",
            "/api/auth/sign-out",
            &[
                ("Cookie", cookie),
                ("Origin", &origin),
                ("Content-Type", "application/json"),
            ],
            b"{}",
        )
        .await;
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
    }

    /// A JWT for the session (the jwt plugin; its payload carries `sid`).
    pub async fn token(&self, cookie: &str) -> String {
        let response = request(
            self.addr,
            "GET",
            "/api/auth/token",
            &[("Cookie", cookie)],
            b"",
        )
        .await;
        assert_eq!(response.status, 200);
        response.json()["token"].as_str().unwrap().to_string()
    }

    /// How many times get-session was called.
    pub async fn session_calls(&self) -> u64 {
        request(self.addr, "GET", "/test/calls", &[], b"")
            .await
            .json()["get-session"]
            .as_u64()
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BetterAuth {
    fn drop(&mut self) {
        self.kill();
    }
}

fn session_config(better_auth: &BetterAuth, cache_ttl: &str, extra_routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:1"

[auth]
algorithms = ["HS256"]
secret_env = "BETTER_AUTH_SECRET"

[auth.session]
base_url = "{}"
cache_ttl = "{cache_ttl}"
timeout = "1s"

[[route]]
path = "/api/{{user_id}}/tasks"
methods = ["GET", "POST"]
owner = "user_id"

[[route]]
path = "/bearer-only/{{user_id}}"
owner = "user_id"
auth_methods = ["bearer"]

[[route]]
path = "/session-only/{{user_id}}"
owner = "user_id"
auth_methods = ["session"]

[[route]]
path = "/with-cookie/{{user_id}}"
owner = "user_id"
forward_session_cookie = true
{extra_routes}"#,
        better_auth.base_url()
    )
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(addr, "GET", path, headers, b"").await
}

#[tokio::test]
async fn a_signed_in_browser_reaches_its_own_tasks_and_the_backend_never_sees_the_cookie() {
    let better_auth = BetterAuth::start(None);
    let (cookie, user) = better_auth.sign_up("alice@example.com").await;
    let backend = Backend::start().await;
    let gateway = start_gateway(&session_config(&better_auth, "30s", ""), backend.addr).await;
    let cookies = format!("theme=dark; {cookie}; lang=en");
    let response = get(
        gateway.addr,
        &format!("/api/{user}/tasks"),
        &[("Cookie", &cookies)],
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let received = backend.only();
    assert_eq!(received.header_values("x-user-id"), [user.as_str()]);
    assert_eq!(
        received.header_values("cookie"),
        ["theme=dark; lang=en"],
        "Better Auth's cookie is stripped, the rest kept"
    );
    // The owner rule works from Better Auth's user.
    let other = get(
        gateway.addr,
        "/api/someone-else/tasks",
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(other.status, 403);
    assert_eq!(backend.count(), 1, "nothing refused reached the backend");
    // A route that opts in forwards the cookie as sent.
    let kept = get(
        gateway.addr,
        &format!("/with-cookie/{user}"),
        &[("Cookie", &cookies)],
    )
    .await;
    assert_eq!(kept.status, 200);
    assert_eq!(
        backend.received()[1].header_values("cookie"),
        [cookies.as_str()]
    );
    // auth_methods: a bearer-only route does not take the cookie; a session-only one does.
    let bearer_only = get(
        gateway.addr,
        &format!("/bearer-only/{user}"),
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(bearer_only.status, 401);
    assert_eq!(bearer_only.json()["error"], "no_token");
    let session_only = get(
        gateway.addr,
        &format!("/session-only/{user}"),
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(session_only.status, 200);
    let with_bearer = get(
        gateway.addr,
        &format!("/session-only/{user}"),
        &[("Authorization", &bearer(&token_for(&user)))],
    )
    .await;
    assert_eq!(
        with_bearer.status, 401,
        "the session-only route does not take a bearer token"
    );
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn forged_and_unsigned_cookies_are_refused_without_asking_better_auth() {
    let better_auth = BetterAuth::start(None);
    let (cookie, user) = better_auth.sign_up("mallory@example.com").await;
    let backend = Backend::start().await;
    let gateway = start_gateway(&session_config(&better_auth, "30s", ""), backend.addr).await;
    let before = better_auth.session_calls().await;
    let (name, value) = cookie.split_once('=').unwrap();
    let token = value.split('.').next().unwrap();
    let forged_signature = format!("{name}={token}.{}", "A".repeat(43) + "%3D");
    let other_token = format!("{name}=x{}", &value[1..]);
    for forged in [
        forged_signature,
        other_token,
        format!("{name}={token}"),
        format!("{name}=garbage.garbage"),
        format!("{cookie}; __Secure-{cookie}"),
    ] {
        let response = get(
            gateway.addr,
            &format!("/api/{user}/tasks"),
            &[("Cookie", &forged)],
        )
        .await;
        assert_eq!(response.status, 401, "{forged}");
        assert_eq!(response.json()["error"], "invalid_token", "{forged}");
    }
    assert_eq!(
        better_auth.session_calls().await,
        before,
        "no call to Better Auth for any of them"
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn the_cache_answers_repeated_requests_with_one_lookup() {
    let better_auth = BetterAuth::start(None);
    let (cookie, user) = better_auth.sign_up("carol@example.com").await;
    let backend = Backend::start().await;
    let gateway = start_gateway(&session_config(&better_auth, "30s", ""), backend.addr).await;
    let before = better_auth.session_calls().await;
    let path = format!("/api/{user}/tasks");
    // Concurrent first requests share one call (single flight), later ones hit the cache.
    let first: Vec<_> = (0..10)
        .map(|_| {
            let (path, cookie, addr) = (path.clone(), cookie.clone(), gateway.addr);
            tokio::spawn(async move { get(addr, &path, &[("Cookie", &cookie)]).await.status })
        })
        .collect();
    for request in first {
        assert_eq!(request.await.unwrap(), 200);
    }
    for _ in 0..10 {
        assert_eq!(
            get(gateway.addr, &path, &[("Cookie", &cookie)])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        better_auth.session_calls().await - before,
        1,
        "20 requests, one lookup"
    );
    assert_eq!(backend.count(), 20);
    assert!(gateway
        .live
        .metrics()
        .render()
        .contains("authgate_session_cache_hits_total"));
}

#[tokio::test]
async fn signing_out_ends_the_cookie_within_cache_ttl() {
    let better_auth = BetterAuth::start(None);
    let (cookie, user) = better_auth.sign_up("dave@example.com").await;
    let backend = Backend::start().await;
    let gateway = start_gateway(&session_config(&better_auth, "1s", ""), backend.addr).await;
    let path = format!("/api/{user}/tasks");
    assert_eq!(
        get(gateway.addr, &path, &[("Cookie", &cookie)])
            .await
            .status,
        200
    );
    better_auth.sign_out(&cookie).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = get(gateway.addr, &path, &[("Cookie", &cookie)]).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["error"], "session_expired");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn better_auth_down_gives_503_not_a_pass() {
    let mut better_auth = BetterAuth::start(None);
    let (cookie, user) = better_auth.sign_up("erin@example.com").await;
    let backend = Backend::start().await;
    let gateway = start_gateway(&session_config(&better_auth, "30s", ""), backend.addr).await;
    better_auth.kill();
    let response = get(
        gateway.addr,
        &format!("/api/{user}/tasks"),
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["error"], "session_unavailable");
    assert_eq!(response.header("retry-after"), Some("2"));
    assert_eq!(backend.count(), 0, "an unchecked cookie never passes");
    assert!(gateway
        .live
        .metrics()
        .render()
        .contains("authgate_session_lookups_total{result=\"unavailable\"} 1"));
}

#[tokio::test]
async fn cookie_requests_that_change_state_must_come_from_this_site() {
    let better_auth = BetterAuth::start(None);
    let (cookie, user) = better_auth.sign_up("frank@example.com").await;
    let backend = Backend::start().await;
    let cors = "\n[cors]\nallow_origins = [\"https://app.example.com\"]\n";
    let gateway = start_gateway(&session_config(&better_auth, "30s", cors), backend.addr).await;
    let path = format!("/api/{user}/tasks");
    let post = |headers: Vec<(&'static str, String)>| {
        let path = path.clone();
        let cookie = cookie.clone();
        let addr = gateway.addr;
        async move {
            let mut all: Vec<(&str, &str)> =
                vec![("Cookie", &cookie), ("Content-Type", "application/json")];
            all.extend(headers.iter().map(|(n, v)| (*n, v.as_str())));
            request(addr, "POST", &path, &all, b"{\"title\":\"t\"}").await
        }
    };
    let no_origin = post(vec![]).await;
    assert_eq!(no_origin.status, 403);
    assert_eq!(no_origin.json()["error"], "csrf");
    let evil = post(vec![("Origin", "http://evil.example".into())]).await;
    assert_eq!(evil.status, 403);
    assert_eq!(backend.count(), 0, "no forged request reached the backend");
    // Its own origin (build_request sends Host: gateway.test), one [cors] lists, or
    // Sec-Fetch-Site: same-origin.
    assert_eq!(
        post(vec![("Origin", "http://gateway.test".into())])
            .await
            .status,
        200
    );
    assert_eq!(
        post(vec![("Origin", "https://app.example.com".into())])
            .await
            .status,
        200
    );
    assert_eq!(
        post(vec![("Sec-Fetch-Site", "same-origin".into())])
            .await
            .status,
        200
    );
    assert_eq!(backend.count(), 3);
    // A bearer request is exempt: the browser does not attach it by itself.
    let bearer_post = request(
        gateway.addr,
        "POST",
        &path,
        &[
            ("Authorization", &bearer(&token_for(&user))),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(bearer_post.status, 200);
}

/// A gateway whose bearer tokens are Better Auth's own (EdDSA from its JWKS), with an admin
/// listener Better Auth's sign-out hook calls.
#[tokio::test]
async fn a_jwt_with_sid_is_refused_right_after_sign_out_through_the_hook() {
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let better_auth = BetterAuth::start(Some(admin_addr));
    let (cookie, user) = better_auth.sign_up("grace@example.com").await;
    let jwt = better_auth.token(&cookie).await;
    let backend = Backend::start().await;
    let base = better_auth.base_url();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:1"
[admin]
listen = "127.0.0.1:0"
token_env = "ADMIN_TOKEN"
[auth]
issuer = "{base}"
audience = "{base}"
algorithms = ["EdDSA"]
jwks_url = "{base}/api/auth/jwks"
[[route]]
path = "/api/{{user_id}}/tasks"
owner = "user_id"
"#
    );
    let env = |name: &str| match name {
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_string()),
        "BETTER_AUTH_SECRET" => Some(SECRET.to_string()),
        _ => None,
    };
    let gateway = start_gateway_with(parse_config_with(&config, &env), backend.addr).await;
    tokio::spawn(authgate::admin::serve(
        admin,
        gateway.live.clone(),
        std::future::pending(),
    ));
    let path = format!("/api/{user}/tasks");
    let auth = bearer(&jwt);
    let mut ok = get(gateway.addr, &path, &[("Authorization", &auth)]).await;
    for _ in 0..50 {
        if ok.status != 503 {
            break;
        }
        // The JWKS is fetched in the background at start.
        tokio::time::sleep(Duration::from_millis(100)).await;
        ok = get(gateway.addr, &path, &[("Authorization", &auth)]).await;
    }
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(backend.only().header_values("x-user-id"), [user.as_str()]);
    // Sign-out deletes the session; the hook revokes its id at the gateway before sign-out
    // answers. The token is cached as verified: the cache must not serve it.
    better_auth.sign_out(&cookie).await;
    let refused = get(gateway.addr, &path, &[("Authorization", &auth)]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"], "revoked");
    assert_eq!(backend.count(), 1);
    // Signing in again gives a new session, and a new token that works.
    let body = serde_json::json!({"email": "grace@example.com", "password": "correct-horse-1"});
    let signed_in = request(
        better_auth.addr,
        "POST",
        "/api/auth/sign-in/email",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    let new_cookie = signed_in
        .headers
        .iter()
        .find(|(name, value)| {
            name.eq_ignore_ascii_case("set-cookie")
                && value.starts_with("better-auth.session_token=")
        })
        .map(|(_, value)| value.split(';').next().unwrap().to_string())
        .unwrap();
    let new_jwt = better_auth.token(&new_cookie).await;
    assert_eq!(
        get(gateway.addr, &path, &[("Authorization", &bearer(&new_jwt))])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revoke_on_the_admin_listener_refuses_earlier_tokens_of_a_subject() {
    let backend = Backend::start().await;
    let config = BASE_CONFIG.replace(
        "[upstream]",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n\n[upstream]",
    );
    let env = |name: &str| match name {
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_string()),
        "BETTER_AUTH_SECRET" => Some(SECRET.to_string()),
        _ => None,
    };
    let gateway = start_gateway_with(parse_config_with(&config, &env), backend.addr).await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(authgate::admin::serve(
        admin,
        gateway.live.clone(),
        std::future::pending(),
    ));
    let old = token_for("alice");
    assert_eq!(
        get(
            gateway.addr,
            "/api/alice/tasks",
            &[("Authorization", &bearer(&old))]
        )
        .await
        .status,
        200
    );
    let revoke = |headers: Vec<(&'static str, String)>, body: &'static str| async move {
        let all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        request(admin_addr, "POST", "/revoke", &all, body.as_bytes()).await
    };
    let body = r#"{"sub": "alice"}"#;
    assert_eq!(
        revoke(vec![], body).await.status,
        401,
        "the admin token is required"
    );
    assert_eq!(
        revoke(
            vec![("Authorization", "Bearer wrong-token-0123456789".into())],
            body
        )
        .await
        .status,
        401
    );
    let auth = vec![("Authorization", format!("Bearer {ADMIN_TOKEN}"))];
    assert_eq!(
        revoke(auth.clone(), r#"{"sub": "alice", "sid": "x"}"#)
            .await
            .status,
        400
    );
    assert_eq!(
        revoke(auth.clone(), r#"{"user": "alice"}"#).await.status,
        400
    );
    // Tokens issued before the revocation (now) are refused, even from the verified cache.
    let cut = now() + 1;
    let revoked = request(
        admin_addr,
        "POST",
        "/revoke",
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        format!(r#"{{"sub": "alice", "before": {cut}}}"#).as_bytes(),
    )
    .await;
    assert_eq!(
        revoked.status,
        200,
        "{}",
        String::from_utf8_lossy(&revoked.body)
    );
    assert_eq!(revoked.json()["scope"], "this_replica");
    let refused = get(
        gateway.addr,
        "/api/alice/tasks",
        &[("Authorization", &bearer(&old))],
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"], "revoked");
    assert_eq!(
        get(
            gateway.addr,
            "/api/bob/tasks",
            &[("Authorization", &bearer(&token_for("bob")))]
        )
        .await
        .status,
        200
    );
    // A token issued after the cut passes: signing in again works.
    let claims = format!(r#"{{"sub":"alice","iat":{},"exp":{}}}"#, cut + 1, cut + 600);
    let newer = sign_hs256(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, SECRET.as_bytes());
    assert_eq!(
        get(
            gateway.addr,
            "/api/alice/tasks",
            &[("Authorization", &bearer(&newer))]
        )
        .await
        .status,
        200
    );
    assert_eq!(backend.count(), 3);
}
