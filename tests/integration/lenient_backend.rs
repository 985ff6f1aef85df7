//! Requests that a lenient backend reads differently from a strict one (issue 17): user ids a
//! header parser trims or splits, header names with `.` that CGI-style servers fold into `_`,
//! JSON keys that Go and ASP.NET bind case-insensitively, method overrides, and tokens that
//! never expire. Each is sent over HTTP/1.1 and over HTTP/2 (h2c), and each test checks what the
//! recording backend received: nothing, or only the allowed request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use tokio::net::TcpStream;

use crate::common::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:1"
timeout = "2s"

[auth]
algorithms = ["HS256"]
secret_env = "BETTER_AUTH_SECRET"
strip_headers = ["X-User-Email"]

[[route]]
path = "/health"
auth = "public"

[[route]]
path = "/posts"
methods = ["GET", "POST"]
auth = "public"

[[route]]
path = "/api/{user_id}/tasks"
methods = ["GET", "POST"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/tasks"
methods = ["DELETE"]
owner = "user_id"
require = { role = "admin" }

[[route]]
path = "/api/{user_id}/profile"
methods = ["GET", "POST"]
owner = "user_id"
body_owner_fields = ["user_id", "userId"]
claim_headers = { "X-Claim-Email" = "email", "X-Claim-Role" = "role" }

[[route]]
path = "/api/{user_id}/notes"
methods = ["GET", "POST", "PUT"]
owner = "user_id"
allow_method_override = true
"#;

/// One answer, whichever protocol carried it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|json| json["error"].as_str().map(String::from))
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

const BOTH: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

/// Sends one request over `protocol` (HTTP/2 as h2c with prior knowledge).
async fn send(
    protocol: Protocol,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    match protocol {
        Protocol::Http1 => {
            let raw = request(addr, method, target, headers, body).await;
            Answer {
                status: raw.status,
                headers: raw.headers,
                body: raw.body,
            }
        }
        Protocol::Http2 => {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut builder = http::Request::builder()
                .method(method)
                .uri(format!("http://gateway.test{target}"));
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                headers,
                body: body.to_vec(),
            }
        }
    }
}

async fn gateway() -> (Backend, GatewayHandle) {
    let backend = Backend::start().await;
    let gateway = start_gateway(CONFIG, backend.addr).await;
    (backend, gateway)
}

fn token_with(claims: &str) -> String {
    bearer(&sign_hs256(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        claims,
        SECRET.as_bytes(),
    ))
}

/// A token for `sub` (a JSON value, so any string fits) with extra claims.
fn token_for_claims(sub: &Value, extra: &str) -> String {
    token_with(&format!(
        r#"{{"sub":{sub},"iat":{},"exp":{}{extra}}}"#,
        now(),
        now() + 600
    ))
}

/// Every header the backend got whose name, lower-cased with each non-alphanumeric character
/// read as `-`, is `normalized`: what a PHP or CGI backend would read under that name.
fn folded<'r>(received: &'r Received, normalized: &str) -> Vec<(&'r str, &'r str)> {
    received
        .headers
        .iter()
        .filter(|(name, _)| {
            name.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        b.to_ascii_lowercase()
                    } else {
                        b'-'
                    }
                })
                .eq(normalized.bytes())
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

// 1. User ids that a header parser trims or splits.

#[tokio::test]
async fn user_ids_a_header_parser_would_read_differently_are_refused() {
    let (backend, gateway) = gateway().await;
    for protocol in BOTH {
        for sub in [
            " bob",
            "bob ",
            "\tbob",
            "bob\t",
            "alice,bob",
            "bob;v=1",
            "bob\u{a0}",
            "b ob",
        ] {
            let auth = token_for_claims(&Value::from(sub), "");
            let answer = send(
                protocol,
                gateway.addr,
                "GET",
                "/api/bob/tasks",
                &[("Authorization", &auth)],
                b"",
            )
            .await;
            assert_eq!(answer.status, 401, "{protocol:?} sub {sub:?}: {answer:?}");
            assert_eq!(answer.code(), "invalid_claims", "{protocol:?} sub {sub:?}");
            let message = String::from_utf8_lossy(&answer.body).into_owned();
            assert!(message.contains("user id claim"), "{message}");
        }
    }
    assert_eq!(backend.count(), 0, "{:#?}", backend.received());
}

