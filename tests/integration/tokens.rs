//! Every bad token gets 401 and nothing reaches the backend; a good one gets exactly one identity.

use crate::common::*;

const PATH: &str = "/api/alice/tasks";

async fn assert_refused(authorization: &[&str], expected_code: &str, invalid_token: bool) {
    let (backend, gateway) = setup().await;
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|v| ("Authorization", *v))
        .collect();
    let response = request(gateway.addr, "GET", PATH, &headers, b"").await;
    assert_eq!(
        response.status, 401,
        "authorization {authorization:?}: {response:?}"
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(
        body["error"], expected_code,
        "authorization {authorization:?}"
    );
    assert!(body["message"].is_string());
    let challenge = response
        .header("www-authenticate")
        .expect("401 must carry WWW-Authenticate");
    assert!(
        challenge.starts_with("Bearer realm=\"authgate\""),
        "{challenge}"
    );
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        invalid_token,
        "{challenge}"
    );
    assert_eq!(backend.count(), 0, "a refused request reached the backend");
}

fn claims(sub: &str, exp_offset: i64, extra: &str) -> String {
    let exp = now() as i64 + exp_offset;
    format!(r#"{{"sub":"{sub}","iat":{},"exp":{exp}{extra}}}"#, now())
}

#[tokio::test]
async fn valid_token_forwards_exactly_one_identity() {
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let response = request(
        gateway.addr,
        "GET",
        PATH,
        &[("Authorization", &bearer(&token))],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), serde_json::json!({"ok": true}));
    let received = backend.only();
    assert_eq!(received.target, PATH);
    assert_eq!(received.header_values("x-user-id"), vec!["alice"]);
    assert_eq!(received.headers_normalized("x-user-id").len(), 1);
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let (backend, gateway) = setup().await;
    let value = format!("bEARER {}", token_for("alice"));
    let response = request(gateway.addr, "GET", PATH, &[("Authorization", &value)], b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.only().header_values("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn missing_token() {
    assert_refused(&[], "no_token", false).await;
}

#[tokio::test]
async fn malformed_tokens() {
    for token in [
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d.e",
        "....",
        "eyJhbGciOiJIUzI1NiJ9..",
        "e30.e30.",
        "a b",
    ] {
        assert_refused(&[&format!("Bearer {token}")], "invalid_token", true).await;
    }
}

#[tokio::test]
async fn wrong_secret() {
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &claims("alice", 3600, ""),
        b"not-the-secret-not-the-secret-xx",
    );
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn bad_signature_bytes() {
    let mut token = token_for("alice");
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn tampered_payload() {
    let alice = token_for("alice");
    let bob = token_for("bob");
    let alice_parts: Vec<&str> = alice.split('.').collect();
    let bob_parts: Vec<&str> = bob.split('.').collect();
    // bob's claims under alice's signature.
    let forged = format!("{}.{}.{}", alice_parts[0], bob_parts[1], alice_parts[2]);
    assert_refused(&[&bearer(&forged)], "invalid_token", true).await;
}

#[tokio::test]
async fn expired() {
    // Beyond the 30 s leeway.
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &claims("alice", -120, ""),
        SECRET.as_bytes(),
    );
    assert_refused(&[&bearer(&token)], "expired", true).await;
}

#[tokio::test]
async fn expired_within_leeway_is_accepted() {
    let (backend, gateway) = setup().await;
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &claims("alice", -10, ""),
        SECRET.as_bytes(),
    );
    let response = request(
        gateway.addr,
        "GET",
        PATH,
        &[("Authorization", &bearer(&token))],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.only().header_values("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn missing_exp() {
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        r#"{"sub":"alice"}"#,
        SECRET.as_bytes(),
    );
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn not_yet_valid() {
    let nbf = format!(r#","nbf":{}"#, now() + 600);
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &claims("alice", 3600, &nbf),
        SECRET.as_bytes(),
    );
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn alg_none() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let token = format!("{}.{}.", b64(header), b64(&claims("alice", 3600, "")));
        assert_refused(&[&bearer(&token)], "invalid_token", true).await;
    }
}

#[tokio::test]
async fn algorithm_outside_the_allow_list() {
    // A correct HS512 signature with the right secret: refused because only HS256 is allowed.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &serde_json::json!({"sub": "alice", "exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn asymmetric_alg_name_with_hmac_signature() {
    // Header claims RS256 but the signature is HMAC with the secret: no key for RS256 exists.
    let token = sign_hs256(
        r#"{"alg":"RS256"}"#,
        &claims("alice", 3600, ""),
        SECRET.as_bytes(),
    );
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn crit_and_b64_headers() {
    for header in [
        r#"{"alg":"HS256","crit":["exp"]}"#,
        r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"HS256","b64":true}"#,
    ] {
        let token = sign_hs256(header, &claims("alice", 3600, ""), SECRET.as_bytes());
        assert_refused(&[&bearer(&token)], "invalid_token", true).await;
    }
}

#[tokio::test]
async fn duplicate_claims_are_refused() {
    let forged = format!(r#"{{"sub":"alice","sub":"bob","exp":{}}}"#, now() + 3600);
    let token = sign_hs256(r#"{"alg":"HS256"}"#, &forged, SECRET.as_bytes());
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn bad_user_claims() {
    for sub in [r#""""#, "42", "null", r#"["alice"]"#] {
        let body = format!(r#"{{"sub":{sub},"exp":{}}}"#, now() + 3600);
        let token = sign_hs256(r#"{"alg":"HS256"}"#, &body, SECRET.as_bytes());
        assert_refused(&[&bearer(&token)], "invalid_token", true).await;
    }
}

#[tokio::test]
async fn oversized_token() {
    let padding = format!(r#","pad":"{}""#, "x".repeat(9000));
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &claims("alice", 3600, &padding),
        SECRET.as_bytes(),
    );
    assert!(token.len() > 8 * 1024);
    assert_refused(&[&bearer(&token)], "invalid_token", true).await;
}

#[tokio::test]
async fn two_authorization_headers() {
    let alice = bearer(&token_for("alice"));
    assert_refused(&[&alice, &alice], "invalid_token", true).await;
    let bob = bearer(&token_for("bob"));
    assert_refused(&[&alice, &bob], "invalid_token", true).await;
}

#[tokio::test]
async fn basic_scheme() {
    assert_refused(&["Basic YWxpY2U6cGFzc3dvcmQ="], "invalid_token", true).await;
}

#[tokio::test]
async fn token_in_query_or_cookie_is_not_a_token() {
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let target = format!("{PATH}?access_token={token}");
    let cookie = format!("token={token}");
    let response = request(gateway.addr, "GET", &target, &[("Cookie", &cookie)], b"").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["error"], "no_token");
    assert_eq!(backend.count(), 0);
}
