//! Hostile clients and failing backends: every limit over real sockets. Waits here are bounded
//! polls ("this happens within N seconds"), never performance assertions.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::common::*;

fn with_limits(limits: &str) -> String {
    let split = BASE_CONFIG.find("[[route]]").unwrap();
    format!(
        "{}\n[limits]\n{limits}\n{}",
        &BASE_CONFIG[..split],
        &BASE_CONFIG[split..]
    )
}

/// Reads until EOF or error; returns how long that took, or None if the peer kept it open.
async fn wait_closed(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed())
}

#[tokio::test]
async fn slowloris_is_disconnected_and_frees_its_slot() {
    let backend = Backend::start().await;
    let config = with_limits("header_read_timeout = \"1s\"\nmax_connections = 1");
    let gateway = start_gateway(&config, backend.addr).await;
    let mut slow = TcpStream::connect(gateway.addr).await.unwrap();
    let trickle = async {
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), trickle).await;
    assert!(
        wait_closed(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "slowloris connection still open"
    );
    // The one connection slot is free again: a normal request is served.
    let response = request(gateway.addr, "GET", "/health", &[], b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        backend.count(),
        1,
        "the partial request never reached the backend"
    );
}

#[tokio::test]
async fn oversized_header_gets_431() {
    let (backend, gateway) = setup().await;
    let huge = "a".repeat(20 * 1024);
    let response = request(gateway.addr, "GET", "/health", &[("X-Big", &huge)], b"").await;
    assert_eq!(response.status, 431);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_chunked() {
    let backend = Backend::start().await;
    let gateway = start_gateway(&with_limits("max_body_bytes = 1024"), backend.addr).await;
    let auth = bearer(&token_for("alice"));
    // Declared: refused before anything is forwarded.
    let response = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        &[b'x'; 2048],
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"], "body_too_large");
    assert_eq!(backend.count(), 0);
    // Chunked, no Content-Length: counted while streaming.
    let mut raw = format!(
        "POST /api/alice/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..8 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'y'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let response = send_raw(gateway.addr, &raw).await;
    assert_eq!(response.status, 413);
    assert!(
        backend.received().iter().all(|r| r.body.len() <= 1024),
        "the backend got more than the limit"
    );
    // Within the limit, chunked: forwarded byte for byte. (The aborted request above may be
    // recorded late, so the forwarded one is found by its content, not its position.)
    let mut raw = format!(
        "POST /api/alice/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n");
    assert_eq!(send_raw(gateway.addr, &raw).await.status, 200);
    assert!(
        backend.received().iter().any(|r| r.body == b"abcdefg"),
        "{:?}",
        backend.received()
    );
}

#[tokio::test]
async fn connections_above_the_cap_wait_and_are_served_later() {
    let backend = Backend::start().await;
    let gateway = start_gateway(&with_limits("max_connections = 2"), backend.addr).await;
    let keep_alive = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream.write_all(keep_alive).await.unwrap();
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(std::str::from_utf8(&buffer[..read])
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // A third client connects (the kernel accepts it into the backlog) but is not served yet.
    let third = tokio::spawn(request(gateway.addr, "GET", "/health", &[], b""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served while the cap was full");
    drop(held.pop());
    let response = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("never served")
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let backend = Backend::start().await;
    let gateway = start_gateway(&with_limits("idle_timeout = \"1s\""), backend.addr).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 512];
    assert!(stream.read(&mut buffer).await.unwrap() > 0);
    assert!(
        wait_closed(&mut stream, Duration::from_secs(5))
            .await
            .is_some(),
        "idle connection kept open"
    );
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An h2c client that PINGs every 300 ms, even with no stream open, with `window` as its initial
/// stream window when given; its connection runs in the returned task.
async fn pinging_h2_client(
    addr: SocketAddr,
    window: Option<u32>,
) -> (H2Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(300))
        .keep_alive_while_idle(true);
    if let Some(window) = window {
        builder.initial_stream_window_size(window);
    }
    let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await.unwrap();
    (sender, tokio::spawn(connection))
}

fn alice_h2_get() -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::builder()
        .uri("http://gateway.test/api/alice/tasks")
        .header("authorization", bearer(&token_for("alice")))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// An HTTP/2 connection is idle when no stream is open, whatever PINGs cross it: a client that
/// pings every 300 ms but sends no request is closed (GOAWAY, then EOF) within about
/// idle_timeout x 1.25 of its last response, and a stream slower than idle_timeout is not cut.
#[tokio::test]
async fn idle_http2_connections_are_closed_even_when_pinged() {
    use http_body_util::BodyExt;

    let backend = Backend::start_with_delay(Duration::from_millis(1500)).await;
    let gateway = start_gateway(&with_limits("idle_timeout = \"1s\""), backend.addr).await;
    let (mut sender, connection) = pinging_h2_client(gateway.addr, None).await;
    let request = alice_h2_get();
    // 1.5 s at the backend: longer than idle_timeout, and not cut.
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let answered = Instant::now();
    assert_eq!(backend.only().header_values("x-user-id"), ["alice"]);

    let closed = tokio::time::timeout(Duration::from_secs(6), connection).await;
    let after = answered.elapsed();
    assert!(
        closed.is_ok(),
        "a pinged HTTP/2 connection with no stream was still open {after:?} after its last response"
    );
    assert!(
        after >= Duration::from_millis(900),
        "closed {after:?} after its last response, before idle_timeout"
    );
}

/// A client that holds HTTP/2 flow control shut (a stream window of 0) while answering PINGs
/// stalls its response for good: the stall counts as idle, so the connection gets a GOAWAY after
/// idle_timeout and is dropped once request_timeout has passed too.
#[tokio::test]
async fn a_response_stalled_by_http2_flow_control_does_not_hold_the_connection() {
    let backend = Backend::start().await;
    let config = with_limits("idle_timeout = \"1s\"\nrequest_timeout = \"1s\"");
    let gateway = start_gateway(&config, backend.addr).await;
    let (mut sender, connection) = pinging_h2_client(gateway.addr, Some(0)).await;
    let request = alice_h2_get();
    let started = Instant::now();
    // The head is not flow-controlled; the body never gets a window and is never read.
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(backend.only().header_values("x-user-id"), ["alice"]);
    let closed = tokio::time::timeout(Duration::from_secs(8), connection).await;
    assert!(
        closed.is_ok(),
        "a stalled HTTP/2 response kept its connection open for {:?}",
        started.elapsed()
    );
    drop(response);
}

/// Over one HTTP/2 connection, more responses than the HPACK table holds ids: each response
/// carries the id its request reached the backend with, a new one every time (the response's id
/// is sent as never indexed, so the ids do not crowd the table).
#[tokio::test]
async fn http2_responses_carry_the_request_id_the_backend_saw() {
    use http_body_util::BodyExt;
    let (backend, gateway) = setup().await;
    let (mut sender, _connection) = pinging_h2_client(gateway.addr, None).await;
    let mut ids = Vec::new();
    for _ in 0..80 {
        let response = sender.send_request(alice_h2_get()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(response.headers()["content-type"], "application/json");
        response.into_body().collect().await.unwrap();
        ids.push(id);
    }
    let received = backend.received();
    assert_eq!(received.len(), ids.len());
    for (seen, id) in received.iter().zip(&ids) {
        assert_eq!(seen.header_values("x-request-id"), [id.as_str()]);
        assert_eq!(seen.header_values("x-user-id"), ["alice"]);
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "request ids repeat: {ids:?}");
}

#[tokio::test]
async fn request_timeout_bounds_the_whole_exchange() {
    let backend = Backend::start_with_delay(Duration::from_secs(3)).await;
    let config =
        with_limits("request_timeout = \"300ms\"").replace("timeout = \"2s\"", "timeout = \"10s\"");
    let gateway = start_gateway(&config, backend.addr).await;
    let auth = bearer(&token_for("alice"));
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 504);
    assert_eq!(response.json()["error"], "request_timeout");
}

/// A backend that answers each request on a keep-alive connection and then closes the connection
/// shortly after, without saying so: the gateway's pool is left holding dead connections.
async fn backend_closing_after_each_response(
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}")
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                // Dropped: closed without `Connection: close`.
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn stale_pooled_connections_never_fail_an_idempotent_request() {
    let (backend, served) = backend_closing_after_each_response().await;
    let gateway = start_gateway(BASE_CONFIG, backend).await;
    for round in 0..20 {
        let response = request(gateway.addr, "GET", "/health", &[], b"").await;
        assert_eq!(response.status, 200, "round {round}");
        tokio::time::sleep(Duration::from_millis(60)).await; // the pooled connection is now dead
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_restarted_backend_is_reconnected() {
    async fn start_on(listener: TcpListener) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        tasks.spawn(authgate::demo_backend::serve(listener));
        tasks
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = start_on(listener).await;
    let gateway = start_gateway(BASE_CONFIG, addr).await;
    assert_eq!(
        request(gateway.addr, "GET", "/health", &[], b"")
            .await
            .status,
        200
    );
    drop(first); // aborts the backend and every connection it served
    let mut rebound = None;
    for _ in 0..100 {
        // The abort completes asynchronously; the port is free once the task is gone.
        if let Ok(listener) = TcpListener::bind(addr).await {
            rebound = Some(listener);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = start_on(rebound.expect("port never freed")).await;
    for _ in 0..5 {
        assert_eq!(
            request(gateway.addr, "GET", "/health", &[], b"")
                .await
                .status,
            200
        );
    }
    drop(second);
}

#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start_with_delay(Duration::from_millis(1500)));
    let port = free_port();
    let config = on_port_before(BASE_CONFIG, port, backend.addr);
    let path = std::env::temp_dir().join(format!("authgate-shutdown-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["--config", path.to_str().unwrap()])
        .env("BETTER_AUTH_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_listening(addr);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let token = token_for("alice");
    write!(stream, "GET /api/alice/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    // The backend holds the request for 1.5 s; terminate the gateway meanwhile.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        backend.count(),
        1,
        "the request is in flight at the backend"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    // New connections are no longer accepted...
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after SIGTERM"
    );
    // ...but the request in flight completes with its full body...
    let mut response = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.read_to_end(&mut response).unwrap();
    let response = parse_response(&response);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"{\"ok\":true}");
    // ...and the process exits 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    std::fs::remove_file(&path).ok();
}
