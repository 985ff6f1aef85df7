//! HTTP/1.1 keep-alive connections that park between requests (src/runtime/keepalive.rs): after
//! `PARK_AFTER` of quiet, hyper's state is dropped and only the socket remains. Every test checks
//! that nothing is lost or reordered across a park, and what the backend received.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use authgate::keepalive::PARK_AFTER;

use crate::common::*;

/// Comfortably longer than `PARK_AFTER`, so the connection has parked.
const QUIET: Duration = Duration::from_millis(300);

fn get(target: &str, token: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

/// Reads exactly one response (Content-Length framed) from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before a whole response: {buffer:?}"
        );
        buffer.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = parse_response(&buffer[..head_end + 4]);
        let length: usize = head
            .header("content-length")
            .expect("a Content-Length")
            .parse()
            .unwrap();
        if buffer.len() >= head_end + 4 + length {
            assert_eq!(
                buffer.len(),
                head_end + 4 + length,
                "bytes after the response"
            );
            return parse_response(&buffer);
        }
    }
}

/// A connection that answered `GET /api/alice/tasks` (200) and has been quiet for `QUIET` since.
async fn parked_connection(gateway: &GatewayHandle, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(&get("/api/alice/tasks", token))
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    tokio::time::sleep(QUIET).await;
    stream
}

fn parked_gauge(gateway: &GatewayHandle) -> i64 {
    gateway.live.metrics().parked_connections.get()
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_request() {
    assert!(QUIET > PARK_AFTER * 2);
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let mut stream = parked_connection(&gateway, &token).await;
    assert_eq!(parked_gauge(&gateway), 1, "the idle connection parked");

    stream
        .write_all(&get("/api/alice/tasks/7", &token))
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["ok"], true);
    assert_eq!(parked_gauge(&gateway), 0, "woken by the second request");

    let received = backend.received();
    let targets: Vec<&str> = received.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/api/alice/tasks", "/api/alice/tasks/7"]);
    for request in &received {
        assert_eq!(request.header_values("x-user-id"), ["alice"]);
    }
}

#[tokio::test]
async fn the_owner_rule_still_holds_after_a_park() {
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let mut stream = parked_connection(&gateway, &token).await;

    stream
        .write_all(&get("/api/bob/tasks", &token))
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 403);
    assert_eq!(backend.only().target, "/api/alice/tasks");
}

/// A pipelined request whose first half arrived with the previous request: the connection parks
/// with those bytes in hyper's buffer, and they must come back when the rest arrives.
#[tokio::test]
async fn a_pipelined_request_split_across_a_park_is_not_lost() {
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let second = get("/api/alice/tasks/2", &token);
    let (first_half, second_half) = second.split_at(second.len() / 2);

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut burst = get("/api/alice/tasks/1", &token);
    burst.extend_from_slice(first_half);
    stream.write_all(&burst).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    tokio::time::sleep(QUIET).await;

    stream.write_all(second_half).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let targets: Vec<String> = backend.received().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/api/alice/tasks/1", "/api/alice/tasks/2"]);
}

/// A response larger than the socket buffers, read slowly: the connection must not park (and
/// drop hyper's write buffer) before every byte has gone out.
#[tokio::test]
async fn a_slowly_read_large_response_arrives_whole_before_parking() {
    const SIZE: usize = 8 * 1024 * 1024;
    let backend = big_body_backend(SIZE).await;
    let gateway = start_gateway(BASE_CONFIG, backend).await;
    let token = token_for("alice");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    for round in 0..2 {
        stream
            .write_all(&get("/api/alice/tasks", &token))
            .await
            .unwrap();
        // Let the socket buffers fill and the gateway stall on writing for longer than PARK_AFTER.
        tokio::time::sleep(QUIET).await;
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 200, "round {round}");
        assert_eq!(response.body.len(), SIZE, "round {round}");
        assert_eq!(
            first_unlike_big_body(&response.body),
            None,
            "round {round}: body differs at this offset"
        );
        tokio::time::sleep(QUIET).await;
    }
}

