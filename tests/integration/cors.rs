//! CORS (`[cors]`): the gateway answers preflights itself, never forwarding them, and labels every
//! response (refusals included) for the origins it allows, replacing the backend's labels.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::*;

const APP: &str = "https://app.example.com";

fn cors_config(cors: &str) -> String {
    let split = BASE_CONFIG.find("[[route]]").unwrap();
    format!(
        "{}\n[cors]\n{cors}\n{}",
        &BASE_CONFIG[..split],
        &BASE_CONFIG[split..]
    )
}

/// A backend that records nothing but labels its own answers for any origin, as a backend with
/// its own CORS middleware would; counts the requests it got.
async fn labelling_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("access-control-allow-origin", "*")
                                .header("access-control-allow-methods", "DELETE")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

fn preflight<'a>(origin: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
    ]
}

#[tokio::test]
async fn preflights_are_answered_by_the_gateway_and_never_forwarded() {
    let backend = Backend::start().await;
    let gateway = start_gateway(
        &cors_config(&format!("allow_origins = [\"{APP}\"]")),
        backend.addr,
    )
    .await;

    // No token (browsers never send credentials on a preflight): answered all the same.
    let response = request(
        gateway.addr,
        "OPTIONS",
        "/api/alice/tasks",
        &preflight(APP, "POST"),
        b"",
    )
    .await;
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("POST")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert_eq!(response.header("vary"), Some("origin"));
    assert!(response
        .header("access-control-allow-credentials")
        .is_none());

    // The same rules as for the real request, and an origin that is not allowed: refused.
    let cases = [
        (
            "/api/alice/tasks",
            "https://evil.example",
            "POST",
            403,
            "origin_not_allowed",
        ),
        (
            "/api/alice/tasks",
            "https://APP.example.com",
            "POST",
            403,
            "origin_not_allowed",
        ),
        (
            "/api/alice/tasks",
            "null",
            "POST",
            403,
            "origin_not_allowed",
        ),
        ("/api/alice/tasks", APP, "DELETE", 405, "method_not_allowed"),
        ("/nowhere", APP, "GET", 404, "no_route"),
        ("/api/alice/../bob/tasks", APP, "GET", 400, "bad_target"),
        ("/api/alice/tasks", APP, "G(ET", 400, "bad_request"),
    ];
    for (path, origin, method, status, code) in cases {
        let response = request(
            gateway.addr,
            "OPTIONS",
            path,
            &preflight(origin, method),
            b"",
        )
        .await;
        assert_eq!(response.status, status, "{path} {origin} {method}");
        assert_eq!(response.json()["error"], code, "{path} {origin} {method}");
        let labelled = response.header("access-control-allow-origin");
        assert_eq!(labelled, (origin == APP).then_some(APP), "{path} {origin}");
    }
    assert_eq!(backend.count(), 0, "no preflight reaches the backend");
}

#[tokio::test]
async fn responses_and_refusals_are_labelled_for_allowed_origins_only() {
    let (backend, count) = labelling_backend().await;
    let config = cors_config(&format!(
        "allow_origins = [\"{APP}\", \"http://localhost:3000\"]\nallow_credentials = true\nexpose_headers = [\"x-request-id\", \"ratelimit-remaining\"]"
    ));
    let gateway = start_gateway(&config, backend).await;
    let alice = bearer(&token_for("alice"));

    let ok = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[
            ("Authorization", &alice),
            ("Origin", "http://localhost:3000"),
        ],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://localhost:3000"),
        "the backend's `*` is replaced"
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        ok.header("access-control-expose-headers"),
        Some("x-request-id, ratelimit-remaining")
    );
    assert!(ok.header("access-control-allow-methods").is_none());
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Refusals carry the label too, so the app can read the 401 and the 403.
    for (path, auth, status) in [
        ("/api/alice/tasks", None, 401),
        ("/api/bob/tasks", Some(alice.as_str()), 403),
    ] {
        let mut headers = vec![("Origin", APP)];
        headers.extend(auth.map(|auth| ("Authorization", auth)));
        let refused = request(gateway.addr, "GET", path, &headers, b"").await;
        assert_eq!(refused.status, status);
        assert_eq!(refused.header("access-control-allow-origin"), Some(APP));
    }
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Another origin is served (CORS is not access control) but not labelled, and loses the
    // backend's labels.
    let other = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[
            ("Authorization", &alice),
            ("Origin", "https://evil.example"),
        ],
        b"",
    )
    .await;
    assert_eq!(other.status, 200);
    assert!(other.header("access-control-allow-origin").is_none());
    assert!(other.header("access-control-allow-methods").is_none());
    assert_eq!(other.header("vary"), Some("origin"));
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn any_origin_and_no_cors_section() {
    let backend = Backend::start().await;
    let any = start_gateway(&cors_config("allow_origins = [\"*\"]"), backend.addr).await;
    let response = request(
        any.addr,
        "OPTIONS",
        "/api/alice/tasks",
        &preflight("https://anyone.example", "GET"),
        b"",
    )
    .await;
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert!(response.header("vary").is_none());
    // The same label with or without an Origin, so a shared cache cannot hand out an unlabelled
    // copy.
    let no_origin = request(any.addr, "GET", "/health", &[], b"").await;
    assert_eq!(no_origin.status, 200);
    assert_eq!(no_origin.header("access-control-allow-origin"), Some("*"));
    assert_eq!(backend.count(), 1);

    // Without [cors] a preflight is an ordinary OPTIONS request: 401 on a protected route.
    let plain = start_gateway(BASE_CONFIG, backend.addr).await;
    let response = request(
        plain.addr,
        "OPTIONS",
        "/api/alice/tasks/1",
        &preflight(APP, "GET"),
        b"",
    )
    .await;
    assert_eq!(response.status, 401);
    assert!(response.header("access-control-allow-origin").is_none());
    assert_eq!(backend.count(), 1);
}
