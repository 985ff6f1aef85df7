//! The upstream connection pool (src/proxy/upstream/): connections are reused once a response body has
//! ended, never while one is unfinished, and a body abandoned half-way never lends its connection
//! to the next request. The backend counts its TCP connections and records what it received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// (connection number, method, path, body) of one request.
type Seen = (usize, String, String, Vec<u8>);

struct CountingBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Seen>>>,
}

/// Answers by path: `/api/alice/tasks/big` 1 MiB, `/api/alice/tasks/empty` 204, anything else a
/// small JSON body (HEAD gets the headers only, from hyper).
async fn counting_backend() -> CountingBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let number = count.fetch_add(1, Ordering::SeqCst) + 1;
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = parts.uri.path().to_string();
                        log.lock().unwrap().push((
                            number,
                            parts.method.to_string(),
                            path.clone(),
                            body.to_vec(),
                        ));
                        let response = match path.as_str() {
                            "/api/alice/tasks/big" => {
                                Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20])))
                            }
                            "/api/alice/tasks/empty" => {
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = StatusCode::NO_CONTENT;
                                response
                            }
                            _ => Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}"))),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    CountingBackend {
        addr,
        connections,
        requests,
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let backend = counting_backend().await;
    let gateway = start_gateway(BASE_CONFIG, backend.addr).await;
    let auth = bearer(&token_for("alice"));
    for (round, method) in ["GET", "POST", "HEAD", "GET", "POST"]
        .iter()
        .cycle()
        .take(20)
        .enumerate()
    {
        // HEAD and the 204 go to `/tasks/{*rest}`, which allows every method.
        let target = if round % 7 == 3 {
            "/api/alice/tasks/empty"
        } else if *method == "HEAD" {
            "/api/alice/tasks/head"
        } else {
            "/api/alice/tasks"
        };
        let body: &[u8] = if *method == "POST" {
            b"{\"title\":\"t\"}"
        } else {
            b""
        };
        let response = request(
            gateway.addr,
            method,
            target,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .await;
        let expected = if target.ends_with("empty") { 204 } else { 200 };
        assert_eq!(
            response.status, expected,
            "round {round}: {method} {target}"
        );
    }
    let requests = backend.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 20);
    // One pooled connection serves them all in turn, except that an answer to HEAD declaring a
    // body it does not carry (hyper's backend sends Content-Length: 11) is never followed on its
    // connection (src/proxy/upstream/h1/): the request after it opens the next one.
    for pair in requests.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let declared_unsent_body = before.1 == "HEAD" && !before.2.ends_with("empty");
        let expected = if declared_unsent_body {
            before.0 + 1
        } else {
            before.0
        };
        assert_eq!(
            after.0, expected,
            "{} {} after {} {}",
            after.1, after.2, before.1, before.2
        );
    }
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        requests.last().map_or(0, |last| last.0),
        "no connection beyond those"
    );
    for (_, method, _, body) in &requests {
        let expected: &[u8] = if method == "POST" {
            b"{\"title\":\"t\"}"
        } else {
            b""
        };
        assert_eq!(body, expected, "{method} body forwarded intact");
    }
}

#[tokio::test]
async fn concurrent_requests_get_their_own_connections_and_answers() {
    let backend = counting_backend().await;
    let gateway = start_gateway(BASE_CONFIG, backend.addr).await;
    let auth = bearer(&token_for("alice"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (addr, auth) = (gateway.addr, auth.clone());
        tasks.spawn(async move {
            let target = format!("/api/alice/tasks/{i}");
            let response = request(addr, "GET", &target, &[("Authorization", &auth)], b"").await;
            (response.status, response.body)
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        let (status, body) = outcome.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"ok\":true}");
    }
    let mut paths: Vec<String> = backend
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.2.clone())
        .collect();
    paths.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("/api/alice/tasks/{i}")).collect();
    assert_eq!(paths, expected);
    assert!(backend.connections.load(Ordering::SeqCst) <= 8);
}