/// The header-read timeout still bounds a client that goes quiet in the middle of a request head
/// on a connection that had parked.
#[tokio::test]
async fn a_stalled_request_head_after_a_park_is_still_timed_out() {
    let backend = Backend::start().await;
    let config = BASE_CONFIG.replace(
        "[upstream]",
        "[limits]\nheader_read_timeout = \"1s\"\n\n[upstream]",
    );
    let gateway = start_gateway(&config, backend.addr).await;
    let token = token_for("alice");
    let mut stream = parked_connection(&gateway, &token).await;

    stream.write_all(b"GET /api/alice/tas").await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
    assert_eq!(backend.only().target, "/api/alice/tasks");
}

/// A parked connection that stays quiet is closed after the keep-alive limit
/// (min(header_read_timeout, idle_timeout)), like an unparked one.
#[tokio::test]
async fn a_parked_connection_is_closed_after_the_keepalive_limit() {
    let backend = Backend::start().await;
    let config = BASE_CONFIG.replace(
        "[upstream]",
        "[limits]\nheader_read_timeout = \"1s\"\n\n[upstream]",
    );
    let gateway = start_gateway(&config, backend.addr).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(&get("/api/alice/tasks", &token_for("alice")))
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open after 5 s");
    assert!(rest.is_empty(), "nothing is written to an idle connection");
    assert_eq!(parked_gauge(&gateway), 0);
    assert_eq!(backend.count(), 1);
}

/// Shutdown closes parked connections at once (they have nothing in flight).
#[tokio::test]
async fn shutdown_closes_parked_connections() {
    let (backend, gateway) = setup().await;
    let mut stream = parked_connection(&gateway, &token_for("alice")).await;
    assert_eq!(parked_gauge(&gateway), 1);

    drop(gateway);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a parked connection outlived the shutdown");
    assert!(rest.is_empty());
    assert_eq!(backend.count(), 1);
}

/// A backend that answers as soon as it has a request head, before reading the body (an early
/// 404 or 200, as Express does), then reads and discards the Content-Length body. It records the
/// request-target of every head it parses.
async fn early_answer_backend() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let head_end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = parse_request_head(&buffer[..head_end]);
                    log.lock().unwrap().push(head.0.clone());
                    buffer.drain(..head_end);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    let mut body_left = head.1;
                    while body_left > 0 {
                        if buffer.is_empty() {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let take = body_left.min(buffer.len());
                        buffer.drain(..take);
                        body_left -= take;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// (request-target, Content-Length) of a raw request head.
fn parse_request_head(head: &[u8]) -> (String, usize) {
    let text = String::from_utf8_lossy(head);
    let target = text.split(' ').nth(1).unwrap_or_default().to_string();
    let length = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    (target, length)
}

/// The backend answers before the request body is complete; the client pauses mid-body past
/// `PARK_AFTER`, then sends the rest, which looks like a request. The connection must not park
/// while the body is still arriving: the rest is body, never a second request.
#[tokio::test]
async fn a_body_still_arriving_after_an_early_answer_is_not_taken_for_a_request() {
    let (backend, seen) = early_answer_backend().await;
    let gateway = start_gateway(BASE_CONFIG, backend).await;
    let token = token_for("alice");
    let smuggled = format!(
        "GET /api/alice/tasks/smuggled HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let first_part = "x".repeat(16);
    let body_len = first_part.len() + smuggled.len();
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/alice/tasks HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n{first_part}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let early = read_response(&mut stream).await;
    assert_eq!(early.status, 200);
    tokio::time::sleep(QUIET).await;
    stream.write_all(smuggled.as_bytes()).await.unwrap();

    // No second response: the smuggled bytes were body.
    let mut extra = [0u8; 256];
    let more = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut extra)).await;
    assert!(
        more.is_err(),
        "a second response arrived: {:?}",
        more.map(|n| String::from_utf8_lossy(&extra[..n.unwrap_or(0)]).into_owned())
    );
    // Once the body is in, the connection parks like any other.
    assert_eq!(parked_gauge(&gateway), 1, "parked after the body ended");
    // A real next request on the same connection still works.
    stream
        .write_all(&get("/api/alice/tasks/next", &token))
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, ["/api/alice/tasks", "/api/alice/tasks/next"]);
}