#[tokio::test]
async fn claim_headers_that_would_be_trimmed_or_split_are_omitted() {
    let (backend, gateway) = gateway().await;
    for protocol in BOTH {
        let auth = token_for_claims(
            &Value::from("alice"),
            r#","email":" bob@example.com","role":["user","admin "]"#,
        );
        let answer = send(
            protocol,
            gateway.addr,
            "GET",
            "/api/alice/profile",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(answer.status, 200, "{protocol:?}: {answer:?}");
        let auth = token_for_claims(
            &Value::from("alice"),
            r#","email":"alice@example.com","role":["user","admin"]"#,
        );
        let answer = send(
            protocol,
            gateway.addr,
            "GET",
            "/api/alice/profile",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(answer.status, 200, "{protocol:?}: {answer:?}");
    }
    let received = backend.received();
    assert_eq!(received.len(), 4);
    for padded in received.iter().step_by(2) {
        assert_eq!(padded.header_values("x-user-id"), ["alice"]);
        assert!(folded(padded, "x-claim-email").is_empty(), "{padded:?}");
        assert!(folded(padded, "x-claim-role").is_empty(), "{padded:?}");
    }
    for plain in received.iter().skip(1).step_by(2) {
        assert_eq!(plain.header_values("x-claim-email"), ["alice@example.com"]);
        assert_eq!(plain.header_values("x-claim-role"), ["user,admin"]);
    }
}

// 2. Header names with `.` (and other punctuation) that CGI-style servers fold.

#[tokio::test]
async fn dotted_identity_header_names_never_reach_the_backend() {
    let (backend, gateway) = gateway().await;
    let spoofed = [
        ("X.User.Id", "bob"),
        ("x.user-id", "bob"),
        ("X-User.Id", "bob"),
        ("x~user~id", "bob"),
        ("X.User.Email", "bob@example.com"),
        ("X.Claim.Role", "admin"),
        ("X.Forwarded.For", "10.0.0.1"),
        ("x.real.ip", "10.0.0.1"),
        ("X.Original.URL", "/api/bob/tasks"),
    ];
    let auth = bearer(&token_for("alice"));
    for protocol in BOTH {
        // A public route: no identity of the gateway's own would override a folded one.
        let public = send(protocol, gateway.addr, "GET", "/health", &spoofed, b"").await;
        assert_eq!(public.status, 200, "{protocol:?}: {public:?}");
        let mut protected = spoofed.to_vec();
        protected.push(("Authorization", &auth));
        let answer = send(
            protocol,
            gateway.addr,
            "GET",
            "/api/alice/profile",
            &protected,
            b"",
        )
        .await;
        assert_eq!(answer.status, 200, "{protocol:?}: {answer:?}");
    }
    let received = backend.received();
    assert_eq!(received.len(), 4);
    for (index, got) in received.iter().enumerate() {
        let expected_id: Vec<(&str, &str)> = if index % 2 == 0 {
            vec![]
        } else {
            vec![("x-user-id", "alice")]
        };
        assert_eq!(folded(got, "x-user-id"), expected_id, "{got:#?}");
        for name in [
            "x-user-email",
            "x-claim-role",
            "x-real-ip",
            "x-original-url",
        ] {
            assert!(folded(got, name).is_empty(), "{name}: {got:#?}");
        }
        // The gateway sets X-Forwarded-For itself: one, with the real peer.
        assert_eq!(
            folded(got, "x-forwarded-for"),
            [("x-forwarded-for", "127.0.0.1")]
        );
        assert!(
            got.headers.iter().all(|(name, _)| !name.contains('.')),
            "{got:#?}"
        );
    }
}

#[tokio::test]
async fn dotted_names_in_trailers_and_connection_are_handled_alike() {
    let (backend, gateway) = gateway().await;
    let auth = bearer(&token_for("alice"));
    let nominated = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth), ("Connection", "x.user.id")],
        b"",
    )
    .await;
    assert_eq!(nominated.status, 400, "{nominated:?}");
    assert_eq!(backend.count(), 0);

    let chunked = send_raw(
        gateway.addr,
        format!(
            "POST /api/alice/tasks HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
             Authorization: {auth}\r\nContent-Type: application/octet-stream\r\n\
             Transfer-Encoding: chunked\r\nTrailer: X.User.Id, X-Checksum\r\n\r\n\
             2\r\nhi\r\n0\r\nX.User.Id: bob\r\nX-Checksum: 1\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(chunked.status, 200, "{chunked:?}");
    let received = backend.only();
    assert_eq!(received.body, b"hi");
    assert_eq!(
        received.trailers,
        [("x-checksum".to_string(), "1".to_string())]
    );
    assert_eq!(received.header_values("trailer"), ["X-Checksum"]);
    assert_eq!(folded(&received, "x-user-id"), [("x-user-id", "alice")]);
}

// 3. JSON owner fields compared case-insensitively, as Go and ASP.NET bind them.

#[tokio::test]
async fn json_owner_keys_are_matched_under_unicode_case_folding() {
    let (backend, gateway) = gateway().await;
    let auth = bearer(&token_for("alice"));
    let json = ("Content-Type", "application/json");
    for protocol in BOTH {
        for body in [
            r#"{"user_id":"alice","USER_ID":"bob"}"#,
            r#"{"user_id":"alice","uſer_id":"bob"}"#,
            r#"{"user_id":"alice","u\u017Fer_id":"bob"}"#,
            r#"{"User_Id":"bob","user_id":"alice"}"#,
            r#"{"USERID":"bob"}"#,
        ] {
            let answer = send(
                protocol,
                gateway.addr,
                "POST",
                "/api/alice/profile",
                &[("Authorization", &auth), json],
                body.as_bytes(),
            )
            .await;
            assert_eq!(answer.status, 403, "{protocol:?} {body}: {answer:?}");
            assert_eq!(answer.code(), "owner_mismatch");
        }
    }
    assert_eq!(backend.count(), 0, "{:#?}", backend.received());
    let allowed = r#"{"USER_ID":"alice","title":"x"}"#;
    let answer = send(
        Protocol::Http2,
        gateway.addr,
        "POST",
        "/api/alice/profile",
        &[("Authorization", &auth), json],
        allowed.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(backend.only().body, allowed.as_bytes());
}

// 4. Method overrides.

#[tokio::test]
async fn override_headers_naming_a_refused_method_get_405_and_reach_nothing() {
    let (backend, gateway) = gateway().await;
    let auth = bearer(&token_for("alice"));
    for protocol in BOTH {
        for name in [
            "X-HTTP-Method-Override",
            "X-HTTP-Method",
            "X-Method-Override",
            "x.http.method.override",
        ] {
            for value in ["DELETE", "delete", "GET, DELETE", "PUT"] {
                let answer = send(
                    protocol,
                    gateway.addr,
                    "POST",
                    "/api/alice/tasks",
                    &[("Authorization", &auth), (name, value)],
                    b"{}",
                )
                .await;
                assert_eq!(
                    answer.status, 405,
                    "{protocol:?} {name}: {value}: {answer:?}"
                );
                assert_eq!(answer.code(), "method_override_not_allowed");
                assert_eq!(answer.header("allow"), Some("GET, POST, DELETE"));
                let message = String::from_utf8_lossy(&answer.body).into_owned();
                assert!(message.contains("names a method"), "{message}");
            }
        }
        // A GET on a public route too.
        let answer = send(
            protocol,
            gateway.addr,
            "GET",
            "/posts",
            &[("X-HTTP-Method-Override", "DELETE")],
            b"",
        )
        .await;
        assert_eq!(answer.status, 405, "{protocol:?}: {answer:?}");
    }
    assert_eq!(backend.count(), 0, "{:#?}", backend.received());
}

#[tokio::test]
async fn override_headers_naming_an_allowed_method_are_stripped_unless_the_route_opts_in() {
    let (backend, gateway) = gateway().await;
    let auth = bearer(&token_for("alice"));
    for protocol in BOTH {
        let post_override = |target: &'static str, method: &'static str| {
            let auth = auth.clone();
            async move {
                send(
                    protocol,
                    gateway.addr,
                    "POST",
                    target,
                    &[("Authorization", &auth), ("X-HTTP-Method-Override", method)],
                    b"{}",
                )
                .await
            }
        };
        let stripped = post_override("/api/alice/tasks", "GET").await;
        assert_eq!(stripped.status, 200, "{stripped:?}");
        let opted_in = post_override("/api/alice/notes", "PUT").await;
        assert_eq!(opted_in.status, 200, "{opted_in:?}");
        let refused = post_override("/api/alice/notes", "DELETE").await;
        assert_eq!(refused.status, 405, "{refused:?}");
    }
    let received = backend.received();
    assert_eq!(received.len(), 4, "{received:#?}");
    for stripped in received.iter().step_by(2) {
        assert_eq!(stripped.method, "POST");
        assert!(folded(stripped, "x-http-method-override").is_empty());
    }
    for opted_in in received.iter().skip(1).step_by(2) {
        assert_eq!(opted_in.target, "/api/alice/notes");
        assert_eq!(opted_in.header_values("x-http-method-override"), ["PUT"]);
    }
}

type Headers<'a> = Vec<(&'a str, &'a str)>;
/// Method, target, headers, body, expected status.
type Case<'a> = (&'a str, &'a str, Headers<'a>, &'a [u8], u16);

#[tokio::test]
async fn method_fields_in_queries_and_bodies_must_name_an_allowed_method() {
    let (backend, gateway) = gateway().await;
    let auth = bearer(&token_for("alice"));
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let json = ("Content-Type", "application/json");
    let multipart_type = ("Content-Type", "multipart/form-data; boundary=XyZ");
    let multipart = |name: &str, value: &str| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--XyZ--\r\n"
        )
    };
    let refused_multipart = multipart("_method", "DELETE");
    let cases: Vec<Case> = vec![
        ("POST", "/api/alice/tasks?_method=DELETE", vec![], b"", 405),
        (
            "POST",
            "/api/alice/tasks?_method=delete&x=1",
            vec![],
            b"",
            405,
        ),
        ("GET", "/posts?_method=DELETE", vec![], b"", 405),
        ("POST", "/posts?_METHOD=DELETE", vec![], b"", 400),
        ("POST", "/posts?.method=DELETE", vec![], b"", 400),
        ("POST", "/posts", vec![form], b"title=x&_method=DELETE", 405),
        ("POST", "/posts", vec![form], b"_method=PUT", 405),
        ("POST", "/posts", vec![form], b"_method%5B%5D=PUT", 400),
        ("POST", "/posts", vec![], b"title=x;_method=DELETE", 405),
        (
            "POST",
            "/posts",
            vec![json],
            br#"{"title":"x","_method":"DELETE"}"#,
            405,
        ),
        ("POST", "/posts", vec![json], br#"{"_METHOD":"PATCH"}"#, 405),
        (
            "POST",
            "/posts",
            vec![json],
            br#"{"_method":["DELETE"]}"#,
            405,
        ),
        (
            "POST",
            "/posts",
            vec![multipart_type],
            refused_multipart.as_bytes(),
            405,
        ),
        (
            "POST",
            "/api/alice/tasks",
            vec![form],
            b"_method=DELETE",
            405,
        ),
        (
            "POST",
            "/api/alice/profile",
            vec![json],
            br#"{"user_id":"alice","_method":"DELETE"}"#,
            405,
        ),
    ];
    for protocol in BOTH {
        for (method, target, headers, body, status) in &cases {
            let mut headers = headers.clone();
            headers.push(("Authorization", &auth));
            let answer = send(protocol, gateway.addr, method, target, &headers, body).await;
            assert_eq!(
                answer.status,
                *status,
                "{protocol:?} {method} {target} {}: {answer:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
    // A refused multipart or JSON body is cut before its end, or never sent: either way the
    // backend holds no complete request that names DELETE.
    for received in backend.received() {
        assert!(
            !String::from_utf8_lossy(&received.body).contains("DELETE"),
            "{received:#?}"
        );
    }

    // Overrides naming an allowed method pass, byte for byte.
    let allowed_multipart = multipart("_method", "POST");
    let allowed: Vec<(&str, Headers, &[u8])> = vec![
        ("/posts?_method=GET", vec![], b""),
        ("/posts", vec![form], b"title=x&_method=post"),
        (
            "/posts",
            vec![json],
            br#"{"title":"x","_method":"GET","n":[1,{"_method":"DELETE"}]}"#,
        ),
        ("/posts", vec![multipart_type], allowed_multipart.as_bytes()),
    ];
    for protocol in BOTH {
        let before = backend.count();
        for (target, headers, body) in &allowed {
            let answer = send(protocol, gateway.addr, "POST", target, headers, body).await;
            assert_eq!(answer.status, 200, "{protocol:?} {target}: {answer:?}");
        }
        let received = backend.received();
        let forwarded: Vec<&[u8]> = received[before..]
            .iter()
            .map(|r| r.body.as_slice())
            .collect();
        let sent: Vec<&[u8]> = allowed.iter().map(|(_, _, body)| *body).collect();
        assert_eq!(forwarded, sent, "{protocol:?}");
    }
}

// 5. A maximum token lifetime.

#[tokio::test]
async fn tokens_living_longer_than_max_lifetime_or_with_odd_exp_are_refused() {
    let (backend, gateway) = gateway().await;
    let now = now();
    let claims = [
        format!(r#"{{"sub":"alice","iat":{now},"exp":{}}}"#, now + 25 * 3600),
        format!(r#"{{"sub":"alice","exp":{}}}"#, now + 10 * 24 * 3600),
        r#"{"sub":"alice","exp":1e300}"#.to_string(),
        format!(r#"{{"sub":"alice","exp":{}.5}}"#, now + 600),
        r#"{"sub":"alice","exp":18446744073709551616}"#.to_string(),
        format!(r#"{{"sub":"alice","exp":{},"iat":"{now}"}}"#, now + 600),
    ];
    for protocol in BOTH {
        for claims in &claims {
            let auth = token_with(claims);
            let answer = send(
                protocol,
                gateway.addr,
                "GET",
                "/api/alice/tasks",
                &[("Authorization", &auth)],
                b"",
            )
            .await;
            assert_eq!(answer.status, 401, "{protocol:?} {claims}: {answer:?}");
            assert_eq!(answer.code(), "invalid_claims", "{claims}");
        }
    }
    assert_eq!(backend.count(), 0, "{:#?}", backend.received());
    // A day is allowed, and so is an exp written as an integral float.
    for claims in [
        format!(
            r#"{{"sub":"alice","iat":{now},"exp":{}}}"#,
            now + 24 * 3600 - 60
        ),
        format!(r#"{{"sub":"alice","exp":{}.0}}"#, now + 600),
    ] {
        let answer = send(
            Protocol::Http1,
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &token_with(&claims))],
            b"",
        )
        .await;
        assert_eq!(answer.status, 200, "{claims}: {answer:?}");
    }
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn max_lifetime_is_configurable() {
    let backend = Backend::start().await;
    let config = CONFIG.replace(
        "strip_headers = [\"X-User-Email\"]",
        "strip_headers = [\"X-User-Email\"]\nmax_lifetime = \"15m\"",
    );
    let gateway = start_gateway(&config, backend.addr).await;
    let now = now();
    let send_with = |exp: u64| {
        let auth = token_with(&format!(r#"{{"sub":"alice","iat":{now},"exp":{exp}}}"#));
        async move {
            send(
                Protocol::Http1,
                gateway.addr,
                "GET",
                "/api/alice/tasks",
                &[("Authorization", &auth)],
                b"",
            )
            .await
            .status
        }
    };
    assert_eq!(send_with(now + 900).await, 200);
    assert_eq!(send_with(now + 901).await, 401);
    assert_eq!(backend.count(), 1);
}

// Found by a second review: ways to make a lenient backend read the body as another kind than
// the one the gateway checked.

#[tokio::test]
async fn body_type_look_alikes_empty_types_and_transformed_json_are_refused() {
    let (backend, gateway) = gateway().await;
    let auth = bearer(&token_for("alice"));
    let bom_json = b"\xef\xbb\xbf{\"_method\":\"DELETE\"}";
    let cases: Vec<Case> = vec![
        // PHP reads `Content.Type` as HTTP_CONTENT_TYPE, which Symfony takes for the type.
        (
            "PUT",
            "/api/alice/notes",
            vec![("Content.Type", "application/x-www-form-urlencoded")],
            b"user_id=bob",
            400,
        ),
        (
            "POST",
            "/posts",
            vec![("content~type", "application/json")],
            br#"{"_method":"DELETE"}"#,
            400,
        ),
        (
            "POST",
            "/posts",
            vec![("Content.Length", "4")],
            b"abcd",
            400,
        ),
        // Rack reads an empty Content-Type as none, and a POST body then as a form.
        (
            "POST",
            "/posts",
            vec![("Content-Type", "")],
            b"_method=DELETE&user_id=bob",
            405,
        ),
        (
            "POST",
            "/api/alice/tasks",
            vec![("Content-Type", " ")],
            b"title=x&user_id=bob",
            403,
        ),
        // body-parser inflates, transcodes and strips a BOM before JSON.parse.
        (
            "POST",
            "/posts",
            vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            b"\x1f\x8b\x08\x00",
            415,
        ),
        (
            "POST",
            "/posts",
            vec![("Content-Type", "application/json; charset=utf-16le")],
            b"{\0}\0",
            415,
        ),
        (
            "POST",
            "/posts",
            vec![("Content-Type", "application/json")],
            bom_json,
            400,
        ),
        (
            "POST",
            "/posts",
            vec![
                ("Content-Type", "application/json"),
                ("Content-Type", "text/plain"),
            ],
            br#"{"_method":"DELETE"}"#,
            400,
        ),
    ];
    for protocol in BOTH {
        for (method, target, headers, body, status) in &cases {
            let mut headers = headers.clone();
            headers.push(("Authorization", &auth));
            let answer = send(protocol, gateway.addr, method, target, &headers, body).await;
            assert_eq!(
                answer.status, *status,
                "{protocol:?} {method} {target} {headers:?}: {answer:?}"
            );
        }
    }
    // Only the streamed JSON reached the backend, and cut before its first byte (the scan
    // refused the byte order mark): every other case was refused before anything was forwarded.
    let received = backend.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    for cut in received {
        assert_eq!(cut.target, "/posts");
        assert!(cut.body.is_empty(), "{cut:#?}");
    }
}