/// A client that reads a few bytes of a 1 MiB answer and hangs up: that upstream connection is
/// mid-body and must not serve the next request (its bytes would be read as the next response).
#[tokio::test]
async fn an_abandoned_response_body_never_lends_its_connection() {
    let backend = counting_backend().await;
    let gateway = start_gateway(BASE_CONFIG, backend.addr).await;
    let token = token_for("alice");
    for round in 0..3 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(
                format!("GET /api/alice/tasks/big HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut some = [0u8; 1024];
        let n = stream.read(&mut some).await.unwrap();
        assert!(
            String::from_utf8_lossy(&some[..n]).starts_with("HTTP/1.1 200"),
            "round {round}"
        );
        drop(stream);
        tokio::time::sleep(Duration::from_millis(50)).await;

        let small = request(
            gateway.addr,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &bearer(&token))],
            b"",
        )
        .await;
        assert_eq!(small.status, 200, "round {round}");
        assert_eq!(
            small.body, b"{\"ok\":true}",
            "round {round}: a clean answer"
        );
    }
    let requests = backend.requests.lock().unwrap().clone();
    let paths: Vec<&str> = requests.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/alice/tasks/big",
            "/api/alice/tasks",
            "/api/alice/tasks/big",
            "/api/alice/tasks",
            "/api/alice/tasks/big",
            "/api/alice/tasks"
        ]
    );
    // Each abandoned big body cost its connection; the small requests may reuse a clean one.
    let connections = backend.connections.load(Ordering::SeqCst);
    assert!(
        connections >= 3,
        "{connections} connections for 3 abandoned bodies"
    );
    for window in requests.windows(2) {
        if window[0].2.ends_with("big") {
            assert_ne!(
                window[0].0, window[1].0,
                "a request followed an abandoned body on its connection"
            );
        }
    }
}

/// The backend sees the configured upstream authority as `Host`, never the client's.
#[tokio::test]
async fn the_backend_sees_its_own_host() {
    let (backend, gateway) = setup().await;
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &bearer(&token_for("alice")))],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert_eq!(
        received.header_values("host"),
        [backend.addr.to_string().as_str()]
    );
    assert_eq!(received.header_values("x-forwarded-host"), ["gateway.test"]);
}

/// A backend that closes every connection after one answer, so that each request through the
/// gateway needs a new upstream connection. Returns its address and the request heads it read.
async fn closing_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let log = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, heads)
}

/// The backend's host name is looked up off the request path (src/proxy/upstream/dns.rs): new
/// upstream connections reuse the last answer, so that a resolver that stalls cannot turn into
/// connect timeouts. Twenty requests, each on a new upstream connection to `localhost`, cost one
/// lookup; an IP literal costs none.
#[tokio::test]
async fn new_upstream_connections_reuse_one_lookup_of_the_backend_name() {
    let (backend, heads) = closing_backend().await;
    let mut config = parse_config(BASE_CONFIG);
    config.upstream.as_mut().unwrap().authority =
        format!("localhost:{}", backend.port()).parse().unwrap();
    let gateway = start_gateway_as_configured(config).await;
    get_tasks_as_alice(gateway.addr, 20).await;
    let heads = heads.lock().unwrap().clone();
    assert_eq!(
        heads.len(),
        20,
        "every request reached the backend on its own connection"
    );
    for head in &heads {
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nx-user-id: alice\r\n"),
            "{head}"
        );
    }
    let metrics = gateway.live.metrics().render();
    assert!(
        metrics.contains("authgate_upstream_dns_lookups_total{result=\"ok\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_upstream_dns_lookups_total{result=\"failed\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_upstream_dns_stale_total 0\n"),
        "{metrics}"
    );

    // An IP literal is never looked up.
    let (backend, heads) = closing_backend().await;
    let gateway = start_gateway(BASE_CONFIG, backend).await;
    get_tasks_as_alice(gateway.addr, 3).await;
    assert_eq!(heads.lock().unwrap().len(), 3);
    let metrics = gateway.live.metrics().render();
    assert!(
        metrics.contains("authgate_upstream_dns_lookups_total{result=\"ok\"} 0\n"),
        "{metrics}"
    );
}

/// `times` requests for alice's tasks, each answered 200.
async fn get_tasks_as_alice(gateway: SocketAddr, times: usize) {
    let auth = bearer(&token_for("alice"));
    for _ in 0..times {
        let response = request(
            gateway,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(
            response.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&response.body)
        );
    }
}