/// Randomized (seeded, so reproducible): several requests, GETs and POSTs with bodies, written
/// back to back and cut into random pieces with random pauses, some longer than `PARK_AFTER`, so
/// parks land anywhere: between requests, inside a head, inside a body. Every request must reach
/// the backend once, in order, with its body intact, and every response must come back in order.
#[tokio::test]
async fn random_splits_and_pauses_lose_nothing() {
    use rand::{Rng, SeedableRng};
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let mut runs = tokio::task::JoinSet::new();
    for seed in 0..6u64 {
        let addr = gateway.addr;
        let token = token.clone();
        runs.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut wire = Vec::new();
            let mut sent = Vec::new();
            for i in 0..6 {
                let target = format!("/api/alice/tasks/s{seed}-{i}");
                if rng.gen_bool(0.5) {
                    let body: Vec<u8> = (0..rng.gen_range(1..3000)).map(|_| rng.gen_range(b'a'..=b'z')).collect();
                    wire.extend_from_slice(
                        format!(
                            "POST {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
                             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    wire.extend_from_slice(&body);
                    sent.push((target, body));
                } else {
                    wire.extend_from_slice(&get(&target, &token));
                    sent.push((target, Vec::new()));
                }
            }
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let (mut reader, mut writer) = stream.split();
            let write = async {
                let mut at = 0;
                while at < wire.len() {
                    let piece = rng.gen_range(1..=600).min(wire.len() - at);
                    writer.write_all(&wire[at..at + piece]).await.unwrap();
                    at += piece;
                    let pause = match rng.gen_range(0..10) {
                        0..=5 => 0,
                        6..=7 => 5,
                        _ => 80,
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            };
            let read = async {
                let mut buffer = Vec::new();
                let mut statuses = Vec::new();
                let mut chunk = [0u8; 4096];
                while statuses.len() < sent.len() {
                    let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut chunk))
                        .await
                        .expect("a response within 10 s")
                        .unwrap();
                    assert!(n > 0, "seed {seed}: closed after {} responses", statuses.len());
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = parse_response(&buffer[..end + 4]);
                        let length: usize = head.header("content-length").unwrap().parse().unwrap();
                        if buffer.len() < end + 4 + length {
                            break;
                        }
                        statuses.push(head.status);
                        buffer.drain(..end + 4 + length);
                    }
                }
                statuses
            };
            let ((), statuses) = tokio::join!(write, read);
            assert_eq!(statuses, vec![200; sent.len()], "seed {seed}");
            (seed, sent)
        });
    }
    let mut expected = Vec::new();
    while let Some(run) = runs.join_next().await {
        expected.push(run.unwrap());
    }
    let received = backend.received();
    for (seed, sent) in expected {
        let prefix = format!("/api/alice/tasks/s{seed}-");
        let got: Vec<(String, Vec<u8>)> = received
            .iter()
            .filter(|r| r.target.starts_with(&prefix))
            .map(|r| (r.target.clone(), r.body.clone()))
            .collect();
        assert_eq!(
            got, sent,
            "seed {seed}: what the backend received, in order"
        );
    }
}

/// A request with a body: the body guard is released when the last byte is read (hyper's client
/// does not poll past it), so the connection parks afterwards like after a GET.
#[tokio::test]
async fn a_connection_parks_after_a_request_with_a_body() {
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    for (round, body) in ["{\"title\":\"one\"}", "{\"title\":\"two\"}"]
        .iter()
        .enumerate()
    {
        stream
            .write_all(
                format!(
                    "POST /api/alice/tasks HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(
            read_response(&mut stream).await.status,
            200,
            "round {round}"
        );
        tokio::time::sleep(QUIET).await;
        assert_eq!(
            parked_gauge(&gateway),
            1,
            "round {round}: parked after a POST"
        );
    }
    let bodies: Vec<Vec<u8>> = backend.received().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [
            b"{\"title\":\"one\"}".to_vec(),
            b"{\"title\":\"two\"}".to_vec()
        ]
    );
}

/// A refused request whose body was never read is answered with `Connection: close`, and the
/// connection closes (instead of hyper draining, or not, a body nobody wants while the connection
/// cannot park). A refused request without a body keeps its connection. Nothing reaches the
/// backend.
#[tokio::test]
async fn a_refused_request_with_an_unread_body_closes_its_connection() {
    let (backend, gateway) = setup().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /api/alice/tasks HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let refused = read_response(&mut stream).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("connection"), None);

    stream
        .write_all(
            b"POST /api/alice/tasks HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let refused = read_response(&mut stream).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the connection stayed open");
    assert_eq!(read.unwrap(), 0, "closed, nothing after the answer");
    assert_eq!(backend.count(), 0);
}
